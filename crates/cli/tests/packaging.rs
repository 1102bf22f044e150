//! Packaging files under `packaging/`, checked offline: the systemd units
//! by `systemd-analyze verify` and `security` (when systemd is on the
//! machine), the Dockerfile by its structure; the command lines both of
//! them start are run for real against the built binary. And `testbed
//! --version` names the git revision it was built from.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `key=value` lines of a unit file's section (comments and blanks skipped).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

fn has_tool(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

#[test]
fn systemd_units_verify_clean() {
    if !has_tool("systemd-analyze") {
        eprintln!("SKIP systemd_units_verify_clean: systemd-analyze is not on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["testbed-server.service", "testbed-agent.service"] {
        // verify checks that ExecStart's program exists: point it at the
        // binary under test instead of the installed path.
        let unit = read(&format!("packaging/systemd/{name}"))
            .replace("/usr/local/bin/testbed", &bin().display().to_string());
        std::fs::write(dir.path().join(name), unit).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(["testbed-server.service", "testbed-agent.service"].map(|n| dir.path().join(n)))
        .output()
        .expect("systemd-analyze verify");
    // verify exits 0 on an unknown key or a bad value and only warns:
    // any output at all is a finding.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    // The server runs no tasks and is locked down hard; the agent less so,
    // by design (packaging/systemd/testbed-agent.service says why).
    // `--threshold` is in tenths of the printed 0–10 exposure: the server
    // must stay at or below 2.0 ("OK"), the agent at or below 8.0.
    for (name, threshold) in [
        ("testbed-server.service", "20"),
        ("testbed-agent.service", "80"),
    ] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--threshold={threshold}"))
            .arg(dir.path().join(name))
            .output()
            .expect("systemd-analyze security");
        assert!(
            out.status.success(),
            "{name} exposure above {threshold}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn systemd_units_are_hardened_as_documented() {
    let server = read("packaging/systemd/testbed-server.service");
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "testbed"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateDevices", "yes"),
    ] {
        assert_eq!(unit_values(&server, key), [value], "server {key}");
    }
    let agent = read("packaging/systemd/testbed-agent.service");
    for (key, value) in [
        ("User", "testbed-agent"),
        ("StateDirectory", "testbed-agent"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
    ] {
        assert_eq!(unit_values(&agent, key), [value], "agent {key}");
    }
    // Secrets come from an environment file, never the command line.
    for unit in [&server, &agent] {
        for exec in unit_values(unit, "ExecStart") {
            assert!(!exec.to_lowercase().contains("token "), "{exec}");
        }
    }
}

/// One Dockerfile instruction: keyword and arguments, continuations joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let (kw, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((kw.to_string(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "dangling continuation: {current}");
    out
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_health_check() {
    let text = read("packaging/Dockerfile");
    let ins = instructions(&text);
    const KNOWN: &[&str] = &[
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ];
    for (kw, args) in &ins {
        assert!(
            KNOWN.contains(&kw.as_str()),
            "unknown instruction {kw} {args}"
        );
    }
    let stages: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let (_, builder) = &ins[stages[0]];
    assert!(
        builder.starts_with("rust:") && builder.ends_with(" AS build"),
        "{builder}"
    );
    // The builder's toolchain is the workspace's MSRV, which the lockfile fits.
    let msrv = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("workspace rust-version");
    assert!(
        ins.iter()
            .any(|(k, a)| k == "ARG" && *a == format!("RUST_VERSION={msrv}")),
        "ARG RUST_VERSION={msrv}"
    );
    let runtime = &ins[*stages.last().unwrap()..];
    assert!(runtime[0].1.starts_with("debian:") && runtime[0].1.contains("-slim"));
    let user = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, a)| a.clone())
        .expect("USER in the runtime stage");
    assert!(
        !["root", "0"].contains(&user.split(':').next().unwrap()),
        "{user}"
    );
    assert!(runtime
        .iter()
        .any(|(k, a)| k == "COPY" && a.starts_with("--from=build ")));
    let health = runtime
        .iter()
        .find(|(k, _)| k == "HEALTHCHECK")
        .map(|(_, a)| a.clone())
        .expect("HEALTHCHECK");
    assert!(health.contains("CMD "), "{health}");
    assert!(text.contains("http://127.0.0.1:8774/healthz"));
    let entry = runtime
        .iter()
        .find(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, a)| a.clone())
        .expect("ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(&entry).expect("exec-form ENTRYPOINT");
    assert_eq!(entry, ["/usr/local/bin/testbed", "server"]);
}

/// The command lines the packaging starts are real: `testbed server` with
/// the image's CMD and with the unit's ExecStart flags, state moved to a
/// temporary directory, answers /healthz.
#[tokio::test(flavor = "multi_thread")]
async fn packaged_command_lines_start_a_server() {
    let text = read("packaging/Dockerfile");
    let cmd = instructions(&text)
        .into_iter()
        .rev()
        .find(|(k, _)| k == "CMD")
        .map(|(_, a)| a)
        .expect("CMD");
    let image_args: Vec<String> = serde_json::from_str(&cmd).expect("exec-form CMD");
    let unit = read("packaging/systemd/testbed-server.service");
    let exec = unit_values(&unit, "ExecStart").pop().expect("ExecStart");
    let unit_args: Vec<String> = exec
        .split_whitespace()
        .skip(2) // /usr/local/bin/testbed server
        .map(str::to_string)
        .collect();
    for (what, args) in [("image CMD", image_args), ("unit ExecStart", unit_args)] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().display().to_string();
        let port = free_port();
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("/var/lib/testbed", &state)
                    .replace("0.0.0.0:8774", &format!("127.0.0.1:{port}"))
                    .replace("127.0.0.1:8774", &format!("127.0.0.1:{port}"))
            })
            .collect();
        let mut command = Command::new(bin());
        command
            .arg("server")
            .args(&args)
            .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD);
        let proc = Proc::spawn(what, command);
        proc.wait_line("Testbed is listening on", Duration::from_secs(60));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: /healthz never answered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            dir.path().join("testbed.redb").is_file(),
            "{what}: the store is not in the state directory"
        );
    }
}

