//! QEMU Machine Protocol: newline-delimited JSON over a Unix socket or TCP.
//!
//! The server may send asynchronous events at any time, also between a
//! command and its reply, so every event read while waiting for something
//! else is kept until a `wait_event` asks for it. Commands carry an `id`,
//! which QEMU echoes, so a late reply to a command that timed out is never
//! taken for the answer to the next one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{timeout_at, Instant as Deadline};

use super::{parse_duration, TransportError};
use crate::Reply;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// `query-qmp-schema` answers with a few hundred KiB; anything far beyond
/// that is a broken peer, not a reply.
const MAX_LINE: usize = 64 << 20;
/// Events nobody waits for would otherwise pile up for a session's life.
const MAX_EVENTS: usize = 4096;

/// Where the QMP monitor listens: exactly one of `socket` and `address`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QmpTarget {
    /// Path of a Unix socket (`-qmp unix:PATH,server=on,wait=off`).
    #[serde(default)]
    pub socket: Option<String>,
    /// `host:port` (`-qmp tcp:HOST:PORT,server=on,wait=off`).
    #[serde(default)]
    pub address: Option<String>,
    /// humantime, default 10s: for connecting and for each call that sets
    /// none of its own.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// One QMP step: exactly one of `execute` and `wait_event`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QmpCall {
    /// A command name, e.g. `query-status`.
    #[serde(default)]
    pub execute: Option<String>,
    /// The command's arguments, a JSON object.
    #[serde(default)]
    pub arguments: Option<Value>,
    /// An event name, e.g. `STOP`: the first such event received since the
    /// last one taken, whether it arrived before this step or during it.
    #[serde(default)]
    pub wait_event: Option<String>,
    /// humantime; defaults to the target's timeout.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A negotiated QMP connection (capabilities already exchanged).
pub struct QmpSession {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// Bytes read but not yet split into lines. Kept across calls, so a call
    /// that times out half-way through a line loses nothing.
    pending: Vec<u8>,
    events: VecDeque<Line>,
    next_id: u64,
    timeout: Duration,
    peer: String,
}

