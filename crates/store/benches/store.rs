//! Micro-benchmarks of the embedded store: the cost of the writes every
//! task makes (put, compare-and-swap, multi-key transaction), of many
//! writers at once (group commit), and of the reads the scheduler makes.
//!
//! cargo bench -p testbed-store

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use testbed_store::{Compare, DynStore, RedbStore, TxnOp};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn redb(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store: DynStore = rt
        .block_on(async { RedbStore::open(dir.path().join("bench.redb")).map(Arc::new) })
        .expect("open");
    let value = vec![b'x'; 512];

    let mut i = 0u64;
    c.bench_function("redb/put 512 B", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let (store, value) = (store.clone(), value.clone());
            async move {
                store
                    .put(&format!("/bench/put/{}", i % 1000), value, None)
                    .await
            }
        })
    });

    // Two keys in one transaction: one commit where two puts cost two.
    let mut j = 0u64;
    c.bench_function("redb/txn 2 puts", |b| {
        b.to_async(&rt).iter(|| {
            j += 1;
            let (store, value) = (store.clone(), value.clone());
            async move {
                let ops = ["a", "b"].map(|k| TxnOp::Put {
                    key: format!("/bench/txn/{k}/{}", j % 1000),
                    value: value.clone(),
                    lease: None,
                });
                store.txn(&[], ops.into()).await
            }
        })
    });

    // Sixteen writers at once, as when many tasks are dispatched together:
    // per iteration, the time until all sixteen puts are acknowledged.
    let mut round = 0u64;
    c.bench_function("redb/16 concurrent puts", |b| {
        b.to_async(&rt).iter(|| {
            round += 1;
            let (store, value) = (store.clone(), value.clone());
            async move {
                let puts = (0..16).map(|w| {
                    let (store, value) = (store.clone(), value.clone());
                    async move {
                        let key = format!("/bench/conc/{w}/{}", round % 100);
                        store.put(&key, value, None).await
                    }
                });
                futures_util::future::join_all(puts).await
            }
        })
    });

    c.bench_function("redb/get", |b| {
        b.to_async(&rt).iter(|| {
            let store = store.clone();
            async move { store.get("/bench/put/1").await }
        })
    });

    c.bench_function("redb/cas update", |b| {
        b.to_async(&rt).iter(|| {
            let (store, value) = (store.clone(), value.clone());
            async move {
                let cur = store.get("/bench/cas").await.ok().flatten();
                let cmp = cur.map_or(Compare::Absent, |kv| Compare::ModRevision(kv.mod_revision));
                store.txn_put("/bench/cas", cmp, value, None).await
            }
        })
    });

    rt.block_on(async {
        for k in 0..1000 {
            let _ = store
                .put(&format!("/bench/range/{k:04}"), vec![1; 64], None)
                .await;
        }
    });
    c.bench_function("redb/range 100 of 1000", |b| {
        b.to_async(&rt).iter(|| {
            let store = store.clone();
            async move { store.range("/bench/range/", None, 100).await }
        })
    });
}

criterion_group!(benches, redb);
criterion_main!(benches);