#[test]
fn version_names_the_git_revision() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let line = line.trim();
    let rev = line
        .strip_prefix(&format!("testbed {} (git ", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {line}"));
    if let Ok(forced) = std::env::var("TESTBED_GIT_REVISION") {
        assert_eq!(rev, forced.trim());
        return;
    }
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo())
        .output();
    match git {
        Ok(o) if o.status.success() => {
            assert!(
                rev.len() >= 7 && rev.chars().all(|c| c.is_ascii_hexdigit()),
                "{line}"
            );
            // The binary was built from this checkout: its revision is HEAD
            // or (in a tree others commit to meanwhile) an ancestor of it.
            let ancestor = Command::new("git")
                .args(["merge-base", "--is-ancestor", rev, "HEAD"])
                .current_dir(repo())
                .status()
                .unwrap();
            assert!(
                ancestor.success(),
                "{rev} is not in this checkout's history"
            );
        }
        _ => assert_eq!(rev, "unknown", "{line}"),
    }
}

/// Every document of the Kubernetes manifests, as JSON values.
fn manifests() -> Vec<(String, serde_json::Value)> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for name in ["etcd.yaml", "server.yaml", "agent.yaml"] {
        let text = read(&format!("packaging/kubernetes/{name}"));
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = serde_json::Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !v.is_null() {
                docs.push((name.to_string(), v));
            }
        }
    }
    docs
}

fn workload<'a>(
    docs: &'a [(String, serde_json::Value)],
    kind: &str,
    name: &str,
) -> &'a serde_json::Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in packaging/kubernetes"))
}