impl std::fmt::Debug for QmpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpSession")
            .field("peer", &self.peer)
            .field("buffered_events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// One decoded line from the server.
struct Line {
    raw: Vec<u8>,
    value: Value,
}

impl QmpSession {
    /// Connects, reads the greeting and leaves capabilities negotiation
    /// mode. Returns the session and the greeting (`{"QMP": {...}}`).
    pub async fn connect(target: &QmpTarget) -> Result<(Self, Value), TransportError> {
        let timeout =
            parse_duration(target.timeout.as_deref(), "timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        let deadline = Deadline::now() + timeout;
        let timed_out = || TransportError::Timeout(humantime::format_duration(timeout).to_string());
        let (reader, writer, peer): (
            Box<dyn AsyncRead + Send + Unpin>,
            Box<dyn AsyncWrite + Send + Unpin>,
            String,
        ) = match (&target.socket, &target.address) {
            (Some(path), None) => {
                let stream = timeout_at(deadline, UnixStream::connect(path))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| connect_error(path, e))?;
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w), path.clone())
            }
            (None, Some(address)) => {
                let stream = timeout_at(deadline, TcpStream::connect(address.as_str()))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| connect_error(address, e))?;
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w), address.clone())
            }
            _ => {
                return Err(TransportError::Invalid(
                    "a QMP target needs exactly one of `socket` and `address`".into(),
                ))
            }
        };
        let mut session = QmpSession {
            reader,
            writer,
            pending: Vec::new(),
            events: VecDeque::new(),
            next_id: 1,
            timeout,
            peer,
        };
        let greeting = timeout_at(deadline, session.read_line())
            .await
            .map_err(|_| timed_out())??;
        if greeting.value.get("QMP").is_none() {
            return Err(TransportError::Protocol(format!(
                "{} did not greet with QMP: {}",
                session.peer,
                String::from_utf8_lossy(&greeting.raw)
            )));
        }
        let reply = timeout_at(deadline, session.execute("qmp_capabilities", None))
            .await
            .map_err(|_| timed_out())??;
        if reply.value.get("return").is_none() {
            return Err(TransportError::Protocol(format!(
                "{} refused qmp_capabilities: {}",
                session.peer,
                String::from_utf8_lossy(&reply.raw)
            )));
        }
        Ok((session, greeting.value))
    }

    /// Runs a command or waits for an event.
    ///
    /// A command's reply has status 0 (`return`) or 1 (`error`), `json` the
    /// reply object and `body` its line. An event has no status and `json`
    /// the event object.
    pub async fn call(&mut self, call: &QmpCall) -> Result<Reply, TransportError> {
        let start = Instant::now();
        let timeout = parse_duration(call.timeout.as_deref(), "timeout")?.unwrap_or(self.timeout);
        let deadline = Deadline::now() + timeout;
        let timed_out = || TransportError::Timeout(humantime::format_duration(timeout).to_string());
        match (&call.execute, &call.wait_event) {
            (Some(command), None) => {
                if let Some(args) = &call.arguments {
                    if !args.is_object() {
                        return Err(TransportError::Invalid(
                            "QMP `arguments` must be an object".into(),
                        ));
                    }
                }
                let line = timeout_at(deadline, self.execute(command, call.arguments.as_ref()))
                    .await
                    .map_err(|_| timed_out())??;
                let status = if line.value.get("return").is_some() {
                    0
                } else if line.value.get("error").is_some() {
                    1
                } else {
                    return Err(TransportError::Protocol(format!(
                        "reply to `{command}` has neither `return` nor `error`: {}",
                        String::from_utf8_lossy(&line.raw)
                    )));
                };
                Ok(Reply {
                    status: Some(status),
                    body: line.raw,
                    json: Some(line.value),
                    duration: start.elapsed(),
                    ..Reply::default()
                })
            }
            (None, Some(name)) => {
                if call.arguments.is_some() {
                    return Err(TransportError::Invalid(
                        "QMP `arguments` go with `execute`, not `wait_event`".into(),
                    ));
                }
                let event = timeout_at(deadline, self.wait_event(name))
                    .await
                    .map_err(|_| timed_out())??;
                Ok(Reply {
                    status: None,
                    body: event.raw,
                    json: Some(event.value),
                    duration: start.elapsed(),
                    ..Reply::default()
                })
            }
            _ => Err(TransportError::Invalid(
                "a QMP step needs exactly one of `execute` and `wait_event`".into(),
            )),
        }
    }

    /// Events received and not yet taken by a `wait_event`, oldest first.
    pub fn buffered_events(&self) -> impl Iterator<Item = &Value> {
        self.events.iter().map(|e| &e.value)
    }

    async fn execute(
        &mut self,
        command: &str,
        arguments: Option<&Value>,
    ) -> Result<Line, TransportError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            request["arguments"] = args.clone();
        }
        let mut bytes = request.to_string().into_bytes();
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|e| self.io_error(e))?;
        self.writer.flush().await.map_err(|e| self.io_error(e))?;
        loop {
            let line = self.read_line().await?;
            if line.value.get("event").is_some() {
                self.keep_event(line);
            } else if line.value.get("id") == Some(&json!(id)) {
                return Ok(line);
            }
            // Anything else answers an earlier command that timed out.
        }
    }

    async fn wait_event(&mut self, name: &str) -> Result<Line, TransportError> {
        if let Some(pos) = self.events.iter().position(|e| is_event(&e.value, name)) {
            if let Some(event) = self.events.remove(pos) {
                return Ok(event);
            }
        }
        loop {
            let line = self.read_line().await?;
            if is_event(&line.value, name) {
                return Ok(line);
            }
            if line.value.get("event").is_some() {
                self.keep_event(line);
            }
            // A reply here answers a command that timed out earlier.
        }
    }

    fn keep_event(&mut self, event: Line) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The next non-empty line as JSON. Cancel-safe: partial input stays in
    /// `pending`.
    async fn read_line(&mut self) -> Result<Line, TransportError> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let mut raw: Vec<u8> = self.pending.drain(..=end).collect();
                raw.pop();
                if raw.last() == Some(&b'\r') {
                    raw.pop();
                }
                if raw.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let value = serde_json::from_slice(&raw).map_err(|e| {
                    TransportError::Protocol(format!(
                        "{} sent a line that is not JSON ({e}): {}",
                        self.peer,
                        String::from_utf8_lossy(&raw)
                    ))
                })?;
                return Ok(Line { raw, value });
            }
            if self.pending.len() > MAX_LINE {
                return Err(TransportError::Protocol(format!(
                    "{} sent a line longer than {} MiB",
                    self.peer,
                    MAX_LINE >> 20
                )));
            }
            let mut chunk = [0u8; 8192];
            let n = self
                .reader
                .read(&mut chunk)
                .await
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(TransportError::Io(format!(
                    "{}: QMP connection closed by QEMU",
                    self.peer
                )));
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    fn io_error(&self, e: std::io::Error) -> TransportError {
        TransportError::Io(format!("{}: {e}", self.peer))
    }
}

fn is_event(value: &Value, name: &str) -> bool {
    value.get("event").and_then(Value::as_str) == Some(name)
}

fn connect_error(peer: &str, e: std::io::Error) -> TransportError {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => TransportError::Refused(peer.to_owned()),
        std::io::ErrorKind::NotFound => {
            TransportError::Connect(format!("{peer}: no such socket (is QEMU running?)"))
        }
        _ => TransportError::Connect(format!("{peer}: {e}")),
    }
}
