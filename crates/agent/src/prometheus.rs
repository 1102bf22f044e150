//! The agent's own Prometheus metrics, served on `--metrics-listen` when
//! that is set (the server's `/metrics` counts what the fleet does; this
//! says what one machine does, and whether it reaches its server).
//!
//! Labels are bounded: `plugin` is one of the plugins this agent carries
//! (anything else counts as `other`), `status` one of the task statuses.
//! No task ids, no agent names.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use testbed_core::task::TaskStatus;
use testbed_telemetry::process::ProcessCollector;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    plugin: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Task durations from a no-op (milliseconds) to a long build (an hour).
fn duration_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
    ])
}

/// Waiting for a slot: none at all on an idle agent, up to the length of
/// the tasks ahead on a busy one.
fn wait_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
    ])
}

/// Everything the agent counts. Cheap to clone (the families are shared).
#[derive(Clone)]
pub struct AgentMetrics {
    registry: Arc<Registry>,
    plugins: Arc<Vec<String>>,
    connected: Gauge,
    sessions: Counter,
    disconnects: Counter,
    running: Gauge,
    queued: Gauge,
    queue_wait: Histogram,
    finished: Family<FinishedLabels, Counter>,
    duration: HistogramFamily<PluginLabels>,
}

/// The statuses a finished task can end in, registered at 0 from the start
/// so `rate()` and alerts see the series before it first moves.
const FINAL_STATUSES: [TaskStatus; 4] = [
    TaskStatus::Succeeded,
    TaskStatus::Failed,
    TaskStatus::Error,
    TaskStatus::Cancelled,
];

impl AgentMetrics {
    /// Metrics for an agent carrying `plugins`, running up to `capacity`
    /// tasks at once.
    pub fn new(plugins: Vec<String>, capacity: u32) -> Self {
        let mut registry = Registry::default();
        let connected = Gauge::default();
        registry.register(
            "testbed_agent_connected",
            "1 while the agent has a session with its server, else 0",
            connected.clone(),
        );
        let sessions = Counter::default();
        registry.register(
            "testbed_agent_sessions",
            "Sessions established with the server (the first one and every reconnect)",
            sessions.clone(),
        );
        let disconnects = Counter::default();
        registry.register(
            "testbed_agent_disconnects",
            "Sessions that ended other than by the agent's own shutdown",
            disconnects.clone(),
        );
        let capacity_gauge = Gauge::<i64>::default();
        capacity_gauge.set(i64::from(capacity));
        registry.register(
            "testbed_agent_capacity",
            "Tasks this agent runs at once (its capacity setting)",
            capacity_gauge,
        );
        let running = Gauge::default();
        registry.register(
            "testbed_agent_tasks_running",
            "Tasks holding one of the agent's slots (running)",
            running.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "testbed_agent_tasks_queued",
            "Tasks accepted from the server and waiting for a free slot (this agent's queue depth)",
            queued.clone(),
        );
        let queue_wait = wait_histogram();
        registry.register_with_unit(
            "testbed_agent_task_queue_wait",
            "Time from a task's acceptance until it got a slot (tasks cancelled while waiting not counted)",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "testbed_agent_tasks_finished",
            "Tasks finished on this agent, by plugin and final status",
            finished.clone(),
        );
        let duration: HistogramFamily<PluginLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "testbed_agent_task_duration",
            "Time from a task's acceptance to its end, by plugin",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "testbed_build",
            "The running Testbed version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(ProcessCollector));
        for plugin in &plugins {
            for status in FINAL_STATUSES {
                let _ = finished.get_or_create(&FinishedLabels {
                    plugin: plugin.clone(),
                    status: status.as_str(),
                });
            }
        }
        AgentMetrics {
            registry: Arc::new(registry),
            plugins: Arc::new(plugins),
            connected,
            sessions,
            disconnects,
            running,
            queued,
            queue_wait,
            finished,
            duration,
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    pub fn session_started(&self) {
        self.sessions.inc();
        self.connected.set(1);
    }

    pub fn session_ended(&self, by_shutdown: bool) {
        self.connected.set(0);
        if !by_shutdown {
            self.disconnects.inc();
        }
    }

    /// A task was accepted: it waits for a slot.
    pub fn task_accepted(&self) {
        self.queued.inc();
    }

    /// A task stopped waiting: it got a slot after `waited` (`None`: it was
    /// cancelled while waiting).
    pub fn task_slot(&self, waited: Option<Duration>) {
        self.queued.dec();
        if let Some(waited) = waited {
            self.running.inc();
            self.queue_wait.observe(waited.as_secs_f64());
        }
    }

    /// A task ended; `ran`: it had a slot ([`Self::task_slot`] with a wait).
    pub fn task_finished(&self, plugin: &str, status: TaskStatus, took: Duration, ran: bool) {
        if ran {
            self.running.dec();
        }
        // A plugin name comes from the server; only the ones this agent
        // carries become label values, so a bad task cannot add series.
        let plugin = if self.plugins.iter().any(|p| p == plugin) {
            plugin.to_string()
        } else {
            "other".to_string()
        };
        self.finished
            .get_or_create(&FinishedLabels {
                plugin: plugin.clone(),
                status: status.as_str(),
            })
            .inc();
        self.duration
            .get_or_create(&PluginLabels { plugin })
            .observe(took.as_secs_f64());
    }

    /// Serves `/metrics` on `listener` until `stop` fires.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        stop: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, testbed_telemetry::router(self.registry()))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tasks_with_bounded_labels() {
        let m = AgentMetrics::new(vec!["noop".into()], 4);
        m.session_started();
        for _ in 0..3 {
            m.task_accepted();
        }
        m.task_slot(Some(Duration::from_millis(1)));
        m.task_slot(Some(Duration::from_millis(2)));
        let text = testbed_telemetry::encode(&m.registry).unwrap();
        assert!(text.contains("testbed_agent_tasks_running 2"), "{text}");
        assert!(text.contains("testbed_agent_tasks_queued 1"), "{text}");
        assert!(
            text.contains("testbed_agent_task_queue_wait_seconds_count 2"),
            "{text}"
        );
        m.task_finished(
            "noop",
            TaskStatus::Succeeded,
            Duration::from_millis(3),
            true,
        );
        m.task_finished("made-up", TaskStatus::Error, Duration::from_millis(3), true);
        // The third is cancelled while it waits: it never ran.
        m.task_slot(None);
        m.task_finished(
            "noop",
            TaskStatus::Cancelled,
            Duration::from_millis(3),
            false,
        );
        let text = testbed_telemetry::encode(&m.registry).unwrap();
        assert!(text.contains("testbed_agent_connected 1"), "{text}");
        assert!(text.contains("testbed_agent_tasks_running 0"), "{text}");
        assert!(text.contains("testbed_agent_tasks_queued 0"), "{text}");
        assert!(
            text.contains("testbed_agent_task_queue_wait_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "testbed_agent_tasks_finished_total{plugin=\"noop\",status=\"succeeded\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "testbed_agent_tasks_finished_total{plugin=\"noop\",status=\"failed\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "testbed_agent_tasks_finished_total{plugin=\"other\",status=\"error\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("made-up"), "{text}");
        assert!(
            text.contains("testbed_agent_task_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("testbed_agent_capacity 4"), "{text}");
        m.session_ended(false);
        let text = testbed_telemetry::encode(&m.registry).unwrap();
        assert!(text.contains("testbed_agent_connected 0"), "{text}");
        assert!(text.contains("testbed_agent_disconnects_total 1"), "{text}");
    }
}
