//! The documentation is executed: every shell block of README.md and
//! docs/*.md runs, in order, in a sandbox (see tests/common/docs.rs for the
//! sandbox, the `<!-- doc: … -->` annotations and the one rewrite made).
//! One test per file, so a failure names its file and line.

use crate::harness;

use harness::run_doc;

/// The Markdown files with a test of their own below; any other `docs/*.md`
/// is run by `other_docs`.
const DOCS: [&str; 9] = [
    "README.md",
    "docs/ARCHITECTURE.md",
    "docs/api-tests.md",
    "docs/benchmarks.md",
    "docs/performance.md",
    "docs/plans.md",
    "docs/plugins.md",
    "docs/security.md",
    "docs/tck.md",
];

/// A doc added later is run too, until it gets a test of its own.
#[test]
fn other_docs() {
    let dir = harness::repo_root().join("docs");
    let mut others = Vec::new();
    for e in std::fs::read_dir(&dir).expect("docs/") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        let doc = format!("docs/{name}");
        if name.ends_with(".md") && !DOCS.contains(&doc.as_str()) {
            others.push(doc);
        }
    }
    others.sort();
    for doc in others {
        run_doc(&doc);
    }
}

#[test]
fn annotations_are_checked() {
    let ok = "<!-- doc: skip: needs a lab; and an hour -->\n```sh\nfalse\n```\n\n```json\n{\"5b9e-675c\": {\"a\": \"…\", \"b\": [\"c\"]}}\n```\n\
              <!-- doc: stop; background http://x/healthz contains \"a\":2 -->\n```bash\nserve\n```\n";
    let b = harness::blocks(ok).expect("parses");
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].skip.as_deref(), Some("needs a lab; and an hour"));
    assert_eq!(b[0].shown_keys, ["a", "b"]);
    assert!(b[1].stop);
    assert_eq!(
        b[1].background,
        Some(Some(("http://x/healthz".into(), Some("\"a\":2".into()))))
    );
    for (bad, why) in [
        ("<!-- doc: skip -->\n```sh\ntrue\n```\n", "needs a reason"),
        (
            "<!-- doc: sometimes -->\n```sh\ntrue\n```\n",
            "unknown doc directive",
        ),
        ("<!-- doc: stop -->\n```json\n{}\n```\n", "not run"),
        (
            "<!-- doc: stop -->\ntext\n```sh\ntrue\n```\n",
            "above no shell block",
        ),
    ] {
        let e = harness::blocks(bad).expect_err(bad);
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn blocks_share_state_and_stop_at_a_failure() {
    let mut sb = harness::Sandbox::new("self-test");
    let r = sb.sh("X=1\ncd examples\n", std::time::Duration::from_secs(30));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // Variables and the directory carry over; `-e` stops at the first failure.
    let r = sb.sh(
        "test \"$X\" = 1\ntest -d plans\nfalse\necho not reached\n",
        std::time::Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(!r.stdout.contains("not reached"));
    // The rewrite: the README's cargo form runs the built binary.
    let r = sb.sh(
        "cargo run --release -p testbed-cli -- --version\n",
        std::time::Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with("testbed"), "{}", r.stdout);
}

/// The harness itself: a failing block names its file and line and shows
/// its output; a background server is waited for and stopped; skips are
/// counted.
#[test]
fn a_failing_doc_names_its_block() {
    let md = "# t\n\n\
              <!-- doc: background http://127.0.0.1:8774/ -->\n\
              ```sh\n\
              python3 -m http.server 8774 --bind 127.0.0.1\n\
              ```\n\
              ```console\n\
              curl -sf http://127.0.0.1:8774/ > /dev/null\n\
              ```\n\
              <!-- doc: skip: not here -->\n\
              ```sh\n\
              exit 9\n\
              ```\n\
              <!-- doc: expect-exit 3 -->\n\
              ```bash\n\
              exit 3\n\
              ```\n";
    assert_eq!(harness::run_markdown("ok.md", md), (3, 1));
    let bad = format!("{md}\n```sh\necho to-stdout; echo to-stderr >&2; exit 4\n```\n");
    let e = std::panic::catch_unwind(|| harness::run_markdown("bad.md", &bad))
        .expect_err("a failing block fails the file");
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.starts_with("bad.md:19: exited Some(4), expected 0"),
        "{msg}"
    );
    assert!(
        msg.contains("to-stdout") && msg.contains("to-stderr"),
        "{msg}"
    );
}

#[test]
fn readme() {
    run_doc("README.md");
}

#[test]
fn architecture() {
    run_doc("docs/ARCHITECTURE.md");
}

#[test]
fn api_tests() {
    run_doc("docs/api-tests.md");
}

#[test]
fn benchmarks() {
    run_doc("docs/benchmarks.md");
}

#[test]
fn performance() {
    run_doc("docs/performance.md");
}

#[test]
fn plans() {
    run_doc("docs/plans.md");
}

#[test]
fn plugins() {
    run_doc("docs/plugins.md");
}

#[test]
fn security() {
    run_doc("docs/security.md");
}

#[test]
fn tck() {
    run_doc("docs/tck.md");
}
