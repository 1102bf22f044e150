//! The spans of tasks, runs and steps (`testbed_telemetry::otel`): recorded
//! when they end, from the times on their records, by whichever replica
//! wrote the end — so a task's span covers submission to result even when
//! the replica that dispatched it is gone. Nothing here runs when traces
//! are off.
//!
//! A run's trace is `run` → `step` (one per step) → `task` (one per
//! attempt) → the agent's `task.execute`; a task outside a run is a trace
//! of its own.

use std::time::SystemTime;

use testbed_core::run::{Run, StepState};
use testbed_core::task::{Task, TaskStatus};
use testbed_telemetry::otel::{self, Finished, KeyValue, SpanRef};

pub use otel::enabled;

fn time(t: chrono::DateTime<chrono::Utc>) -> SystemTime {
    t.into()
}

/// The span of `task`.
pub fn task_ref(task: &Task) -> SpanRef {
    SpanRef::task(
        task.id.as_u128(),
        task.run.as_ref().map(|r| r.run_id.as_u128()),
    )
}

/// The `traceparent` the agent's span hangs under, when traces are on.
pub fn traceparent(task: &Task) -> Option<String> {
    otel::enabled().then(|| task_ref(task).traceparent())
}

/// Logs the dispatch of `task` inside a span of its trace.
pub fn dispatched(task: &Task) {
    let span = otel::child_of(
        task_ref(task),
        || tracing::info_span!("task.dispatch", task = %task.id, plugin = %task.plugin, method = %task.method, agent = %task.agent_name),
    );
    if !span.is_none() {
        let _in = span.entered();
        tracing::debug!(task = %task.id, agent = %task.agent_name, "task dispatched");
    }
}

/// Records the span of `task`, which just ended (once: called by the
/// write that ended it).
pub fn task_ended(task: &Task) {
    if !otel::enabled() {
        return;
    }
    let at = task_ref(task);
    {
        let span = otel::child_of(
            at,
            || tracing::info_span!("task.settle", task = %task.id, status = %task.status),
        );
        let _in = span.entered();
        tracing::debug!(task = %task.id, status = %task.status, "task finished");
    }
    let mut attributes = vec![
        KeyValue::new("testbed.task.id", task.id.to_string()),
        KeyValue::new("testbed.plugin", task.plugin.clone()),
        KeyValue::new("testbed.method", task.method.clone()),
        KeyValue::new("testbed.agent", task.agent_name.clone()),
        KeyValue::new("testbed.task.status", task.status.as_str()),
    ];
    if let Some(code) = task.exit_code {
        attributes.push(KeyValue::new("testbed.task.exit_code", i64::from(code)));
    }
    if let Some(r) = &task.run {
        attributes.push(KeyValue::new("testbed.run.id", r.run_id.to_string()));
        attributes.push(KeyValue::new("testbed.step", r.step.clone()));
    }
    let error = (task.status != TaskStatus::Succeeded).then(|| {
        task.error
            .clone()
            .unwrap_or_else(|| task.status.to_string())
    });
    otel::record(Finished {
        name: "task",
        at,
        parent: task
            .run
            .as_ref()
            .map(|r| SpanRef::step(r.run_id.as_u128(), &r.step)),
        start: time(task.created_at),
        end: time(task.finished_at.unwrap_or_else(testbed_core::now)),
        attributes,
        events: task
            .started_at
            .map(|t| vec![("started", time(t))])
            .unwrap_or_default(),
        error,
    });
}

/// Records the spans of the steps of `run` among `changed` that just
/// ended, and of `run` if it just ended (`run_changed`).
pub fn after_write<'a>(
    run: &Run,
    changed: impl IntoIterator<Item = &'a String>,
    run_changed: bool,
) {
    if !otel::enabled() {
        return;
    }
    let id = run.id.as_u128();
    for step in changed {
        let Some(st) = run.steps.get(step).filter(|s| s.status.is_terminal()) else {
            continue;
        };
        step_ended(run, step, st);
    }
    if run_changed && run.status.is_terminal() {
        let end = time(run.finished_at.unwrap_or_else(testbed_core::now));
        otel::record(Finished {
            name: "run",
            at: SpanRef::run(id),
            parent: None,
            start: time(run.created_at),
            end,
            attributes: vec![
                KeyValue::new("testbed.run.id", run.id.to_string()),
                KeyValue::new("testbed.plan", run.plan_name.clone()),
                KeyValue::new(
                    "testbed.run.status",
                    format!("{:?}", run.status).to_lowercase(),
                ),
            ],
            events: run
                .started_at
                .map(|t| vec![("started", time(t))])
                .unwrap_or_default(),
            error: run
                .reason
                .clone()
                .filter(|_| !matches!(run.status, testbed_core::run::RunStatus::Passed)),
        });
    }
}

fn step_ended(run: &Run, step: &str, st: &StepState) {
    let end = time(st.finished_at.unwrap_or_else(testbed_core::now));
    let start = st.started_at.map(time).unwrap_or(end);
    let status = st.status.as_str();
    otel::record(Finished {
        name: "step",
        at: SpanRef::step(run.id.as_u128(), step),
        parent: Some(SpanRef::run(run.id.as_u128())),
        start,
        end,
        attributes: vec![
            KeyValue::new("testbed.run.id", run.id.to_string()),
            KeyValue::new("testbed.step", step.to_string()),
            KeyValue::new("testbed.step.status", status),
            KeyValue::new("testbed.step.tasks", st.instances.len() as i64),
        ],
        events: Vec::new(),
        error: st.reason.clone().filter(|_| {
            !matches!(
                st.status,
                testbed_core::run::StepStatus::Passed | testbed_core::run::StepStatus::Skipped
            )
        }),
    });
}
