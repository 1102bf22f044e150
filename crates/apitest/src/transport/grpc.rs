//! gRPC without generated code: `.proto` files are compiled when the suite
//! loads (protox, no `protoc`), requests and responses go through
//! prost-reflect's `DynamicMessage`, and the wire is HTTP/2 over TCP with
//! hyper — plain text (h2c), or TLS with rustls (ALPN `h2`, optionally a
//! client certificate) — so a suite can call any gRPC service it has the
//! protos for.
//!
//! # JSON mapping
//!
//! Requests accept anything the proto3 JSON mapping accepts (field names
//! in `snake_case` or `lowerCamelCase`, 64-bit integers as numbers or
//! strings, bytes as base64, enums by name or number). Unknown fields are
//! rejected, naming the field.
//!
//! Responses are rendered with the proto3 mapping except that:
//!
//! * field names are the ones written in the `.proto` file (`create_revision`,
//!   `TTL`), so a suite reads back the names it writes;
//! * fields holding their default value are included (`"count": "0"`,
//!   `"created": false`, `"events": []`), so asserting on a zero, `false` or
//!   empty value works instead of finding the field missing. Unset message
//!   fields and unset `oneof` members stay absent.
//!
//! As in the proto3 mapping, 64-bit integers are strings (`"revision": "5"`):
//! ids such as etcd lease ids exceed 2^53 and would be corrupted by any
//! consumer that reads JSON numbers as doubles. Bytes are base64 and enums
//! are names.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::client::conn::http2::SendRequest;
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nix::sys::socket::{recv, MsgFlags};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor,
    SerializeOptions,
};
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::time::{timeout_at, Instant as Deadline};
use tokio_rustls::TlsConnector;

use super::http::{rustls_config, TlsOptions};
use super::{parse_duration, TransportError};
use crate::Reply;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds one message and everything a call collects, so a runaway stream
/// cannot exhaust memory.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

const JSON_OPTIONS: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(false);

/// Where a gRPC service listens and which protos describe it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTarget {
    /// `host:port` or `http://host:port` (plain-text HTTP/2),
    /// `https://host:port` (HTTP/2 over TLS), or `unix:///path/to.sock`
    /// (plain-text HTTP/2 over a Unix socket, as containerd serves; a
    /// relative path is taken from the suite's directory).
    pub address: String,
    /// `.proto` files, relative to the suite's directory.
    pub protos: Vec<String>,
    /// Directories searched for `import`s, relative to the suite's directory.
    /// Each proto's own directory is searched after these.
    #[serde(default)]
    pub includes: Vec<String>,
    /// TLS settings (files relative to the suite's directory); giving them
    /// turns TLS on for a bare `host:port` too.
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    /// Metadata sent with every call (a call's own `metadata` wins), such
    /// as containerd's `containerd-namespace`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One gRPC call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcCall {
    /// `package.Service/Method`, e.g. `etcdserverpb.KV/Put`.
    pub method: String,
    /// The request message as proto3 JSON; `{}` when neither this nor
    /// `messages` is given.
    #[serde(default)]
    pub message: Option<Value>,
    /// Several request messages, for client-streaming and bidi methods.
    #[serde(default)]
    pub messages: Option<Vec<Value>>,
    /// Request metadata (HTTP/2 headers); names are lower-cased.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Collect a stream for a bounded time or count instead of waiting for
    /// the server to end it.
    #[serde(default)]
    pub stream: Option<StreamOptions>,
    /// humantime, default 10s. Bounds the whole call, or for a `stream`
    /// call, connecting and the response headers.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// How long to listen to a stream that the server would not end by itself
/// (etcd `Watch`, `LeaseKeepAlive`). The request stream stays open while
/// listening; the call ends, with status 0 unless the server ended it with
/// another, when `max_messages` have arrived or `timeout` has passed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub max_messages: Option<usize>,
    /// humantime; defaults to the call's timeout.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A compiled set of protos plus one HTTP/2 connection, shared by every
/// call and re-opened on the next call after it breaks.
pub struct GrpcClient {
    pool: DescriptorPool,
    /// The `:authority` of requests: `host:port`, or `localhost` over a
    /// Unix socket, as gRPC's own clients send.
    authority: String,
    /// What error messages call the server: the authority or the socket.
    peer: String,
    /// Set for a `unix://` address: connect here instead of over TCP.
    unix: Option<PathBuf>,
    /// The target's metadata, sent with every call.
    metadata: BTreeMap<String, String>,
    /// None for plain-text h2c.
    tls: Option<Tls>,
    connection: Mutex<Option<Connection>>,
}

