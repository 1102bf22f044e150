//! End-to-end tests of `testbed api` and the `api` plugin: the shipped suites
//! against real targets (etcd, libvirt's test driver through virsh, QEMU's
//! QMP), suites whose target is absent, exit codes and report files, OpenAPI
//! contract checks against Testbed's own server, and suites run by agents
//! inside plans.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{Etcd, Platform, Proc, ADMIN_PASSWORD};
use serde_json::json;
use testbed_report::{Outcome, Report};

fn suites() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../suites")
}

fn testbed(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_testbed"));
    c.args(args).env("TESTBED_LOG", "error");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running testbed")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `testbed api run ARGS --json F`: exit code, report, output.
fn api_run(args: &[&str], env: &[(&str, &str)]) -> (i32, Report, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let mut all = vec!["api", "run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", json.to_str().expect("utf-8")]);
    let out = testbed(&all, env);
    let report = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); output:\n{}", text(&out)));
    let report = testbed_report::from_json(&report).expect("report");
    (out.status.code().unwrap_or(-1), report, text(&out))
}

fn assert_all(report: &Report, outcome: Outcome, out: &str) {
    let cases: Vec<_> = report.suites.iter().flat_map(|s| &s.cases).collect();
    assert!(!cases.is_empty(), "no cases:\n{out}");
    for c in cases {
        assert_eq!(
            c.outcome, outcome,
            "{}: {:?}\n{:?}\n{out}",
            c.name, c.message, c.output
        );
    }
}

/// Asserts a clean exit and that all `n` cases passed.
#[track_caller]
fn assert_passes(code: i32, report: &Report, out: &str, n: usize) {
    assert_eq!(code, 0, "{out}");
    assert_all(report, Outcome::Pass, out);
    assert_eq!(report.summary().passed, n, "{out}");
}

#[test]
fn every_shipped_suite_and_example_is_well_formed() {
    let example = suites().join("../examples/api/testbed-smoke.yaml");
    let out = testbed(
        &[
            "api",
            "lint",
            suites().to_str().expect("utf-8"),
            example.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    for s in [
        "etcd",
        "libvirt",
        "qmp",
        "cni",
        "containerd",
        "docker",
        "podman",
        "kubernetes",
        "consul",
        "vsphere",
    ] {
        assert!(
            listed.contains(&format!("suites/{s}/")),
            "{s} not linted:\n{listed}"
        );
    }
    assert!(listed.contains("testbed-smoke.yaml"), "{listed}");
}

#[test]
fn libvirt_suite_passes_against_the_test_driver() {
    let (code, report, out) = api_run(&[suites().join("libvirt").to_str().expect("utf-8")], &[]);
    assert_passes(code, &report, &out, 7);
}

#[test]
fn qmp_suite_passes_against_qemu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("qmp.sock");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-machine",
        "none",
        "-nodefaults",
        "-display",
        "none",
        "-qmp",
    ])
    .arg(format!("unix:{},server=on,wait=off", sock.display()));
    let _qemu = Proc::spawn("qemu", cmd);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sock = sock.display().to_string();
    let (code, report, out) = api_run(
        &[suites().join("qmp").to_str().expect("utf-8")],
        &[("QMP_SOCKET", &sock)],
    );
    assert_passes(code, &report, &out, 7);
}

#[test]
fn etcd_suite_passes_against_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(1, dir.path());
    let (code, report, out) = api_run(
        &[suites().join("etcd").to_str().expect("utf-8")],
        &[("ETCD_ENDPOINT", &etcd.client_urls[0])],
    );
    assert_eq!(code, 0, "{out}");
    assert_all(&report, Outcome::Pass, &out);
    assert!(report.summary().passed >= 9, "{out}");
    // The live watch runs in the background while the put is made.
    assert!(
        report
            .suites
            .iter()
            .flat_map(|s| &s.cases)
            .any(|c| c.name == "a live watch sees a put made while it is open"),
        "{out}"
    );
}

#[test]
fn cni_suite_passes_against_the_reference_plugins() {
    let (code, report, out) = api_run(&[suites().join("cni").to_str().expect("utf-8")], &[]);
    assert_passes(code, &report, &out, 13);
    // The suite's namespaces and IPAM store are gone again.
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains("tb-cni-"), "{left}");
}

