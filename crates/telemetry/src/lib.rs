//! Prometheus exposition shared by the server and the agent.
//!
//! Both processes keep their own `prometheus_client` registry (what they
//! count differs); what they share is here: the usual `process_*` metrics
//! ([`process`]), the OpenMetrics content type, and [`router`], which
//! serves a registry at `/metrics` on a listen address of its own.
//!
//! Traces (OTLP export, trace ids in log lines) are in [`otel`].

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

pub mod otel;
pub mod process;

/// What `/metrics` answers with: OpenMetrics text, which Prometheus
/// negotiates first and which carries units and `_created` series.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry in OpenMetrics text.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry)?;
    Ok(body)
}

/// `/metrics` from `registry`, and a 404 naming the one path for anything
/// else. Meant for an address only the scraper reaches, so it asks no auth.
pub fn router(registry: Arc<Registry>) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move { exposition(&registry) }
            }),
        )
        .fallback(|uri: Uri| async move {
            (
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint: {} (this address serves /metrics only)\n",
                    uri.path()
                ),
            )
        })
}

fn exposition(registry: &Registry) -> Response {
    match encode(registry) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            body,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn encodes_a_registry_with_process_metrics() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("testbed_example", "An example", c.clone());
        registry.register_collector(Box::new(process::ProcessCollector));
        c.inc();
        let text = encode(&registry).unwrap();
        assert!(text.contains("testbed_example_total 1"), "{text}");
        if cfg!(target_os = "linux") {
            assert!(text.contains("process_resident_memory_bytes "), "{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
