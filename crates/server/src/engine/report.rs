//! A finished run as a report (the common result model of
//! `testbed-report`), and the seed-003 latest result per test case.
//!
//! What seed 003 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-003-the-store.

use std::collections::BTreeMap;

use testbed_core::keys;
use testbed_core::run::{ReportRecord, ResultRecord, Run, StepState, StepStatus};
use testbed_core::task::Task;
use testbed_report::{Case, CaseList, CompactReport, Link, Outcome, Report, Suite, Summary};
use uuid::Uuid;

use crate::records::{self, RecordError};
use crate::state::AppState;

/// Bytes of a task's log kept in the report as its output excerpt.
const EXCERPT: usize = 4096;

fn outcome(s: StepStatus) -> Outcome {
    match s {
        StepStatus::Passed => Outcome::Pass,
        StepStatus::Failed => Outcome::Fail,
        StepStatus::Skipped | StepStatus::Cancelled | StepStatus::Pending => Outcome::Skip,
        StepStatus::Error | StepStatus::Lost | StepStatus::Running => Outcome::Error,
    }
}

fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// A task's report uploaded as a blob (its result says `report_blob:
/// {bytes, summary}`), to be copied into the run's report as it is written.
struct Uploaded {
    task: Uuid,
    bytes: u64,
    promised: Summary,
    agent: String,
    step: String,
    /// The case standing for it in the plan's suite, should it not be whole.
    title: String,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    attempt: u32,
}

