//! `build_server` against real git repositories.

use crate::support;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use support::{assert_methods, Harness};
use tempfile::TempDir;
use testbed_agent::plugin::{Plugin, PluginError, PluginOutput};
use testbed_agent::plugins::build_server::BuildServer;
use testbed_core::task::TaskStatus;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repository whose `build.sh` copies `version.txt` to `out/app.txt`:
/// tag `v1` holds "v1 content", the next commit (HEAD of `main`) "v2
/// content". Returns the directory and the two commits.
fn sample_repo() -> (TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"]);
    std::fs::write(
        d.join("build.sh"),
        "mkdir -p out\ncp version.txt out/app.txt\necho built\n",
    )
    .unwrap();
    std::fs::write(d.join("version.txt"), "v1 content\n").unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "one"]);
    git(d, &["tag", "v1"]);
    let v1 = git(d, &["rev-parse", "HEAD"]);
    std::fs::write(d.join("version.txt"), "v2 content\n").unwrap();
    git(d, &["commit", "-q", "-am", "two"]);
    let v2 = git(d, &["rev-parse", "HEAD"]);
    (dir, v1, v2)
}

async fn build(h: &Harness, params: Value) -> Result<PluginOutput, PluginError> {
    BuildServer.invoke("build", params, &h.ctx).await
}

#[test]
fn spec_offers_the_linux_methods_and_build() {
    let spec = BuildServer.spec();
    assert_eq!(spec.name, "build_server");
    assert_methods(&spec, &["run_shell", "system_information", "build"]);
}

#[tokio::test]
async fn builds_a_tag_and_uploads_its_artifact() {
    let (repo, v1, _) = sample_repo();
    let mut h = Harness::new();
    let out = build(
        &h,
        json!({
            "repo": repo.path().to_str().unwrap(),
            "ref": "v1",
            "command": "sh build.sh",
            "artifacts": {"app": "out/app.txt"},
        }),
    )
    .await
    .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded, "{}", out.result);
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.result["commit"], v1);
    assert_eq!(out.result["exit_code"], 0);
    assert!(out.result["duration_ms"].is_u64());
    assert_eq!(out.result["artifacts"][0]["name"], "app");
    assert_eq!(out.result["artifacts"][0]["size"], 11);
    assert_eq!(h.artifacts.names(), ["app"]);
    assert_eq!(h.artifacts.content("app").unwrap(), "v1 content\n");
    let log = h.log_text();
    assert!(log.contains("$ git clone --branch v1 -- "), "{log}");
    assert!(log.contains("$ sh build.sh\nbuilt\n"), "{log}");
    assert!(h.work_dir().join("src/out/app.txt").is_file());
}

#[tokio::test]
async fn builds_the_default_branch_without_a_ref() {
    let (repo, _, v2) = sample_repo();
    let h = Harness::new();
    let out = build(
        &h,
        json!({
            "repo": repo.path().to_str().unwrap(),
            "command": ["sh", "build.sh"],
            "artifacts": ["out/app.txt"],
        }),
    )
    .await
    .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded, "{}", out.result);
    assert_eq!(out.result["commit"], v2);
    assert_eq!(h.artifacts.content("app.txt").unwrap(), "v2 content\n");
}

#[tokio::test]
async fn builds_a_commit() {
    let (repo, v1, _) = sample_repo();
    let mut h = Harness::new();
    let out = build(
        &h,
        json!({
            "repo": format!("file://{}", repo.path().display()),
            "ref": &v1[..12],
            "command": "sh build.sh",
            "artifacts": {"app": "out/app.txt"},
        }),
    )
    .await
    .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded, "{}", out.result);
    assert_eq!(out.result["commit"], v1);
    assert_eq!(h.artifacts.content("app").unwrap(), "v1 content\n");
    assert!(h
        .log_text()
        .contains(&format!("$ git checkout --quiet {}", &v1[..12])));
}

#[tokio::test]
async fn a_missing_artifact_fails_the_build_and_is_named() {
    let (repo, _, _) = sample_repo();
    let h = Harness::new();
    let out = build(
        &h,
        json!({
            "repo": repo.path().to_str().unwrap(),
            "command": "sh build.sh",
            "artifacts": {"app": "out/app.txt", "docs": "out/manual.pdf"},
        }),
    )
    .await
    .unwrap();
    assert_eq!(out.status, TaskStatus::Failed);
    assert_eq!(out.exit_code, Some(0));
    let error = out.result["error"].as_str().unwrap();
    assert!(
        error.contains("docs") && error.contains("out/manual.pdf"),
        "{error}"
    );
    assert_eq!(out.result["artifact_errors"][0]["name"], "docs");
    assert_eq!(out.result["artifact_errors"][0]["error"], "not found");
    // The artifact that exists is still delivered.
    assert_eq!(h.artifacts.names(), ["app"]);
}

