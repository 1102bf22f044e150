//! The documentation harness: the shell blocks of the README and `docs/*.md`
//! run as a reader would paste them, in order, in a sandbox.
//!
//! What a block is: a fenced block whose language is `sh`, `bash`, `shell` or
//! `console`. Other fences (`json`, `text`, `yaml`, …) are shown output or file
//! contents and are not run.
//!
//! The sandbox of one Markdown file:
//! - a temporary working directory holding a copy of the repository's
//!   `examples/` (blocks may write into it) and a link to `suites/`;
//! - a temporary `HOME` (so `testbed login` saves its token there), a clean
//!   environment (`PATH`, `HOME`, `LANG`, `TERM=dumb`), stdin from `/dev/null`;
//! - `testbed` on the `PATH`: the binary cargo just built for this test;
//! - when the harness runs as root, a network namespace of its own with only a
//!   loopback, so every file can use the documented `127.0.0.1:8774` (and etcd's
//!   `127.0.0.1:2379`) while other tests run; otherwise the host's network,
//!   and those ports must be free (sandboxes then run one at a time;
//!   `TESTBED_DOCS_HOST_NETWORK=1` asks for this mode).
//!
//! Blocks of a file run one after the other with `bash -e` (a block stops at
//! its first failing command and fails). Shell variables and exports, and the
//! current directory, carry over from one block to the next, as in a terminal.
//! One rewrite is made, so that no release build is needed:
//! `cargo run --release -p testbed-cli -- ARGS` runs as `testbed ARGS`.
//!
//! Annotations: an HTML comment on the line right above a block's opening
//! fence (blank lines between are allowed), `<!-- doc: D1; D2 -->`, with
//! directives:
//! - `skip: REASON` — not run; the reason is printed. For blocks that cannot
//!   run here at all (the whole test suite, benchmarks that take minutes).
//! - `background [URL [contains TEXT]|none]` — every command but the last
//!   runs as usual; the last one (a server: `testbed up`, `testbed server`,
//!   `testbed agent`) is started in the background and the harness waits
//!   until URL answers (default `http://127.0.0.1:8774/healthz`), with TEXT
//!   in its body when given (`"agents_connected":2`); `none`: no wait. Background
//!   processes get SIGINT (as Ctrl-C) at the end of the file, or at `stop`.
//! - `stop` — before the block, stop the background processes started so far
//!   (the reader's Ctrl-C in the other terminal).
//! - `expect-exit N` — the block must exit with N (a documented failure).
//! - `etcd` — before the block, start an etcd (Debian's `etcd-server`, as
//!   `scripts/test` installs) on `127.0.0.1:2379` for the rest of the file.
//! - `timeout SECONDS` — instead of the default 120 s for the block.
//!
//! Shown output: a `json` block right below a shell block (only blank lines
//! between) is what that block prints; every object key it shows must occur
//! in the real output (placeholders such as `…` are fine).
//!
//! A failure names the block by `file:line` and shows its stdout and stderr
//! (and the output of the background processes).
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fence languages that are run.
const SHELL_LANGS: [&str; 4] = ["sh", "bash", "shell", "console"];
/// The README's build-and-run form, and what the harness runs instead.
const CARGO_RUN: &str = "cargo run --release -p testbed-cli -- ";
const DEFAULT_READY: &str = "http://127.0.0.1:8774/healthz";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One shell block of a Markdown file.
#[derive(Debug, Clone)]
pub struct Block {
    /// 1-based line of the opening fence.
    pub line: usize,
    pub code: String,
    pub skip: Option<String>,
    /// Started in the background; what to wait for: a URL that answers, and
    /// optionally a text its body must contain.
    pub background: Option<Option<(String, Option<String>)>>,
    pub stop: bool,
    pub expect_exit: i32,
    pub etcd: bool,
    pub timeout: Duration,
    /// Keys of the `json` block right below this one (only blank lines
    /// between): the output it shows. Each must appear in the real output.
    pub shown_keys: Vec<String>,
}

/// The field names (`"name":`) of a shown JSON output, which may hold
/// placeholders (`…`) and so need not parse.
fn json_keys(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else { break };
        let word = &after[..close];
        let tail = after[close + 1..].trim_start();
        // Field names only: a key that is an id (a uuid) is an example value.
        let field = word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if tail.starts_with(':') && field && !keys.iter().any(|k| k == word) {
            keys.push(word.to_string());
        }
        rest = &after[close + 1..];
    }
    keys
}