fn container_args(w: &serde_json::Value) -> Vec<String> {
    w["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// The manifests are valid Kubernetes objects, checked offline against the
/// API's own schemas (PyPI's kubernetes-validate, strict: unknown fields
/// are errors), and the validator is shown to refuse a broken copy.
#[test]
fn kubernetes_manifests_validate_offline() {
    let Some(validate) = which("kubernetes-validate") else {
        eprintln!("SKIP kubernetes_manifests_validate_offline: no kubernetes-validate (scripts/test installs it from PyPI)");
        return;
    };
    let dir = repo().join("packaging/kubernetes");
    let files = ["etcd.yaml", "server.yaml", "agent.yaml"].map(|f| dir.join(f));
    let out = Command::new(&validate)
        .args(["--strict", "-k", "1.30.0"])
        .args(&files)
        .output()
        .expect("kubernetes-validate");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert_eq!(said.matches(" passed for resource ").count(), 7, "{said}");

    let broken = tempfile::tempdir().unwrap();
    let bad = broken.path().join("server.yaml");
    std::fs::write(
        &bad,
        read("packaging/kubernetes/server.yaml").replace("readinessProbe:", "readinesProbe:"),
    )
    .unwrap();
    let out = Command::new(&validate)
        .args(["--strict", "-k", "1.30.0"])
        .arg(&bad)
        .output()
        .expect("kubernetes-validate");
    assert!(!out.status.success(), "a misspelt field passed validation");
}

/// What the manifests deploy holds together: security settings the docs
/// promise, and names that agree across objects (the agent's server URL is
/// the Service, the store lists the etcd members the StatefulSet makes,
/// every Secret key read exists in the documented `kubectl create secret`).
#[test]
fn kubernetes_manifests_agree_with_each_other() {
    let docs = manifests();
    let etcd = workload(&docs, "StatefulSet", "etcd");
    let server = workload(&docs, "Deployment", "testbed-server");
    let agent = workload(&docs, "DaemonSet", "testbed-agent");
    assert!(
        server["spec"]["replicas"].as_u64().unwrap() >= 2,
        "N replicas"
    );
    let members = etcd["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(members % 2, 1, "an odd etcd cluster");
    let args = container_args(server);
    let store = &args[args.iter().position(|a| a == "--store").unwrap() + 1];
    let expected: Vec<String> = (0..members)
        .map(|i| format!("etcd-{i}.etcd:2379"))
        .collect();
    assert_eq!(store, &format!("etcd://{}", expected.join(",")));
    let blobs = &args[args.iter().position(|a| a == "--blobs").unwrap() + 1];
    assert!(
        blobs.starts_with("s3://"),
        "replicas share blobs through S3: {blobs}"
    );
    let agent_args = container_args(agent);
    assert_eq!(
        agent_args[agent_args.iter().position(|a| a == "--server").unwrap() + 1],
        "http://testbed:8774"
    );
    workload(&docs, "Service", "testbed");
    let header = read("packaging/kubernetes/server.yaml");
    for w in [etcd, server, agent] {
        let pod = &w["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{w}");
        let c = &pod["containers"][0];
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"], false,
            "{w}"
        );
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"][0], "ALL",
            "{w}"
        );
        for env in c["env"].as_array().into_iter().flatten() {
            if let Some(key) = env["valueFrom"]["secretKeyRef"]["key"].as_str() {
                assert!(
                    header.contains(&format!("--from-literal={key}=")),
                    "secret key {key} is not in the documented kubectl create secret"
                );
            }
        }
    }
}

/// The manifests' command lines run for real: two server replicas with the
/// Deployment's arguments over a real etcd (member addresses and the
/// bucket swapped for the test's), then the DaemonSet's agent against them;
/// both replicas answer /healthz and /metrics, and the agent serves its own.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_command_lines_start_a_cluster() {
    let docs = manifests();
    let server_args = container_args(workload(&docs, "Deployment", "testbed-server"));
    let agent_args = container_args(workload(&docs, "DaemonSet", "testbed-agent"));
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(1, &dir.path().join("etcd"));
    let blobs = dir.path().join("blobs");
    let mut replicas = Vec::new();
    for pod in ["testbed-server-a", "testbed-server-b"] {
        let (port, metrics) = (free_port(), free_port());
        let args: Vec<String> = server_args
            .iter()
            .map(|a| {
                if a.starts_with("etcd://") {
                    etcd.spec()
                } else if a.starts_with("s3://") {
                    blobs.display().to_string()
                } else {
                    a.replace("$(POD_NAME)", pod)
                        .replace("0.0.0.0:8774", &format!("127.0.0.1:{port}"))
                        .replace("0.0.0.0:9464", &format!("127.0.0.1:{metrics}"))
                }
            })
            .collect();
        let mut command = Command::new(bin());
        command
            .arg("server")
            .args(&args)
            .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN);
        let proc = Proc::spawn(pod, command);
        proc.wait_line("Testbed is listening on", Duration::from_secs(60));
        replicas.push((proc, port, metrics));
    }
    let agent_metrics = free_port();
    let server_url = format!("http://127.0.0.1:{}", replicas[0].1);
    let args: Vec<String> = agent_args
        .iter()
        .map(|a| {
            a.replace("http://testbed:8774", &server_url)
                .replace("$(NODE_NAME)", "node-1")
                .replace(
                    "/var/lib/testbed-agent",
                    &dir.path().join("agent").display().to_string(),
                )
                .replace("0.0.0.0:9465", &format!("127.0.0.1:{agent_metrics}"))
        })
        .collect();
    let mut command = Command::new(bin());
    command
        .arg("agent")
        .args(&args)
        .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN);
    let _agent = Proc::spawn("agent node-1", command);

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ready = true;
        for (_, port, metrics) in &replicas {
            let health = http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await;
            ready &= health.is_ok_and(|r| r.status().is_success());
            let m = http
                .get(format!("http://127.0.0.1:{metrics}/metrics"))
                .send()
                .await;
            ready &= m.is_ok_and(|r| r.status().is_success());
        }
        let agent = http
            .get(format!("http://127.0.0.1:{agent_metrics}/metrics"))
            .send()
            .await;
        let connected = match agent {
            Ok(r) => r
                .text()
                .await
                .unwrap_or_default()
                .contains("testbed_agent_connected 1"),
            Err(_) => false,
        };
        if ready && connected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the manifests' cluster never came up"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The agent registered under its node's name, seen through the other replica.
    let token = login(
        &http,
        &format!("http://127.0.0.1:{}", replicas[1].1),
        "admin",
        ADMIN_PASSWORD,
    )
    .await;
    let slaves: serde_json::Value = http
        .get(format!(
            "http://127.0.0.1:{}/v2.1/slaves/detail",
            replicas[1].1
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(slaves.to_string().contains("node-1"), "{slaves}");
}

/// `scripts/release` packs the binary with its docs, packaging, man pages
/// and completions, and the checksum file verifies the archive; the
/// unpacked binary runs.
#[test]
fn release_archive_is_complete_and_checksummed() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(repo().join("scripts/release"))
        .arg(out.path())
        .env("TESTBED_RELEASE_BINARY", bin())
        .output()
        .expect("scripts/release");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let sums = std::fs::read_to_string(out.path().join("SHA256SUMS")).unwrap();
    let archive = sums
        .split_whitespace()
        .nth(1)
        .expect("a file in SHA256SUMS")
        .to_string();
    assert!(
        archive.starts_with(&format!("testbed-{}-", env!("CARGO_PKG_VERSION")))
            && archive.ends_with(".tar.gz"),
        "{archive}"
    );
    let check = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(out.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // A flipped byte is caught.
    let path = out.path().join(&archive);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(out.path().join("tampered.tar.gz"), &bytes).unwrap();
    std::fs::write(
        out.path().join("TAMPERED"),
        sums.replace(&archive, "tampered.tar.gz"),
    )
    .unwrap();
    let check = Command::new("sha256sum")
        .args(["-c", "TAMPERED"])
        .current_dir(out.path())
        .output()
        .unwrap();
    assert!(!check.status.success());

    let unpacked = tempfile::tempdir().unwrap();
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&path)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(tar.success());
    let root = unpacked.path().join(archive.trim_end_matches(".tar.gz"));
    for f in [
        "testbed",
        "LICENSE",
        "README.md",
        "docs/operations.md",
        "packaging/Dockerfile",
        "packaging/kubernetes/server.yaml",
        "share/man/man1/testbed.1",
        "share/completions/testbed.bash",
        "share/completions/_testbed",
        "share/completions/testbed.fish",
    ] {
        let p = root.join(f);
        assert!(
            std::fs::metadata(&p).is_ok_and(|m| m.len() > 0),
            "{f} missing or empty in the archive"
        );
    }
    let v = Command::new(root.join("testbed"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("testbed "));
}
