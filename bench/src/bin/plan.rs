//! Plan-engine benchmark: a plan of N no-op steps as a wide DAG (all
//! independent) and as an N-deep chain, on the embedded store or on etcd.
//! Reports the wall time per step, i.e. the controller's overhead per step
//! (the no-op plugin itself returns at once).
//!
//! cargo run --release -p testbed-bench --bin plan -- --steps 1000 --store redb

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "redb")]
    store: String,
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Wait for the run's end by polling `GET /api/runs/{id}` (every step,
    /// read and encoded) as this benchmark did before, instead of the run's
    /// summary record: shows what that polling cost.
    #[arg(long)]
    poll_api: bool,
    /// After each plan, where its time went: per step, the count and mean
    /// of the server's reconciles, store operations and dispatch latency
    /// (from `/metrics`, the difference across the plan).
    #[arg(long)]
    timings: bool,
}

/// The histograms `--timings` prints.
const TIMED: &[&str] = &[
    "testbed_reconcile_duration",
    "testbed_store_operation_duration",
    "testbed_dispatch_latency",
];

fn plan(name: &str, steps: usize, chain: bool) -> String {
    let mut y = format!("name: {name}\nsteps:\n");
    for i in 0..steps {
        let _ = write!(y, "  - id: s{i}\n    plugin: noop\n    method: noop\n");
        if chain && i > 0 {
            let _ = writeln!(y, "    depends_on: [s{}]", i - 1);
        }
    }
    y
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bench = testbed_bench::Bench::start(&args.store, args.agents).await?;
    let (url, token, http) = (&bench.url, &bench.token, &bench.http);
    for (shape, chain) in [("wide", false), ("chain", true)] {
        let before = if args.timings {
            bench.timings(TIMED).await?
        } else {
            Default::default()
        };
        let t0 = Instant::now();
        let run: Value = http
            .post(format!("{url}/api/runs"))
            .bearer_auth(token)
            .json(&json!({"plan": plan(shape, args.steps, chain)}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id: uuid::Uuid = run["id"].as_str().context("run id")?.parse()?;
        // The run's end is watched for in its summary (`/index/runs/{id}`,
        // written with the run-level record), one small read per poll: polling
        // `GET /api/runs/{id}`, which reads and encodes every step, cost the
        // shared CPU more with every step the run had done and made a long
        // chain look slower per step than it is.
        let summary_key = testbed_core::keys::run_index(&id);
        loop {
            let status = if args.poll_api {
                let r: Value = http
                    .get(format!("{url}/api/runs/{id}"))
                    .bearer_auth(token)
                    .send()
                    .await?
                    .json()
                    .await?;
                r["status"].as_str().unwrap_or("").to_string()
            } else if let Some(kv) = bench.store.get(&summary_key).await? {
                let s: Value = serde_json::from_slice(&kv.value)?;
                s["status"].as_str().unwrap_or("").to_string()
            } else {
                String::new()
            };
            if !status.is_empty() && status != "pending" && status != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        let r: Value = http
            .get(format!("{url}/api/runs/{id}"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let status = r["status"].as_str().unwrap_or("").to_string();
        println!(
            "store={} plan={shape} steps={} status={status}{}: {:.2} s total, {:.2} ms per step",
            args.store,
            args.steps,
            if args.poll_api {
                " (polling the API)"
            } else {
                ""
            },
            secs,
            secs * 1000.0 / args.steps as f64
        );
        if args.timings {
            for (series, (sum, count)) in bench.timings(TIMED).await? {
                let (s0, c0) = before.get(&series).copied().unwrap_or_default();
                let n = count - c0;
                if n > 0.0 {
                    println!(
                        "  {series}: {:.2} per step, mean {:.3} ms",
                        n / args.steps as f64,
                        (sum - s0) * 1000.0 / n
                    );
                }
            }
        }
    }
    bench.shutdown().await;
    Ok(())
}