/// The shell blocks of `text`, with their annotations; a malformed annotation
/// (unknown directive, skip without reason, a comment above no shell block) is
/// an error naming its line.
pub fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Block> = Vec::new();
    let mut i = 0;
    // The annotation waiting for the next fence: (line, directives).
    let mut pending: Option<(usize, String)> = None;
    // Index of the closing fence of the last shell block.
    let mut last_shell_close: Option<usize> = None;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed
            .strip_prefix("<!-- doc:")
            .and_then(|r| r.trim_end().strip_suffix("-->"))
        {
            if let Some((at, _)) = pending {
                return Err(format!("line {at}: doc annotation above no shell block"));
            }
            pending = Some((i + 1, rest.trim().to_string()));
            i += 1;
            continue;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            let indent = line.len() - trimmed.len();
            let lang = info.split_whitespace().next().unwrap_or("");
            let start = i;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                let l = lines[i];
                body.push(if l.len() >= indent && l[..indent].trim().is_empty() {
                    &l[indent..]
                } else {
                    l.trim_start()
                });
                i += 1;
            }
            i += 1;
            let note = pending.take();
            if !SHELL_LANGS.contains(&lang) {
                if let Some((at, _)) = note {
                    return Err(format!(
                        "line {at}: doc annotation above a `{lang}` block, which is not run"
                    ));
                }
                let mut above = start;
                while above > 0 && lines[above - 1].trim().is_empty() {
                    above -= 1;
                }
                if lang == "json" && above > 0 && last_shell_close == Some(above - 1) {
                    if let Some(b) = out.last_mut() {
                        b.shown_keys = json_keys(&body.join("\n"));
                    }
                }
                continue;
            }
            last_shell_close = Some(i - 1);
            let mut b = Block {
                line: start + 1,
                code: body.join("\n") + "\n",
                skip: None,
                background: None,
                stop: false,
                expect_exit: 0,
                etcd: false,
                timeout: DEFAULT_TIMEOUT,
                shown_keys: Vec::new(),
            };
            if let Some((at, directives)) = note {
                // Directives are separated by `;`, except that `skip:` takes
                // the rest of the comment (a reason may contain `;`).
                let mut rest = directives.trim();
                while !rest.is_empty() {
                    let (d, after) = match rest.split_once(';') {
                        Some(_) if rest.starts_with("skip") => (rest, ""),
                        Some((d, after)) => (d.trim(), after.trim()),
                        None => (rest, ""),
                    };
                    if !d.is_empty() {
                        parse_directive(&mut b, d).map_err(|e| format!("line {at}: {e}"))?;
                    }
                    rest = after;
                }
            }
            out.push(b);
            continue;
        }
        if pending.is_some() && !line.trim().is_empty() {
            let (at, _) = pending.take().unwrap_or_default();
            return Err(format!("line {at}: doc annotation above no shell block"));
        }
        i += 1;
    }
    if let Some((at, _)) = pending {
        return Err(format!("line {at}: doc annotation above no shell block"));
    }
    Ok(out)
}

fn parse_directive(b: &mut Block, d: &str) -> Result<(), String> {
    let (word, arg) = match d.split_once([' ', ':']) {
        Some((w, a)) => (w, a.trim()),
        None => (d, ""),
    };
    match word {
        "skip" => {
            if arg.is_empty() {
                return Err("`skip` needs a reason: `skip: why`".into());
            }
            b.skip = Some(arg.to_string());
        }
        "background" => {
            let (url, contains) = match arg.split_once(" contains ") {
                Some((u, c)) => (u.trim(), Some(c.trim().to_string())),
                None => (arg, None),
            };
            b.background = Some(match url {
                "" => Some((DEFAULT_READY.to_string(), contains)),
                "none" => None,
                url => Some((url.to_string(), contains)),
            })
        }
        "stop" => b.stop = true,
        "etcd" => b.etcd = true,
        "expect-exit" => {
            b.expect_exit = arg
                .parse()
                .map_err(|_| format!("`expect-exit` needs a number, not `{arg}`"))?
        }
        "timeout" => {
            let s: u64 = arg
                .parse()
                .map_err(|_| format!("`timeout` needs seconds, not `{arg}`"))?;
            b.timeout = Duration::from_secs(s);
        }
        other => {
            return Err(format!(
            "unknown doc directive `{other}` (skip, background, stop, expect-exit, etcd, timeout)"
        ))
        }
    }
    Ok(())
}

