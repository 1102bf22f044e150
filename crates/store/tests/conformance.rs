//! One conformance suite for every `Store` backend.
//!
//! The cases in `cases` take a `DynStore` and know nothing of the backend;
//! the `conformance!` macro instantiates all of them once per backend (`mod
//! redb`, `mod etcd`), so both backends are held to exactly the same
//! contract. Backend-specific behaviour (reopening a file, restarting or
//! losing etcd members) is tested in `redb_specific` and `etcd_specific`.
//!
//! The etcd tests run a real `etcd` (3.4+) per test on free loopback ports;
//! without the binary they fail with instructions rather than skip, so a
//! green run always means both backends were checked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use testbed_store::{
    Compare, DynStore, EtcdOptions, EtcdStore, Event, EventKind, LeaseId, RedbOptions, RedbStore,
    Store, StoreError, TxnOp, WatchStream,
};

/// How long any single expected thing (an event, a lease expiry) may take
/// before the test fails. Generous: a loaded CI machine must not flake, and
/// a passing test never waits this long.
const PATIENCE: Duration = Duration::from_secs(10);

/// The key prefix the etcd store under test is given, to check that the
/// root prefix is applied and stripped everywhere.
const ETCD_ROOT: &str = "/conformance";

struct Fixture {
    store: DynStore,
    /// Keeps the backend alive (temp dir, etcd process); dropped after
    /// `store`, as fields drop in declaration order.
    _guard: Box<dyn std::any::Any + Send>,
}

async fn redb_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(dir),
    }
}

async fn etcd_fixture() -> Fixture {
    let cluster = EtcdCluster::start(1, &[]).await;
    let store = EtcdStore::connect(
        &cluster.spec(),
        EtcdOptions {
            prefix: ETCD_ROOT.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(cluster),
    }
}

macro_rules! conformance {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            use super::*;
            conformance!(@cases $fixture;
                put_get_delete,
                revisions_strictly_increase,
                empty_key_is_rejected,
                range_pages_through_a_prefix,
                range_does_not_leak_sibling_prefix,
                cas_put,
                cas_delete,
                cas_present,
                watch_replays_history_then_live,
                watch_from_now_sees_only_new_changes,
                watch_sees_deletes,
                watch_orders_concurrent_writers,
                watch_replays_a_large_history,
                lease_expiry_deletes_keys_and_notifies_watchers,
                keep_alive_keeps_keys_alive,
                keep_alive_after_expiry_is_lease_not_found,
                revoke_deletes_keys,
                put_moves_key_between_leases,
                txn_puts_share_one_revision,
                txn_with_a_failing_compare_writes_nothing,
                txn_deletes_and_puts,
                txn_writing_a_key_twice_is_invalid,
                txn_with_an_unknown_lease_writes_nothing,
                watch_resumes_after_a_multi_event_revision,
                watch_replays_many_transactions,
                concurrent_cas_increments_lose_nothing,
                concurrent_writers_get_gap_free_revisions,
                concurrent_cas_on_one_revision_lets_exactly_one_win,
            );
        }
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let fixture = $fixture().await;
            cases::$case(&fixture.store).await;
        }
    )*};
}

conformance!(redb, redb_fixture);
conformance!(etcd, etcd_fixture);

// --- helpers ----------------------------------------------------------------------

async fn next_event(watch: &mut WatchStream) -> Event {
    match tokio::time::timeout(PATIENCE, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch stream ended"),
        Err(_) => panic!("no watch event within {PATIENCE:?}"),
    }
}

async fn assert_quiet(watch: &mut WatchStream, wait: Duration) {
    if let Ok(item) = tokio::time::timeout(wait, watch.next()).await {
        panic!("expected no watch event, got {item:?}");
    }
}

fn summary(event: &Event) -> (EventKind, String, String) {
    (
        event.kind,
        event.kv.key.clone(),
        String::from_utf8_lossy(&event.kv.value).into_owned(),
    )
}

fn put(key: &str, value: &str) -> (EventKind, String, String) {
    (EventKind::Put, key.into(), value.into())
}

fn del(key: &str) -> (EventKind, String, String) {
    (EventKind::Delete, key.into(), String::new())
}

fn put_op(key: &str, value: &str) -> TxnOp {
    leased_put_op(key, value, None)
}

fn leased_put_op(key: &str, value: &str, lease: Option<LeaseId>) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        lease,
    }
}

fn del_op(key: &str) -> TxnOp {
    TxnOp::Delete { key: key.into() }
}

/// Applies `ops` with no compares; the revision they made.
async fn commit(s: &DynStore, ops: Vec<TxnOp>) -> i64 {
    s.txn(&[], ops)
        .await
        .unwrap()
        .expect("a transaction without compares applies")
}

/// Applies `ops` with no compares, which must fail; the error.
async fn refused(s: &DynStore, ops: Vec<TxnOp>) -> StoreError {
    s.txn(&[], ops).await.unwrap_err()
}

fn cmp(key: &str, compare: Compare) -> (String, Compare) {
    (key.into(), compare)
}

/// The next `n` events, each as (revision, summary).
async fn next_events(watch: &mut WatchStream, n: usize) -> Vec<(i64, (EventKind, String, String))> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let event = next_event(watch).await;
        out.push((event.revision(), summary(&event)));
    }
    out
}

