//! Dispatch benchmark: the round trip of a no-op task (HTTP POST → result
//! stored), and throughput with several agents, on the embedded store or on
//! etcd. Server and agents run in this process over real loopback sockets;
//! completion is observed by watching the store, so the figures include
//! HTTP, the agent protocol and every store write, and nothing else.
//!
//! cargo run --release -p testbed-bench --bin dispatch -- --store redb
//! cargo run --release -p testbed-bench --bin dispatch -- --store etcd://127.0.0.1:2379

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use testbed_core::keys;
use testbed_core::task::Task;
use testbed_store::DynStore;
use tokio::sync::oneshot;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// `redb` (a fresh file) or an etcd spec such as `etcd://127.0.0.1:2379`.
    #[arg(long, default_value = "redb")]
    store: String,
    /// Sequential round trips for the latency figure.
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// Agents for the throughput figure.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Tasks for the throughput figure.
    #[arg(long, default_value_t = 5000)]
    throughput_tasks: usize,
    /// Concurrent submitters for the throughput figure.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Concurrent API clients for the `POST /v2.1/testcases` latency figure
    /// (each posts without waiting for the task to end); 0 skips it.
    #[arg(long, default_value_t = 50)]
    api_clients: usize,
    /// Requests per API client.
    #[arg(long, default_value_t = 40)]
    api_requests: usize,
}

type Waiters = Arc<Mutex<(HashMap<Uuid, oneshot::Sender<()>>, HashSet<Uuid>)>>;

/// Completes a waiter whenever a task record turns terminal.
fn watch_results(store: DynStore, from: i64, waiters: Waiters) {
    tokio::spawn(async move {
        let Ok(mut stream) = store.watch(keys::TASKS, from).await else {
            return;
        };
        while let Some(Ok(ev)) = stream.next().await {
            let Ok(task) = serde_json::from_slice::<Task>(&ev.kv.value) else {
                continue;
            };
            if !task.status.is_terminal() {
                continue;
            }
            let mut w = waiters.lock().unwrap_or_else(|p| p.into_inner());
            match w.0.remove(&task.id) {
                Some(tx) => {
                    let _ = tx.send(());
                }
                None => {
                    w.1.insert(task.id);
                }
            }
        }
    });
}

async fn wait(waiters: &Waiters, id: Uuid) {
    let rx = {
        let mut w = waiters.lock().unwrap_or_else(|p| p.into_inner());
        if w.1.remove(&id) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        w.0.insert(id, tx);
        rx
    };
    let _ = rx.await;
}

async fn submit(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    host: &str,
) -> anyhow::Result<Uuid> {
    let r: Value = http
        .post(format!("{url}/v2.1/testcases"))
        .bearer_auth(token)
        .json(&json!({"plugin": "noop", "host": host, "method": "noop", "parameters": {}}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(r["task_id"].as_str().context("task_id")?.parse()?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bench = testbed_bench::Bench::start(&args.store, args.agents).await?;
    let (store, url, token, http) = (
        bench.store.clone(),
        bench.url.clone(),
        bench.token.clone(),
        bench.http.clone(),
    );

    let waiters: Waiters = Arc::default();
    watch_results(store.clone(), store.revision().await? + 1, waiters.clone());

    // Latency: one task at a time, addressed to one agent.
    let mut lat = Vec::with_capacity(args.tasks);
    // The part of each round trip until the HTTP answer (the task written
    // and assigned): the rest is relay, agent, settle and the watch.
    let mut queued = Vec::with_capacity(args.tasks);
    for _ in 0..args.tasks {
        let t0 = Instant::now();
        let id = submit(&http, &url, &token, "bench-0").await?;
        queued.push(t0.elapsed());
        wait(&waiters, id).await;
        lat.push(t0.elapsed());
    }
    lat.sort();
    queued.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "store={} round-trip of {} no-op tasks: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.store,
        args.tasks,
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.90)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "store={} of which until the POST answered (task created): p50 {:.2} ms, p90 {:.2} ms",
        args.store,
        ms(percentile(&queued, 0.50)),
        ms(percentile(&queued, 0.90)),
    );

    // Throughput: many submitters, the scheduler spreads over all agents.
    let t0 = Instant::now();
    let per = args.throughput_tasks / args.concurrency.max(1);
    let mut joins = Vec::new();
    for _ in 0..args.concurrency {
        let (http, url, token, waiters) =
            (http.clone(), url.clone(), token.clone(), waiters.clone());
        joins.push(tokio::spawn(async move {
            for _ in 0..per {
                let id = submit(&http, &url, &token, "bench").await?;
                wait(&waiters, id).await;
            }
            anyhow::Ok(())
        }));
    }
    for j in joins {
        j.await??;
    }
    let total = per * args.concurrency.max(1);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "store={} throughput with {} agents, {} submitters: {} tasks in {:.2} s = {:.0} tasks/s",
        args.store,
        args.agents,
        args.concurrency,
        total,
        secs,
        total as f64 / secs
    );

    // API latency: many clients posting at once; the answer (the task
    // queued) is what is timed, not the task's end.
    if args.api_clients > 0 {
        let mut joins = Vec::new();
        for _ in 0..args.api_clients {
            let (http, url, token, waiters) =
                (http.clone(), url.clone(), token.clone(), waiters.clone());
            let n = args.api_requests;
            joins.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(n);
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    let t0 = Instant::now();
                    ids.push(submit(&http, &url, &token, "bench").await?);
                    out.push(t0.elapsed());
                }
                // Drained before the next client's figures are gathered,
                // so the store is quiet again at the end.
                for id in ids {
                    wait(&waiters, id).await;
                }
                anyhow::Ok(out)
            }));
        }
        let mut lat = Vec::new();
        for j in joins {
            lat.extend(j.await??);
        }
        lat.sort();
        println!(
            "store={} POST /v2.1/testcases under {} clients ({} requests): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
            args.store,
            args.api_clients,
            lat.len(),
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.90)),
            ms(percentile(&lat, 0.99)),
        );
    }
    bench.shutdown().await;
    Ok(())
}
