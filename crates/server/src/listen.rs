//! The accept loop: bounded connections, a deadline on request headers,
//! optional TLS, graceful shutdown.
//!
//! `axum::serve` holds a connection for as long as its peer keeps it open,
//! so a few thousand clients that never finish a request header exhaust the
//! process's file descriptors. Here every connection takes a slot of a
//! semaphore (a connection beyond the limit is closed at once, so the
//! server's own descriptors stay available), and hyper drops a connection
//! whose request header is not complete within the header-read timeout —
//! the same timer runs while a keep-alive connection waits for its next
//! request, so it is also the idle timeout.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// Bounds on what one client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (WebSockets included); further ones are
    /// closed as soon as they are accepted.
    pub max_connections: usize,
    /// Connections open at once from one peer address, so that a single
    /// source cannot take every slot.
    pub max_connections_per_address: usize,
    /// Time a connection has to deliver a complete request header, counted
    /// from its opening (TLS handshake included) or from its previous
    /// response.
    pub header_read_timeout: Duration,
}

/// Counters of the listener, for logs and tests.
#[derive(Debug, Default)]
pub struct ListenStats {
    /// Connections closed at once because the limit was reached.
    pub refused: AtomicU64,
    /// `accept` failures other than a peer's early reset (e.g. `EMFILE`).
    pub accept_errors: AtomicU64,
}

/// Lowers `wanted` so that the connections leave descriptors for the
/// store, blob files and logs: past the process's open-file limit `accept`
/// would fail with `EMFILE` before the connection limit is reached.
pub fn effective_max_connections(wanted: usize) -> usize {
    const HEADROOM: u64 = 256;
    let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    else {
        return wanted.max(1);
    };
    let room = soft.saturating_sub(HEADROOM).max(HEADROOM / 4);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    wanted.min(room).max(1)
}

/// Serves `app` on `listener` until `stop`, then lets requests in flight
/// finish (for at most 5 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    stats: Arc<ListenStats>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let mut conns = JoinSet::new();
    let mut backoff = Duration::ZERO;
    let mut refused_report = ThrottledLog::new();
    let mut error_report = ThrottledLog::new();
    let mut address_report = ThrottledLog::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::ZERO;
                let Some(address) = per_address.take(peer.ip(), limits.max_connections_per_address)
                else {
                    let limit = limits.max_connections_per_address;
                    refused(
                        &stats,
                        &mut address_report,
                        "per-address connection",
                        limit,
                        peer,
                    );
                    drop(tcp);
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    let limit = limits.max_connections;
                    refused(&stats, &mut refused_report, "connection", limit, peer);
                    drop(tcp);
                    continue;
                };
                let permit = Slot {
                    _total: permit,
                    _address: address,
                };
                // Small, latency-bound messages (agent protocol, API calls)
                // must not wait for Nagle's algorithm and the peer's delayed ACK.
                let _ = tcp.set_nodelay(true);
                conns.spawn(connection(
                    tcp,
                    peer,
                    permit,
                    tls.clone(),
                    app.clone(),
                    limits,
                    stop.clone(),
                ));
            }
            // The peer gave up between SYN and accept: nothing to do.
            Err(e) if is_peer_error(&e) => {}
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: retrying at once would spin; wait
                // for connections to close.
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = error_report.note() {
                    tracing::error!("accepting connections failed {n} time(s): {e}");
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connection(s) still busy at shutdown, closed",
            conns.len()
        );
    }
}

fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Open connections per peer address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        // An IPv4 client of a dual-stack socket is one address, not two.
        let ip = ip.to_canonical();
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The slots a connection holds: one of the total, one of its address's.
struct Slot {
    _total: OwnedSemaphorePermit,
    _address: AddressSlot,
}

/// Logs a repeated event at most every 10 s, with the count since.
struct ThrottledLog {
    last: Option<Instant>,
    pending: u64,
}

/// Counts a connection closed at once because `what` limit is reached, and
/// says so (at most every ten seconds, through `report`).
fn refused(
    stats: &ListenStats,
    report: &mut ThrottledLog,
    what: &str,
    limit: usize,
    peer: std::net::SocketAddr,
) {
    stats.refused.fetch_add(1, Ordering::Relaxed);
    if let Some(n) = report.note() {
        tracing::warn!(
            limit,
            "{what} limit reached: closed {n} new connection(s), the last from {peer}"
        );
    }
}

impl ThrottledLog {
    fn new() -> Self {
        ThrottledLog {
            last: None,
            pending: 0,
        }
    }

    fn note(&mut self) -> Option<u64> {
        self.pending += 1;
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if !due {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.pending))
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Slot,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    match tls {
        None => http(Counted { io: tcp, permit }, peer, app, limits, stop).await,
        Some(acceptor) => {
            // The handshake counts against the header deadline: a client
            // that stops mid-handshake must not hold its slot either.
            let started = Instant::now();
            let handshake = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)) => r,
            };
            match handshake {
                Ok(Ok(io)) => {
                    let left = limits.header_read_timeout.saturating_sub(started.elapsed());
                    let limits = Limits {
                        header_read_timeout: left.max(Duration::from_millis(1)),
                        ..limits
                    };
                    http(Counted { io, permit }, peer, app, limits, stop).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn http<IO>(
    io: Counted<IO>,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        // Handlers read the peer address as `ConnectInfo`, as with
        // `into_make_service_with_connect_info`.
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let done = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = stop.cancelled() => None,
    };
    let result = match done {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection closed: {e}");
    }
}

/// A connection's stream holding its slot: the slot is freed when the
/// socket is, which for a WebSocket is after the upgrade ends, not when
/// hyper hands the stream over.
struct Counted<IO> {
    io: IO,
    #[allow(dead_code)]
    permit: Slot,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