async fn wait_until_gone(store: &DynStore, key: &str) {
    let deadline = Instant::now() + PATIENCE;
    while store.get(key).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "{key} still exists after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

mod cases {
    use super::*;

    pub async fn put_get_delete(s: &DynStore) {
        assert_eq!(s.get("/k").await.unwrap(), None);
        let r1 = s.put("/k", b"one".to_vec(), None).await.unwrap();
        assert!(r1 > 0);
        let kv = s.get("/k").await.unwrap().unwrap();
        assert_eq!(kv.key, "/k");
        assert_eq!(kv.value, b"one");
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
            (r1, r1, 1, 0)
        );

        let r2 = s.put("/k", b"two".to_vec(), None).await.unwrap();
        assert!(r2 > r1);
        let kv = s.get("/k").await.unwrap().unwrap();
        assert_eq!(kv.value, b"two");
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (r1, r2, 2)
        );

        assert!(s.delete("/k").await.unwrap());
        assert_eq!(s.get("/k").await.unwrap(), None);
        let after_delete = s.revision().await.unwrap();
        assert!(after_delete > r2);
        assert!(
            !s.delete("/k").await.unwrap(),
            "deleting a missing key reports false"
        );
        assert_eq!(
            s.revision().await.unwrap(),
            after_delete,
            "deleting a missing key must not use a revision"
        );

        // Re-created: a new life with a new create_revision and version 1.
        let r3 = s.put("/k", Vec::new(), None).await.unwrap();
        let kv = s.get("/k").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.version), (r3, 1));
        assert!(kv.value.is_empty());
    }

    pub async fn revisions_strictly_increase(s: &DynStore) {
        let mut last = s.revision().await.unwrap();
        for i in 0..20 {
            let rev = s
                .put(&format!("/rev/{}", i % 7), vec![i as u8], None)
                .await
                .unwrap();
            assert!(rev > last, "revision {rev} after {last}");
            assert_eq!(s.revision().await.unwrap(), rev);
            last = rev;
        }
        // Failed compares and no-op deletes change nothing.
        assert_eq!(
            s.txn_put("/rev/0", Compare::Absent, b"x".to_vec(), None)
                .await
                .unwrap(),
            None
        );
        assert!(!s
            .txn_delete("/rev/0", Compare::ModRevision(1))
            .await
            .unwrap());
        assert!(!s.delete("/rev/missing").await.unwrap());
        assert_eq!(s.revision().await.unwrap(), last);
        let deleted = s.delete("/rev/0").await.unwrap();
        assert!(deleted);
        assert!(s.revision().await.unwrap() > last);
    }

    pub async fn empty_key_is_rejected(s: &DynStore) {
        let err = s.put("", b"x".to_vec(), None).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
        let err = s
            .txn_put("", Compare::Absent, b"x".to_vec(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    }

    pub async fn range_pages_through_a_prefix(s: &DynStore) {
        let mut expected = Vec::new();
        for i in 0..25 {
            let key = format!("/page/{i:03}");
            s.put(&key, format!("v{i}").into_bytes(), None)
                .await
                .unwrap();
            expected.push(key);
        }
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = Vec::new();
        loop {
            let page = s.range("/page/", after.as_deref(), 10).await.unwrap();
            assert!(page.revision >= 25);
            pages.push((page.kvs.len(), page.more));
            for kv in &page.kvs {
                assert_eq!(
                    kv.value,
                    format!("v{}", kv.key[6..].parse::<u32>().unwrap()).into_bytes()
                );
            }
            seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            if !page.more {
                break;
            }
            after = page.kvs.last().map(|kv| kv.key.clone());
        }
        assert_eq!(pages, [(10, true), (10, true), (5, false)]);
        assert_eq!(seen, expected);

        // No limit: everything, in order.
        let all = s.range("/page/", None, 0).await.unwrap();
        assert!(!all.more);
        assert_eq!(
            all.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
            expected
        );

        // A page that ends exactly at the last key says there is no more.
        let tail = s.range("/page/", Some("/page/014"), 10).await.unwrap();
        assert_eq!(tail.kvs.len(), 10);
        assert!(!tail.more);
        assert_eq!(tail.kvs[0].key, "/page/015");

        // Continuing after the last key, or from a key before the prefix.
        let none = s.range("/page/", Some("/page/024"), 10).await.unwrap();
        assert!(none.kvs.is_empty() && !none.more);
        let first = s.range("/page/", Some("/a"), 1).await.unwrap();
        assert_eq!(first.kvs[0].key, "/page/000");
        assert!(first.more);
    }

    pub async fn range_does_not_leak_sibling_prefix(s: &DynStore) {
        for key in ["/a", "/a/1", "/a/2", "/ab", "/ab/1", "/a0", "/b/1"] {
            s.put(key, key.as_bytes().to_vec(), None).await.unwrap();
        }
        let keys = |p: testbed_store::Page| p.kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
        assert_eq!(
            keys(s.range("/a/", None, 0).await.unwrap()),
            ["/a/1", "/a/2"]
        );
        assert_eq!(keys(s.range("/a/", None, 1).await.unwrap()), ["/a/1"]);
        assert_eq!(
            keys(s.range("/a/", Some("/a/1"), 1).await.unwrap()),
            ["/a/2"]
        );
        let last = s.range("/a/", Some("/a/2"), 1).await.unwrap();
        assert!(last.kvs.is_empty() && !last.more, "{last:?}");
        assert_eq!(keys(s.range("/ab/", None, 0).await.unwrap()), ["/ab/1"]);
        assert_eq!(
            keys(s.range("/a", None, 0).await.unwrap()),
            ["/a", "/a/1", "/a/2", "/a0", "/ab", "/ab/1"]
        );
        assert!(s.range("/nothing/", None, 0).await.unwrap().kvs.is_empty());
        // A continuation key past the whole prefix: nothing, not an error.
        let past = s.range("/a/", Some("/zzz"), 0).await.unwrap();
        assert!(past.kvs.is_empty() && !past.more, "{past:?}");
    }

    pub async fn cas_put(s: &DynStore) {
        let r1 = s
            .txn_put("/cas", Compare::Absent, b"1".to_vec(), None)
            .await
            .unwrap()
            .expect("absent key: create succeeds");
        assert_eq!(
            s.txn_put("/cas", Compare::Absent, b"x".to_vec(), None)
                .await
                .unwrap(),
            None,
            "existing key: create fails"
        );
        let r2 = s
            .txn_put("/cas", Compare::ModRevision(r1), b"2".to_vec(), None)
            .await
            .unwrap()
            .expect("matching mod_revision: update succeeds");
        assert!(r2 > r1);
        assert_eq!(
            s.txn_put("/cas", Compare::ModRevision(r1), b"x".to_vec(), None)
                .await
                .unwrap(),
            None,
            "stale mod_revision: update fails"
        );
        let kv = s.get("/cas").await.unwrap().unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.mod_revision, kv.version),
            (&b"2"[..], r2, 2)
        );
        assert_eq!(
            s.txn_put(
                "/cas-missing",
                Compare::ModRevision(r2),
                b"x".to_vec(),
                None
            )
            .await
            .unwrap(),
            None,
            "a missing key never matches a revision"
        );
        assert_eq!(s.get("/cas-missing").await.unwrap(), None);
    }

    /// `Present` holds for a key at any revision and never for a missing
    /// (or deleted) one; a transaction guarded by it writes nothing when it
    /// fails.
    pub async fn cas_present(s: &DynStore) {
        let r1 = s.put("/present", b"1".to_vec(), None).await.unwrap();
        let guarded = |key: &str| vec![cmp(key, Compare::Present)];
        assert!(s
            .txn(&guarded("/present"), vec![put_op("/present/a", "x")])
            .await
            .unwrap()
            .is_some());
        s.put("/present", b"2".to_vec(), None).await.unwrap();
        assert!(
            s.txn(&guarded("/present"), vec![put_op("/present/b", "x")])
                .await
                .unwrap()
                .is_some(),
            "any revision will do, not only the one first seen ({r1})"
        );
        assert_eq!(
            s.txn(&guarded("/absent"), vec![put_op("/present/c", "x")])
                .await
                .unwrap(),
            None,
            "a missing key is not present"
        );
        assert_eq!(s.get("/present/c").await.unwrap(), None);
        assert!(s.txn_delete("/present", Compare::Present).await.unwrap());
        assert_eq!(
            s.txn(&guarded("/present"), vec![put_op("/present/d", "x")])
                .await
                .unwrap(),
            None,
            "a deleted key is not present"
        );
        assert!(!s.txn_delete("/present", Compare::Present).await.unwrap());
    }

    pub async fn cas_delete(s: &DynStore) {
        let r1 = s.put("/casd", b"1".to_vec(), None).await.unwrap();
        let r2 = s.put("/casd", b"2".to_vec(), None).await.unwrap();
        assert!(!s
            .txn_delete("/casd", Compare::ModRevision(r1))
            .await
            .unwrap());
        assert!(!s.txn_delete("/casd", Compare::Absent).await.unwrap());
        assert!(s.get("/casd").await.unwrap().is_some());
        assert!(s
            .txn_delete("/casd", Compare::ModRevision(r2))
            .await
            .unwrap());
        assert_eq!(s.get("/casd").await.unwrap(), None);
        assert!(!s
            .txn_delete("/casd", Compare::ModRevision(r2))
            .await
            .unwrap());
        assert!(!s.txn_delete("/casd", Compare::Absent).await.unwrap());
    }

    pub async fn watch_replays_history_then_live(s: &DynStore) {
        let r1 = s.put("/w/a", b"1".to_vec(), None).await.unwrap();
        s.put("/other", b"x".to_vec(), None).await.unwrap();
        let r3 = s.put("/w/b", b"2".to_vec(), None).await.unwrap();
        s.put("/w", b"not under /w/".to_vec(), None).await.unwrap();
        s.delete("/w/a").await.unwrap();
        let r6 = s.put("/w/a", b"3".to_vec(), None).await.unwrap();

        let mut w = s.watch("/w/", r1).await.unwrap();
        let mut history = Vec::new();
        for _ in 0..4 {
            history.push(next_event(&mut w).await);
        }
        assert_eq!(
            history.iter().map(summary).collect::<Vec<_>>(),
            [
                put("/w/a", "1"),
                put("/w/b", "2"),
                del("/w/a"),
                put("/w/a", "3")
            ]
        );
        assert_eq!(history[0].revision(), r1);
        assert_eq!(history[1].revision(), r3);
        assert_eq!(history[3].revision(), r6);
        assert!(history
            .windows(2)
            .all(|p| p[0].revision() < p[1].revision()));

        // Then live changes, after the history, exactly once each.
        let r7 = s.put("/w/c", b"4".to_vec(), None).await.unwrap();
        s.put("/elsewhere", b"x".to_vec(), None).await.unwrap();
        let r9 = s.put("/w/b", b"5".to_vec(), None).await.unwrap();
        let live1 = next_event(&mut w).await;
        let live2 = next_event(&mut w).await;
        assert_eq!(summary(&live1), put("/w/c", "4"));
        assert_eq!(live1.revision(), r7);
        assert_eq!(summary(&live2), put("/w/b", "5"));
        assert_eq!(live2.revision(), r9);
        assert_eq!(live2.kv.version, 2);
        assert_quiet(&mut w, Duration::from_millis(300)).await;

        // Starting later replays only from there.
        let mut w = s.watch("/w/", r3 + 1).await.unwrap();
        let first = next_event(&mut w).await;
        assert_eq!(summary(&first), del("/w/a"));
    }

    pub async fn watch_from_now_sees_only_new_changes(s: &DynStore) {
        s.put("/now/old", b"old".to_vec(), None).await.unwrap();
        let mut w = s.watch("/now/", 0).await.unwrap();
        let rev = s.put("/now/new", b"new".to_vec(), None).await.unwrap();
        let event = next_event(&mut w).await;
        assert_eq!(summary(&event), put("/now/new", "new"));
        assert_eq!(event.revision(), rev);
        assert_quiet(&mut w, Duration::from_millis(300)).await;
    }

    pub async fn watch_sees_deletes(s: &DynStore) {
        let created = s.put("/d/x", b"1".to_vec(), None).await.unwrap();
        let mut w = s.watch("/d/", created + 1).await.unwrap();
        assert!(s.delete("/d/x").await.unwrap());
        let rev = s.revision().await.unwrap();
        let event = next_event(&mut w).await;
        assert_eq!(summary(&event), del("/d/x"));
        assert_eq!(event.revision(), rev);
        assert!(event.kv.value.is_empty());
        // A delete of a missing key is no event.
        assert!(!s.delete("/d/x").await.unwrap());
        let r = s
            .txn_put("/d/y", Compare::Absent, b"2".to_vec(), None)
            .await
            .unwrap()
            .unwrap();
        assert!(s.txn_delete("/d/y", Compare::ModRevision(r)).await.unwrap());
        assert_eq!(summary(&next_event(&mut w).await), put("/d/y", "2"));
        assert_eq!(summary(&next_event(&mut w).await), del("/d/y"));
        assert_quiet(&mut w, Duration::from_millis(300)).await;
    }

    pub async fn watch_orders_concurrent_writers(s: &DynStore) {
        let mut w = s.watch("/conc/", 0).await.unwrap();
        let mut writers = Vec::new();
        for t in 0..4 {
            let s = s.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..25 {
                    s.put(&format!("/conc/{t}/{i}"), vec![i], None)
                        .await
                        .unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let mut keys = BTreeSet::new();
        let mut last = 0;
        for _ in 0..100 {
            let event = next_event(&mut w).await;
            assert!(
                event.revision() > last,
                "out of order: {} after {last}",
                event.revision()
            );
            last = event.revision();
            assert!(
                keys.insert(event.kv.key.clone()),
                "duplicate {}",
                event.kv.key
            );
        }
        assert_quiet(&mut w, Duration::from_millis(300)).await;
    }

    /// Megabytes of history in one replay: arrives in many chunks (etcd) or
    /// many batches (redb).
    pub async fn watch_replays_a_large_history(s: &DynStore) {
        let value = |i: usize| format!("{i:05}").repeat(2000).into_bytes();
        let first = s.put("/big/0", value(0), None).await.unwrap();
        for i in 1..300 {
            s.put(&format!("/big/{}", i % 17), value(i), None)
                .await
                .unwrap();
        }
        let mut w = s.watch("/big/", first).await.unwrap();
        for i in 0..300 {
            let event = next_event(&mut w).await;
            assert_eq!(event.kv.key, format!("/big/{}", i % 17));
            assert!(event.kv.value == value(i), "event {i} has the wrong value");
        }
        assert_quiet(&mut w, Duration::from_millis(200)).await;
    }

    pub async fn lease_expiry_deletes_keys_and_notifies_watchers(s: &DynStore) {
        let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
        assert!(lease > 0);
        s.put("/lease/a", b"1".to_vec(), Some(lease)).await.unwrap();
        s.put("/lease/b", b"2".to_vec(), Some(lease)).await.unwrap();
        s.put("/lease/keep", b"3".to_vec(), None).await.unwrap();
        assert_eq!(s.get("/lease/a").await.unwrap().unwrap().lease, lease);

        let mut w = s.watch("/lease/", 0).await.unwrap();
        let mut deleted = BTreeSet::new();
        for _ in 0..2 {
            let event = next_event(&mut w).await;
            assert_eq!(event.kind, EventKind::Delete, "{event:?}");
            deleted.insert(event.kv.key);
        }
        assert_eq!(
            deleted,
            BTreeSet::from(["/lease/a".to_string(), "/lease/b".to_string()])
        );
        assert_eq!(s.get("/lease/a").await.unwrap(), None);
        assert_eq!(s.get("/lease/b").await.unwrap(), None);
        assert!(s.get("/lease/keep").await.unwrap().is_some());

        let err = s.keep_alive(lease).await.unwrap_err();
        assert!(
            matches!(err, StoreError::LeaseNotFound(id) if id == lease),
            "{err:?}"
        );
        let err = s
            .put("/lease/c", b"x".to_vec(), Some(lease))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::LeaseNotFound(id) if id == lease),
            "{err:?}"
        );
        assert_eq!(s.get("/lease/c").await.unwrap(), None);
    }

    pub async fn keep_alive_keeps_keys_alive(s: &DynStore) {
        let lease = s.grant_lease(Duration::from_secs(2)).await.unwrap();
        s.put("/ka/x", b"1".to_vec(), Some(lease)).await.unwrap();
        let until = Instant::now() + Duration::from_millis(2600);
        while Instant::now() < until {
            s.keep_alive(lease).await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let kv = s
            .get("/ka/x")
            .await
            .unwrap()
            .expect("kept alive past its TTL");
        assert_eq!(kv.lease, lease);
        // Stop refreshing: it goes.
        wait_until_gone(s, "/ka/x").await;
    }

    pub async fn keep_alive_after_expiry_is_lease_not_found(s: &DynStore) {
        let unknown = 0x7fff_ffff_0000_0001;
        let err = s.keep_alive(unknown).await.unwrap_err();
        assert!(
            matches!(err, StoreError::LeaseNotFound(id) if id == unknown),
            "{err:?}"
        );
        let err = s.put("/u", b"x".to_vec(), Some(unknown)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::LeaseNotFound(id) if id == unknown),
            "{err:?}"
        );
        let err = s
            .txn_put("/u", Compare::Absent, b"x".to_vec(), Some(unknown))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err:?}");

        let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
        s.put("/exp/x", b"1".to_vec(), Some(lease)).await.unwrap();
        s.keep_alive(lease).await.unwrap();
        wait_until_gone(s, "/exp/x").await;
        let err = s.keep_alive(lease).await.unwrap_err();
        assert!(
            matches!(err, StoreError::LeaseNotFound(id) if id == lease),
            "{err:?}"
        );
    }

    pub async fn revoke_deletes_keys(s: &DynStore) {
        let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
        let other = s.grant_lease(Duration::from_secs(30)).await.unwrap();
        assert_ne!(lease, other);
        s.put("/rv/a", b"1".to_vec(), Some(lease)).await.unwrap();
        s.put("/rv/b", b"2".to_vec(), Some(lease)).await.unwrap();
        s.put("/rv/other", b"3".to_vec(), Some(other))
            .await
            .unwrap();
        let mut w = s.watch("/rv/", 0).await.unwrap();

        s.revoke_lease(lease).await.unwrap();
        assert_eq!(s.get("/rv/a").await.unwrap(), None);
        assert_eq!(s.get("/rv/b").await.unwrap(), None);
        assert!(s.get("/rv/other").await.unwrap().is_some());
        // One revision for the whole revocation, as etcd does it.
        let revoked_at = s.revision().await.unwrap();
        assert_eq!(
            next_events(&mut w, 2).await,
            [(revoked_at, del("/rv/a")), (revoked_at, del("/rv/b"))]
        );

        let err = s.revoke_lease(lease).await.unwrap_err();
        assert!(
            matches!(err, StoreError::LeaseNotFound(id) if id == lease),
            "{err:?}"
        );
        let err = s.keep_alive(lease).await.unwrap_err();
        assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err:?}");
        let err = s
            .put("/rv/c", b"x".to_vec(), Some(lease))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err:?}");
        s.keep_alive(other).await.unwrap();
        s.revoke_lease(other).await.unwrap();
        assert_eq!(s.get("/rv/other").await.unwrap(), None);
    }

    pub async fn put_moves_key_between_leases(s: &DynStore) {
        let first = s.grant_lease(Duration::from_secs(30)).await.unwrap();
        let second = s.grant_lease(Duration::from_secs(30)).await.unwrap();
        s.put("/mv/x", b"1".to_vec(), Some(first)).await.unwrap();
        s.put("/mv/x", b"2".to_vec(), Some(second)).await.unwrap();
        assert_eq!(s.get("/mv/x").await.unwrap().unwrap().lease, second);
        s.revoke_lease(first).await.unwrap();
        assert!(
            s.get("/mv/x").await.unwrap().is_some(),
            "moved off the first lease"
        );

        s.put("/mv/x", b"3".to_vec(), None).await.unwrap();
        assert_eq!(s.get("/mv/x").await.unwrap().unwrap().lease, 0);
        s.revoke_lease(second).await.unwrap();
        assert_eq!(
            s.get("/mv/x").await.unwrap().unwrap().value,
            b"3",
            "detached from any lease"
        );
    }

    pub async fn txn_puts_share_one_revision(s: &DynStore) {
        let mut w = s.watch("/tx/", 0).await.unwrap();
        let before = s.revision().await.unwrap();
        let rev = s
            .txn(&[], vec![put_op("/tx/b", "1"), put_op("/tx/a", "2")])
            .await
            .unwrap()
            .expect("no compares: succeeds");
        assert_eq!(rev, before + 1, "one transaction, one revision");
        assert_eq!(s.revision().await.unwrap(), rev);
        for (key, value) in [("/tx/a", "2"), ("/tx/b", "1")] {
            let kv = s.get(key).await.unwrap().unwrap();
            assert_eq!(kv.value, value.as_bytes());
            assert_eq!(
                (kv.create_revision, kv.mod_revision, kv.version),
                (rev, rev, 1)
            );
        }
        // Together, with the transaction's revision, in op order (not key
        // order).
        assert_eq!(
            next_events(&mut w, 2).await,
            [(rev, put("/tx/b", "1")), (rev, put("/tx/a", "2"))]
        );

        // Compares on a written key and an absent one; versions count per key.
        let rev2 = s
            .txn(
                &[
                    cmp("/tx/a", Compare::ModRevision(rev)),
                    cmp("/tx/c", Compare::Absent),
                ],
                vec![put_op("/tx/a", "3"), put_op("/tx/c", "4")],
            )
            .await
            .unwrap()
            .expect("both compares hold");
        assert_eq!(rev2, rev + 1);
        let a = s.get("/tx/a").await.unwrap().unwrap();
        assert_eq!(
            (a.create_revision, a.mod_revision, a.version),
            (rev, rev2, 2)
        );
        let c = s.get("/tx/c").await.unwrap().unwrap();
        assert_eq!(
            (c.create_revision, c.mod_revision, c.version),
            (rev2, rev2, 1)
        );
        assert_eq!(s.get("/tx/b").await.unwrap().unwrap().mod_revision, rev);
        assert_eq!(
            next_events(&mut w, 2).await,
            [(rev2, put("/tx/a", "3")), (rev2, put("/tx/c", "4"))]
        );
        assert_quiet(&mut w, Duration::from_millis(300)).await;
    }

    pub async fn txn_with_a_failing_compare_writes_nothing(s: &DynStore) {
        let r = s.put("/txf/x", b"1".to_vec(), None).await.unwrap();
        let mut w = s.watch("/txf/", 0).await.unwrap();
        let ops = || {
            vec![
                put_op("/txf/y", "2"),
                del_op("/txf/x"),
                put_op("/txf/z", "3"),
            ]
        };
        // The first compare holds, the second does not.
        assert_eq!(
            s.txn(
                &[
                    cmp("/txf/x", Compare::ModRevision(r)),
                    cmp("/txf/y", Compare::ModRevision(r))
                ],
                ops()
            )
            .await
            .unwrap(),
            None
        );
        // The only compare fails.
        assert_eq!(
            s.txn(&[cmp("/txf/x", Compare::Absent)], ops())
                .await
                .unwrap(),
            None
        );
        assert_eq!(s.revision().await.unwrap(), r, "no revision used");
        let x = s.get("/txf/x").await.unwrap().unwrap();
        assert_eq!((x.value.as_slice(), x.version), (&b"1"[..], 1));
        assert_eq!(s.get("/txf/y").await.unwrap(), None);
        assert_eq!(s.get("/txf/z").await.unwrap(), None);
        assert_quiet(&mut w, Duration::from_millis(300)).await;
    }

    pub async fn txn_deletes_and_puts(s: &DynStore) {
        let ra = s.put("/txd/a", b"1".to_vec(), None).await.unwrap();
        let rb = s.put("/txd/b", b"2".to_vec(), None).await.unwrap();
        let mut w = s.watch("/txd/", 0).await.unwrap();
        let rev = s
            .txn(
                &[cmp("/txd/a", Compare::ModRevision(ra))],
                vec![
                    del_op("/txd/a"),
                    put_op("/txd/c", "3"),
                    del_op("/txd/missing"),
                    put_op("/txd/b", "4"),
                ],
            )
            .await
            .unwrap()
            .expect("the compare holds");
        assert_eq!(rev, rb + 1);
        assert_eq!(
            next_events(&mut w, 3).await,
            [
                (rev, del("/txd/a")),
                (rev, put("/txd/c", "3")),
                (rev, put("/txd/b", "4"))
            ]
        );
        assert_eq!(s.get("/txd/a").await.unwrap(), None);
        let b = s.get("/txd/b").await.unwrap().unwrap();
        assert_eq!((b.create_revision, b.mod_revision, b.version), (rb, rev, 2));
        assert_eq!(s.get("/txd/c").await.unwrap().unwrap().value, b"3");

        // Changing nothing succeeds at the current revision without using one.
        assert_eq!(
            s.txn(&[], vec![del_op("/txd/a"), del_op("/txd/nope")])
                .await
                .unwrap(),
            Some(rev)
        );
        assert_eq!(
            s.txn(&[cmp("/txd/c", Compare::ModRevision(rev))], Vec::new())
                .await
                .unwrap(),
            Some(rev)
        );
        assert_eq!(s.revision().await.unwrap(), rev);
        assert_quiet(&mut w, Duration::from_millis(300)).await;

        // Deleting everything at once is one revision too.
        let rev2 = commit(s, vec![del_op("/txd/b"), del_op("/txd/c")]).await;
        assert_eq!(rev2, rev + 1);
        assert_eq!(
            next_events(&mut w, 2).await,
            [(rev2, del("/txd/b")), (rev2, del("/txd/c"))]
        );
    }

    pub async fn txn_writing_a_key_twice_is_invalid(s: &DynStore) {
        let before = s.revision().await.unwrap();
        for ops in [
            vec![put_op("/dup/a", "1"), put_op("/dup/a", "2")],
            vec![put_op("/dup/a", "1"), del_op("/dup/a")],
            vec![del_op("/dup/a"), put_op("/dup/b", "1"), del_op("/dup/a")],
            vec![put_op("/dup/b", "1"), put_op("", "2")],
            vec![del_op("")],
        ] {
            let err = s.txn(&[], ops.clone()).await.unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidArgument(_)),
                "{ops:?}: {err:?}"
            );
        }
        let err = s
            .txn(&[cmp("", Compare::Absent)], vec![put_op("/dup/b", "1")])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
        assert_eq!(s.revision().await.unwrap(), before);
        assert_eq!(s.get("/dup/a").await.unwrap(), None);
        assert_eq!(s.get("/dup/b").await.unwrap(), None);
    }

    pub async fn txn_with_an_unknown_lease_writes_nothing(s: &DynStore) {
        let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
        let unknown = 0x7fff_ffff_0000_0002;
        let before = s.revision().await.unwrap();
        let err = refused(
            s,
            vec![
                put_op("/txl/plain", "1"),
                leased_put_op("/txl/a", "2", Some(lease)),
                leased_put_op("/txl/b", "3", Some(unknown)),
            ],
        )
        .await;
        assert!(
            matches!(err, StoreError::LeaseNotFound(id) if id == unknown),
            "{err:?}"
        );
        assert_eq!(s.revision().await.unwrap(), before);
        for key in ["/txl/plain", "/txl/a", "/txl/b"] {
            assert_eq!(s.get(key).await.unwrap(), None, "{key}");
        }

        let rev = commit(
            s,
            vec![
                leased_put_op("/txl/a", "2", Some(lease)),
                put_op("/txl/plain", "1"),
            ],
        )
        .await;
        let a = s.get("/txl/a").await.unwrap().unwrap();
        assert_eq!((a.lease, a.mod_revision), (lease, rev));

        s.revoke_lease(lease).await.unwrap();
        let revoked = s.revision().await.unwrap();
        let err = refused(
            s,
            vec![
                put_op("/txl/c", "4"),
                leased_put_op("/txl/d", "5", Some(lease)),
            ],
        )
        .await;
        assert!(
            matches!(err, StoreError::LeaseNotFound(id) if id == lease),
            "{err:?}"
        );
        assert_eq!(s.revision().await.unwrap(), revoked);
        assert_eq!(s.get("/txl/c").await.unwrap(), None);
        assert_eq!(
            s.get("/txl/a").await.unwrap(),
            None,
            "revoked with its lease"
        );
        assert!(s.get("/txl/plain").await.unwrap().is_some());
    }

    /// A consumer that has seen a revision has seen all of its events, so
    /// resuming from its last revision + 1 neither loses nor repeats any.
    pub async fn watch_resumes_after_a_multi_event_revision(s: &DynStore) {
        let r1 = commit(
            s,
            vec![
                put_op("/wr/a", "1"),
                put_op("/wr/b", "2"),
                put_op("/wr/c", "3"),
            ],
        )
        .await;
        let r2 = s.put("/wr/d", b"4".to_vec(), None).await.unwrap();
        let r3 = commit(s, vec![del_op("/wr/a"), put_op("/wr/e", "5")]).await;

        let mut w = s.watch("/wr/", r1).await.unwrap();
        assert_eq!(
            next_events(&mut w, 6).await,
            [
                (r1, put("/wr/a", "1")),
                (r1, put("/wr/b", "2")),
                (r1, put("/wr/c", "3")),
                (r2, put("/wr/d", "4")),
                (r3, del("/wr/a")),
                (r3, put("/wr/e", "5")),
            ]
        );

        let mut w = s.watch("/wr/", r1 + 1).await.unwrap();
        assert_eq!(next_events(&mut w, 1).await, [(r2, put("/wr/d", "4"))]);
        let mut w = s.watch("/wr/", r2 + 1).await.unwrap();
        assert_eq!(
            next_events(&mut w, 2).await,
            [(r3, del("/wr/a")), (r3, put("/wr/e", "5"))]
        );

        // A prefix that matches only part of a revision sees just that part.
        let mut w = s.watch("/wr/b", r1).await.unwrap();
        assert_eq!(next_events(&mut w, 1).await, [(r1, put("/wr/b", "2"))]);
        assert_quiet(&mut w, Duration::from_millis(200)).await;

        // Live, then resumed after the live revision.
        let mut w = s.watch("/wr/", 0).await.unwrap();
        let r4 = commit(s, vec![put_op("/wr/f", "6"), del_op("/wr/b")]).await;
        assert_eq!(
            next_events(&mut w, 2).await,
            [(r4, put("/wr/f", "6")), (r4, del("/wr/b"))]
        );
        drop(w);
        let r5 = s.put("/wr/g", b"7".to_vec(), None).await.unwrap();
        let mut w = s.watch("/wr/", r4 + 1).await.unwrap();
        assert_eq!(next_events(&mut w, 1).await, [(r5, put("/wr/g", "7"))]);
        assert_quiet(&mut w, Duration::from_millis(200)).await;
    }

    /// More multi-event revisions than one catch-up read (redb) takes.
    pub async fn watch_replays_many_transactions(s: &DynStore) {
        let first = s.revision().await.unwrap() + 1;
        let n = 600;
        for i in 0..n {
            let rev = commit(
                s,
                vec![
                    put_op(&format!("/many/{i:03}/b"), "b"),
                    put_op(&format!("/many/{i:03}/a"), "a"),
                ],
            )
            .await;
            assert_eq!(rev, first + i);
        }
        let mut w = s.watch("/many/", first).await.unwrap();
        for i in 0..n {
            assert_eq!(
                next_events(&mut w, 2).await,
                [
                    (first + i, put(&format!("/many/{i:03}/b"), "b")),
                    (first + i, put(&format!("/many/{i:03}/a"), "a")),
                ]
            );
        }
        assert_quiet(&mut w, Duration::from_millis(200)).await;
    }

    /// Read-modify-write loops racing on one key: compare-and-swap must let
    /// exactly one writer win each round, however writes are batched.
    pub async fn concurrent_cas_increments_lose_nothing(s: &DynStore) {
        const TASKS: usize = 16;
        const EACH: usize = 50;
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut wins = Vec::new();
                for _ in 0..EACH {
                    loop {
                        let current = s.get("/counter").await.unwrap();
                        let (n, compare) = match &current {
                            Some(kv) => (
                                String::from_utf8_lossy(&kv.value).parse::<usize>().unwrap(),
                                Compare::ModRevision(kv.mod_revision),
                            ),
                            None => (0, Compare::Absent),
                        };
                        let next = (n + 1).to_string().into_bytes();
                        if let Some(rev) = s.txn_put("/counter", compare, next, None).await.unwrap()
                        {
                            wins.push((rev, n + 1));
                            break;
                        }
                    }
                }
                wins
            }));
        }
        let mut wins = BTreeMap::new();
        for task in tasks {
            for (rev, value) in task.await.unwrap() {
                assert!(
                    wins.insert(rev, value).is_none(),
                    "revision {rev} won twice"
                );
            }
        }
        assert_eq!(wins.len(), TASKS * EACH);
        // In revision order, the values count up one by one: no lost update.
        assert!(wins.values().copied().eq(1..=TASKS * EACH), "{wins:?}");
        let kv = s.get("/counter").await.unwrap().unwrap();
        assert_eq!(kv.value, (TASKS * EACH).to_string().into_bytes());
        assert_eq!(kv.version, (TASKS * EACH) as i64);
        assert_eq!(Some(&kv.mod_revision), wins.keys().last());
    }

    /// Many compare-and-swaps released at once against the same expected
    /// revision (on the embedded store they land in one group commit): exactly
    /// one wins, every other sees the conflict and wrote nothing, and plain
    /// writes racing alongside them are not disturbed by the failed ones.
    pub async fn concurrent_cas_on_one_revision_lets_exactly_one_win(s: &DynStore) {
        const CONTENDERS: usize = 32;
        for round in 0..5 {
            let key = format!("/race/{round}");
            // Even rounds race to create the key, odd ones to update it.
            let compare = if round % 2 == 0 {
                Compare::Absent
            } else {
                let rev = s.put(&key, b"seed".to_vec(), None).await.unwrap();
                Compare::ModRevision(rev)
            };
            let before = s.get(&key).await.unwrap();
            let gate = Arc::new(tokio::sync::Barrier::new(CONTENDERS * 2));
            let mut tasks = Vec::new();
            for i in 0..CONTENDERS {
                let (s2, key2, gate2) = (s.clone(), key.clone(), gate.clone());
                tasks.push(tokio::spawn(async move {
                    let (s, key, gate) = (s2, key2, gate2);
                    gate.wait().await;
                    // Two keys per transaction: the loser must write neither.
                    let ops = vec![
                        put_op(&key, &format!("w{i}")),
                        put_op(&format!("{key}/by/{i}"), "x"),
                    ];
                    (i, s.txn(&[(key.clone(), compare)], ops).await.unwrap())
                }));
                let (s2, key2, gate2) = (s.clone(), key.clone(), gate.clone());
                tasks.push(tokio::spawn(async move {
                    let (s, key, gate) = (s2, key2, gate2);
                    gate.wait().await;
                    let rev = s
                        .put(&format!("{key}/plain/{i}"), b"p".to_vec(), None)
                        .await
                        .unwrap();
                    (usize::MAX, Some(rev))
                }));
            }
            let mut winners = Vec::new();
            for task in tasks {
                let (i, result) = task.await.unwrap();
                if i != usize::MAX {
                    if let Some(rev) = result {
                        winners.push((i, rev));
                    }
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            let (winner, rev) = winners[0];
            let kv = s.get(&key).await.unwrap().unwrap();
            assert_eq!(kv.value, format!("w{winner}").into_bytes());
            assert_eq!(kv.mod_revision, rev);
            assert_eq!(kv.version, before.map_or(1, |b| b.version + 1));
            let by = s.range(&format!("{key}/by/"), None, 0).await.unwrap();
            let by: Vec<&str> = by.kvs.iter().map(|kv| kv.key.as_str()).collect();
            assert_eq!(by, vec![format!("{key}/by/{winner}")], "round {round}");
            let plain = s.range(&format!("{key}/plain/"), None, 0).await.unwrap();
            assert_eq!(plain.kvs.len(), CONTENDERS, "round {round}");
        }
    }

    /// Concurrent writers of different keys: every write takes the next
    /// revision, none is skipped, and one watcher sees them all in order.
    pub async fn concurrent_writers_get_gap_free_revisions(s: &DynStore) {
        let start = s.revision().await.unwrap();
        let mut w = s.watch("/gap/", start + 1).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in 0..25 {
                    let rev = if i % 5 == 4 {
                        // Some transactions of two events in the mix.
                        commit(
                            &s,
                            vec![
                                put_op(&format!("/gap/{t}/{i}/x"), "x"),
                                put_op(&format!("/gap/{t}/{i}/y"), "y"),
                            ],
                        )
                        .await
                    } else {
                        s.put(&format!("/gap/{t}/{i}"), vec![i], None)
                            .await
                            .unwrap()
                    };
                    revisions.push(rev);
                }
                revisions
            }));
        }
        let mut written = BTreeSet::new();
        for task in tasks {
            for rev in task.await.unwrap() {
                assert!(written.insert(rev), "revision {rev} returned twice");
            }
        }
        let end = start + 200;
        assert!(
            written.iter().copied().eq(start + 1..=end),
            "not gap-free: {written:?}"
        );
        assert_eq!(s.revision().await.unwrap(), end);

        let mut seen = Vec::new();
        for _ in 0..240 {
            let event = next_event(&mut w).await;
            seen.push((event.revision(), event.kv.key));
        }
        assert!(
            seen.windows(2).all(|p| p[0].0 <= p[1].0),
            "out of order: {seen:?}"
        );
        let revisions: BTreeSet<i64> = seen.iter().map(|(rev, _)| *rev).collect();
        assert!(revisions.iter().copied().eq(start + 1..=end));
        // The two events of a transaction come back to back.
        for pair in seen.windows(2).filter(|p| p[0].0 == p[1].0) {
            assert!(
                pair[0].1.ends_with("/x") && pair[1].1.ends_with("/y"),
                "{pair:?}"
            );
        }
        assert_quiet(&mut w, Duration::from_millis(300)).await;
    }
}