/// A daemon of the machine's own (dockerd, containerd) with everything it
/// keeps under a temp dir: stopped with SIGTERM so it unmounts and stops
/// what it started, then SIGKILL if it lingers.
struct Daemon {
    name: &'static str,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn spawn(name: &'static str, dir: tempfile::TempDir, mut cmd: Command) -> Daemon {
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        cmd.stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .stdin(std::process::Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Daemon { name, child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Waits until `socket` accepts connections.
    /// Spawns `cmd` and waits until it listens on `socket`.
    fn serving(
        name: &'static str,
        dir: tempfile::TempDir,
        cmd: Command,
        socket: PathBuf,
    ) -> (Daemon, PathBuf) {
        let mut daemon = Daemon::spawn(name, dir, cmd);
        daemon.wait_socket(&socket);
        (daemon, socket)
    }

    fn wait_socket(&mut self, socket: &Path) {
        for _ in 0..600 {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} never listened on {}:\n{}",
            self.name,
            socket.display(),
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A daemon a test killed on purpose is already gone: no complaint.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The busybox-static image of suites/images, as a `docker save` tarball.
fn busybox_image(dir: &Path) -> PathBuf {
    let tar = dir.join("busybox.tar");
    let out = Command::new(suites().join("images/busybox-image.sh"))
        .arg(&tar)
        .output()
        .expect("busybox-image.sh");
    assert!(out.status.success(), "{}", text(&out));
    tar
}

/// A private dockerd: its own data and exec roots and socket, no iptables
/// and no default bridge (containers of the suite use no network), and a
/// containerd of its own under the exec root.
fn dockerd(dir: tempfile::TempDir) -> (Daemon, PathBuf) {
    let d = dir.path().to_path_buf();
    let socket = d.join("docker.sock");
    let mut cmd = Command::new("dockerd");
    cmd.arg("--data-root")
        .arg(d.join("root"))
        .arg("--exec-root")
        .arg(d.join("exec"))
        .arg("--pidfile")
        .arg(d.join("docker.pid"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args([
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--userland-proxy=false",
        ]);
    Daemon::serving("dockerd", dir, cmd, socket)
}

/// Runs the container-engine suite `suite` against `daemon` listening on
/// `socket`, with the busybox image (as `image`, its tar built in a fresh
/// folder) given through `PREFIX_SOCKET`, `PREFIX_IMAGE_TAR` and
/// `PREFIX_IMAGE`; every case must pass, `passed` of them. The output.
fn engine_suite_passes(
    suite: &str,
    prefix: &str,
    (daemon, socket): &(Daemon, PathBuf),
    image: &str,
    passed: usize,
) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = busybox_image(dir.path());
    let keys = ["SOCKET", "IMAGE_TAR", "IMAGE"].map(|k| format!("{prefix}_{k}"));
    let (code, report, out) = api_run(
        &[suites().join(suite).to_str().expect("utf-8")],
        &[
            (&keys[0], socket.to_str().expect("utf-8")),
            (&keys[1], tar.to_str().expect("utf-8")),
            (&keys[2], image),
        ],
    );
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert_all(&report, Outcome::Pass, &out);
    assert_eq!(report.summary().passed, passed, "{out}");
    out
}

#[test]
fn docker_suite_passes_against_a_private_dockerd() {
    let docker = dockerd(tempfile::tempdir().expect("tempdir"));
    engine_suite_passes("docker", "DOCKER", &docker, "testbed/busybox:latest", 10);
}

/// A private Podman API service (`podman system service`, as root): its own
/// storage root, run root, tmp dir, CNI config dir and socket, set through a
/// containers.conf of its own. vfs storage and cgroupfs need neither
/// overlay mounts nor systemd. The ulimits are the sandbox's: as root Podman
/// gives containers nofile and nproc of 1048576, above this machine's hard
/// limits, and runc's setrlimit is then refused. An exec session's conmon
/// waits exit_command_delay (300 s by default) before it cleans up: 5 s
/// keeps the session inspectable by the suite without leaving conmons
/// behind the test for minutes.
fn podman_service(dir: tempfile::TempDir) -> (Daemon, PathBuf) {
    let d = dir.path().to_path_buf();
    let socket = d.join("podman.sock");
    let conf = d.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [network]\nnetwork_config_dir = \"{net}\"\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             runtime = \"runc\"\ntmp_dir = \"{tmp}\"\nexit_command_delay = 5\n",
            net = d.join("net").display(),
            tmp = d.join("tmp").display(),
        ),
    )
    .expect("containers.conf");
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", &conf)
        .arg("--root")
        .arg(d.join("root"))
        .arg("--runroot")
        .arg(d.join("run"))
        .args(["--storage-driver", "vfs", "system", "service", "--time=0"])
        .arg(format!("unix://{}", socket.display()));
    Daemon::serving("podman", dir, cmd, socket)
}

#[test]
fn docker_suite_passes_against_podmans_compatible_api() {
    let podman = podman_service(tempfile::tempdir().expect("tempdir"));
    engine_suite_passes("docker", "DOCKER", &podman, "testbed/busybox:latest", 10);
}

#[test]
fn podman_suite_passes_against_a_private_podman_service() {
    let podman = podman_service(tempfile::tempdir().expect("tempdir"));
    let out = engine_suite_passes(
        "podman",
        "PODMAN",
        &podman,
        "localhost/testbed/busybox:latest",
        11,
    );
    let socket = &podman.1;
    // The suite removed what it made; only the pause image it needed stays.
    let left = Command::new("curl")
        .args(["-s", "--unix-socket", socket.to_str().expect("utf-8")])
        .arg("http://podman/v4.0.0/libpod/containers/json?all=true")
        .output()
        .expect("curl");
    let left: serde_json::Value = serde_json::from_slice(&left.stdout).expect("JSON");
    assert_eq!(left, json!([]), "{out}");
}

/// A private containerd: its own root, state, sockets and config (the CRI
/// plugin off: it wants CNI config and a network of its own).
fn containerd(dir: tempfile::TempDir) -> (Daemon, PathBuf) {
    let d = dir.path().to_path_buf();
    let socket = d.join("containerd.sock");
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
        ),
    )
    .expect("config");
    let mut cmd = Command::new("containerd");
    cmd.arg("--config").arg(&config);
    Daemon::serving("containerd", dir, cmd, socket)
}

#[test]
fn containerd_suite_passes_over_grpc_on_its_unix_socket() {
    let (mut daemon, socket) = containerd(tempfile::tempdir().expect("tempdir"));
    let sock = socket.to_str().expect("utf-8");
    let (code, report, out) = api_run(
        &[suites().join("containerd").to_str().expect("utf-8")],
        &[("CONTAINERD_SOCKET", sock)],
    );
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert_all(&report, Outcome::Pass, &out);
    assert_eq!(report.summary().passed, 6, "{out}");
    let ctr = |args: &[&str]| {
        let o = Command::new("ctr")
            .args(["-a", sock])
            .args(args)
            .output()
            .expect("ctr");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let left = ctr(&["namespaces", "ls", "-q"]);
    assert!(
        !left.contains("testbed-"),
        "the suite's namespace is gone: {left}\n{out}"
    );

    // The target dies mid-suite: the tests after that are errors naming
    // the transport's reason, and the suite still ends.
    let dir = tempfile::tempdir().expect("tempdir");
    let protos = suites().join("containerd/proto");
    let suite = dir.path().join("dies.yaml");
    std::fs::write(
        &suite,
        format!(
            "name: dies\ngrpc:\n  address: unix://{sock}\n  protos: [{p}/github.com/containerd/containerd/api/services/version/v1/version.proto]\n  includes: [{p}]\n\
             tests:\n  - name: before\n    steps: [{{grpc: {{method: containerd.services.version.v1.Version/Version}}, assert: [{{status: 0}}]}}]\n\
             \x20 - name: kill it\n    steps: [{{exec: {{command: [kill, '-9', '{pid}']}}}}]\n\
             \x20 - name: after\n    steps: [{{grpc: {{method: containerd.services.version.v1.Version/Version, timeout: 5s}}, assert: [{{status: 0}}]}}]\n\
             \x20 - name: still after\n    steps: [{{grpc: {{method: containerd.services.version.v1.Version/Version, timeout: 5s}}}}]\n",
            p = protos.display(),
            pid = daemon.child.id(),
        ),
    )
    .expect("write");
    let (code, report, out) = api_run(&[suite.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 1, "{out}");
    let cases = &report.suites[0].cases;
    assert_eq!(cases.len(), 4, "{out}");
    assert_eq!(cases[0].outcome, Outcome::Pass, "{out}");
    assert_eq!(cases[1].outcome, Outcome::Pass, "{out}");
    for c in &cases[2..] {
        assert_eq!(c.outcome, Outcome::Error, "{out}");
        let why = c.message.clone().unwrap_or_default();
        assert!(
            why.contains("connection refused") || why.contains("reset") || why.contains("closed"),
            "{why}"
        );
    }
    let _ = daemon.child.wait();

    // With fail_fast the suite stops at the first error: the rest are not
    // run, and say why.
    let text = std::fs::read_to_string(&suite).expect("read");
    std::fs::write(&suite, format!("fail_fast: true\n{text}")).expect("write");
    let (code, report, out) = api_run(&[suite.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 1, "{out}");
    let cases = &report.suites[0].cases;
    assert_eq!(cases[0].outcome, Outcome::Error, "{out}");
    for c in &cases[1..] {
        assert_eq!(c.outcome, Outcome::Skip, "{out}");
        assert_eq!(
            c.message.as_deref(),
            Some("not run: fail_fast, after `before`"),
            "{out}"
        );
    }
}

/// vcsim from Debian's govmomi sources (golang-github-vmware-govmomi-dev),
/// built with Debian's Go in GOPATH mode: the package ships no go.mod
/// tree for modules, and nothing may be downloaded.
fn build_vcsim() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vcsim");
    let mut go = Command::new("go");
    go.args(["build", "-o"])
        .arg(&out)
        .arg(suites().join("vsphere/vcsim/main.go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "");
    // Go's own cache (under $HOME) outlives a fresh clone, so only the
    // machine's first build of govmomi takes its minute or so.
    if std::env::var_os("HOME").is_none() && std::env::var_os("XDG_CACHE_HOME").is_none() {
        go.env(
            "GOCACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
        );
    }
    let build = go.output().expect("go (Debian's golang-go)");
    assert!(build.status.success(), "building vcsim: {}", text(&build));
    out
}

#[test]
fn vsphere_suites_pass_against_vcsim() {
    let vcsim = build_vcsim();
    let port = common::free_port();
    let mut cmd = Command::new(&vcsim);
    cmd.args(["-l", &format!("127.0.0.1:{port}")]);
    let sim = Proc::spawn("vcsim", cmd);
    sim.wait_line("vcsim listening on", Duration::from_secs(30));
    let url = format!("https://127.0.0.1:{port}");
    let files: Vec<String> = ["cis-rest.yaml", "soap.yaml"]
        .iter()
        .map(|f| suites().join("vsphere").join(f).display().to_string())
        .collect();
    let (code, report, out) = api_run(
        &[&files[0], &files[1]],
        &[
            ("VSPHERE_URL", &url),
            ("VSPHERE_USER", "user"),
            ("VSPHERE_PASSWORD", "pass"),
        ],
    );
    assert_passes(code, &report, &out, 10);
}

#[test]
fn suites_whose_target_is_absent_are_skipped_with_the_reason() {
    let env = [
        ("DOCKER_SOCKET", "/nonexistent/docker.sock"),
        ("PODMAN_SOCKET", "/nonexistent/podman.sock"),
        ("CONSUL_HTTP_ADDR", "http://127.0.0.1:9"),
    ];
    let s = suites();
    let paths: Vec<String> = ["docker", "podman", "consul", "kubernetes", "vsphere"]
        .iter()
        .map(|d| s.join(d).display().to_string())
        .collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let (code, report, out) = api_run(&args, &env);
    assert_eq!(code, 0, "skips do not fail a run:\n{out}");
    assert_all(&report, Outcome::Skip, &out);
    // vsphere/ holds three files: /api, CIS /rest and SOAP.
    assert_eq!(report.suites.len(), 7);
    let reason = |suite: &str| {
        report
            .suites
            .iter()
            .find(|x| x.name == suite)
            .and_then(|x| x.cases[0].message.clone())
            .unwrap_or_default()
    };
    assert!(
        reason("Docker Engine").starts_with("requires unix /nonexistent/docker.sock"),
        "{}",
        reason("Docker Engine")
    );
    assert!(
        reason("Kubernetes").starts_with("requires env K8S_API: not set"),
        "{}",
        reason("Kubernetes")
    );
    assert!(
        reason("vSphere REST").starts_with("requires env VSPHERE_URL"),
        "{}",
        reason("vSphere REST")
    );
}

#[test]
fn exit_codes_report_files_and_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let suite = dir.path().join("s.yaml");
    std::fs::write(
        &suite,
        "name: exec checks\ntests:\n  - name: ok\n    steps:\n      - exec: {command: [echo, '{\"n\": 3}']}\n        assert:\n          - status: 0\n          - jsonpath: $.n\n            equals: 3\n  - name: wrong\n    steps:\n      - exec: {command: [sh, -c, 'exit 3']}\n        assert: [{status: 0}]\n",
    )
    .expect("write");
    let junit = dir.path().join("j.xml");
    let tap = dir.path().join("t.tap");
    let html = dir.path().join("r.html");
    let (code, report, out) = api_run(
        &[
            suite.to_str().expect("utf-8"),
            "--junit",
            junit.to_str().expect("utf-8"),
            "--tap",
            tap.to_str().expect("utf-8"),
            "--html",
            html.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(code, 1, "a failed test exits 1:\n{out}");
    assert_eq!(report.summary().passed, 1);
    assert_eq!(report.summary().failed, 1);
    let junit = std::fs::read_to_string(&junit).expect("junit written");
    assert!(
        junit.contains("tests=\"2\"") && junit.contains("failures=\"1\""),
        "{junit}"
    );
    let tap = std::fs::read_to_string(&tap).expect("tap written");
    assert!(tap.contains("not ok 2 - wrong"), "{tap}");
    assert!(std::fs::read_to_string(&html)
        .expect("html")
        .contains("exec checks"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "tests:\n  - name: x\n    steps:\n      - request: {url: /a, bogus: 1}\n        assert: [{status: {near: 1}}]\n").expect("write");
    let out = testbed(&["api", "run", bad.to_str().expect("utf-8")], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    assert!(
        err.contains(&format!("{file}:4:")) && err.contains("bogus"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:5:")) && err.contains("near"),
        "{err}"
    );
    assert!(err.contains("nothing was run"), "{err}");
}

#[tokio::test]
async fn openapi_check_passes_against_testbeds_own_spec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Platform::server_in(dir.path(), &[]).await;
    let spec = format!("{}/api/openapi.json", p.url);
    let login = format!("admin:{ADMIN_PASSWORD}");
    let junit = dir.path().join("contract.xml");
    let out = tokio::task::spawn_blocking({
        let url = p.url.clone();
        let junit = junit.clone();
        move || {
            testbed(
                &[
                    "api",
                    "check",
                    "--spec",
                    &spec,
                    "--base-url",
                    &url,
                    "--check-auth",
                    // Its own throwaway server: check the writes too.
                    "--write",
                    "--login",
                    &login,
                    "--junit",
                    junit.to_str().expect("utf-8"),
                ],
                &[],
            )
        }
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", text(&out));
    let junit = std::fs::read_to_string(&junit).expect("junit");
    let tests: usize = junit
        .split("tests=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        tests >= 30,
        "every operation is checked, got {tests}:\n{}",
        text(&out)
    );
    let refused = text(&out)
        .lines()
        .filter(|l| l.contains("without credentials") && l.contains("pass"))
        .count();
    assert!(
        refused >= 30,
        "secured operations refuse anonymous calls:\n{}",
        text(&out)
    );

    // The example smoke suite runs as documented against the same server.
    let example = suites()
        .join("../examples/api/testbed-smoke.yaml")
        .display()
        .to_string();
    let env = [
        ("TESTBED_URL", p.url.clone()),
        ("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
    ];
    let (code, report, out) = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        api_run(&[&example], &env)
    })
    .await
    .expect("join");
    assert_passes(code, &report, &out, 4);
}

#[tokio::test]
async fn a_postman_collection_logs_in_and_uses_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Platform::server_in(dir.path(), &[]).await;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/api/postman");
    let run = |password: &str| {
        let args = [
            examples
                .join("testbed-api.postman_collection.json")
                .display()
                .to_string(),
            "-e".into(),
            examples
                .join("testbed.postman_environment.json")
                .display()
                .to_string(),
            "--var".into(),
            format!("baseUrl={}", p.url),
            "--var".into(),
            format!("password={password}"),
        ];
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            api_run(&args, &[])
        })
    };
    let (code, report, out) = run(ADMIN_PASSWORD).await.expect("join");
    assert_passes(code, &report, &out, 9);
    assert!(
        out.contains("│              assertions │"),
        "newman's table:\n{out}"
    );
    assert!(
        report
            .suites
            .iter()
            .any(|s| s.cases.iter().any(|c| c.name == "who am I › it is me")),
        "{out}"
    );

    // The wrong password: the token is never set, so the bearer requests fail.
    let (code, report, out) = run("wrong").await.expect("join");
    assert_eq!(code, 1, "{out}");
    assert!(report.summary().failed >= 3, "{out}");
}

#[tokio::test]
async fn a_postman_collection_runs_once_per_data_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Platform::server_in(dir.path(), &[]).await;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/api/postman");
    let collection = examples.join("testbed-api.postman_collection.json");
    let env = examples.join("testbed.postman_environment.json");
    // Two users: the right password, then a wrong one.
    let data = dir.path().join("users.csv");
    std::fs::write(
        &data,
        format!("user,password\nadmin,{ADMIN_PASSWORD}\nadmin,wrong\n"),
    )
    .expect("write");
    let args: Vec<String> = vec![
        collection.display().to_string(),
        "-e".into(),
        env.display().to_string(),
        "--var".into(),
        format!("baseUrl={}", p.url),
        "-d".into(),
        data.display().to_string(),
    ];
    let (code, report, out) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        api_run(&args, &[])
    })
    .await
    .expect("join");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Iteration 2/2"), "{out}");
    let cases: Vec<_> = report.suites.iter().flat_map(|s| &s.cases).collect();
    let first: Vec<_> = cases
        .iter()
        .filter(|c| c.name.ends_with(" [iteration 1]"))
        .collect();
    assert_eq!(first.len(), 9, "{out}");
    assert!(first.iter().all(|c| c.outcome == Outcome::Pass), "{out}");
    let outcome = |name: &str| cases.iter().find(|c| c.name == name).map(|c| c.outcome);
    assert_eq!(
        outcome("log in › logged in [iteration 2]"),
        Some(Outcome::Fail),
        "{out}"
    );
    assert_eq!(
        outcome("a wrong password is refused › 401 [iteration 2]"),
        Some(Outcome::Pass),
        "{out}"
    );
}

#[test]
fn openapi_check_fails_undocumented_statuses_and_wrong_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hello.json"), r#"{"nom": "x"}"#).expect("write");
    std::fs::write(dir.path().join("secret.json"), r#"{"key": "open to all"}"#).expect("write");
    let port = common::free_port();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--directory",
    ])
    .arg(dir.path());
    let _server = Proc::spawn("http.server", cmd);
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({
            "openapi": "3.0.3",
            "info": {"title": "hello", "version": "1"},
            "paths": {
                "/hello.json": {"get": {"responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Hello"}}}}}}},
                "/missing": {"get": {"responses": {"200": {"description": "ok"}}}},
                "/secret.json": {"get": {"security": [{"bearer": []}], "responses": {"200": {"description": "ok"}, "401": {"description": "no token"}}}}
            },
            "components": {"schemas": {"Hello": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "nullable": true}}}}}
        })
        .to_string(),
    )
    .expect("write");
    let json_out = dir.path().join("r.json");
    let out = testbed(
        &[
            "api",
            "check",
            "--spec",
            spec.to_str().expect("utf-8"),
            "--base-url",
            &base,
            "--check-auth",
            "--json",
            json_out.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = testbed_report::from_json(&std::fs::read_to_string(&json_out).expect("json"))
        .expect("report");
    let case = |n: &str| {
        report.suites[0]
            .cases
            .iter()
            .find(|c| c.name == n)
            .cloned()
            .expect("case")
    };
    let hello = case("GET /hello.json");
    assert_eq!(hello.outcome, Outcome::Fail);
    assert!(
        hello
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("name"),
        "{:?}",
        hello.message
    );
    // python's file server has no notion of credentials.
    let open = case("GET /secret.json without credentials");
    assert_eq!(open.outcome, Outcome::Fail);
    assert!(
        open.message
            .as_deref()
            .unwrap_or_default()
            .contains("without credentials; expected 401 or 403"),
        "{:?}",
        open.message
    );
    assert!(
        report.suites[0]
            .cases
            .iter()
            .all(|c| c.name != "GET /missing without credentials"),
        "only secured operations are called anonymously"
    );
    let missing = case("GET /missing");
    assert_eq!(missing.outcome, Outcome::Fail);
    assert!(
        missing
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("status 404 is not documented"),
        "{:?}",
        missing.message
    );
}

#[tokio::test]
async fn the_api_plugin_runs_a_suite_inside_a_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Platform::up(dir.path(), 1, &[]).await;
    // `\{{` keeps the suite's own templates away from the plan's renderer.
    let suite = format!(
        "name: platform health\ntests:\n  - name: healthz\n    steps:\n      - request: {{url: \"{}/healthz\"}}\n        assert: [{{status: 200}}]\n  - name: 'version \\{{{{ item }}}}'\n    each: [a, b]\n    steps:\n      - exec: {{command: [sh, -c, 'echo \\{{{{ item }}}}']}}\n        assert: [{{body: {{contains: '\\{{{{ item }}}}'}}}}]\n",
        p.url
    );
    let plan = serde_json::to_string(&json!({
        "name": "api-in-a-plan",
        "steps": [{"id": "health", "plugin": "api", "method": "run_suite", "params": {"suite": suite}}]
    }))
    .expect("plan");
    let id = p.start_run(&plan, json!({})).await;
    let run = p.wait_run(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "passed", "{run}");
    let report_id = run["report_id"].as_str().expect("report id");
    let (s, report) = p.get(&format!("/api/reports/{report_id}")).await;
    assert_eq!(s, 200, "{report}");
    let names: Vec<String> = report["suites"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["cases"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    for n in ["healthz", "version a", "version b"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }

    let failing = serde_json::to_string(&json!({
        "name": "api-fails",
        "steps": [{"id": "bad", "plugin": "api", "method": "run_suite",
                   "params": {"suite": {"name": "x", "tests": [{"name": "t", "steps": [{"exec": {"command": "false"}, "assert": [{"status": 0}]}]}]}}}]
    }))
    .expect("plan");
    let id = p.start_run(&failing, json!({})).await;
    let run = p.wait_run(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");

    // Over the API, as a one-off task on a named agent: the result holds the report.
    let suite = format!("name: one-off\ntests:\n  - name: up\n    steps:\n      - request: {{url: \"{}/healthz\"}}\n", p.url);
    let task = p
        .run("api", "local-1", "run_suite", json!({"suite": suite}))
        .await;
    let t = p.wait_succeeded(&task, Duration::from_secs(60)).await;
    assert_eq!(
        t["result"]["report"]["suites"][0]["cases"][0]["name"], "up",
        "{t}"
    );
    assert_eq!(
        t["result"]["report"]["suites"][0]["cases"][0]["outcome"], "pass",
        "{t}"
    );
}

#[test]
fn jobs_run_files_at_the_same_time_and_keep_their_output_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    // Each suite marks that it started, then waits for the other's mark:
    // only files that really run at the same time both pass.
    for (me, other) in [("a", "b"), ("b", "a")] {
        std::fs::write(
            dir.path().join(format!("{me}.yaml")),
            format!(
                "name: suite {me}\ntests:\n  - name: meets {other}\n    steps:\n      - exec:\n          command: [sh, -c, 'touch {d}/{me}.mark; for i in $(seq 100); do [ -e {d}/{other}.mark ] && exit 0; sleep 0.05; done; exit 1']\n        assert: [{{status: 0}}]\n  - name: second test of {me}\n    steps: [{{exec: {{command: 'true'}}}}]\n"
            ),
        )
        .expect("write");
    }
    let a = dir.path().join("a.yaml").display().to_string();
    let b = dir.path().join("b.yaml").display().to_string();
    let (code, report, out) = api_run(&["-j", "2", &a, &b], &[]);
    assert_eq!(code, 0, "{out}");
    assert_all(&report, Outcome::Pass, &out);
    let names: Vec<&str> = report.suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["suite a", "suite b"], "report in the order given");
    // Each file's lines stay together.
    let lines: Vec<&str> = out.lines().collect();
    for me in ["a", "b"] {
        let head = lines
            .iter()
            .position(|l| l.starts_with(&format!("suite {me} (")))
            .unwrap_or_else(|| panic!("no heading for {me}:\n{out}"));
        assert!(lines[head + 1].contains("meets"), "{out}");
        assert!(
            lines[head + 2].contains(&format!("second test of {me}")),
            "{out}"
        );
    }
    // One at a time, the first suite waits for a mark that never comes.
    std::fs::remove_file(dir.path().join("a.mark")).expect("rm");
    std::fs::remove_file(dir.path().join("b.mark")).expect("rm");
    let (code, report, out) = api_run(&[&a, &b], &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(report.suites[0].cases[0].outcome, Outcome::Fail, "{out}");
}

/// What a user can see of a server's data: every list the API offers.
async fn dump(
    p: &Platform,
    project: &serde_json::Value,
    plan: &serde_json::Value,
) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for path in [
        "/api/projects".to_string(),
        format!("/api/performance/plans/?project_id={project}"),
        format!("/api/performance/reports/?plan_id={plan}"),
        "/api/plans".into(),
        "/api/runs".into(),
        "/api/reports".into(),
        "/api/tasks".into(),
        "/api/testcases".into(),
        "/api/environments".into(),
        "/api/groups".into(),
        "/api/users".into(),
    ] {
        let (s, b) = p.get(&path).await;
        assert_eq!(s, 200, "{path}: {b}");
        out.insert(path, b);
    }
    out
}

/// `--write` may add records of its own while it runs but must delete them;
/// every record that was there before must be there, unchanged.
fn records(v: &serde_json::Value) -> Vec<serde_json::Value> {
    match v {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) => o
            .values()
            .find_map(|x| x.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn openapi_check_leaves_a_servers_data_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Platform::up(&dir.path().join("data"), 1, &[]).await;
    // Data of every kind the issue saw touched, ids starting at 1 like the spec's examples.
    let (s, project) = p
        .post("/api/projects", json!({"name": "shop", "description": "d"}))
        .await;
    assert_eq!(s, 201, "{project}");
    let (s, perf) = p
        .post(
            "/api/performance/plans/",
            json!({"name": "mine", "project_id": project["id"], "config": {"concurrent_users": 1, "target_url": format!("{}/healthz", p.url)}}),
        )
        .await;
    assert_eq!(s, 201, "{perf}");
    let (s, b) = p
        .post(
            "/api/testcases",
            json!({"name": "login", "plugin": "linux_system", "method": "run_shell"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let yaml = "name: stored\nsteps:\n  - id: a\n    plugin: linux_system\n    method: run_shell\n    params: {command: echo, args: hi}\n";
    let (s, b) = p.send_yaml(reqwest::Method::POST, "/api/plans", yaml).await;
    assert_eq!(s, 201, "{b}");
    let run = p.start_run(yaml, json!({})).await;
    p.wait_run(&run, Duration::from_secs(60)).await;
    let task = p.run_shell("local-1", "echo", "hi").await;
    p.wait_task(&task, Duration::from_secs(30)).await;
    let before = dump(&p, &project["id"], &perf["id"]).await;

    let check = |extra: &'static [&'static str]| {
        let spec = format!("{}/api/openapi.json", p.url);
        let url = p.url.clone();
        let login = format!("admin:{ADMIN_PASSWORD}");
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "api",
                "check",
                "--spec",
                &spec,
                "--base-url",
                &url,
                "--login",
                &login,
            ];
            args.extend_from_slice(extra);
            testbed(&args, &[])
        })
    };

    // Read-only by default: the data is exactly as it was.
    let out = check(&["--check-auth"]).await.expect("join");
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(
            "skip  -    DELETE /api/projects/{id} — unsafe method; pass --write to call it"
        ),
        "{shown}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{shown}"
    );
    assert_eq!(
        dump(&p, &project["id"], &perf["id"]).await,
        before,
        "{shown}"
    );

    // --write warns, acts only on what it created, and removes it.
    let out = check(&["--write"]).await.expect("join");
    let shown = text(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "warning: --write: calling POST, PUT, PATCH and DELETE operations on {}",
            p.url
        )),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains("pass") && l.contains("DELETE /api/projects/{id}")),
        "the check deletes the project it created:\n{shown}"
    );
    let after = dump(&p, &project["id"], &perf["id"]).await;
    // Everything it created on Testbed has a DELETE, so nothing is left.
    assert!(!err.contains("left behind"), "{shown}");
    for (path, was) in &before {
        let now = records(&after[path]);
        for rec in records(was) {
            assert!(
                now.contains(&rec),
                "{path}: {rec} was changed or deleted:\n{shown}"
            );
        }
        let new: Vec<_> = now.iter().filter(|r| !records(was).contains(r)).collect();
        assert!(new.is_empty(), "{path}: left behind: {new:?}\n{shown}");
    }
}

