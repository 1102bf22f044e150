//! Every integration test of this crate in one binary: one link and one
//! build of the shared harness instead of one per file (CI time), and one
//! pool of test threads across files. Each file is a module; run one with
//! `cargo test -p testbed-report --test formats <file>::`.

mod common;

mod html;
mod json;
mod junit;
mod model;
mod summary;
mod tap;