// --- redb only ------------------------------------------------------------------

mod redb_specific {
    use super::*;

    /// A redb store in `dir` opened with `options`.
    fn redb_in(dir: &Path, options: RedbOptions) -> DynStore {
        Arc::new(RedbStore::open_with(dir.join("s.redb"), options).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_keeps_data_revision_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dirs/store.redb");
        let (rev, lease) = {
            let s: DynStore = Arc::new(RedbStore::open(&path).unwrap());
            s.put("/keep", b"kept".to_vec(), None).await.unwrap();
            let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
            s.put("/leased", b"l".to_vec(), Some(lease)).await.unwrap();
            s.put("/gone", b"g".to_vec(), None).await.unwrap();
            s.delete("/gone").await.unwrap();
            (s.revision().await.unwrap(), lease)
        };
        // Longer than the TTL: a restart must not count downtime against it.
        tokio::time::sleep(Duration::from_millis(1200)).await;

        let s: DynStore = Arc::new(RedbStore::open(&path).unwrap());
        assert_eq!(s.describe(), format!("redb:{}", path.display()));
        assert_eq!(s.revision().await.unwrap(), rev);
        assert_eq!(s.get("/keep").await.unwrap().unwrap().value, b"kept");
        assert_eq!(s.get("/gone").await.unwrap(), None);
        assert_eq!(s.get("/leased").await.unwrap().unwrap().lease, lease);
        s.keep_alive(lease)
            .await
            .expect("a persisted lease gets a fresh TTL");
        // Its holder is gone (the file is locked by one process at a time), so
        // the server may take the lease over at once: see `Store::exclusive`.
        assert!(s.exclusive());
        assert_eq!(s.put("/new", Vec::new(), None).await.unwrap(), rev + 1);
        let new_lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
        assert!(new_lease > lease, "lease ids are not reused");

        // History survives too.
        let mut w = s.watch("/", 1).await.unwrap();
        assert_eq!(summary(&next_event(&mut w).await), put("/keep", "kept"));

        // And the lease still expires, deleting its key.
        wait_until_gone(&s, "/leased").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn second_open_of_the_same_file_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let _first = RedbStore::open(&path).unwrap();
        let err = match RedbStore::open(&path) {
            Ok(_) => panic!("opened the same file twice"),
            Err(e) => e,
        };
        let message = err.to_string();
        assert!(matches!(err, StoreError::Embedded(_)), "{err:?}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("already open"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_keeps_up_after_lagging() {
        let dir = tempfile::tempdir().unwrap();
        let s = redb_in(
            dir.path(),
            RedbOptions {
                watch_buffer: 8,
                ..Default::default()
            },
        );
        let mut w = s.watch("/lag/", 0).await.unwrap();
        // Far more events than the broadcast and the stream buffer hold,
        // written before the watcher reads any.
        let n = 600;
        for i in 0..n {
            s.put(
                &format!("/lag/{}", i % 50),
                i.to_string().into_bytes(),
                None,
            )
            .await
            .unwrap();
            if i % 100 == 0 {
                s.put("/unwatched", Vec::new(), None).await.unwrap();
            }
        }
        let mut last = 0;
        for i in 0..n {
            let event = next_event(&mut w).await;
            assert!(event.revision() > last);
            last = event.revision();
            assert_eq!(event.kv.value, i.to_string().into_bytes(), "event {i}");
        }
        assert_quiet(&mut w, Duration::from_millis(200)).await;
        // Still live afterwards.
        s.put("/lag/after", b"x".to_vec(), None).await.unwrap();
        assert_eq!(summary(&next_event(&mut w).await), put("/lag/after", "x"));
    }

    /// A watcher far behind while revisions hold several events: it falls
    /// back to the history table and back again without splitting one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_keeps_up_after_lagging_with_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let s = redb_in(
            dir.path(),
            RedbOptions {
                watch_buffer: 4,
                ..Default::default()
            },
        );
        let mut w = s.watch("/lagt/", 0).await.unwrap();
        let n = 300;
        let mut revisions = Vec::new();
        for i in 0..n {
            let ops = (0..3)
                .map(|k| put_op(&format!("/lagt/{k}"), &i.to_string()))
                .chain([put_op("/unwatched", "")])
                .collect();
            revisions.push(s.txn(&[], ops).await.unwrap().unwrap());
        }
        for (i, rev) in revisions.into_iter().enumerate() {
            let value = i.to_string();
            assert_eq!(
                next_events(&mut w, 3).await,
                [
                    (rev, put("/lagt/0", &value)),
                    (rev, put("/lagt/1", &value)),
                    (rev, put("/lagt/2", &value)),
                ]
            );
        }
        assert_quiet(&mut w, Duration::from_millis(200)).await;
    }

