//! One virtual user's connection: TCP (+ rustls with ALPN), then HTTP/1.1
//! on the built-in codec ([`crate::h1`]) or HTTP/2 on hyper's low-level
//! `client::conn::http2`; byte counting and the request/response exchange.
//! hyper's connection future is driven inline by the task that sends the
//! request instead of a spawned task, which saves two cross-task wake-ups
//! per request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::h1::{H1Error, H1};
use crate::metrics::ErrorKind;
use crate::plan::Protocol;
use crate::scenario::{Built, CompiledRequest, Origin};

type Body = Full<Bytes>;

/// Bytes moved on an HTTP/2 connection (TLS overhead included: counted on
/// TCP). Atomics only because hyper owns the I/O and wants it `Send`; one
/// thread touches them.
#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    read: AtomicU64,
    written: AtomicU64,
}

impl IoCounters {
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }
}

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A stream that counts the bytes it moves (for hyper-owned I/O).
pub(crate) struct Counted {
    inner: Stream,
    counters: Arc<IoCounters>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            this.counters.read.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            this.counters.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.counters.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

type Io = TokioIo<Counted>;

type H2Conn = http2::Connection<Io, Body, TokioExecutor>;

enum Proto {
    H1(H1),
    H2 {
        sender: http2::SendRequest<Body>,
        driver: Pin<Box<H2Conn>>,
        counters: Arc<IoCounters>,
    },
}

/// An open connection of one virtual user.
pub(crate) struct Conn {
    pub origin: Arc<Origin>,
    proto: Proto,
    /// The connection is unusable (closed, failed or timed out).
    dead: bool,
}

/// Why an exchange failed.
pub(crate) enum Failure {
    /// The connection closed before the request was taken (a keep-alive
    /// connection the server closed while idle): send again on a new
    /// connection without counting an error.
    Stale,
    Failed(ErrorKind),
}

/// TLS client settings shared by a run: the web roots, or any certificate
/// when `insecure`.
pub(crate) fn tls_config(protocol: Protocol, insecure: bool) -> Result<Arc<ClientConfig>, String> {
    let trust = if insecure {
        testbed_tls::Trust::AcceptAny
    } else {
        testbed_tls::Trust::WebRoots
    };
    let alpn: &[&[u8]] = match protocol {
        Protocol::Auto => &[b"h2", b"http/1.1"],
        Protocol::Http1 => &[b"http/1.1"],
        Protocol::Http2 => &[b"h2"],
    };
    testbed_tls::client_config(trust, None, alpn)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Maps an I/O or hyper error to the seed's error labels.
pub(crate) fn classify(err: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<rustls::Error>() {
            return ErrorKind::Tls;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::TimedOut => return ErrorKind::Timeout,
                io::ErrorKind::ConnectionRefused => return ErrorKind::Refused,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => return ErrorKind::Reset,
                _ => {}
            }
            if let Some(inner) = io.get_ref() {
                if inner.is::<rustls::Error>() {
                    return ErrorKind::Tls;
                }
            }
        }
        cur = e.source();
    }
    ErrorKind::Connection
}

/// Opens a connection to one of `addrs` and performs the TLS and HTTP
/// handshakes.
pub(crate) async fn connect(
    origin: Arc<Origin>,
    addrs: &[SocketAddr],
    tls: Option<&Arc<ClientConfig>>,
    protocol: Protocol,
) -> Result<Conn, ErrorKind> {
    let mut last = ErrorKind::Connection;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = classify(&e),
        }
    }
    let tcp = tcp.ok_or(last)?;
    // Requests are small and latency-sensitive: never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let (stream, h2) = if origin.https {
        let cfg = tls.ok_or(ErrorKind::Tls)?;
        let name = ServerName::try_from(origin.host.clone()).map_err(|_| ErrorKind::Tls)?;
        let tls_stream = TlsConnector::from(cfg.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| match classify(&e) {
                ErrorKind::Connection if e.kind() == io::ErrorKind::InvalidData => ErrorKind::Tls,
                k => k,
            })?;
        let alpn_h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let h2 = match protocol {
            Protocol::Http2 => true,
            Protocol::Http1 => false,
            Protocol::Auto => alpn_h2,
        };
        (Stream::Tls(Box::new(tls_stream)), h2)
    } else {
        (Stream::Plain(tcp), protocol == Protocol::Http2)
    };
    let proto = if h2 {
        let counters = Arc::new(IoCounters::default());
        let io = TokioIo::new(Counted {
            inner: stream,
            counters: counters.clone(),
        });
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| classify(&e))?;
        Proto::H2 {
            sender,
            driver: Box::pin(conn),
            counters,
        }
    } else {
        Proto::H1(H1::new(stream))
    };
    Ok(Conn {
        origin,
        proto,
        dead: false,
    })
}

