//! Compatibility kits for Testbed: run TAP-speaking test scripts against a
//! configured platform and turn their output into the common report model.
//!
//! | module | holds |
//! | --- | --- |
//! | [`parser`] | a streaming TAP 12/13/14 parser that judges scripts like `prove` |
//! | [`config`] | the kit configuration (`kit.toml`) and the environment scripts get |
//! | [`expect`] | known-broken expectations: failures become `xfail`, stale entries `xpass` |
//! | [`harness`] | finds and runs scripts in parallel with a time limit: [`run_kit`] |

pub mod parser;

pub use parser::{Parsed, Parser, ScriptExit, SCRIPT_CASE};
pub mod config;
pub mod expect;

pub use config::{ConfigError, KitConfig};
pub use expect::Expectations;
pub mod harness;

pub use harness::{run_kit, run_kit_compact, RunConfig};