    /// Group commit answers a write only after its commit: a process killed
    /// with SIGKILL while sixteen writers are busy keeps every acknowledged
    /// write. The writers run in a child process (this test binary again).
    #[test]
    fn acknowledged_writes_survive_kill_9() {
        const CHILD_ENV: &str = "TESTBED_STORE_KILL_CHILD";
        if let Ok(path) = std::env::var(CHILD_ENV) {
            kill_9_child(Path::new(&path));
            return;
        }
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "redb_specific::acknowledged_writes_survive_kill_9",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // writer -> (highest acknowledged counter, its revision)
        let mut acked: BTreeMap<u32, (u64, i64)> = BTreeMap::new();
        let mut total = 0;
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            let Some(ack) = line.strip_prefix("ack ") else {
                continue;
            };
            let parts: Vec<&str> = ack.split(' ').collect();
            let [writer, counter, rev] = parts[..] else {
                panic!("bad line {line:?}");
            };
            let (writer, counter, rev) = (
                writer.parse().unwrap(),
                counter.parse().unwrap(),
                rev.parse().unwrap(),
            );
            acked.insert(writer, (counter, rev));
            total += 1;
            if total == 1500 {
                child.kill().unwrap();
                break;
            }
        }
        child.wait().unwrap();
        assert_eq!(total, 1500, "the child stopped acknowledging early");

        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let s = RedbStore::open(&path).unwrap();
            let newest = acked.values().map(|(_, rev)| *rev).max().unwrap();
            assert!(s.revision().await.unwrap() >= newest);
            for (writer, (counter, rev)) in &acked {
                let kv = s.get(&format!("/kill/{writer}")).await.unwrap().unwrap();
                let stored: u64 = String::from_utf8_lossy(&kv.value).parse().unwrap();
                assert!(
                    stored >= *counter,
                    "writer {writer}: acked {counter}, kept {stored}"
                );
                assert!(kv.mod_revision >= *rev);
            }
        });
    }

    /// The writers of `acknowledged_writes_survive_kill_9`: print each write
    /// once it is acknowledged, until killed (or, as a safety net, 60 s).
    fn kill_9_child(path: &Path) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let s: DynStore = Arc::new(RedbStore::open(path).unwrap());
            let stop = Instant::now() + Duration::from_secs(60);
            let mut writers = Vec::new();
            for writer in 0..16u32 {
                let s = s.clone();
                writers.push(tokio::spawn(async move {
                    let mut counter = 0u64;
                    while Instant::now() < stop {
                        counter += 1;
                        let key = format!("/kill/{writer}");
                        let rev = s
                            .put(&key, counter.to_string().into_bytes(), None)
                            .await
                            .unwrap();
                        println!("ack {writer} {counter} {rev}");
                    }
                }));
            }
            for writer in writers {
                writer.await.unwrap();
            }
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_from_compacted_revision_fails() {
        let dir = tempfile::tempdir().unwrap();
        let s = redb_in(
            dir.path(),
            RedbOptions {
                history_revisions: 10,
                ..Default::default()
            },
        );
        for i in 0..30 {
            s.put(&format!("/c/{i}"), Vec::new(), None).await.unwrap();
        }
        let mut w = s.watch("/c/", 1).await.unwrap();
        match w.next().await {
            Some(Err(StoreError::Compacted {
                requested: 1,
                oldest,
            })) => assert!(oldest > 1),
            other => panic!("expected Compacted, got {other:?}"),
        }
        assert!(w.next().await.is_none(), "the stream ends after Compacted");

        // The newest revisions are still there.
        let mut w = s.watch("/c/", 25).await.unwrap();
        assert_eq!(next_event(&mut w).await.revision(), 25);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_ends_when_the_store_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s: DynStore = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
        let mut w = s.watch("/", 0).await.unwrap();
        drop(s);
        let end = tokio::time::timeout(PATIENCE, w.next()).await.unwrap();
        assert!(end.is_none(), "{end:?}");
        // And the file is free again.
        RedbStore::open(dir.path().join("s.redb")).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_by_spec() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/store.redb");
        let spec = format!("redb:{}", path.display());
        let s = testbed_store::open(&spec, EtcdOptions::default())
            .await
            .unwrap();
        assert_eq!(s.describe(), spec);
        s.put("/x", b"1".to_vec(), None).await.unwrap();
        assert!(path.is_file());
        for bad in ["bogus", "redis://h", "/just/a/path"] {
            match testbed_store::open(bad, EtcdOptions::default()).await {
                Err(StoreError::InvalidSpec(m)) => assert!(m.contains(bad), "{m}"),
                Err(e) => panic!("{bad}: {e:?}"),
                Ok(_) => panic!("{bad}: opened"),
            }
        }
    }

    /// `open` outside a runtime (e.g. from a synchronous `main` before the
    /// runtime starts): the lease reaper must still run once calls are made.
    #[test]
    fn leases_expire_when_opened_outside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let s: DynStore = Arc::new(store);
            let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
            s.put("/x", Vec::new(), Some(lease)).await.unwrap();
            wait_until_gone(&s, "/x").await;
        });
    }
}