/// One HTTP/2 connection: the handle requests go through, and why the
/// connection ended if it failed.
#[derive(Clone)]
struct Connection {
    sender: SendRequest<RequestBody>,
    /// Set by the task driving the connection when it ends with an error.
    /// Requests caught in that only learn "connection closed"; the cause (a
    /// TLS alert such as a rejected client certificate) is here.
    failure: watch::Receiver<Option<TransportError>>,
    /// The TLS error that broke the connection, if it is a TLS one.
    tls_error: Option<Arc<OnceLock<String>>>,
}

/// What every TLS connection of a client needs, built once from the target.
struct Tls {
    connector: TlsConnector,
    /// SNI and the name the server certificate must carry: the address's
    /// host, a DNS name or an IP address.
    server_name: ServerName<'static>,
}

impl fmt::Debug for GrpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClient")
            .field("peer", &self.peer)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl GrpcClient {
    /// Compiles the target's protos. Does not connect: the first call does.
    pub fn new(target: &GrpcTarget, base_dir: &Path) -> Result<Self, TransportError> {
        if let Some(path) = unix_path(&target.address)? {
            if target.tls.is_some() {
                return Err(TransportError::Invalid(format!(
                    "gRPC address `{}` is a Unix socket but a `tls` section is given: \
                     TLS over a Unix socket is not supported",
                    target.address
                )));
            }
            let path = base_dir.join(path);
            let client = GrpcClient::new(
                &GrpcTarget {
                    address: "localhost:0".into(),
                    ..target.clone()
                },
                base_dir,
            )?;
            return Ok(GrpcClient {
                authority: "localhost".into(),
                peer: path.display().to_string(),
                unix: Some(path),
                ..client
            });
        }
        let (authority, https) = parse_address(&target.address)?;
        let tls = match (&target.tls, https) {
            // `http://` says plain text in so many words; doing TLS anyway,
            // or ignoring the tls section, would each surprise someone.
            (Some(_), Some(false)) => {
                return Err(TransportError::Invalid(format!(
                    "gRPC address `{}` is plain-text http:// but a `tls` section is given: \
                     use https:// or host:port",
                    target.address
                )))
            }
            (Some(options), _) => Some(tls(options, &authority, base_dir)?),
            (None, Some(true)) => Some(tls(&TlsOptions::default(), &authority, base_dir)?),
            (None, _) => None,
        };
        if target.protos.is_empty() {
            return Err(TransportError::Invalid(
                "gRPC target lists no `protos`: they describe the methods and messages".into(),
            ));
        }
        let protos: Vec<PathBuf> = target.protos.iter().map(|p| base_dir.join(p)).collect();
        let mut includes: Vec<PathBuf> = target.includes.iter().map(|p| base_dir.join(p)).collect();
        for (name, path) in target.protos.iter().zip(&protos) {
            if !path.is_file() {
                return Err(TransportError::Invalid(format!(
                    "proto file `{name}` not found at {}",
                    path.display()
                )));
            }
            // protox opens only files under an include directory, and a
            // proto's siblings are where its plain imports usually live.
            if let Some(dir) = path.parent() {
                if !includes.iter().any(|i| i == dir) {
                    includes.push(dir.to_path_buf());
                }
            }
        }
        let mut compiler = protox::Compiler::new(&includes)
            .map_err(|e| TransportError::Invalid(format!("proto include paths: {e:?}")))?;
        compiler.include_imports(true);
        for (name, path) in target.protos.iter().zip(&protos) {
            // Debug, not Display: only Debug carries file:line:column.
            compiler.open_file(path).map_err(|e| {
                TransportError::Invalid(format!("cannot compile proto `{name}`: {e:?}"))
            })?;
        }
        Ok(GrpcClient {
            pool: compiler.descriptor_pool(),
            peer: authority.clone(),
            unix: None,
            metadata: target.metadata.clone(),
            authority,
            tls,
            connection: Mutex::new(None),
        })
    }

    /// The compiled protos, e.g. to list services.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Makes one call. A non-zero gRPC status is a reply, not an error.
    pub async fn call(&self, call: &GrpcCall) -> Result<Reply, TransportError> {
        self.call_notify(call, None).await
    }

    /// Makes one call and says on `started` when it is under way: for a
    /// stream (a server-streaming method or a `stream` call) when its first
    /// message has arrived — etcd's Watch answers `created` once the watch
    /// is registered, so a write after that is seen — and for any other
    /// call as soon as it is sent. Dropped unsent when the call ends first.
    pub async fn call_notify(
        &self,
        call: &GrpcCall,
        mut started: Option<oneshot::Sender<()>>,
    ) -> Result<Reply, TransportError> {
        let start = Instant::now();
        let method = self.method(&call.method)?;
        if call.stream.is_none() && !method.is_server_streaming() {
            if let Some(tx) = started.take() {
                let _ = tx.send(());
            }
        }
        let frames = encode_requests(&method, call)?;
        let mut merged = self.metadata.clone();
        merged.extend(call.metadata.clone());
        let metadata = metadata(&merged)?;
        let timeout =
            parse_duration(call.timeout.as_deref(), "timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        let call_deadline = Deadline::now() + timeout;
        let plan = match &call.stream {
            None => None,
            Some(opts) => {
                let listen =
                    parse_duration(opts.timeout.as_deref(), "stream.timeout")?.unwrap_or(timeout);
                Some(StreamPlan {
                    max_messages: opts.max_messages,
                    deadline: Deadline::now() + listen,
                })
            }
        };
        let keep_open = plan.is_some() && method.is_client_streaming();
        let headers_deadline = plan.as_ref().map_or(call_deadline, |p| p.deadline);
        let timed_out = || TransportError::Timeout(humantime::format_duration(timeout).to_string());

        let (mut connection, reused) = timeout_at(call_deadline, self.connection(false))
            .await
            .map_err(|_| timed_out())??;
        let (mut request_tx, request) = self.request(&method, &frames, &metadata, keep_open)?;
        let sent = timeout_at(headers_deadline, connection.sender.send_request(request))
            .await
            .map_err(|_| timed_out())?;
        let response = match sent {
            Ok(response) => response,
            // A reused connection may have died (server restarted, idle
            // timeout) since it was last checked; the server cannot have
            // answered on it, so the call goes once more on a new one.
            Err(e) if reused && connection_gone(&e) => {
                (connection, _) = timeout_at(call_deadline, self.connection(true))
                    .await
                    .map_err(|_| timed_out())??;
                let (tx, request) = self.request(&method, &frames, &metadata, keep_open)?;
                request_tx = tx;
                let sent = timeout_at(headers_deadline, connection.sender.send_request(request))
                    .await
                    .map_err(|_| timed_out())?;
                match sent {
                    Ok(response) => response,
                    Err(e) => return Err(self.failure(e, &connection).await),
                }
            }
            Err(e) => return Err(self.failure(e, &connection).await),
        };

        let (parts, mut body) = response.into_parts();
        let mut headers = Vec::new();
        push_headers(&mut headers, &parts.headers);
        let mut status = grpc_status(&parts.headers)?;
        if parts.status != StatusCode::OK && status.is_none() {
            return Err(TransportError::Protocol(format!(
                "{} answered HTTP {} without grpc-status: not a gRPC endpoint?",
                self.peer, parts.status
            )));
        }

        let mut deframer = Deframer::default();
        let mut messages: Vec<Bytes> = Vec::new();
        let mut cut_short = false;
        // A status in the headers is a trailers-only response: no body follows.
        while status.is_none() {
            if let Some(max) = plan.as_ref().and_then(|p| p.max_messages) {
                if messages.len() >= max {
                    messages.truncate(max);
                    cut_short = true;
                    break;
                }
            }
            let deadline = plan.as_ref().map_or(call_deadline, |p| p.deadline);
            let frame = match timeout_at(deadline, body.frame()).await {
                Err(_) if plan.is_some() => {
                    cut_short = true;
                    break;
                }
                Err(_) => return Err(timed_out()),
                Ok(None) => break,
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => return Err(self.failure(e, &connection).await),
            };
            match frame.into_data() {
                Ok(data) => {
                    deframer.push(data)?;
                    while let Some(message) = deframer.next()? {
                        messages.push(message);
                        if let Some(tx) = started.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        push_headers(&mut headers, &trailers);
                        status = grpc_status(&trailers)?;
                        if status.is_none() {
                            return Err(TransportError::Protocol(format!(
                                "{} sent trailers without grpc-status",
                                self.peer
                            )));
                        }
                    }
                }
            }
        }
        // Dropping the response body resets the stream and dropping the
        // sender ends the request stream: together they stop a Watch.
        drop(body);
        drop(request_tx);

        let status = match status {
            Some(code) => code,
            None if cut_short => 0,
            None => {
                return Err(TransportError::Protocol(format!(
                    "{} ended the stream without grpc-status",
                    self.peer
                )))
            }
        };
        let streaming = plan.is_some() || method.is_server_streaming();
        if !streaming && messages.len() > 1 {
            return Err(TransportError::Protocol(format!(
                "{} sent {} messages for unary method {}",
                self.peer,
                messages.len(),
                method.full_name()
            )));
        }
        let mut json = Vec::with_capacity(messages.len());
        for raw in &messages {
            json.push(decode_response(method.output(), raw)?);
        }
        Ok(Reply {
            status: Some(status),
            headers,
            body: messages.last().map(|m| m.to_vec()).unwrap_or_default(),
            json: if streaming {
                Some(Value::Array(json))
            } else {
                json.pop()
            },
            stderr: None,
            duration: start.elapsed(),
        })
    }

    fn method(&self, name: &str) -> Result<MethodDescriptor, TransportError> {
        let (service, method) = name
            .trim_start_matches('/')
            .rsplit_once('/')
            .ok_or_else(|| {
                TransportError::Invalid(format!(
                    "gRPC method `{name}` is not of the form package.Service/Method"
                ))
            })?;
        let Some(svc) = self.pool.get_service_by_name(service) else {
            let known: Vec<_> = self
                .pool
                .services()
                .map(|s| s.full_name().to_owned())
                .collect();
            return Err(TransportError::Invalid(format!(
                "unknown gRPC service `{service}`; the protos define: {}",
                known.join(", ")
            )));
        };
        let found = svc.methods().find(|m| m.name() == method);
        found.ok_or_else(|| {
            let known: Vec<_> = svc.methods().map(|m| m.name().to_owned()).collect();
            TransportError::Invalid(format!(
                "gRPC service `{service}` has no method `{method}`; it has: {}",
                known.join(", ")
            ))
        })
    }

    /// The shared connection, opening one if there is none or it broke;
    /// `fresh` forces a new one. Also says whether it was reused.
    async fn connection(&self, fresh: bool) -> Result<(Connection, bool), TransportError> {
        let mut slot = self.connection.lock().await;
        if !fresh {
            if let Some(connection) = slot.as_ref().filter(|c| !c.sender.is_closed()) {
                return Ok((connection.clone(), true));
            }
        }
        let connection = match &self.unix {
            Some(path) => connect_unix(path, &self.peer).await?,
            None => connect(&self.authority, self.tls.as_ref()).await?,
        };
        *slot = Some(connection.clone());
        Ok((connection, false))
    }

    /// Why a request on `connection` failed. When the connection itself
    /// went down the request only sees "closed", so the connection's own
    /// error is awaited briefly: its task records it as it ends.
    async fn failure(&self, e: hyper::Error, connection: &Connection) -> TransportError {
        if let Some(tls) = connection.tls_error.as_ref().and_then(|t| t.get()) {
            return TransportError::Tls(format!("{}: {tls}", self.peer));
        }
        if e.is_canceled() || e.is_closed() {
            let mut failure = connection.failure.clone();
            let recorded =
                tokio::time::timeout(Duration::from_secs(1), failure.wait_for(|f| f.is_some()))
                    .await;
            if let Ok(Ok(cause)) = recorded {
                if let Some(cause) = cause.as_ref() {
                    return cause.clone();
                }
            }
        }
        hyper_error(&self.peer, &e)
    }

    /// The HTTP/2 request carrying `frames`, and, when the request stream
    /// must stay open, the sender whose drop ends it.
    fn request(
        &self,
        method: &MethodDescriptor,
        frames: &[Bytes],
        metadata: &HeaderMap,
        keep_open: bool,
    ) -> Result<(Option<mpsc::Sender<Bytes>>, Request<RequestBody>), TransportError> {
        let (tx, rx) = mpsc::channel(frames.len().max(1));
        for frame in frames {
            // Cannot fail: the channel has room for every frame and its
            // receiver is alive.
            let _ = tx.try_send(frame.clone());
        }
        let uri = format!(
            "{}://{}/{}/{}",
            if self.tls.is_some() { "https" } else { "http" },
            self.authority,
            method.parent_service().full_name(),
            method.name()
        );
        let uri = uri
            .parse::<Uri>()
            .map_err(|e| TransportError::Invalid(format!("request URI `{uri}`: {e}")))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "testbed-apitest")
            .body(RequestBody { rx })
            .map_err(|e| TransportError::Invalid(format!("request: {e}")))?;
        for (name, value) in metadata {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        Ok((keep_open.then_some(tx), request))
    }
}

/// A hyper error in the transport layer's terms.
fn hyper_error(authority: &str, e: &hyper::Error) -> TransportError {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return TransportError::Io(format!("{authority}: {io}"));
        }
        source = err.source();
    }
    TransportError::Protocol(format!("{authority}: {}", error_chain(e)))
}