/// Builds the report of a run from its record, its tasks and their logs, in
/// the compact form: the reports of `tap` and `api` steps that travelled in
/// their task results (a few thousand cases at most) are read from them
/// straight into it, never as one [`Case`] record per test. Reports uploaded
/// as blobs (larger ones, a kit can hold a million cases) are not read here:
/// [`store_report`] copies them into the stored report as it writes it.
async fn build(state: &AppState, run: &Run) -> Result<(CompactReport, Vec<Uploaded>), RecordError> {
    let mut cases = Vec::new();
    let mut uploaded = Vec::new();
    // Steps that produced reports of their own (a TAP kit run by the `tap`
    // plugin) contribute their suites, each tagged with the agent that ran
    // it: across an `each:` step that is a matrix of tests × platforms.
    let mut nested: Vec<(Suite, CaseList)> = Vec::new();
    for id in run.spec.topological() {
        let Some(st) = run.steps.get(id) else {
            continue;
        };
        let spec = run.spec.step(id);
        let title = spec
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| id.to_string());
        if st.instances.is_empty() {
            cases.push(Case {
                name: title.clone(),
                outcome: outcome(st.status),
                duration_ms: 0,
                message: st.reason.clone(),
                output: None,
                log_url: None,
                artifacts: Vec::new(),
                started_at: st.started_at,
                agent: None,
                attempts: 0,
                properties: BTreeMap::from([("step".to_string(), id.to_string())]),
            });
            continue;
        }
        let xfail = spec.and_then(|s| s.xfail.clone());
        let expect = |o: Outcome, message: Option<String>| -> (Outcome, Option<String>) {
            match (&xfail, o) {
                (Some(why), Outcome::Fail) => {
                    (Outcome::Xfail, Some(format!("known broken: {why}")))
                }
                (Some(why), Outcome::Pass) => (
                    Outcome::Xpass,
                    Some(format!("known broken but passed: {why}")),
                ),
                _ => (o, message),
            }
        };
        let fanned = st.instances.len() > 1
            || matches!(spec.and_then(|s| s.target.as_ref()), Some(testbed_core::plan::Target::Spec(t)) if t.each.is_some());
        for inst in &st.instances {
            let result = inst.result.as_ref();
            if let Some(r) = result
                .and_then(|v| v.get("report"))
                .and_then(|v| testbed_report::json::compact_from_value(v).ok())
            {
                for (mut suite, list) in r.head.suites.into_iter().zip(r.lists) {
                    suite.platform = Some(inst.agent_name.clone());
                    suite.properties.insert("step".into(), id.to_string());
                    nested.push((suite, list));
                }
            }
            if let (Some(stored), Some(tid)) =
                (result.and_then(|v| v.get("report_blob")), inst.task_id)
            {
                let bytes = stored.get("bytes").and_then(serde_json::Value::as_u64);
                let promised = stored
                    .get("summary")
                    .and_then(|s| serde_json::from_value::<Summary>(s.clone()).ok());
                let title = format!("{title} [{}]: report", inst.agent_name);
                match (bytes, promised) {
                    (Some(bytes), Some(promised)) => uploaded.push(Uploaded {
                        task: tid,
                        bytes,
                        promised,
                        agent: inst.agent_name.clone(),
                        step: id.to_string(),
                        title,
                        started_at: inst.started_at,
                        attempt: inst.attempt,
                    }),
                    _ => cases.push(report_error(
                        title,
                        format!("task {tid}: its result's report_blob has no bytes or summary"),
                        id,
                        &inst.agent_name,
                        inst.started_at,
                        inst.attempt,
                    )),
                }
            }
            let mut output = None;
            let mut artifacts = Vec::new();
            let mut log_url = None;
            if let Some(tid) = inst.task_id {
                if let Ok(log) = state.blobs.read_log(&tid, 0).await {
                    let text = String::from_utf8_lossy(&log);
                    if !text.is_empty() {
                        output = Some(tail(&text, EXCERPT));
                    }
                }
                log_url = Some(format!("/api/tasks/{tid}/log"));
                if let Some((task, _)) =
                    records::get::<Task>(&state.store, &keys::task(&tid)).await?
                {
                    artifacts = task
                        .artifacts
                        .iter()
                        .map(|a| Link {
                            name: a.name.clone(),
                            url: a.url.clone(),
                        })
                        .collect();
                }
            }
            let duration_ms = match (inst.started_at, inst.finished_at) {
                (Some(s), Some(f)) => (f - s).num_milliseconds().max(0) as u64,
                _ => 0,
            };
            let mut properties = BTreeMap::from([("step".to_string(), id.to_string())]);
            if let Some(c) = inst.exit_code {
                properties.insert("exit_code".into(), c.to_string());
            }
            let (case_outcome, message) = expect(outcome(inst.status), inst.reason.clone());
            cases.push(Case {
                name: if fanned {
                    format!("{title} [{}]", inst.agent_name)
                } else {
                    title.clone()
                },
                outcome: case_outcome,
                duration_ms,
                message,
                output,
                log_url,
                artifacts,
                started_at: inst.started_at,
                agent: Some(inst.agent_name.clone()),
                attempts: inst.attempt,
                properties,
            });
        }
    }
    let duration_ms = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => (f - s).num_milliseconds().max(0) as u64,
        _ => 0,
    };
    let mut properties = BTreeMap::from([("run_id".to_string(), run.id.to_string())]);
    // A cancelled run's steps read as skipped, which would sum to a pass:
    // the mark makes every rendering say CANCELLED instead.
    if run.status == testbed_core::run::RunStatus::Cancelled {
        properties.insert(
            testbed_report::model::RUN_STATUS_PROPERTY.to_string(),
            "cancelled".to_string(),
        );
    }
    if let Some(e) = &run.environment {
        properties.insert("environment".into(), e.clone());
    }
    for (k, v) in &run.params {
        properties.insert(
            format!("param.{k}"),
            match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        );
    }
    let mut report = CompactReport::new(Report {
        kind: testbed_report::REPORT_KIND.to_string(),
        v: testbed_report::REPORT_VERSION,
        id: String::new(),
        name: run.plan_name.clone(),
        created_at: testbed_core::now(),
        started_at: run.started_at,
        finished_at: run.finished_at,
        properties,
        suites: vec![Suite {
            name: run.plan_name.clone(),
            platform: None,
            properties: BTreeMap::new(),
            started_at: run.started_at,
            duration_ms,
            cases,
            diagnostics: Vec::new(),
        }],
    });
    for (suite, list) in nested {
        report.push_suite(suite, list);
    }
    Ok((report, uploaded))
}