/// `testbed api run ARGS` under `/usr/bin/time`: the output and the peak
/// RSS in KiB (`None` where GNU time is not installed).
fn api_run_measured(dir: &Path, args: &[&str]) -> (Output, Option<u64>) {
    common::testbed_measured(|c| {
        c.current_dir(dir)
            .args(["api", "run"])
            .args(args)
            .env("TESTBED_LOG", "error");
    })
}

/// Serves `GET /ok` (a small JSON answer) on a free local port and writes
/// `DIR/c.postman_collection.json`, "many": request `ping` to
/// `http://{{host}}/ok` in folder `F`, then `pong` to the server. No scripts
/// (a script costs milliseconds in a debug build): each request is a case.
/// Returns the server's address, for the data file's `host` rows.
async fn many_collection(dir: &Path) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/ok",
        axum::routing::get(|| async { axum::Json(json!({"ok": true})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let collection = json!({
        "info": {"name": "many", "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"},
        "item": [
            {"name": "F", "item": [
                {"name": "ping", "request": {"method": "GET", "url": "http://{{host}}/ok"}},
            ]},
            {"name": "pong", "request": {"method": "GET", "url": format!("http://{addr}/ok")}},
        ],
    });
    std::fs::write(
        dir.join("c.postman_collection.json"),
        collection.to_string(),
    )
    .expect("write");
    addr
}

/// A Postman collection run for 20,000 iterations against a local HTTP
/// server, with every report file and Newman's JSON and JUnit reporters:
/// the counts are right in each, and the run's peak memory is within a few
/// megabytes of a run of 2,000. Cases and requests go to temporary files
/// as they end; before, the run kept a `Case` and a request record each,
/// then a JSON value each for the reporter (about 30 MB more at 20,000).
#[tokio::test(flavor = "multi_thread")]
async fn a_collection_of_many_iterations_runs_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = many_collection(dir.path()).await;
    // The second data row names a port nobody listens on, so one request of
    // each run fails with its detail; the rows run out after the third,
    // which the other iterations reuse, as in Newman.
    std::fs::write(
        dir.path().join("rows.csv"),
        format!("host\n{addr}\n127.0.0.1:1\n{addr}\n"),
    )
    .expect("write");
    let mut measured = Vec::new();
    for n in [2_000usize, 20_000] {
        let iterations = n.to_string();
        let (out, peak) = tokio::task::spawn_blocking({
            let dir = dir.path().to_path_buf();
            move || {
                api_run_measured(
                    &dir,
                    &[
                        "c.postman_collection.json",
                        "-d",
                        "rows.csv",
                        "-n",
                        &iterations,
                        "-r",
                        "json,junit",
                        "--reporter-json-export",
                        "newman.json",
                        "--reporter-junit-export",
                        "newman.xml",
                        "--json",
                        "r.json",
                        "--junit",
                        "r.xml",
                        "--tap",
                        "r.tap",
                        "--html",
                        "r.html",
                    ],
                )
            }
        })
        .await
        .expect("join");
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        let (total, errors) = (2 * n, 1);
        assert!(
            said.contains(&format!("Tests={total},"))
                && said.contains(&format!(
                    "Passed={}, Failed=0, Errors={errors}, Skipped=0,",
                    total - errors
                )),
            "{n}: {said}"
        );
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);
        let report = testbed_report::from_json(&read("r.json")).expect("report");
        let sum = report.summary();
        assert_eq!((sum.total, sum.errors), (total, errors));
        let names: Vec<&str> = report.suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["F", "many"]);
        let error = report.suites[0]
            .cases
            .iter()
            .find(|c| c.outcome == Outcome::Error)
            .expect("the error");
        assert_eq!(error.name, "ping [iteration 2]");
        assert!(
            error
                .message
                .as_deref()
                .unwrap_or("")
                .contains("127.0.0.1:1"),
            "{error:?}"
        );
        // Two suites: their cases are subtests.
        let tap = read("r.tap");
        assert_eq!(
            tap.lines().filter(|l| l.starts_with("    ok ")).count(),
            total - errors
        );
        let junit = read("r.xml");
        assert_eq!(junit.matches("<testcase ").count(), total);
        assert_eq!(
            read("newman.xml"),
            junit,
            "the JUnit reporter writes the report"
        );
        let newman: serde_json::Value =
            serde_json::from_str(&read("newman.json")).expect("newman.json");
        let run = &newman["run"];
        assert_eq!(run["executions"].as_array().map(Vec::len), Some(total));
        assert_eq!(run["stats"]["iterations"]["total"], n);
        assert_eq!(
            run["stats"]["requests"],
            json!({"total": total, "pending": 0, "failed": errors})
        );
        assert_eq!(run["failures"].as_array().map(Vec::len), Some(errors));
        assert_eq!(run["failures"][0]["source"]["name"], "ping");
        assert_eq!(run["failures"][0]["parent"]["name"], "F");
        assert_eq!(run["failures"][0]["cursor"]["iteration"], 1);
        // Every answer is the same size.
        let size = run["executions"][0]["response"]["responseSize"]
            .as_u64()
            .expect("a size");
        assert_eq!(
            run["transfers"]["responseTotal"],
            (total - errors) as u64 * size
        );
        measured.push((n, peak, read("newman.json").len() / 1024));
    }
    eprintln!("api run peak RSS (iterations, KiB, newman.json KiB): {measured:?}");
    let (Some(small), Some(large)) = (measured[0].1, measured[1].1) else {
        panic!("no peak memory from /usr/bin/time -f %M (scripts/test installs GNU time)");
    };
    // About 45 bytes a case now (its name and where it is on disk): under
    // 2 MB for the 36,000 more; the old code held over 30 MB more.
    let grown = large.saturating_sub(small);
    assert!(
        grown < 8 * 1024,
        "the run's peak grew by {grown} KiB from 2,000 to 20,000 iterations: cases or requests \
         are held ({measured:?})"
    );
}