#[tokio::test]
async fn a_failing_build_command_fails_the_task() {
    let (repo, _, _) = sample_repo();
    let h = Harness::new();
    let out = build(
        &h,
        json!({
            "repo": repo.path().to_str().unwrap(),
            "command": ["sh", "-c", "exit 4"],
            "artifacts": ["out/app.txt"],
        }),
    )
    .await
    .unwrap();
    assert_eq!(out.status, TaskStatus::Failed);
    assert_eq!(out.exit_code, Some(4));
    assert_eq!(out.result["artifacts"], json!([]));
    assert!(h.artifacts.names().is_empty());
}

#[tokio::test]
async fn artifacts_may_not_leave_the_checkout() {
    let h = Harness::new();
    for artifacts in [
        json!({"x": "../secret"}),
        json!({"x": "/etc/passwd"}),
        json!({"x": "out/../../secret"}),
        json!({"../x": "out/app.txt"}),
        json!(["/etc/passwd"]),
    ] {
        let err = build(
            &h,
            json!({"repo": "/nonexistent", "command": "true", "artifacts": artifacts}),
        )
        .await
        .unwrap_err();
        match err {
            PluginError::InvalidParams { field, .. } => {
                assert!(field.starts_with("artifacts/"), "{field}")
            }
            other => panic!("{artifacts}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_symlink_in_the_repository_cannot_exfiltrate_files() {
    let repo = tempfile::tempdir().unwrap();
    let secret = tempfile::tempdir().unwrap();
    let secret_file = secret.path().join("secret.txt");
    std::fs::write(&secret_file, "do not upload").unwrap();
    git(repo.path(), &["init", "-q"]);
    std::os::unix::fs::symlink(&secret_file, repo.path().join("leak")).unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "leak"]);

    let h = Harness::new();
    let out = build(
        &h,
        json!({"repo": repo.path().to_str().unwrap(), "command": "true",
               "artifacts": ["leak"]}),
    )
    .await
    .unwrap();
    assert_eq!(out.status, TaskStatus::Failed);
    let error = out.result["error"].as_str().unwrap();
    assert!(error.contains("outside the checkout"), "{error}");
    assert!(h.artifacts.names().is_empty());
}

#[tokio::test]
async fn a_bad_repository_or_ref_is_an_error() {
    let h = Harness::new();
    let err = build(&h, json!({"repo": "/no/such/repo", "command": "true"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("git clone"), "{err}");

    let (repo, _, _) = sample_repo();
    let h = Harness::new();
    let err = build(
        &h,
        json!({"repo": repo.path().to_str().unwrap(), "ref": "no-such-branch", "command": "true"}),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("git clone"), "{err}");

    for (params, field) in [
        (json!({"repo": "relative/path", "command": "true"}), "repo"),
        (
            json!({"repo": "--upload-pack=evil", "command": "true"}),
            "repo",
        ),
        (
            json!({"repo": "ext::sh -c evil", "command": "true"}),
            "repo",
        ),
        (
            json!({"repo": "/r", "ref": "--orphan", "command": "true"}),
            "ref",
        ),
        (json!({"repo": "/r", "command": "'unbalanced"}), "command"),
        (json!({"repo": "/r"}), "command"),
    ] {
        match build(&h, params.clone()).await {
            Err(PluginError::InvalidParams { field: f, .. }) => assert_eq!(f, field, "{params}"),
            other => panic!("{params}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn shell_builds_need_allow_shell() {
    let (repo, _, _) = sample_repo();
    let params = json!({
        "repo": repo.path().to_str().unwrap(),
        "command": "sh build.sh && cat out/app.txt",
        "shell": true,
    });
    let h = Harness::new();
    let err = build(&h, params.clone()).await.unwrap_err();
    assert!(matches!(err, PluginError::Refused(_)), "{err:?}");

    let mut h = Harness::allowing_shell();
    let out = build(&h, params).await.unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded, "{}", out.result);
    assert!(h.log_text().contains("built\nv2 content\n"));
}

#[tokio::test]
async fn run_shell_is_linux_systems() {
    let mut h = Harness::new();
    let out = BuildServer
        .invoke(
            "run_shell",
            json!({"command": "echo", "args": "hi"}),
            &h.ctx,
        )
        .await
        .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded);
    assert_eq!(h.log_text(), "hi\n");
    let out = BuildServer
        .invoke("system_information", json!({}), &h.ctx)
        .await
        .unwrap();
    assert!(out.result["hostname"].is_string());
}