/// The shell's view of a block: continuation lines joined, so that the last
/// command of a background block can be told from the others.
fn split_last_command(code: &str) -> (String, String) {
    let mut commands: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in code.lines() {
        current.push_str(line);
        current.push('\n');
        if !line.trim_end().ends_with('\\') {
            if !current.trim().is_empty() && !current.trim_start().starts_with('#') {
                commands.push(std::mem::take(&mut current));
            } else {
                current.clear();
            }
        }
    }
    if !current.trim().is_empty() {
        commands.push(current);
    }
    let last = commands.pop().unwrap_or_default();
    (commands.concat(), last)
}

/// Runs every block; the wrapper carries shell state between them.
const WRAPPER: &str = r#"# doc harness: restores the previous blocks' variables and directory,
# runs the block with -e, and saves its variables for the next one.
if [ -f "$__DOC_STATE" ]; then source "$__DOC_STATE"; fi
__doc_save() {
  local v d
  {
    for v in $(compgen -v); do
      case "$v" in
        __doc*|__DOC*|BASH*|PWD|OLDPWD|SHLVL|_|PIPESTATUS|FUNCNAME|GROUPS|RANDOM|SRANDOM|LINENO|SECONDS|EPOCHSECONDS|EPOCHREALTIME|DIRSTACK|COMP_WORDBREAKS|HISTCMD|IFS|OPTIND|OPTERR) continue ;;
      esac
      d=$(declare -p "$v" 2>/dev/null) || continue
      [[ "${d#declare -}" =~ ^[a-zA-Z-]*r ]] && continue
      printf '%s\n' "$d"
    done
    printf 'cd %q\n' "$PWD"
  } > "$__DOC_STATE.new" && mv "$__DOC_STATE.new" "$__DOC_STATE"
}
if [ -z "$__DOC_NO_SAVE" ]; then trap '__doc_rc=$?; __doc_save; exit $__doc_rc' EXIT; fi
set -e
source "$1"
"#;

struct Background {
    line: usize,
    child: Child,
    out: PathBuf,
}

/// The result of one shell run.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// One Markdown file's (or one test's) sandbox; see the module comment.
pub struct Sandbox {
    pub name: String,
    dir: tempfile::TempDir,
    pub work: PathBuf,
    pub home: PathBuf,
    path: String,
    /// The process (`cat`) holding the network namespace, when there is one.
    netns: Option<Child>,
    /// Without a namespace, sandboxes share the host's ports: one at a time.
    _host_net: Option<std::sync::MutexGuard<'static, ()>>,
    backgrounds: Vec<Background>,
    etcd: Option<Child>,
    count: usize,
}

