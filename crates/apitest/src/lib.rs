//! API testing for Testbed.
//!
//! | module | holds |
//! | --- | --- |
//! | [`reply`] | [`Reply`]: the one answer shape every transport returns |
//! | [`transport`] | HTTP(S)/Unix/HTTP2, gRPC, QMP and `exec` transports |
//! | [`spool`] | cases kept on disk until the report is written: a few bytes a case in memory |

pub mod check;
pub mod files;
pub mod openapi;
pub mod reply;
pub mod runner;
pub mod spool;
pub mod suite;
pub mod template;
pub mod transport;

pub use reply::Reply;
pub use transport::TransportError;
pub mod postman;
pub mod problem;
pub use problem::Problem;
