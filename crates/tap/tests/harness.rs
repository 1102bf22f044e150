//! The harness against real processes: interpreters, environment, time limits.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use testbed_report::Outcome;
use testbed_tap::harness::{command_for, discover};
use testbed_tap::{run_kit, KitConfig, RunConfig};

fn write(dir: &Path, name: &str, body: &str, mode: u32) {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn environment_reaches_scripts() {
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path();
    write(
        kit,
        "kit.toml",
        "platform = \"test:///default\"\n[resources]\nspare-disk = \"/dev/sdb\"\n[labels]\nos = \"debian\"\n",
        0o644,
    );
    write(
        kit,
        "env.sh",
        "#!/bin/sh\necho 1..4\n\
         [ \"$TESTBED_TCK_PLATFORM\" = test:///default ] && echo ok 1 - platform || echo not ok 1 - platform\n\
         [ \"$TESTBED_TCK_RESOURCE_SPARE_DISK\" = /dev/sdb ] && echo ok 2 - disk || echo not ok 2 - disk\n\
         [ -f \"$TESTBED_TCK_CONFIG\" ] && echo ok 3 - config || echo not ok 3 - config\n\
         [ \"$TESTBED_TCK_LABEL_OS\" = debian ] && echo ok 4 - label || echo not ok 4 - label\n",
        0o755,
    );
    let mut cfg = RunConfig::new(vec![kit.to_path_buf()]);
    cfg.kit = KitConfig::load(&kit.join("kit.toml")).unwrap();
    let report = run_kit(&cfg).await.unwrap();
    assert_eq!(report.suites.len(), 1, "kit.toml is not a script");
    let s = &report.suites[0];
    assert_eq!(s.name, "env.sh");
    assert!(
        s.cases.iter().all(|c| c.outcome == Outcome::Pass),
        "{:?}",
        s.cases
    );
}

#[tokio::test]
async fn shebang_without_exec_bit_and_unrunnable_files() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "a.sh",
        "#!/bin/sh\necho 1..1\necho ok 1\n",
        0o644,
    );
    write(tmp.path(), "b.txt", "just text\n", 0o644);
    let cmd = command_for(&tmp.path().join("a.sh")).unwrap();
    assert_eq!(cmd[0], "/bin/sh");
    assert!(command_for(&tmp.path().join("b.txt")).is_err());
    let cfg = RunConfig::new(vec![tmp.path().join("a.sh"), tmp.path().join("b.txt")]);
    let report = run_kit(&cfg).await.unwrap();
    assert!(!report.suites[0].is_failure());
    assert_eq!(report.suites[1].cases[0].outcome, Outcome::Error);
    // A directory only yields scripts: .t, .py and executables.
    let cfg = RunConfig::new(vec![tmp.path().to_path_buf()]);
    assert!(
        discover(&cfg).is_err(),
        "neither file is a script in a directory scan"
    );
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("survived");
    write(
        tmp.path(),
        "slow.sh",
        &format!(
            "#!/bin/sh\necho 1..1\n(sleep 3; touch {}) &\nsleep 30\n",
            marker.display()
        ),
        0o755,
    );
    let mut cfg = RunConfig::new(vec![tmp.path().to_path_buf()]);
    cfg.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let report = run_kit(&cfg).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let last = report.suites[0].cases.last().unwrap();
    assert_eq!(last.outcome, Outcome::Error);
    assert!(
        last.message
            .as_deref()
            .unwrap()
            .contains("timed out after 500ms"),
        "{last:?}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!marker.exists(), "a child of the timed-out script survived");
}

#[tokio::test]
async fn stderr_is_kept_on_the_failure() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "err.sh",
        "#!/bin/sh\necho 1..1\necho 'something broke' >&2\necho not ok 1 - x\nexit 1\n",
        0o755,
    );
    let report = run_kit(&RunConfig::new(vec![tmp.path().to_path_buf()]))
        .await
        .unwrap();
    let script = report.suites[0].cases.last().unwrap();
    assert_eq!(script.name, "(script)");
    assert!(script
        .output
        .as_deref()
        .unwrap()
        .contains("something broke"));
}
