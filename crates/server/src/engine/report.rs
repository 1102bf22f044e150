//! A finished run as a report (the common result model of
//! `testbed-report`), and the seed-003 latest result per test case.
//!
//! What seed 003 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-003-the-store.

use std::collections::BTreeMap;

use bytes::Bytes;
use testbed_core::keys;
use testbed_core::run::{ReportRecord, ResultRecord, Run, StepState, StepStatus};
use testbed_core::task::Task;
use testbed_report::{Case, CaseList, CompactReport, Link, Outcome, Report, Suite};
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

/// Builds the report of a run from its record, its tasks and their logs, in
/// the compact form: the reports of `tap` and `api` steps (a kit can hold a
/// million cases) are read from the task results straight into it, never as
/// one [`Case`] record per test.
pub async fn build(state: &AppState, run: &Run) -> Result<CompactReport, RecordError> {
    let mut cases = Vec::new();
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
            if let Some(r) = inst
                .result
                .as_ref()
                .and_then(|v| v.get("report"))
                .and_then(|v| testbed_report::json::compact_from_value(v).ok())
            {
                for (mut suite, list) in r.head.suites.into_iter().zip(r.lists) {
                    suite.platform = Some(inst.agent_name.clone());
                    suite.properties.insert("step".into(), id.to_string());
                    nested.push((suite, list));
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
    Ok(report)
}

/// Stores a report: its canonical JSON as a blob, its summary in the store.
pub async fn save(
    state: &AppState,
    mut report: CompactReport,
    run_id: Option<Uuid>,
) -> Result<Uuid, RecordError> {
    let id = Uuid::new_v4();
    report.head.id = id.to_string();
    // Compressed: a passing case costs a few bytes (api/runs.rs reads both forms).
    let body = testbed_report::to_stored(&report).map_err(|e| {
        RecordError::Store(testbed_store::StoreError::Unavailable(format!(
            "compressing the report: {e}"
        )))
    })?;
    state
        .blobs
        .put(&keys::report_blob(&id), Bytes::from(body))
        .await
        .map_err(|e| {
            RecordError::Store(testbed_store::StoreError::Unavailable(format!(
                "blob store: {e}"
            )))
        })?;
    let s = report.summary();
    let record = ReportRecord {
        id,
        name: report.head.name.clone(),
        run_id,
        created_at: report.head.created_at,
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

pub async fn store_report(state: &AppState, run: &Run) -> Result<Uuid, RecordError> {
    let report = build(state, run).await?;
    save(state, report, Some(run.id)).await
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
