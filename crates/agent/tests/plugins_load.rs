//! The `load` plugin against a small HTTP/1.1 server in the test: windows
//! inline or as an artifact, live metrics, and cancel ending with a result.

use crate::support;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::Harness;
use testbed_agent::plugin::{MetricSink, Plugin};
use testbed_agent::plugins::load::{Load, WINDOWS_ARTIFACT};
use testbed_core::task::TaskStatus;

/// Keep-alive HTTP/1.1 server answering `200 ok`, counting requests.
fn serve() -> (String, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buf.drain(..end);
                    c.fetch_add(1, Ordering::SeqCst);
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, count)
}

fn plan(url: &str, secs: u64) -> Value {
    serde_json::to_value(testbed_load::LoadProfile::closed(
        url,
        1,
        Duration::from_secs(secs),
    ))
    .unwrap()
}

fn window_requests(ws: &[Value]) -> u64 {
    ws.iter().map(|w| w["requests"].as_u64().unwrap()).sum()
}

#[tokio::test]
async fn windows_inline_and_live() {
    let (url, count) = serve();
    let mut h = Harness::new();
    let (sink, mut live) = MetricSink::channel();
    h.ctx.metrics = sink;
    let out = Load
        .invoke("run", json!({"plan": plan(&url, 2)}), &h.ctx)
        .await
        .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded);
    let windows = out.result["windows"].as_array().unwrap();
    assert!(windows.len() >= 2);
    let total = out.result["requests"].as_u64().unwrap();
    assert!(total > 0);
    assert_eq!(window_requests(windows), total);
    assert_eq!(total, count.load(Ordering::SeqCst));
    let mut sent = Vec::new();
    while let Ok(w) = live.try_recv() {
        sent.push(w);
    }
    assert_eq!(&sent, windows, "every window also went out live");
    assert!(h.artifacts.names().is_empty());
}

#[tokio::test]
async fn long_runs_upload_their_windows() {
    let (url, _) = serve();
    let h = Harness::new();
    let out = Load
        .invoke(
            "run",
            json!({"plan": plan(&url, 2), "inline_windows": 1}),
            &h.ctx,
        )
        .await
        .unwrap();
    assert_eq!(out.result["windows_artifact"], WINDOWS_ARTIFACT);
    assert!(out.result.get("windows").is_none());
    let stored: Vec<Value> =
        serde_json::from_str(&h.artifacts.content(WINDOWS_ARTIFACT).unwrap()).unwrap();
    assert_eq!(
        window_requests(&stored),
        out.result["requests"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn cancel_stops_with_a_result() {
    let (url, _) = serve();
    let h = Harness::new();
    let cancel = h.ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cancel.cancel();
    });
    let started = std::time::Instant::now();
    let out = Load
        .invoke("run", json!({"plan": plan(&url, 60)}), &h.ctx)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.result["stopped"], true);
    assert!(out.result["requests"].as_u64().unwrap() > 0);
}