impl Conn {
    pub(crate) fn is_dead(&self) -> bool {
        self.dead || matches!(&self.proto, Proto::H1(h) if h.closed)
    }

    /// Bytes (in, out) moved so far.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        match &self.proto {
            Proto::H1(h) => (h.bytes_in, h.bytes_out),
            Proto::H2 { counters, .. } => counters.get(),
        }
    }

    /// Polls `fut` together with the connection future until `fut` is done.
    /// `Err` means the connection ended first (the error is its reason).
    async fn drive<F: Future>(
        driver: &mut Pin<Box<H2Conn>>,
        dead: &mut bool,
        fut: F,
    ) -> Result<F::Output, Option<hyper::Error>> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            if *dead {
                return Poll::Ready(Err(None));
            }
            match driver.as_mut().poll(cx) {
                Poll::Ready(r) => {
                    *dead = true;
                    // The connection may have completed `fut` on its way out.
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(v) => Poll::Ready(Ok(v)),
                        Poll::Pending => Poll::Ready(Err(r.err())),
                    }
                }
                Poll::Pending => match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => Poll::Ready(Ok(v)),
                    Poll::Pending => Poll::Pending,
                },
            }
        })
        .await
    }

    /// Sends one request and reads the whole response, keeping the body in
    /// `body` only when `keep_body` (checks need it). `scratch` holds the
    /// encoded request when it is not static. Returns the status.
    pub(crate) async fn exchange(
        &mut self,
        req: &CompiledRequest,
        built: &Built<'_>,
        keep_body: bool,
        body: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> Result<u16, Failure> {
        let r = match &mut self.proto {
            Proto::H1(h1) => {
                let bytes = req.encode_h1(built, scratch);
                h1.exchange(bytes, req.is_head(), keep_body, body)
                    .await
                    .map_err(|e| match e {
                        H1Error::Stale => Failure::Stale,
                        H1Error::Failed(k) => Failure::Failed(k),
                    })
            }
            Proto::H2 { sender, driver, .. } => {
                Self::h2_exchange(
                    sender,
                    driver,
                    &mut self.dead,
                    req.request_h2(built),
                    keep_body,
                    body,
                )
                .await
            }
        };
        if r.is_err() {
            self.dead = true;
        }
        r
    }

    async fn h2_exchange(
        sender: &mut http2::SendRequest<Body>,
        driver: &mut Pin<Box<H2Conn>>,
        dead: &mut bool,
        req: Request<Body>,
        keep_body: bool,
        body: &mut Vec<u8>,
    ) -> Result<u16, Failure> {
        body.clear();
        match Self::drive(driver, dead, sender.ready()).await {
            Ok(Ok(())) => {}
            _ => return Err(Failure::Stale),
        }
        let fut = async {
            let resp = sender.send_request(req).await.map_err(|e| classify(&e))?;
            let status = resp.status().as_u16();
            let mut incoming = resp.into_body();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| classify(&e))?;
                if keep_body {
                    if let Some(data) = frame.data_ref() {
                        body.extend_from_slice(data);
                    }
                }
            }
            Ok(status)
        };
        match Self::drive(driver, dead, fut).await {
            Ok(r) => r.map_err(Failure::Failed),
            Err(e) => Err(Failure::Failed(
                e.map(|e| classify(&e)).unwrap_or(ErrorKind::Connection),
            )),
        }
    }
}
