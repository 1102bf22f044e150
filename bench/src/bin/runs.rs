//! Runs-list benchmark: `GET /api/runs` over N stored runs (each a finished
//! one-step no-op plan, created through the API), on the embedded store or
//! on etcd. Reports the time of a page far into the list, the way the
//! console's runs page asks for it.
//!
//! cargo run --release -p testbed-bench --bin runs -- --runs 10000 --store redb

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "redb")]
    store: String,
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Timed requests of the list (the median and the slowest are shown).
    #[arg(long, default_value_t = 11)]
    samples: usize,
}

const PLAN: &str = "name: one\nsteps:\n  - id: s\n    plugin: noop\n    method: noop\n";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bench = testbed_bench::Bench::start(&args.store, args.agents).await?;
    let (url, token, http) = (&bench.url, &bench.token, &bench.http);
    let t0 = Instant::now();
    let created: Vec<anyhow::Result<()>> = stream::iter(0..args.runs)
        .map(|_| async move {
            http.post(format!("{url}/api/runs"))
                .bearer_auth(token)
                .json(&json!({ "plan": PLAN }))
                .send()
                .await?
                .error_for_status()?;
            Ok(())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for c in created {
        c?;
    }
    // Wait until every run has ended, so the list is not racing the engine.
    loop {
        let mut open = 0;
        for status in ["pending", "running"] {
            let p: Value = http
                .get(format!("{url}/api/runs?status={status}&page_size=1"))
                .bearer_auth(token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            open += p["total"].as_u64().context("total")?;
        }
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "store={} runs={}: created and finished in {:.1} s",
        args.store,
        args.runs,
        t0.elapsed().as_secs_f64()
    );
    let page = (args.runs / 50 / 2).max(1);
    for (what, query) in [
        ("first page", "page_size=50".to_string()),
        ("a middle page", format!("page={page}&page_size=50")),
    ] {
        let mut times = Vec::new();
        for _ in 0..args.samples {
            let t = Instant::now();
            let p: Value = http
                .get(format!("{url}/api/runs?{query}"))
                .bearer_auth(token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            times.push(t.elapsed());
            anyhow::ensure!(
                p["total"].as_u64() == Some(args.runs as u64),
                "total {} != {}",
                p["total"],
                args.runs
            );
        }
        times.sort();
        println!(
            "store={} runs={} GET /api/runs?{query} ({what}): median {:.1} ms, slowest {:.1} ms",
            args.store,
            args.runs,
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0
        );
    }
    bench.shutdown().await;
    Ok(())
}
