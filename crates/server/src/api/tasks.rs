//! `/api/tasks`: status, logs (stored and live) and artifacts of tasks.

use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use testbed_core::keys;
use testbed_core::task::{Artifact, Task, TaskStatus};
use testbed_core::user::Role;
use utoipa::IntoParams;
use uuid::Uuid;

use super::page::PageQuery;
use crate::auth::{AgentCaller, Caller};
use crate::dispatch;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Query};
use crate::records;
use crate::state::AppState;
use testbed_api::tasks::{TaskPage, TaskView};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this agent (uuid or name).
    pub agent: Option<String>,
}

/// Tasks, newest first.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks",
    params(ListQuery, PageQuery, super::runs::IdPrefix),
    responses((status = 200, body = TaskPage), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    Query(q): Query<ListQuery>,
    Query(p): Query<PageQuery>,
    Query(idp): Query<super::runs::IdPrefix>,
) -> ApiResult<Json<TaskPage>> {
    p.check()?;
    let all: Vec<(String, Task)> = records::list(&state.store, keys::TASKS, |_| true).await?;
    let mut tasks: Vec<Task> = all
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| q.status.is_none_or(|s| t.status == s))
        .filter(|t| idp.matches(&t.id))
        .filter(|t| {
            q.agent
                .as_ref()
                .is_none_or(|a| t.agent_name == *a || t.agent_uuid.to_string() == *a)
        })
        .collect();
    tasks.sort_by_key(|t| std::cmp::Reverse(t.created_at));
    // Only the page's tasks are turned into views.
    let page = p.apply(tasks);
    Ok(Json(TaskPage {
        total: page.total,
        page: page.page,
        page_size: page.page_size,
        results: page.results.into_iter().map(TaskView::from).collect(),
    }))
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no task `{id}` (task ids are uuids)")))
}

async fn load(state: &AppState, id: &Uuid) -> ApiResult<Task> {
    records::get::<Task>(&state.store, &keys::task(id))
        .await?
        .map(|(t, _)| t)
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))
}

