//! Shared by the `plugins_*` tests (included with `#[path]`): a task context
//! over a temporary work directory, the collected log, and an artifact sink
//! that copies uploads into a directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tempfile::TempDir;
use testbed_agent::plugin::{
    ArtifactSink, ExecSettings, LogSink, PluginError, PluginSpec, TaskContext,
};
use testbed_core::schema::check_schema;
use testbed_core::task::Artifact;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Harness {
    pub ctx: TaskContext,
    pub log_rx: UnboundedReceiver<Vec<u8>>,
    pub log: Vec<u8>,
    pub artifacts: Arc<CopySink>,
    /// Holds the work directory and the artifact store.
    pub tmp: TempDir,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Self::with_settings(ExecSettings::default())
    }

    pub fn allowing_shell() -> Self {
        Self::with_settings(ExecSettings {
            allow_shell: true,
            run_as: None,
        })
    }

    pub fn with_settings(settings: ExecSettings) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let work_dir = tmp.path().join("work");
        std::fs::create_dir(&work_dir).unwrap();
        let store = tmp.path().join("artifacts");
        std::fs::create_dir(&store).unwrap();
        let artifacts = Arc::new(CopySink {
            dir: store,
            uploads: Mutex::new(Vec::new()),
        });
        let (log, log_rx) = LogSink::channel();
        let ctx = TaskContext {
            task_id: Uuid::new_v4(),
            log,
            cancel: CancellationToken::new(),
            work_dir,
            settings: Arc::new(settings),
            artifacts: artifacts.clone(),
            metrics: testbed_agent::plugin::MetricSink::channel().0,
            control: testbed_agent::plugin::fixed_control(),
        };
        Harness {
            ctx,
            log_rx,
            log: Vec::new(),
            artifacts,
            tmp,
        }
    }

    pub fn work_dir(&self) -> &Path {
        &self.ctx.work_dir
    }

    /// Everything logged so far.
    pub fn log_text(&mut self) -> String {
        while let Ok(chunk) = self.log_rx.try_recv() {
            self.log.extend(chunk);
        }
        String::from_utf8_lossy(&self.log).into_owned()
    }

    /// Waits (up to 10 s) until the log contains `needle`.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            match tokio::time::timeout_at(deadline, self.log_rx.recv()).await {
                Ok(Some(chunk)) => self.log.extend(chunk),
                Ok(None) => panic!("log closed before {needle:?} appeared: {text:?}"),
                Err(_) => panic!("{needle:?} did not appear in the log: {text:?}"),
            }
        }
    }
}

/// Stores uploads as `dir/<name>`.
pub struct CopySink {
    pub dir: PathBuf,
    pub uploads: Mutex<Vec<(Uuid, String, PathBuf)>>,
}

impl CopySink {
    pub fn content(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }

    pub fn names(&self) -> Vec<String> {
        self.uploads
            .lock()
            .unwrap()
            .iter()
            .map(|(_, n, _)| n.clone())
            .collect()
    }
}

#[async_trait]
impl ArtifactSink for CopySink {
    async fn upload(&self, task: Uuid, name: &str, path: &Path) -> Result<Artifact, PluginError> {
        let dest = self.dir.join(name);
        let size = tokio::fs::copy(path, &dest)
            .await
            .map_err(|e| PluginError::io(format!("copying {}", path.display()), e))?;
        self.uploads
            .lock()
            .unwrap()
            .push((task, name.to_string(), path.to_path_buf()));
        Ok(Artifact {
            name: name.to_string(),
            size,
            url: format!("file://{}", dest.display()),
        })
    }
}

/// Whether process `pid` is gone (a zombie counts: it runs nothing, and in
/// a container nobody may reap it).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
    }
}

/// Waits up to 5 s for `pid` to be gone.
pub async fn wait_gone(pid: u32) -> bool {
    for _ in 0..50 {
        if process_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits up to 10 s for a file to hold a pid.
pub async fn read_pid(path: &Path) -> u32 {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no pid appeared in {}", path.display());
}

/// Writes an executable script. The file is written by a child `sh`, not by
/// this process: a test thread forking at the moment this process held the
/// file open for writing would carry the descriptor into its child until that
/// child's exec, and running the script then fails with ETXTBSY ("Text file
/// busy").
pub fn write_script(path: &Path, body: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "writing {}",
        path.display()
    );
}

/// `spec` offers exactly the methods `names`, in that order, each with a
/// valid JSON schema for its parameters.
pub fn assert_methods(spec: &PluginSpec, names: &[&str]) {
    let offered: Vec<_> = spec.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(offered, names);
    for m in &spec.methods {
        check_schema(&m.schema).unwrap_or_else(|e| panic!("{}: {e}", m.name));
    }
}