static HOST_NETWORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            // std::fs::copy keeps the permission bits (executable scripts).
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("testbed-docs-")
            .tempdir()
            .expect("tempdir");
        let work = dir.path().join("work");
        let home = dir.path().join("home");
        let bin = dir.path().join("bin");
        for d in [&work, &home, &bin, &dir.path().join("tmp")] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let root = repo_root();
        copy_dir(&root.join("examples"), &work.join("examples")).expect("copy examples/");
        std::os::unix::fs::symlink(root.join("suites"), work.join("suites")).expect("link suites/");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_testbed"), bin.join("testbed"))
            .expect("link testbed");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
        );
        let netns = Self::network_namespace();
        let host_net = if netns.is_none() {
            eprintln!(
                "{name}: no network namespace (needs root); using the host's 127.0.0.1:8774, one sandbox at a time"
            );
            // A test that panicked held it: the lock is still good.
            Some(HOST_NETWORK.lock().unwrap_or_else(|e| e.into_inner()))
        } else {
            None
        };
        Sandbox {
            name: name.to_string(),
            dir,
            work,
            home,
            path,
            netns,
            _host_net: host_net,
            backgrounds: Vec::new(),
            etcd: None,
            count: 0,
        }
    }

    /// A process holding a fresh network namespace with its loopback up, or
    /// None when namespaces are not available (not root).
    fn network_namespace() -> Option<Child> {
        if std::env::var_os("TESTBED_DOCS_HOST_NETWORK").is_some() {
            return None;
        }
        let mut holder = Command::new("unshare")
            // `cat` on a pipe from us: it ends with the test process even
            // when that is killed and never runs its clean-up.
            .args(["-n", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let pid = holder.id().to_string();
        // Until unshare has made the namespace, `ip` would configure the
        // host's loopback: wait until the holder's namespace differs.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let own = std::fs::read_link("/proc/self/ns/net").ok();
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            if theirs.is_some() && theirs != own {
                break;
            }
            if matches!(holder.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                let _ = holder.kill();
                let _ = holder.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let up = Command::new("nsenter")
            .args(["-t", &pid, "-n", "--", "ip", "link", "set", "lo", "up"])
            .status();
        if !up.is_ok_and(|s| s.success()) {
            let _ = holder.kill();
            let _ = holder.wait();
            return None;
        }
        Some(holder)
    }

    /// A command run inside the sandbox (its namespace, environment, directory).
    fn command(&self, program: &str) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &ns.id().to_string(), "-n", "--", program]);
                c
            }
            None => Command::new(program),
        };
        cmd.env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.home)
            .env("USER", "root")
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env("__DOC_STATE", self.dir.path().join("state.sh"))
            .current_dir(&self.work)
            .stdin(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd
    }

    fn script(&mut self, code: &str) -> PathBuf {
        self.count += 1;
        let wrapper = self.dir.path().join("wrapper.sh");
        if !wrapper.exists() {
            std::fs::write(&wrapper, WRAPPER).expect("write wrapper");
        }
        let p = self.dir.path().join(format!("block-{}.sh", self.count));
        std::fs::write(&p, code.replace(CARGO_RUN, "testbed ")).expect("write block");
        p
    }

    fn bash(&mut self, code: &str) -> Command {
        let file = self.script(code);
        let mut cmd = self.command("bash");
        cmd.arg("--noprofile")
            .arg("--norc")
            .arg(self.dir.path().join("wrapper.sh"))
            .arg(file);
        cmd
    }

    /// Runs `code` with bash in the sandbox and waits for it (killing its
    /// process group after `timeout`).
    pub fn sh(&mut self, code: &str, timeout: Duration) -> Ran {
        self.count += 1;
        let out = self.dir.path().join(format!("out-{}", self.count));
        let err = self.dir.path().join(format!("err-{}", self.count));
        let mut cmd = self.bash(code);
        cmd.stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"));
        let mut child = cmd.spawn().expect("spawn bash");
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let status = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break Some(st);
            }
            if Instant::now() > deadline {
                timed_out = true;
                signal_group(child.id(), "KILL");
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Children a block left running (`cmd &`) end with it.
        signal_group(child.id(), "KILL");
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        Ran {
            code: status.and_then(|s| s.code()),
            stdout: read(&out),
            stderr: read(&err),
            timed_out,
        }
    }

    /// Starts `code` in the background (its output kept for failure
    /// messages); waits until `ready` answers over HTTP.
    pub fn background(
        &mut self,
        line: usize,
        code: &str,
        ready: Option<(&str, Option<&str>)>,
    ) -> Result<(), String> {
        self.count += 1;
        let out = self.dir.path().join(format!("bg-{}", self.count));
        let mut cmd = self.bash(code);
        let file = std::fs::File::create(&out).expect("bg file");
        cmd.env("__DOC_NO_SAVE", "1")
            .stdout(file.try_clone().expect("dup"))
            .stderr(file);
        let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        self.backgrounds.push(Background { line, child, out });
        let Some((url, contains)) = ready else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let probe = self
                .command("curl")
                .args(["-s", "--max-time", "2", url])
                .stderr(Stdio::null())
                .output();
            if let Ok(o) = probe {
                let body = String::from_utf8_lossy(&o.stdout);
                if o.status.success() && contains.is_none_or(|c| body.contains(c)) {
                    return Ok(());
                }
            }
            let bg = self.backgrounds.last_mut().expect("just pushed");
            if let Ok(Some(st)) = bg.child.try_wait() {
                return Err(format!(
                    "the background command ended ({st}) before {url} answered"
                ));
            }
            if Instant::now() > deadline {
                let what = contains.map(|c| format!(" with `{c}`")).unwrap_or_default();
                return Err(format!("{url} did not answer{what} within 120 s"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The output of the background processes, for failure messages.
    pub fn background_output(&self) -> String {
        let mut s = String::new();
        for b in &self.backgrounds {
            let text = std::fs::read_to_string(&b.out).unwrap_or_default();
            let _ = writeln!(
                s,
                "--- background process of line {} ---\n{}",
                b.line,
                tail(&text, 60)
            );
        }
        s
    }

    /// Ctrl-C to every background process, then SIGKILL to what is left.
    pub fn stop_backgrounds(&mut self) {
        for b in &self.backgrounds {
            signal_group(b.child.id(), "INT");
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for b in &mut self.backgrounds {
            while Instant::now() < deadline {
                if matches!(b.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            signal_group(b.child.id(), "KILL");
            let _ = b.child.wait();
        }
        self.backgrounds.clear();
    }

    /// An etcd on 127.0.0.1:2379 (the host's, when there is no namespace and
    /// one already answers there).
    pub fn start_etcd(&mut self) -> Result<(), String> {
        if self.etcd.is_some() {
            return Ok(());
        }
        let data = self.dir.path().join("etcd");
        let log =
            std::fs::File::create(self.dir.path().join("etcd.log")).map_err(|e| e.to_string())?;
        let child = self
            .command("etcd")
            .args(["--data-dir"])
            .arg(&data)
            .args(["--log-level", "error"])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("etcd: {e} (scripts/test installs Debian's etcd-server)"))?;
        self.etcd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ok = self
                .command("curl")
                .args(["-sf", "-o", "/dev/null", "http://127.0.0.1:2379/health"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err("etcd did not become healthy within 30 s".into())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop_backgrounds();
        for c in [self.etcd.as_mut(), self.netns.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    let mut s = String::new();
    if from > 0 {
        let _ = writeln!(s, "[… {from} lines before]");
    }
    s.push_str(&all[from..].join("\n"));
    s
}

/// Runs every shell block of `doc` (a path relative to the repository) in
/// order in a fresh sandbox; panics at the first block that fails, naming
/// `doc:line`. Prints how many ran and how many were skipped (with why).
pub fn run_doc(doc: &str) {
    let path = repo_root().join(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{doc}: {e}"));
    run_markdown(doc, &text);
}

/// [`run_doc`] on Markdown text; `doc` names it in messages. Returns the
/// number of blocks run and skipped.
pub fn run_markdown(doc: &str, text: &str) -> (usize, usize) {
    let blocks = blocks(text).unwrap_or_else(|e| panic!("{doc}: {e}"));
    let mut sb = Sandbox::new(doc);
    let (mut ran, mut skipped) = (0, Vec::new());
    for b in &blocks {
        if let Some(reason) = &b.skip {
            skipped.push(format!("{doc}:{}: {reason}", b.line));
            continue;
        }
        if b.stop {
            sb.stop_backgrounds();
        }
        if b.etcd {
            if let Err(e) = sb.start_etcd() {
                panic!("{doc}:{}: {e}", b.line);
            }
        }
        let fail = |sb: &Sandbox, what: String, r: Option<&Ran>| -> ! {
            let mut m = format!("{doc}:{}: {what}\n--- block ---\n{}", b.line, b.code);
            if let Some(r) = r {
                let _ = write!(
                    m,
                    "--- stdout ---\n{}\n--- stderr ---\n{}\n",
                    tail(&r.stdout, 80),
                    tail(&r.stderr, 80)
                );
            }
            m.push_str(&sb.background_output());
            panic!("{m}");
        };
        match &b.background {
            Some(ready) => {
                let (before, last) = split_last_command(&b.code);
                if !before.trim().is_empty() {
                    let r = sb.sh(&before, b.timeout);
                    if r.code != Some(0) {
                        fail(
                            &sb,
                            format!("exited {:?} before its background command", r.code),
                            Some(&r),
                        );
                    }
                }
                let ready = ready.as_ref().map(|(u, c)| (u.as_str(), c.as_deref()));
                if let Err(e) = sb.background(b.line, &last, ready) {
                    fail(&sb, e, None);
                }
            }
            None => {
                let r = sb.sh(&b.code, b.timeout);
                if r.timed_out {
                    fail(&sb, format!("did not end within {:?}", b.timeout), Some(&r));
                }
                if r.code != Some(b.expect_exit) {
                    fail(
                        &sb,
                        format!("exited {:?}, expected {}", r.code, b.expect_exit),
                        Some(&r),
                    );
                }
                let missing: Vec<&String> = b
                    .shown_keys
                    .iter()
                    .filter(|k| !r.stdout.contains(&format!("\"{k}\"")))
                    .collect();
                if !missing.is_empty() {
                    fail(
                        &sb,
                        format!("the JSON shown below it has keys the output lacks: {missing:?}"),
                        Some(&r),
                    );
                }
                if std::env::var("TESTBED_TEST_VERBOSE").is_ok() {
                    eprintln!("{doc}:{}:\n{}{}", b.line, r.stdout, r.stderr);
                }
            }
        }
        ran += 1;
    }
    sb.stop_backgrounds();
    eprintln!("{doc}: {ran} block(s) ran, {} skipped", skipped.len());
    for s in &skipped {
        eprintln!("  skipped {s}");
    }
    (ran, skipped.len())
}
