//! Every integration test of this crate in one binary: one link and one
//! build of the shared support instead of one per file (CI time). Each file
//! is a module; run one with `cargo test -p testbed-agent --test plugins <file>::`.

#[path = "plugins_support.rs"]
mod support;

mod plugins_build_server;
mod plugins_exec;
mod plugins_linux_system;
mod plugins_load;
mod plugins_process;