/// Status, exit code, timings and result of a task.
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks",
    params(("id" = String, Path)),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskView>> {
    let id = parse_id(&id)?;
    Ok(Json(load(&state, &id).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Skip the first `offset` bytes (to poll for what is new).
    #[serde(default)]
    pub offset: u64,
}

/// The task's log as plain text — while it runs and after. The
/// `X-Task-Status` header tells whether more may come.
#[utoipa::path(get, path = "/api/tasks/{id}/log", tag = "tasks",
    params(("id" = String, Path), LogQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn log(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let task = load(&state, &id).await?;
    let body = state
        .blobs
        .read_log(&id, q.offset)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(task.status.as_str()) {
        headers.insert("x-task-status", v);
    }
    Ok((headers, body).into_response())
}

/// Cancel a task: the agent kills its whole process group.
#[utoipa::path(post, path = "/api/tasks/{id}/cancel", tag = "tasks",
    params(("id" = String, Path)),
    responses((status = 202, body = TaskView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "already ended")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<TaskView>)> {
    caller.require(Role::Operator)?;
    let id = parse_id(&id)?;
    let owner = load(&state, &id).await?.created_by;
    caller.require_owner(&owner, &format!("task {id}"))?;
    let task = dispatch::cancel(&state, id).await?;
    Ok((StatusCode::ACCEPTED, Json(task.into())))
}

/// Download an artifact of a task.
#[utoipa::path(get, path = "/api/tasks/{id}/artifacts/{name}", tag = "tasks",
    params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn artifact(
    State(state): State<AppState>,
    _caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let task = load(&state, &id).await?;
    if !task.artifacts.iter().any(|a| a.name == name) {
        return Err(ApiError::not_found(format!(
            "task {id} has no artifact `{name}`"
        )));
    }
    let data = state
        .blobs
        .get(&keys::artifact_blob(&id, &name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| {
            ApiError::not_found(format!("artifact `{name}` is missing from the blob store"))
        })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

fn valid_artifact_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
}

/// Upload an artifact of a running task (agents only, with their credential).
#[utoipa::path(put, path = "/api/agent/tasks/{id}/artifacts/{name}", tag = "agent",
    params(("id" = String, Path), ("name" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Artifact), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload_artifact(
    State(state): State<AppState>,
    agent: AgentCaller,
    Path((id, name)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Json<Artifact>> {
    let id = parse_id(&id)?;
    if !valid_artifact_name(&name) {
        return Err(ApiError::field(
            "/name",
            "letters, digits and `._-+` only, at most 200",
        ));
    }
    let task = load(&state, &id).await?;
    if task.agent_uuid != agent.uuid {
        return Err(ApiError::forbidden("this task belongs to another agent"));
    }
    let limit = state.settings.max_artifact;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("artifact larger than {limit} bytes"),
        )
    };
    let size = body_to_blob(
        &state,
        &keys::artifact_blob(&id, &name),
        body,
        "artifact",
        too_large,
        |_| None,
        UPLOAD_IDLE,
    )
    .await?;
    let artifact = Artifact {
        name: name.clone(),
        size,
        url: format!("/api/tasks/{id}/artifacts/{name}"),
    };
    let a2 = artifact.clone();
    records::update::<Task, _>(&state.store, &keys::task(&id), move |t| {
        t.artifacts.retain(|a| a.name != a2.name);
        t.artifacts.push(a2.clone());
        true
    })
    .await?;
    Ok(Json(artifact))
}

/// How long an upload may send nothing before it is given up.
const UPLOAD_IDLE: Duration = Duration::from_secs(60);

/// Streams an agent's upload into the blob at `key` in parts as it arrives
/// (the server holds a few parts, whatever the size); the blob appears only
/// once all of it arrived and `refuse` (shown its first bytes) found nothing
/// wrong, so an upload cut short, too large (`too_large`, past the server's
/// artifact limit), idle for `idle` ([`UPLOAD_IDLE`]) or refused keeps
/// nothing.
/// Returns its size.
async fn body_to_blob(
    state: &AppState,
    key: &str,
    body: Body,
    what: &str,
    too_large: impl Fn() -> ApiError,
    refuse: impl FnOnce(&[u8]) -> Option<ApiError>,
    idle: Duration,
) -> ApiResult<u64> {
    const HEAD: usize = 16;
    let limit = state.settings.max_artifact as u64;
    // A declared Content-Length past the limit is refused before any of it
    // is read or stored.
    if axum::body::HttpBody::size_hint(&body).lower() > limit {
        return Err(too_large());
    }
    let blob_error = |e: crate::blobs::BlobError| ApiError::internal(e.to_string());
    let mut writer = state.blobs.writer(key).await.map_err(blob_error)?;
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::with_capacity(HEAD);
    let failed = loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => {
                break Some(ApiError::bad_request(format!(
                    "the {what} sent nothing for {:?} after {size} bytes; nothing was kept",
                    idle
                )))
            }
            Ok(None) => break None,
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => {
                break Some(ApiError::bad_request(format!(
                    "reading the {what} after {size} bytes: {e}; nothing was kept"
                )))
            }
        };
        size += chunk.len() as u64;
        if size > limit {
            break Some(too_large());
        }
        if head.len() < HEAD {
            head.extend(chunk.iter().take(HEAD - head.len()));
        }
        if let Err(e) = writer.write(chunk).await {
            break Some(blob_error(e));
        }
    };
    if let Some(e) = failed.or_else(|| refuse(&head)) {
        writer.abort().await;
        return Err(e);
    }
    writer.finish().await.map_err(blob_error)?;
    Ok(size)
}

/// What the server kept of a task's report upload.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ReportUpload {
    /// Bytes stored (the compressed report).
    pub bytes: u64,
}

/// Upload the test report of a task whose report is too large to travel
/// inside its result (agents only, with their credential): the stored form
/// of `testbed-report` (gzip-compressed JSON), as it streams. Declared as
/// `application/octet-stream`, like artifacts: the server checks the gzip
/// magic bytes, not the header. It is written
/// to the blob store in parts as it arrives, so the server holds a few parts
/// whatever its size, and appears only once all of it arrived: a request cut
/// short keeps nothing. At most the server's artifact limit (512 MiB).
#[utoipa::path(put, path = "/api/agent/tasks/{id}/report", tag = "agent",
    params(("id" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = ReportUpload), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload_report(
    State(state): State<AppState>,
    agent: AgentCaller,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<ReportUpload>> {
    let id = parse_id(&id)?;
    let task = load(&state, &id).await?;
    if task.agent_uuid != agent.uuid {
        return Err(ApiError::forbidden("this task belongs to another agent"));
    }
    let limit = state.settings.max_artifact;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a task's report may be at most {limit} bytes compressed (the server's \
                 artifact limit); split the kit"
            ),
        )
    };
    let size = body_to_blob(
        &state,
        &keys::task_report_blob(&id),
        body,
        "report upload",
        too_large,
        |head| {
            (!head.starts_with(&[0x1f, 0x8b])).then(|| {
                ApiError::field(
                    "/body",
                    "a report upload is gzip-compressed report JSON (the stored form)",
                )
            })
        },
        UPLOAD_IDLE,
    )
    .await?;
    Ok(Json(ReportUpload { bytes: size }))
}