struct StreamPlan {
    max_messages: Option<usize>,
    deadline: Deadline,
}

/// The request body: gRPC frames fed through a channel, so a stream stays
/// open for as long as its sender lives.
#[derive(Debug)]
struct RequestBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// Splits the response body into gRPC length-prefixed messages.
#[derive(Default)]
struct Deframer {
    buf: BytesMut,
    total: usize,
}

impl Deframer {
    fn push(&mut self, data: Bytes) -> Result<(), TransportError> {
        self.total += data.len();
        if self.total > MAX_RESPONSE_BYTES {
            return Err(TransportError::Protocol(format!(
                "response exceeds {} MiB",
                MAX_RESPONSE_BYTES >> 20
            )));
        }
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    fn next(&mut self) -> Result<Option<Bytes>, TransportError> {
        let b = &self.buf;
        if b.len() < 5 {
            return Ok(None);
        }
        if b[0] != 0 {
            return Err(TransportError::Protocol(
                "compressed gRPC message, though no compression was offered".into(),
            ));
        }
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        if b.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

fn encode_requests(
    method: &MethodDescriptor,
    call: &GrpcCall,
) -> Result<Vec<Bytes>, TransportError> {
    let empty = Value::Object(serde_json::Map::new());
    let values: Vec<&Value> = match (&call.message, &call.messages) {
        (Some(_), Some(_)) => {
            return Err(TransportError::Invalid(
                "give either `message` or `messages`, not both".into(),
            ))
        }
        (Some(m), None) => vec![m],
        (None, Some(ms)) => ms.iter().collect(),
        (None, None) => vec![&empty],
    };
    if !method.is_client_streaming() && values.len() != 1 {
        return Err(TransportError::Invalid(format!(
            "{} takes exactly one request message, {} given",
            method.full_name(),
            values.len()
        )));
    }
    let input = method.input();
    let mut frames = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let which = if values.len() > 1 {
            format!("request message {i}")
        } else {
            "request message".to_owned()
        };
        let message = json_to_message(input.clone(), value).map_err(|e| {
            TransportError::Invalid(format!("{which} ({}): {e}", input.full_name()))
        })?;
        let encoded = message.encode_to_vec();
        let len = u32::try_from(encoded.len()).map_err(|_| {
            TransportError::Invalid(format!("{which} is too large for gRPC framing"))
        })?;
        let mut frame = BytesMut::with_capacity(5 + encoded.len());
        frame.put_u8(0);
        frame.put_u32(len);
        frame.extend_from_slice(&encoded);
        frames.push(frame.freeze());
    }
    Ok(frames)
}

/// Converts JSON to a message, naming the offending field on failure.
fn json_to_message(desc: MessageDescriptor, value: &Value) -> Result<DynamicMessage, String> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    DynamicMessage::deserialize_with_options(desc, de, &DeserializeOptions::new()).map_err(|e| {
        let path = track.path().to_string();
        if path == "." || path.is_empty() {
            e.to_string()
        } else {
            format!("field `{path}`: {e}")
        }
    })
}

fn decode_response(desc: MessageDescriptor, raw: &Bytes) -> Result<Value, TransportError> {
    let message = DynamicMessage::decode(desc.clone(), raw.clone()).map_err(|e| {
        TransportError::Protocol(format!("response is not a valid {}: {e}", desc.full_name()))
    })?;
    render(&message)
}

/// The message as JSON. The serializer fails on a `google.protobuf.Any`
/// whose type the protos do not define (containerd's container runtime
/// options say `containerd.runc.v1.Options`), which would lose the whole
/// reply; then the message is rendered field by field and each such Any
/// is kept as on the wire, `{"type_url", "value"}` with the value base64.
fn render(message: &DynamicMessage) -> Result<Value, TransportError> {
    match message.serialize_with_options(serde_json::value::Serializer, &JSON_OPTIONS) {
        Ok(json) => Ok(json),
        Err(e) => render_by_field(message).ok_or_else(|| {
            TransportError::Protocol(format!("cannot render response as JSON: {e}"))
        }),
    }
}

fn render_by_field(message: &DynamicMessage) -> Option<Value> {
    use base64::Engine;
    use prost_reflect::{Kind, ReflectMessage, Value as Field};
    let desc = message.descriptor();
    if desc.full_name() == "google.protobuf.Any" {
        let type_url = message.get_field_by_name("type_url")?.as_str()?.to_owned();
        let value = message.get_field_by_name("value")?;
        let value = base64::engine::general_purpose::STANDARD.encode(value.as_bytes()?);
        return Some(serde_json::json!({"type_url": type_url, "value": value}));
    }
    let mut out = serde_json::Map::new();
    for field in desc.fields() {
        // As the serializer does: unset messages and oneof members stay out.
        let singular_message = matches!(field.kind(), Kind::Message(_)) && !field.is_list();
        if !message.has_field(&field) && (singular_message || field.containing_oneof().is_some()) {
            continue;
        }
        let value = message.get_field(&field);
        let json = match &*value {
            Field::Message(m) => render(m).ok()?,
            Field::List(items) if matches!(field.kind(), Kind::Message(_)) => Value::Array(
                items
                    .iter()
                    .map(|i| i.as_message().and_then(|m| render(m).ok()))
                    .collect::<Option<_>>()?,
            ),
            Field::Map(entries) if entries.values().any(|v| v.as_message().is_some()) => {
                let mut map = serde_json::Map::new();
                for (key, v) in entries {
                    let key = match key {
                        prost_reflect::MapKey::Bool(b) => b.to_string(),
                        prost_reflect::MapKey::I32(n) => n.to_string(),
                        prost_reflect::MapKey::I64(n) => n.to_string(),
                        prost_reflect::MapKey::U32(n) => n.to_string(),
                        prost_reflect::MapKey::U64(n) => n.to_string(),
                        prost_reflect::MapKey::String(s) => s.clone(),
                    };
                    map.insert(key, render(v.as_message()?).ok()?);
                }
                Value::Object(map)
            }
            // Scalars, enums and lists of them hold no Any: the serializer
            // renders them alone, in a message holding only this field.
            _ => {
                let mut only = DynamicMessage::new(desc.clone());
                only.set_field(&field, value.into_owned());
                let json = only
                    .serialize_with_options(serde_json::value::Serializer, &JSON_OPTIONS)
                    .ok()?;
                json.get(field.name())?.clone()
            }
        };
        out.insert(field.name().to_owned(), json);
    }
    Some(Value::Object(out))
}

fn metadata(map: &BTreeMap<String, String>) -> Result<HeaderMap, TransportError> {
    let mut headers = HeaderMap::new();
    for (name, value) in map {
        let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| TransportError::Invalid(format!("invalid metadata name `{name}`")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| TransportError::Invalid(format!("invalid value for metadata `{name}`")))?;
        headers.insert(header, value);
    }
    Ok(headers)
}

fn push_headers(out: &mut Vec<(String, String)>, map: &HeaderMap) {
    for (name, value) in map {
        let text = String::from_utf8_lossy(value.as_bytes());
        // The spec percent-encodes grpc-message; asserts want the text.
        let text = if name == "grpc-message" {
            percent_decode(&text)
        } else {
            text.into_owned()
        };
        out.push((name.as_str().to_owned(), text));
    }
}

fn grpc_status(map: &HeaderMap) -> Result<Option<i64>, TransportError> {
    let Some(value) = map.get("grpc-status") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    text.parse::<i64>()
        .map(Some)
        .map_err(|_| TransportError::Protocol(format!("grpc-status `{text}` is not a number")))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `host:port` from `host:port` or `http[s]://host:port[/]`, and whether
/// the scheme asked for TLS (`Some(true)`), plain text (`Some(false)`) or
/// was left out (`None`).
fn parse_address(address: &str) -> Result<(String, Option<bool>), TransportError> {
    let (rest, https) = if let Some(rest) = address.strip_prefix("http://") {
        (rest, Some(false))
    } else if let Some(rest) = address.strip_prefix("https://") {
        (rest, Some(true))
    } else if address.contains("://") {
        return Err(TransportError::Invalid(format!(
            "gRPC address `{address}`: only http:// and https:// are supported"
        )));
    } else {
        (address, None)
    };
    let authority = rest.trim_end_matches('/');
    let valid = authority
        .parse::<http::uri::Authority>()
        .ok()
        .filter(|a| a.port_u16().is_some());
    match valid {
        Some(a) => Ok((a.as_str().to_owned(), https)),
        None => Err(TransportError::Invalid(format!(
            "gRPC address `{address}` is not host:port"
        ))),
    }
}

/// The TLS side of a client: rustls offering only `h2`, as gRPC requires,
/// and the host of `authority` as the server name.
fn tls(options: &TlsOptions, authority: &str, base_dir: &Path) -> Result<Tls, TransportError> {
    let config = rustls_config(options, base_dir, &[b"h2"])?;
    let host = authority
        .parse::<http::uri::Authority>()
        .map_err(|e| TransportError::Invalid(format!("gRPC address `{authority}`: {e}")))?;
    // An IPv6 host keeps its brackets in an authority; a server name has none.
    let host = host.host().trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_owned()).map_err(|e| {
        TransportError::Invalid(format!(
            "gRPC address `{authority}`: not a TLS server name: {e}"
        ))
    })?;
    Ok(Tls {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// The socket path of a `unix:` address (`unix:///run/x.sock`,
/// `unix:/run/x.sock`, `unix:rel.sock`), or None for any other address.
fn unix_path(address: &str) -> Result<Option<PathBuf>, TransportError> {
    let Some(rest) = address.strip_prefix("unix:") else {
        return Ok(None);
    };
    let path = match rest.strip_prefix("//") {
        // unix://HOST/path has no meaning for a socket; only an empty host.
        Some(after) if after.starts_with('/') => after,
        Some(_) => {
            return Err(TransportError::Invalid(format!(
                "gRPC address `{address}`: write a Unix socket as unix:///absolute/path or unix:relative/path"
            )))
        }
        None => rest,
    };
    if path.is_empty() {
        return Err(TransportError::Invalid(format!(
            "gRPC address `{address}` names no socket"
        )));
    }
    Ok(Some(PathBuf::from(path)))
}

async fn connect_unix(path: &Path, peer: &str) -> Result<Connection, TransportError> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| match e.kind() {
            // A socket file left by a daemon that died refuses; a missing
            // one is as good as refused: nobody listens there.
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                TransportError::Refused(format!("{peer}: {e}"))
            }
            _ => TransportError::Connect(format!("{peer}: {e}")),
        })?;
    handshake(TokioIo::new(stream), peer, None).await
}

async fn connect(authority: &str, tls: Option<&Tls>) -> Result<Connection, TransportError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| TransportError::Dns(format!("{authority}: {e}")))?
        .collect();
    let mut last_error = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let stream = match (stream, last_error) {
        (Some(s), _) => s,
        (None, Some(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(TransportError::Refused(authority.to_owned()))
        }
        (None, Some(e)) => return Err(TransportError::Connect(format!("{authority}: {e}"))),
        (None, None) => return Err(TransportError::Dns(format!("{authority}: no addresses"))),
    };
    // Small gRPC frames would otherwise wait for Nagle; failing to set it
    // only costs latency.
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return handshake(TokioIo::new(stream), authority, None).await;
    };
    let stream = tls
        .connector
        .connect(tls.server_name.clone(), stream)
        .await
        // The innermost cause (unknown issuer, name mismatch, an alert from
        // the server) is what tells the user which setting to fix.
        .map_err(|e| TransportError::Tls(format!("{authority}: {}", innermost(&e))))?;
    // No ALPN check is needed: rustls fails the handshake if the server
    // picks a protocol other than the offered h2, and a server without
    // ALPN may still speak HTTP/2, in which case the preface will tell.
    let error = Arc::new(OnceLock::new());
    let stream = TlsIo {
        inner: stream,
        error: error.clone(),
    };
    handshake(TokioIo::new(stream), authority, Some(error)).await
}