// --- etcd only ------------------------------------------------------------------

mod etcd_specific {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn root_prefix_is_applied_and_stripped() {
        let cluster = EtcdCluster::start(1, &[]).await;
        let opts = |prefix: &str| EtcdOptions {
            prefix: prefix.into(),
            ..Default::default()
        };
        let rooted = testbed_store::open(&cluster.spec(), opts("/tb"))
            .await
            .unwrap();
        let raw = EtcdStore::connect(&cluster.spec(), opts("")).await.unwrap();
        assert_eq!(rooted.describe(), cluster.spec());

        rooted.put("/runs/1", b"r".to_vec(), None).await.unwrap();
        raw.put("/runs/2", b"outside".to_vec(), None).await.unwrap();
        raw.put("/tbx/runs/3", b"sibling".to_vec(), None)
            .await
            .unwrap();

        assert_eq!(raw.get("/tb/runs/1").await.unwrap().unwrap().value, b"r");
        let page = rooted.range("/", None, 0).await.unwrap();
        assert_eq!(
            page.kvs
                .iter()
                .map(|kv| kv.key.as_str())
                .collect::<Vec<_>>(),
            ["/runs/1"]
        );
        assert_eq!(rooted.get("/runs/2").await.unwrap(), None);

        let all = raw.range("", None, 0).await.unwrap();
        let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/runs/2", "/tb/runs/1", "/tbx/runs/3"]);

