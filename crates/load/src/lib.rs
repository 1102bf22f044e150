//! `testbed-load`: a fast HTTP load engine.
//!
//! - [`LoadProfile`]: scenario (requests, checks, think time, data variables),
//!   workload model ([`Load::Closed`] users with k6-style stages or
//!   [`Load::Open`] arrival rate, latency from the intended start), request
//!   timeout and thresholds. [`SeedConfig`] maps the seed-001 `config`
//!   (`concurrent_users`, `ramp_up_time`, `hold_time`, `test_type`,
//!   `target_url`, `request_timeout`) onto a plan with the documented
//!   `test_type` presets; [`LoadProfile::split`] shares a plan out across agents.
//! - [`start`] runs a plan on its own threads and returns a [`RunHandle`]:
//!   per-second [`Window`]s as they close, then the [`LoadReport`]; its
//!   [`RunControl`] pauses, resumes and stops.
//! - [`Window`]s carry HDR histograms and serialize to JSON (histogram as
//!   base64 V2), so windows from several engines can be shipped and merged
//!   exactly ([`Window::merge`], [`merge_windows`], [`Aggregate`],
//!   [`LoadReport::from_windows`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), testbed_load::LoadError> {
//! use std::time::Duration;
//! let mut plan = testbed_load::LoadProfile::closed("http://127.0.0.1:8080/", 50, Duration::from_secs(10));
//! plan.thresholds.push("p(99)<250".into());
//! let mut run = testbed_load::start(plan)?;
//! while let Some(w) = run.next_window().await {
//!     println!("{}s: {} req", w.index, w.requests);
//! }
//! let report = run.report().await?;
//! println!("p99 {} ms, passed: {}", report.summary.p99_ms, report.passed);
//! # Ok(()) }
//! ```
//!
//! What seed 001 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-001-http-api-and-performance-tests.

mod client;
pub mod duration;
mod engine;
mod error;
mod h1;
mod metrics;
pub mod output;
mod plan;
mod preset;
mod report;
mod scenario;
pub mod threshold;
mod worker;

pub use engine::{start, start_with, RunControl, RunHandle, RunOptions, RunState};
pub use error::{ConfigError, FieldError, LoadError, ThresholdError};
pub use metrics::{
    merge_windows, new_histogram, CheckCount, ErrorKind, Window, CAUSE_REFUSED, CAUSE_RESET,
    CAUSE_UNKNOWN_HOST, MAX_LATENCY_US, SIGFIG,
};
pub use plan::{
    Check, DataFormat, DataSource, Load, LoadProfile, Order, Protocol, RateStage, RequestSpec,
    Scenario, Stage, StatusMatch, ThinkTime,
};
pub use preset::{SeedConfig, TestType};
pub use report::{
    Aggregate, EndReason, ErrorCount, LoadReport, NamedCheckCount, SeriesPoint, Summary,
};
pub use threshold::{Threshold, ThresholdResult};

/// hdrhistogram, re-exported so users of [`Window::latency`] need not
/// depend on a matching version.
pub use hdrhistogram;
