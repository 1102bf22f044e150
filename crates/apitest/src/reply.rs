//! What every transport hands back: one [`Reply`] shape, so captures and
//! asserts work the same over HTTP, gRPC, QMP and `exec`.

use std::time::Duration;

use serde_json::Value;

/// The answer to one call, normalised across transports.
///
/// | transport | `status` | `headers` | `body` | `json` |
/// | --- | --- | --- | --- | --- |
/// | HTTP | HTTP status | response headers | body | body, when it parses as JSON |
/// | gRPC | gRPC status code (0 = OK) | metadata and trailers (`grpc-message`…) | last message, raw | the message as JSON; an array of messages for a stream |
/// | QMP | 0 for `return`, 1 for `error`, absent for an event | — | the reply line | the reply or event object |
/// | exec | exit code (128+signal when killed) | — | stdout | stdout, when it parses as JSON |
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: Option<i64>,
    /// Names in lower case; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub json: Option<Value>,
    /// Standard error of an `exec` call.
    pub stderr: Option<String>,
    pub duration: Duration,
}

impl Reply {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy for invalid UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Fills `json` from `body` when the body is JSON.
    pub fn parse_json(&mut self) {
        if self.json.is_none() && !self.body.is_empty() {
            self.json = serde_json::from_slice(&self.body).ok();
        }
    }
}
