//! The HTTP + WebSocket API and its OpenAPI document, generated from the
//! handlers' annotations so the two cannot drift apart.

pub mod agents;
pub mod auth;
pub mod common_responses;
pub mod guard;
pub mod page;
pub mod parse;
pub mod performance;
pub mod projects;
pub mod resources;
pub mod runs;
pub mod slaves;
pub mod tasks;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, Json};
use crate::state::AppState;
use testbed_api::meta::Health;

#[derive(OpenApi)]
#[openapi(
    info(title = "Testbed API", description = "Distributed test platform: agents, plugins, tasks."),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The document's frame: this module's settings plus every wire type of
/// `testbed-api`, whose schemas the handlers' annotations then refer to.
fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi().merge_from(testbed_api::Schemas::openapi())
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Liveness and store reachability (no auth).
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let revision = state
        .store
        .revision()
        .await
        .map_err(|e| ApiError::unavailable(format!("store: {e}")))?;
    let failing = state.loops.failing();
    Ok(Json(Health {
        status: "ok".into(),
        // The backend only: where the data lives is not for anonymous eyes.
        store: state
            .store
            .describe()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string(),
        revision,
        replica: state.replica.clone(),
        agents_connected: state.sessions.connected(),
        controller_leader: state.leading.load(std::sync::atomic::Ordering::Relaxed),
        controller_loops_ok: failing.is_empty(),
        controller_loops_failing: failing,
    }))
}

/// Largest message a client may send on a read-only stream (task logs, live
/// load metrics).
pub const CLIENT_WS_MAX_MESSAGE: usize = 64 * 1024;

/// Builds the router and the OpenAPI document.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body;
    let metrics = state.metrics.clone();
    let (router, openapi) = OpenApiRouter::with_openapi(document())
        .routes(routes!(healthz))
        .routes(routes!(auth::login))
        .routes(routes!(auth::create_session, auth::delete_session))
        .routes(routes!(auth::me))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::stream_token))
        .routes(routes!(auth::create_user, auth::list_users))
        .routes(routes!(auth::update_user, auth::delete_user))
        .routes(routes!(auth::revoke_user))
        .routes(routes!(slaves::detail))
        .routes(routes!(slaves::show))
        .routes(routes!(slaves::submit))
        .routes(routes!(agents::list))
        .routes(routes!(agents::show, agents::delete))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::show))
        .routes(routes!(tasks::log))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::artifact))
        .routes(routes!(tasks::upload_artifact))
        .routes(routes!(tasks::upload_report))
        .routes(routes!(tasks::follow))
        .routes(routes!(
            resources::list_testcases,
            resources::create_testcase
        ))
        .routes(routes!(
            resources::get_testcase,
            resources::put_testcase,
            resources::delete_testcase
        ))
        .routes(routes!(
            resources::list_environments,
            resources::create_environment
        ))
        .routes(routes!(
            resources::get_environment,
            resources::put_environment,
            resources::delete_environment
        ))
        .routes(routes!(resources::list_groups, resources::create_group))
        .routes(routes!(resources::get_group, resources::delete_group))
        .routes(routes!(resources::add_member, resources::remove_member))
        .routes(routes!(runs::create_plan, runs::list_plans))
        .routes(routes!(runs::get_plan, runs::put_plan, runs::delete_plan))
        .routes(routes!(runs::create_run, runs::list_runs))
        .routes(routes!(runs::get_run, runs::delete_run))
        .routes(routes!(runs::cancel_run))
        .routes(routes!(runs::list_results))
        .routes(routes!(runs::get_result))
        .routes(routes!(runs::list_reports))
        .routes(routes!(runs::get_report, runs::delete_report))
        .routes(routes!(runs::compare_reports))
        .routes(routes!(runs::report_cases))
        .routes(routes!(projects::list_projects, projects::create_project))
        .routes(routes!(
            projects::get_project,
            projects::put_project,
            projects::delete_project
        ))
        .routes(routes!(performance::create_plan, performance::list_plans))
        .routes(routes!(
            performance::get_plan,
            performance::put_plan,
            performance::delete_plan
        ))
        .routes(routes!(performance::start))
        .routes(routes!(performance::stop))
        .routes(routes!(performance::pause))
        .routes(routes!(performance::resume))
        .routes(routes!(performance::list_reports))
        .routes(routes!(performance::get_report, performance::delete_report))
        .routes(routes!(performance::metrics))
        .routes(routes!(performance::live))
        .split_for_parts();
    let mut openapi = openapi;
    common_responses::document(&mut openapi);
    let openapi_json = openapi.clone();
    router
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = openapi_json.clone();
                async move { axum::Json(doc) }
            }),
        )
        .route("/ws/agent", get(crate::agent_session::upgrade))
        // Outside /api and the OpenAPI document: for a scraper holding the
        // metrics token, never a user session (docs/operations.md).
        .route("/metrics", get(crate::metrics::serve_with_token))
        // The web console: `/`, its pages' deep links and `/console/…`
        // assets; never anything under /api, /v2.1, /ws or /healthz.
        .merge(testbed_console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(guard::check_path))
        .layer(axum::middleware::from_fn(guard::json_errors))
        // Outermost, so every answer is counted as the client got it.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track_http,
        ))
        .with_state(state)
}

/// The OpenAPI document alone (for `testbed openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = OpenApiRouter::<AppState>::with_openapi(document())
        .routes(routes!(healthz))
        .split_for_parts();
    api
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    /// The served document carries testbed-api's types by name, so the
    /// schemas clients read are the ones the handlers return.
    #[test]
    fn the_document_has_the_wire_types() {
        let served = serde_json::to_value(super::openapi()).expect("encodes");
        let wire = serde_json::to_value(testbed_api::Schemas::openapi()).expect("encodes");
        let names = wire["components"]["schemas"].as_object().expect("schemas");
        assert!(names.len() > 40, "only {} wire types", names.len());
        let missing: Vec<&String> = names
            .keys()
            .filter(|n| served["components"]["schemas"].get(n.as_str()).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "not in the served document: {missing:?}"
        );
        assert!(served["components"]["securitySchemes"]["bearer"].is_object());
    }
}