        let mut w = rooted.watch("/runs/", 0).await.unwrap();
        raw.put("/runs/4", Vec::new(), None).await.unwrap();
        rooted.put("/runs/5", b"5".to_vec(), None).await.unwrap();
        assert_eq!(summary(&next_event(&mut w).await), put("/runs/5", "5"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_survives_an_etcd_restart() {
        let mut cluster = EtcdCluster::start(1, &[]).await;
        let s = EtcdStore::connect(&cluster.spec(), EtcdOptions::default())
            .await
            .unwrap();
        let mut w = s.watch("/r/", 0).await.unwrap();
        let r1 = s.put("/r/1", b"1".to_vec(), None).await.unwrap();
        assert_eq!(next_event(&mut w).await.revision(), r1);

        cluster.kill(0);
        cluster.restart(0).await;

        // Several writes, possibly before the watch has reconnected: it must
        // catch up from where it was, without repeating /r/1.
        let r2 = s.put("/r/2", b"2".to_vec(), None).await.unwrap();
        s.put("/elsewhere", Vec::new(), None).await.unwrap();
        let r3 = s.put("/r/3", b"3".to_vec(), None).await.unwrap();
        assert_eq!(r2, r1 + 1, "no write between the two");
        let e2 = next_event(&mut w).await;
        let e3 = next_event(&mut w).await;
        assert_eq!((summary(&e2), e2.revision()), (put("/r/2", "2"), r2));
        assert_eq!((summary(&e3), e3.revision()), (put("/r/3", "3"), r3));
        assert_quiet(&mut w, Duration::from_millis(300)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_ends_when_the_store_is_dropped() {
        let cluster = EtcdCluster::start(1, &[]).await;
        let s = EtcdStore::connect(&cluster.spec(), EtcdOptions::default())
            .await
            .unwrap();
        let mut w = s.watch("/", 0).await.unwrap();
        s.put("/x", Vec::new(), None).await.unwrap();
        next_event(&mut w).await;
        drop(s);
        let end = tokio::time::timeout(PATIENCE, w.next()).await.unwrap();
        assert!(end.is_none(), "{end:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_survives_losing_its_first_member() {
        let mut cluster = EtcdCluster::start(3, &[]).await;
        let s = EtcdStore::connect(&cluster.spec(), EtcdOptions::default())
            .await
            .unwrap();
        let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
        let mut w = s.watch("/c/", 0).await.unwrap();
        let r1 = s.put("/c/1", b"1".to_vec(), Some(lease)).await.unwrap();
        assert_eq!(next_event(&mut w).await.revision(), r1);

        let first = cluster.member_id(0).await;
        cluster.kill(0);

        // Reads are retried through the election.
        assert_eq!(s.get("/c/1").await.unwrap().unwrap().value, b"1");
        // A write sent while the survivors still follow the dead leader is
        // lost with it, and etcd reports it only as "request timed out"
        // (applied or not: unknown). Like etcd's own client, the store
        // reports that as Unavailable rather than replay a write that may
        // have been applied, so writes are checked once a new leader is up.
        cluster.wait_for_leader_other_than(first).await;
        let r2 = s.put("/c/2", b"2".to_vec(), None).await.unwrap();
        assert!(r2 > r1);
        assert_eq!(s.get("/c/1").await.unwrap().unwrap().value, b"1");
        assert_eq!(s.range("/c/", None, 0).await.unwrap().kvs.len(), 2);
        s.keep_alive(lease).await.unwrap();
        assert!(s
            .txn_put("/c/2", Compare::ModRevision(r2), b"3".to_vec(), None)
            .await
            .unwrap()
            .is_some());
        let e2 = next_event(&mut w).await;
        assert_eq!((summary(&e2), e2.revision()), (put("/c/2", "2"), r2));
        assert_eq!(summary(&next_event(&mut w).await), put("/c/2", "3"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn all_endpoints_down_is_unavailable() {
        let mut cluster = EtcdCluster::start(1, &[]).await;
        let s = EtcdStore::connect(&cluster.spec(), EtcdOptions::default())
            .await
            .unwrap();
        cluster.kill(0);
        let started = Instant::now();
        let err = s.get("/x").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            err.to_string().contains(&cluster.spec()["etcd://".len()..]),
            "{err}"
        );
        assert!(
            started.elapsed() < PATIENCE,
            "gave up after {:?}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_from_compacted_revision_fails() {
        let cluster = EtcdCluster::start(1, &[]).await;
        let s = EtcdStore::connect(&cluster.spec(), EtcdOptions::default())
            .await
            .unwrap();
        let first = s.put("/c/0", Vec::new(), None).await.unwrap();
        let mut last = first;
        for i in 1..10 {
            last = s.put(&format!("/c/{i}"), Vec::new(), None).await.unwrap();
        }
        cluster
            .post(
                0,
                "/v3/kv/compaction",
                &format!(r#"{{"revision":"{last}","physical":true}}"#),
            )
            .await;
        let mut w = s.watch("/c/", first).await.unwrap();
        match tokio::time::timeout(PATIENCE, w.next()).await.unwrap() {
            Some(Err(StoreError::Compacted { requested, oldest })) => {
                assert_eq!((requested, oldest), (first, last));
            }
            other => panic!("expected Compacted, got {other:?}"),
        }
        assert!(w.next().await.is_none(), "the stream ends after Compacted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn authenticates_and_reauthenticates() {
        // Simple tokens expire after 1 s idle, so the store must notice the
        // rejection and log in again.
        let cluster = EtcdCluster::start(1, &["--auth-token-ttl", "1"]).await;
        for (path, body) in [
            (
                "/v3/auth/user/add",
                r#"{"name":"root","password":"s3cret"}"#,
            ),
            ("/v3/auth/role/add", r#"{"name":"root"}"#),
            ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
            ("/v3/auth/enable", "{}"),
        ] {
            cluster.post(0, path, body).await;
        }
        let creds = |password: &str| EtcdOptions {
            username: Some("root".into()),
            password: Some(password.into()),
            ..Default::default()
        };
        let err = match EtcdStore::connect(&cluster.spec(), creds("wrong")).await {
            Ok(_) => panic!("connected with a wrong password"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("authentication failed"), "{err}");
        let err = match EtcdStore::connect(&cluster.spec(), EtcdOptions::default()).await {
            Ok(_) => panic!("connected without credentials"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("username and password"), "{err}");

        let s = EtcdStore::connect(&cluster.spec(), creds("s3cret"))
            .await
            .unwrap();
        let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
        let mut w = s.watch("/auth/", 0).await.unwrap();
        s.put("/auth/a", b"1".to_vec(), Some(lease)).await.unwrap();
        assert_eq!(summary(&next_event(&mut w).await), put("/auth/a", "1"));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        s.keep_alive(lease).await.unwrap();
        assert_eq!(s.get("/auth/a").await.unwrap().unwrap().value, b"1");
        s.put("/auth/b", b"2".to_vec(), None).await.unwrap();
        assert_eq!(summary(&next_event(&mut w).await), put("/auth/b", "2"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_with_client_certificates() {
        let certs = tempfile::tempdir().unwrap();
        testbed_testsupport::certificates(certs.path());
        let file = |name: &str| certs.path().join(name);
        let tls_args: Vec<String> = vec![
            "--cert-file".into(),
            file("server.pem").display().to_string(),
            "--key-file".into(),
            file("server.key").display().to_string(),
            "--trusted-ca-file".into(),
            file("ca.pem").display().to_string(),
            "--client-cert-auth".into(),
        ];
        let args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
        let mut identity = std::fs::read(file("client.pem")).unwrap();
        identity.extend(std::fs::read(file("client.key")).unwrap());
        let cluster = EtcdCluster::start_with_tls(&args, identity).await;
        let spec = cluster.spec().replace("etcd://", "etcds://");
        let opts = EtcdOptions {
            ca_file: Some(file("ca.pem")),
            cert_file: Some(file("client.pem")),
            key_file: Some(file("client.key")),
            ..Default::default()
        };
        let s = EtcdStore::connect(&spec, opts.clone()).await.unwrap();
        let mut w = s.watch("/tls/", 0).await.unwrap();
        s.put("/tls/x", b"secure".to_vec(), None).await.unwrap();
        assert_eq!(s.get("/tls/x").await.unwrap().unwrap().value, b"secure");
        assert_eq!(summary(&next_event(&mut w).await), put("/tls/x", "secure"));

        // TLS files with a plain-HTTP spec are a configuration error.
        let err = match EtcdStore::connect(&cluster.spec(), opts).await {
            Ok(_) => panic!("accepted TLS files with etcd://"),
            Err(e) => e,
        };
        assert!(matches!(err, StoreError::InvalidSpec(_)), "{err:?}");
    }
}

// --- etcd processes -----------------------------------------------------------------

/// The etcd binary: `$ETCD_BIN`, else `etcd` on `PATH` or in the usual places.
fn etcd_binary() -> PathBuf {
    let help = "The etcd conformance tests need the `etcd` server binary (3.4 or newer) on PATH \
                or in $ETCD_BIN. Run the test command from the README, `scripts/test`, which \
                installs it (on Debian/Ubuntu: `apt-get install etcd-server`).";
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "$ETCD_BIN={} is not a file. {help}",
            bin.display()
        );
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("etcd not found. {help}"))
}

/// Free loopback ports, never handed out twice in this process (tests run
/// in parallel and each binds its ports only later, when etcd starts).
fn free_ports(n: usize) -> Vec<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listeners.push(listener);
        if handed_out.insert(port) {
            ports.push(port);
        }
    }
    ports
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A real etcd cluster of `n` members on loopback, killed on drop.
struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    extra_args: Vec<String>,
    scheme: &'static str,
    /// Client certificate + key (PEM) for health checks of a TLS cluster
    /// that requires client certificates.
    identity: Option<Vec<u8>>,
}

impl EtcdCluster {
    async fn start(n: usize, extra_args: &[&str]) -> Self {
        Self::start_with(n, extra_args, None).await
    }

    async fn start_with_tls(extra_args: &[&str], identity: Vec<u8>) -> Self {
        Self::start_with(1, extra_args, Some(identity)).await
    }

    async fn start_with(n: usize, extra_args: &[&str], identity: Option<Vec<u8>>) -> Self {
        let scheme = if identity.is_some() { "https" } else { "http" };
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir,
            members,
            initial_cluster,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            scheme,
            identity,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    fn spec(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    fn client_url(&self, i: usize) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme, self.members[i].client_port
        )
    }

    fn spawn(&mut self, i: usize) {
        let client_url = self.client_url(i);
        let m = &self.members[i];
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let child = Command::new(etcd_binary())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args([
                "--initial-cluster-token",
                &format!("tb-{}", self.dir.path().display()),
            ])
            // Fast elections keep the failover tests short; they also make
            // etcd's minimum lease TTL 1 s.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", etcd_binary().display()));
        self.members[i].child = Some(child);
    }

    async fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(2));
        if let Some(pem) = &self.identity {
            client = client.identity(reqwest::Identity::from_pem(pem).unwrap());
        }
        let client = client.build().unwrap();
        loop {
            let url = format!("{}/health", self.client_url(i));
            if let Ok(resp) = client.get(&url).send().await {
                let body = resp.text().await.unwrap_or_default();
                if body.contains(r#""health":"true""#) {
                    return;
                }
            }
            if let Some(status) = self.members[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().unwrap())
            {
                panic!(
                    "etcd member {i} exited with {status}:\n{}",
                    self.log_tail(i)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "etcd member {i} not healthy after 30 s:\n{}",
                    self.log_tail(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// A raw gateway request, for setup the Store API does not offer.
    async fn post(&self, i: usize, path: &str, body: &str) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.client_url(i)))
            .body(body.to_owned())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn member_id(&self, i: usize) -> String {
        let status = self.post(i, "/v3/maintenance/status", "{}").await;
        status["header"]["member_id"].as_str().unwrap().to_owned()
    }

    /// Waits until every running member follows the same leader, other
    /// than `old`.
    async fn wait_for_leader_other_than(&self, old: String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut leaders = BTreeSet::new();
            for (i, m) in self.members.iter().enumerate() {
                if m.child.is_some() {
                    let status = self.post(i, "/v3/maintenance/status", "{}").await;
                    leaders.insert(status["leader"].as_str().unwrap_or("0").to_owned());
                }
            }
            if leaders.len() == 1 && !leaders.contains(&old) && !leaders.contains("0") {
                return;
            }
            assert!(Instant::now() < deadline, "no new leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
