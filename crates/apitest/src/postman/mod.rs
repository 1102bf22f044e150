//! Postman collection v2.0 and v2.1 support (v1 converted at load): load a collection (and an
//! environment and globals export), run it with Postman's scripting API in an
//! embedded JS sandbox, and report like newman. `tests/newman.rs` checks that
//! Newman's own collections give the counts Newman gives.
//!
//! | module | holds |
//! | --- | --- |
//! | [`collection`] | the collection model and its loader, which reports every problem with its location; v1 is converted to v2.0 first (`collection/v1.rs`) |
//! | [`data`] | iteration data files (JSON or CSV), one iteration per row |
//! | [`vars`] | variable scopes, `{{var}}` substitution, environment files |
//! | [`jar`] | the run's cookie jar, and Newman's tough-cookie jar files |
//! | `script` | the QuickJS sandbox and its `pm` prelude |
//! | `libs` | the libraries scripts may `require` (lodash, CryptoJS, moment…), loaded on first use |
//! | `send` | turning a request into HTTP: URL, headers, body, auth |
//! | `auth` | the signing auth helpers: digest, OAuth 1.0, Hawk, AWS Signature V4, Akamai EdgeGrid |
//! | [`run`](mod@run) | the runner and its results |
//! | [`newman`] | newman's CLI text output |

mod auth;
pub mod collection;
pub mod data;
pub mod jar;
mod libs;
mod locate;
pub mod newman;
mod proxy;
pub mod run;
mod script;
mod send;
pub mod vars;

pub use collection::{load, Collection};
pub use data::{load_data, DataFormat};
pub use jar::{cookie_jar_json, load_cookie_jar, JarCookie};
pub use newman::{
    ascii, newman_json, newman_scope, newman_stats, newman_summary, NewmanJson, Transcript,
};
pub use run::{
    run, run_observed, AssertionResult, ConsoleLine, Count, Execution, Failure, Observer,
    PostmanRun, ResponseInfo, RunOptions, Stats, Timings,
};
pub use vars::{load_environment, Vars};

use crate::problem::Problem;

/// A JSON syntax error, at serde_json's line and column.
pub(crate) fn syntax_problem(e: &serde_json::Error) -> Problem {
    let message = e.to_string();
    // serde_json appends " at line L column C"; the position has its own fields.
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    let p = Problem::new("", format!("invalid JSON: {message}"));
    if e.line() > 0 {
        p.at(e.line(), e.column())
    } else {
        p
    }
}