/// The `api` plugin in a plan step, on an agent of its own (a separate
/// process): a collection of 2,000 and then 20,000 iterations (4,000 and
/// 40,000 cases). The larger report goes up as a blob (its JSON is far over
/// the inline 256 KiB); the run passes, or fails where a data row names a
/// port nobody listens on, with every case counted in the run's report; and
/// the agent's peak memory grows by a few megabytes from the small run to
/// the large one. The cases go to an unlinked file as they end; before, the
/// plugin kept every case whole (peak 36 MB more at 20,000 than at 2,000 in a
/// debug build; 4.7 MB more now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_plugin_runs_a_collection_of_many_iterations_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = many_collection(dir.path()).await;
    std::fs::write(dir.path().join("good.csv"), format!("host\n{addr}\n")).expect("write");
    std::fs::write(
        dir.path().join("bad.csv"),
        format!("host\n{addr}\n127.0.0.1:1\n{addr}\n"),
    )
    .expect("write");
    let p = Platform::server_in(dir.path(), &[]).await;
    let agent = common::agent(
        &p.url,
        "api-1",
        &dir.path().join("agent"),
        &["--plugins", "api"],
    );
    agent.wait_line("connected to", Duration::from_secs(30));
    let agent_pid = agent.child.as_ref().expect("agent process").id();
    let collection = dir.path().join("c.postman_collection.json");
    let mut measured = Vec::new();
    for (n, rows, errors) in [(2_000usize, "good.csv", 0usize), (20_000, "bad.csv", 1)] {
        let plan = serde_json::to_string(&json!({
            "name": "iterations",
            "steps": [{"id": "api", "plugin": "api", "method": "run_suite", "params": {
                "path": collection, "data": dir.path().join(rows), "iterations": n,
            }}],
        }))
        .expect("plan");
        crate::tck::reset_peak(agent_pid);
        let started = std::time::Instant::now();
        let run = p.run_plan(&plan, json!({}), Duration::from_secs(600)).await;
        let took = started.elapsed();
        let peak = crate::tck::peak_kib(agent_pid);
        let expected = if errors == 0 { "passed" } else { "failed" };
        assert_eq!(run["status"], expected, "{n}: {run}");
        let task = run["steps"]["api"]["instances"][0]["task_id"]
            .as_str()
            .expect("task id");
        let t = p.task(task).await;
        let result = &t["result"];
        assert!(result.get("report").is_none(), "{n}: inline: {result}");
        assert_eq!(
            result["report_blob"]["summary"]["total"],
            2 * n,
            "{n}: {result}"
        );
        let id = run["report_id"].as_str().expect("report id");
        let (status, body) = p.get_text(&format!("/api/reports/{id}?format=json")).await;
        assert_eq!(status, 200, "{body}");
        let report = testbed_report::read_compact(body.as_bytes()).expect("the run's report");
        let s = report.summary();
        // The step's own case besides the collection's: it fails with them.
        assert_eq!(
            (s.total, s.passed, s.errors),
            (
                2 * n + 1,
                2 * n + 1 - errors - usize::from(errors > 0),
                errors
            ),
            "{n}: {s:?}"
        );
        let count = |name: &str| {
            (0..report.head.suites.len())
                .find(|&i| report.head.suites[i].name == name)
                .map(|i| report.lists[i].len())
        };
        assert_eq!((count("F"), count("many")), (Some(n), Some(n)), "{n}");
        if errors > 0 {
            let f = (0..report.head.suites.len())
                .find(|&i| report.head.suites[i].name == "F")
                .expect("F");
            let list = &report.lists[f];
            let bad: Vec<&str> = (0..list.len())
                .filter(|&i| list.outcome(i) == Outcome::Error)
                .map(|i| list.name(i))
                .collect();
            assert_eq!(bad, ["ping [iteration 2]"], "{n}");
        }
        measured.push((n, peak, took));
    }
    eprintln!("api plugin: agent peak RSS (iterations, KiB, run took): {measured:?}");
    // About 45 bytes a case now (its name and where it is on disk), and the
    // buffers of the upload: 4.7 MB seen for the 36,000 more cases, 36 MB
    // with every case kept.
    let grown = measured[1].1.saturating_sub(measured[0].1);
    assert!(
        grown < 12 * 1024,
        "the agent's peak grew by {grown} KiB from 2,000 to 20,000 iterations: cases are held \
         ({measured:?})"
    );
}