/// A TLS stream that remembers the TLS error that broke it. A server that
/// rejects the client certificate says so with an alert after the client's
/// side of a TLS 1.3 handshake is done, so it arrives as an I/O error once
/// HTTP/2 runs, and h2 keeps only such an error's kind and text.
struct TlsIo {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
    error: Arc<OnceLock<String>>,
}

impl TlsIo {
    fn note<T>(&self, result: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result {
            if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                // The first error is the cause; later ones are its echoes.
                let _ = self.error.set(tls.to_string());
            }
        }
        result
    }

    /// After a failed write: a server that hangs up after an alert makes
    /// the next write fail with a broken pipe while the alert, the actual
    /// reason, still waits unread. The runtime has not yet seen the socket
    /// become readable, so a read through it would only say "pending";
    /// the bytes are taken straight from the socket and given to rustls.
    fn note_write<T>(&mut self, result: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if matches!(result, Poll::Ready(Err(_))) && self.error.get().is_none() {
            self.read_alert();
        }
        self.note(result)
    }

    fn read_alert(&mut self) {
        let (tcp, tls) = self.inner.get_mut();
        let mut buf = [0u8; 4096];
        // An alert is one small record; the bound only stops a server
        // that keeps sending.
        for _ in 0..16 {
            let n = match recv(tcp.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut data = &buf[..n];
            while !data.is_empty() {
                if tls.read_tls(&mut data).is_err() {
                    return;
                }
                if let Err(e) = tls.process_new_packets() {
                    let _ = self.error.set(e.to_string());
                    return;
                }
            }
        }
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(result)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.note_write(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note_write(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Starts HTTP/2 on an open connection, plain or TLS; `tls_error` is where
/// a TLS connection records the TLS error that ends it.
async fn handshake<T>(
    io: T,
    authority: &str,
    tls_error: Option<Arc<OnceLock<String>>>,
) -> Result<Connection, TransportError>
where
    T: Read + Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(io)
        .await
        .map_err(|e| {
            TransportError::Protocol(format!(
                "HTTP/2 handshake with {authority}: {}",
                error_chain(&e)
            ))
        })?;
    // Requests see only that the connection closed; the reason goes to
    // `failure` for them to report. A receiver that is gone needs no reason.
    let (record, failure) = watch::channel(None);
    let authority = authority.to_owned();
    let seen = tls_error.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            let cause = match seen.as_ref().and_then(|t| t.get()) {
                Some(tls) => TransportError::Tls(format!("{authority}: {tls}")),
                None => hyper_error(&authority, &e),
            };
            let _ = record.send(Some(cause));
        }
    });
    Ok(Connection {
        sender,
        failure,
        tls_error,
    })
}

