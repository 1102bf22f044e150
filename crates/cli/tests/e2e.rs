//! Every integration test of this crate in one binary: one link and one
//! build of the shared harness instead of one per file (CI time), and one
//! pool of test threads across files. Each file is a module; run one with
//! `cargo test -p testbed-cli --test e2e <file>::`.

mod common;
#[path = "common/docs.rs"]
mod harness;

mod agent_crash;
mod api;
mod cli;
mod cluster;
mod console;
mod conventions;
mod docs;
mod examples;
mod faults;
mod first_hour;
mod first_start;
mod fuzz_corpus;
mod hostile;
mod load;
mod metrics;
mod newman_cli;
mod packaging;
mod perf_cli;
mod performance;
mod plans;
mod plans_first_hour;
mod platform;
// docs/plugins.md's worked example says `use crate::plugin::…`, as a
// plugin inside the agent does.
use testbed_agent::plugin;
mod plugin_guide;
mod restart;
mod tck;
mod traces;
mod transport;
mod trust;