/// The error case standing in the plan's suite for a task's uploaded report
/// that cannot be counted: the run's report says so, never passes what is
/// there.
fn report_error(
    name: String,
    why: String,
    step: &str,
    agent: &str,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    attempts: u32,
) -> Case {
    Case {
        name,
        outcome: Outcome::Error,
        duration_ms: 0,
        message: Some(why),
        output: None,
        log_url: None,
        artifacts: Vec::new(),
        started_at,
        agent: Some(agent.to_string()),
        attempts,
        properties: BTreeMap::from([("step".to_string(), step.to_string())]),
    }
}

/// Stores a report: its canonical JSON as a blob, gzip-compressed (a
/// passing case then costs a few bytes; api/runs.rs reads both forms), its
/// summary in the store. The suites of `uploaded` reports follow the
/// report's own, copied from their blobs a line at a time as the report is
/// written to its blob (in parts), so neither is ever held whole: memory does
/// not grow with the cases.
async fn save(
    state: &AppState,
    mut report: CompactReport,
    uploaded: Vec<(Uploaded, Summary)>,
    run_id: Option<Uuid>,
) -> Result<Uuid, RecordError> {
    let id = Uuid::new_v4();
    report.head.id = id.to_string();
    let mut s = report.summary();
    for (_, got) in &uploaded {
        for (sum, add) in [
            (&mut s.total, got.total),
            (&mut s.passed, got.passed),
            (&mut s.failed, got.failed),
            (&mut s.errors, got.errors),
            (&mut s.skipped, got.skipped),
            (&mut s.xfailed, got.xfailed),
            (&mut s.xpassed, got.xpassed),
        ] {
            *sum += add;
        }
    }
    s.ok = s.failed == 0 && s.errors == 0 && !report.head.cancelled();
    let name = report.head.name.clone();
    let created_at = report.head.created_at;
    let blobs = state.blobs.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || write_report(&blobs, &handle, &id, &report, &uploaded))
        .await
        .map_err(|e| unavailable(format!("writing the report: {e}")))??;
    let record = ReportRecord {
        id,
        name,
        run_id,
        created_at,
        total: s.total,
        passed: s.passed,
        failed: s.failed,
        errors: s.errors,
        skipped: s.skipped,
        xfailed: s.xfailed,
        xpassed: s.xpassed,
        duration_ms: s.duration_ms,
        ok: s.ok,
    };
    records::put(&state.store, &keys::report(&id), &record, None).await?;
    Ok(id)
}

fn unavailable(what: String) -> RecordError {
    RecordError::Store(testbed_store::StoreError::Unavailable(what))
}

/// Writes report `id`: `report`'s suites, then each uploaded report's, on a
/// blocking thread (the JSON and gzip work is synchronous; blob I/O waits on
/// `handle`). A failure leaves no blob (the upload is aborted).
fn write_report(
    blobs: &crate::blobs::Blobs,
    handle: &tokio::runtime::Handle,
    id: &Uuid,
    report: &CompactReport,
    uploaded: &[(Uploaded, Summary)],
) -> Result<(), RecordError> {
    let out = blobs
        .writer_sync(handle, &keys::report_blob(id))
        .map_err(|e| unavailable(format!("blob store: {e}")))?;
    let written = testbed_report::json::write_stored_with(report, out, |w, mut written| {
        for (u, _) in uploaded {
            let path = keys::task_report_blob(&u.task);
            let Ok(Some((_, reader))) = blobs.open_sync(handle, &path) else {
                return Err(testbed_report::ReportError::Write(std::io::Error::other(
                    format!("the report blob {path} went away"),
                )));
            };
            let copied = testbed_report::copy_stored_suites(reader, w, written, &mut |s| {
                s.platform = Some(u.agent.clone());
                s.properties.insert("step".into(), u.step.clone());
            })?;
            written += copied.suites;
        }
        Ok(())
    });
    match written {
        Ok(out) => out
            .finish()
            .map_err(|e| unavailable(format!("blob store: {e}"))),
        Err(e) => Err(unavailable(format!("writing the report: {e}"))),
    }
}

