//! A real hyper server for the engine tests, on 127.0.0.1:0 in its own
//! thread: `/ok` (JSON 200), `/404`, `/500`, `/slow?ms=N`, `/echo` (request
//! headers back), `/stall` (the first request after `arm_stall` freezes the
//! endpoint for 1 s), `/user/…` (recorded with its `x-user` header); every
//! request is counted.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Default)]
struct State {
    count: AtomicU64,
    h2: AtomicU64,
    stall_armed: AtomicBool,
    stall_until: Mutex<Option<Instant>>,
    seen: Mutex<Vec<String>>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn count(&self) -> u64 {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Requests that arrived over HTTP/2.
    pub fn h2_count(&self) -> u64 {
        self.state.h2.load(Ordering::SeqCst)
    }

    pub fn arm_stall(&self) {
        self.state.stall_armed.store(true, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }
}

/// Tests share two cores; timing assertions hold only if they run one at a time.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// HTTPS with the self-signed certificate in `tests/tls`, ALPN h2 and
/// http/1.1.
pub fn spawn_tls() -> TestServer {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    serve(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let tls = acceptor.accept(stream).await.ok()?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            Some((tls, h2))
        }
    })
}

pub fn spawn(h2_only: bool) -> TestServer {
    serve(move |stream| async move {
        let _ = stream.set_nodelay(true);
        Some((stream, h2_only))
    })
}

/// Serves [`handle`] on a fresh 127.0.0.1 port from a runtime of its own
/// thread. `open` turns each accepted connection into its transport and
/// whether it speaks HTTP/2 (or `None` to drop it).
fn serve<F, Fut, IO>(open: F) -> TestServer
where
    F: Fn(tokio::net::TcpStream) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<(IO, bool)>> + Send,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(State::default());
    let st = state.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let open = open.clone();
                tokio::spawn(async move {
                    let Some((io, h2)) = open(stream).await else {
                        return;
                    };
                    let io = TokioIo::new(io);
                    let svc = service_fn(move |req| handle(req, st.clone()));
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
    });
    TestServer { addr, state }
}

fn query_ms(req: &Request<Incoming>) -> u64 {
    req.uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    st.count.fetch_add(1, Ordering::SeqCst);
    if req.version() == hyper::Version::HTTP_2 {
        st.h2.fetch_add(1, Ordering::SeqCst);
    }
    let path = req.uri().path().to_string();
    let resp = |code: u16, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        Ok(r)
    };
    match path.as_str() {
        "/ok" => resp(200, r#"{"status":"ok","items":[1,2,3]}"#.into()),
        "/404" => resp(404, "not found".into()),
        "/500" => resp(500, "boom".into()),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_ms(&req))).await;
            resp(200, "slow".into())
        }
        "/echo" => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            resp(200, out)
        }
        "/stall" => {
            let until = {
                let mut g = st.stall_until.lock().unwrap();
                if st.stall_armed.swap(false, Ordering::SeqCst) {
                    *g = Some(Instant::now() + Duration::from_secs(1));
                }
                *g
            };
            if let Some(u) = until {
                tokio::time::sleep_until(u.into()).await;
            }
            resp(200, "ok".into())
        }
        p if p.starts_with("/user/") => {
            let user = req
                .headers()
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let q = req.uri().query().unwrap_or("").to_string();
            st.seen.lock().unwrap().push(format!("{p}?{q}|{user}"));
            resp(200, "hi".into())
        }
        _ => resp(200, "hello".into()),
    }
}