/// The task's log, live: everything so far, then new output as it comes.
/// Closes with code 1000 and the final status as the reason when the task
/// ends. Authenticate with the bearer header or `?token=`.
#[utoipa::path(get, path = "/ws/tasks/{id}/log", tag = "tasks",
    params(("id" = String, Path)),
    responses((status = 101, description = "WebSocket of text frames"), (status = 400, description = "not a WebSocket upgrade request"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn follow(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    load(&state, &id).await?;
    Ok(ws
        // Viewers only listen: anything they send is small or a mistake.
        .max_message_size(crate::api::CLIENT_WS_MAX_MESSAGE)
        .on_upgrade(move |socket| {
            state
                .metrics
                .clone()
                .track_ws("task_log", stream_log(state, id, socket))
        }))
}

async fn stream_log(state: AppState, id: Uuid, mut socket: WebSocket) {
    let mut changes = state.sessions.subscribe_tasks();
    let mut offset: u64 = 0;
    loop {
        // Read the status before the log, so the last read after the task
        // ended is guaranteed to see all of it.
        let status = match records::get::<Task>(&state.store, &keys::task(&id)).await {
            Ok(Some((t, _))) => t.status,
            _ => return,
        };
        match state.blobs.read_log(&id, offset).await {
            Ok(data) if !data.is_empty() => {
                offset += data.len() as u64;
                let text = String::from_utf8_lossy(&data).into_owned();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%id, "reading log: {e}"),
        }
        if status.is_terminal() {
            let frame = CloseFrame {
                code: 1000,
                reason: status.as_str().into(),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
            return;
        }
        // Woken by local changes at once; other replicas' agents are picked
        // up by polling.
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = wait_for(&mut changes, id) => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            msg = socket.recv() => {
                if matches!(msg, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                    return;
                }
            }
        }
    }
}

async fn wait_for(rx: &mut tokio::sync::broadcast::Receiver<Uuid>, id: Uuid) {
    loop {
        match rx.recv().await {
            Ok(t) if t == id => return,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Err(_) => {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::{Body, Bytes};
    use testbed_store::RedbStore;

    use super::*;
    use crate::state::Settings;

    fn state(max_artifact: usize) -> (AppState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
        let settings = Settings {
            max_artifact,
            ..Settings::default()
        };
        let state = crate::test_fixtures::state_with(Arc::new(store), dir.path(), settings);
        (state, dir)
    }

    fn too_large() -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too large")
    }

    /// A body that sends `chunks`, then, if `stall`, nothing ever again.
    fn body(chunks: Vec<&'static [u8]>, stall: bool) -> Body {
        let sent = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        if stall {
            Body::from_stream(sent.chain(futures_util::stream::pending()))
        } else {
            Body::from_stream(sent)
        }
    }

    async fn upload(state: &AppState, b: Body) -> ApiResult<u64> {
        let gzip = |head: &[u8]| {
            (!head.starts_with(&[0x1f, 0x8b])).then(|| ApiError::field("/body", "not gzip"))
        };
        let idle = Duration::from_millis(200);
        body_to_blob(state, "t/blob", b, "upload", too_large, gzip, idle).await
    }

    #[tokio::test]
    async fn a_whole_upload_is_kept_and_a_refused_one_is_not() {
        let (state, _dir) = state(1024);
        assert_eq!(
            upload(&state, body(vec![b"\x1f", b"\x8b rest"], false))
                .await
                .unwrap(),
            7
        );
        assert_eq!(state.blobs.size("t/blob").await.unwrap(), Some(7));
        state.blobs.delete("t/blob").await.unwrap();

        let e = upload(&state, body(vec![b"plain text"], false))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{e:?}");
        assert_eq!(state.blobs.size("t/blob").await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_upload_past_the_limit_keeps_nothing() {
        let (state, _dir) = state(8);
        // Declared too large (its length is known up front): refused.
        let declared = Body::from(vec![0x1f_u8; 9]);
        let e = upload(&state, declared).await.unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{e:?}");
        // Streamed past it.
        let e = upload(&state, body(vec![b"\x1f\x8b123", b"4567"], false))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{e:?}");
        assert_eq!(state.blobs.size("t/blob").await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_idle_upload_is_given_up_and_keeps_nothing() {
        let (state, _dir) = state(1024);
        let e = upload(&state, body(vec![b"\x1f\x8b12"], true))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
        assert!(
            e.message.contains("sent nothing for 200ms after 4 bytes"),
            "{e:?}"
        );
        assert_eq!(state.blobs.size("t/blob").await.unwrap(), None);
    }
}