/// Reads a task's uploaded report through once, writing nothing, to check
/// that it is what its result promised: a blob of the size the agent sent,
/// a whole gzip stream of the stored form, the same counts. Returns the
/// counts, or why it cannot be taken as the task's report.
fn check_uploaded(
    blobs: &crate::blobs::Blobs,
    handle: &tokio::runtime::Handle,
    u: &Uploaded,
) -> Result<Summary, String> {
    let (task, path) = (u.task, keys::task_report_blob(&u.task));
    let (size, reader) = match blobs.open_sync(handle, &path) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(format!("task {task}: its report blob {path} is missing")),
        Err(e) => return Err(format!("task {task}: reading its report blob {path}: {e}")),
    };
    if size != u.bytes {
        return Err(format!(
            "task {task}: its report blob {path} is {size} bytes, the task sent {}",
            u.bytes
        ));
    }
    let got = testbed_report::copy_stored_suites(reader, &mut std::io::sink(), 0, &mut |_| {})
        .map_err(|e| format!("task {task}: its report blob {path} is unreadable: {e}"))?
        .summary;
    let counts = |s: &Summary| {
        (
            s.total, s.passed, s.failed, s.errors, s.skipped, s.xfailed, s.xpassed,
        )
    };
    if counts(&got) != counts(&u.promised) {
        return Err(format!(
            "task {task}: its report blob {path} holds {} cases ({} failed), the task counted \
             {} ({} failed)",
            got.total, got.failed, u.promised.total, u.promised.failed
        ));
    }
    Ok(got)
}

pub async fn store_report(state: &AppState, run: &Run) -> Result<Uuid, RecordError> {
    let (mut report, uploaded) = build(state, run).await?;
    // Each uploaded report is read through before any of it goes into the
    // run's: one that is not whole becomes an error case in the plan's suite.
    let blobs = state.blobs.clone();
    let handle = tokio::runtime::Handle::current();
    let checked = tokio::task::spawn_blocking(move || {
        uploaded
            .into_iter()
            .map(|u| {
                let r = check_uploaded(&blobs, &handle, &u);
                (u, r)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| unavailable(format!("reading the tasks' reports: {e}")))?;
    let mut whole = Vec::new();
    for (u, r) in checked {
        match r {
            Ok(got) => whole.push((u, got)),
            Err(why) => {
                tracing::warn!(task = %u.task, "{why}");
                report.lists[0].push(report_error(
                    u.title.clone(),
                    why,
                    &u.step,
                    &u.agent,
                    u.started_at,
                    u.attempt,
                ));
            }
        }
    }
    save(state, report, whole, Some(run.id)).await
}

/// Seed 003's `/results/{testcase}/{environment}`: the latest result.
pub async fn record_result(
    state: &AppState,
    run: &Run,
    testcase: &str,
    environment: &str,
    st: &StepState,
) -> Result<(), RecordError> {
    let inst = st.instances.first();
    let status = match outcome(st.status) {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
        Outcome::Skip => "skip",
        _ => "error",
    };
    let record = ResultRecord {
        testcase: testcase.to_string(),
        environment: environment.to_string(),
        status: status.to_string(),
        run_id: run.id,
        task_id: inst.and_then(|i| i.task_id),
        agent: inst.map(|i| i.agent_name.clone()),
        exit_code: inst.and_then(|i| i.exit_code),
        duration_ms: inst.and_then(|i| match (i.started_at, i.finished_at) {
            (Some(s), Some(f)) => Some((f - s).num_milliseconds()),
            _ => None,
        }),
        message: st.reason.clone(),
        log_url: inst
            .and_then(|i| i.task_id)
            .map(|t| format!("/api/tasks/{t}/log")),
        finished_at: testbed_core::now(),
    };
    records::put(
        &state.store,
        &keys::result(testcase, environment),
        &record,
        None,
    )
    .await?;
    Ok(())
}