/// Whether a request failed because its connection was already dead, as
/// opposed to the server rejecting or resetting this one request.
fn connection_gone(e: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    if e.is_closed() || e.is_canceled() {
        return true;
    }
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::UnexpectedEof
            );
        }
        source = err.source();
    }
    false
}

/// The last error of a chain, looking inside I/O errors, which wrap the
/// TLS error of a failed handshake but do not report it as their source.
fn innermost(e: &std::io::Error) -> String {
    let mut last: &(dyn StdError + 'static) = match e.get_ref() {
        Some(inner) => inner,
        None => return e.to_string(),
    };
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

fn error_chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        let more = err.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_addresses() {
        let path = |a: &str| unix_path(a).map(|p| p.map(|p| p.display().to_string()));
        assert_eq!(
            path("unix:///run/c.sock").ok().flatten().as_deref(),
            Some("/run/c.sock")
        );
        assert_eq!(
            path("unix:/run/c.sock").ok().flatten().as_deref(),
            Some("/run/c.sock")
        );
        assert_eq!(
            path("unix:c.sock").ok().flatten().as_deref(),
            Some("c.sock")
        );
        assert!(matches!(path("127.0.0.1:2379"), Ok(None)));
        for bad in ["unix://host/c.sock", "unix:", "unix://"] {
            assert!(
                matches!(path(bad), Err(TransportError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_unix_socket_with_tls_or_nobody_listening() {
        let dir = std::env::temp_dir().join(format!("tb-grpc-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("m.proto"),
            "syntax = \"proto3\";\npackage m;\nmessage E {}\nservice S { rpc C(E) returns (E); }\n",
        )
        .expect("proto");
        let target = |tls: Option<TlsOptions>| GrpcTarget {
            address: format!("unix://{}/absent.sock", dir.display()),
            protos: vec!["m.proto".into()],
            includes: vec![],
            tls,
            metadata: BTreeMap::new(),
        };
        match GrpcClient::new(&target(Some(TlsOptions::default())), &dir) {
            Err(TransportError::Invalid(m)) => assert!(m.contains("Unix socket"), "{m}"),
            other => panic!("{other:?}"),
        }
        let client = GrpcClient::new(&target(None), &dir).expect("client");
        let call: GrpcCall =
            serde_json::from_value(serde_json::json!({"method": "m.S/C"})).expect("call");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        match rt.block_on(client.call(&call)) {
            Err(TransportError::Refused(m)) => assert!(m.contains("absent.sock"), "{m}"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
