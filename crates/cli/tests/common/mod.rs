//! Test harness: real `testbed` processes (and real etcd) on 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ADMIN_PASSWORD: &str = "admin-secret-1";
pub const JOIN_TOKEN: &str = "test-join-token";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_testbed"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Resident memory of a process, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A child process killed (SIGKILL) when dropped; its output is collected.
pub struct Proc {
    pub child: Option<Child>,
    pub lines: mpsc::Receiver<String>,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        cmd.env("TESTBED_LOG", "info,testbed=debug");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            let tag = name.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var("TESTBED_TEST_VERBOSE").is_ok() {
                        eprintln!("[{tag}] {line}");
                    }
                    let _ = tx.send(line);
                }
            });
        }
        Proc {
            child: Some(child),
            lines: rx,
            name: name.to_string(),
        }
    }

    /// Waits for an output line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no line containing `{needle}` within {timeout:?}",
                    self.name
                ),
            }
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGINT, as Ctrl-C; returns the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.as_ref().expect("running").id();
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(pid.to_string())
            .status();
        self.exit_within(Duration::from_secs(15), "after SIGINT")
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.exit_within(timeout, "")
    }

    /// Its exit status once it exits; killed, and the test failed, when it
    /// has not within `timeout` (`after` says of what, for the message).
    fn exit_within(&mut self, timeout: Duration, after: &str) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("{} did not end within {timeout:?} {after}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `testbed up` or `testbed server` process and a logged-in client.
pub struct Platform {
    pub proc: Proc,
    pub url: String,
    pub token: String,
    pub join_token: String,
    pub http: reqwest::Client,
}

fn banner_url(p: &Proc) -> String {
    let line = p.wait_line("Testbed is listening on ", Duration::from_secs(60));
    line.rsplit(' ').next().expect("url").trim().to_string()
}

impl Platform {
    /// `testbed up` with `agents` local agents on a fresh port.
    pub async fn up(data: &Path, agents: u32, extra: &[&str]) -> Platform {
        Self::up_on(data, agents, &format!("127.0.0.1:{}", free_port()), extra).await
    }

    pub async fn up_on(data: &Path, agents: u32, listen: &str, extra: &[&str]) -> Platform {
        let mut cmd = Command::new(bin());
        cmd.args([
            "up",
            "--listen",
            listen,
            "--agents",
            &agents.to_string(),
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN);
        let proc = Proc::spawn("up", cmd);
        let url = banner_url(&proc);
        let p = Self::connect(proc, url).await;
        if agents > 0 {
            p.wait_agents(agents as usize).await;
        }
        p
    }

    /// `testbed server` over `store`.
    pub async fn server(store: &str, blobs: &Path, listen: &str, extra: &[&str]) -> Platform {
        let mut cmd = Command::new(bin());
        cmd.args(["server", "--listen", listen, "--store", store, "--blobs"])
            .arg(blobs)
            .args(extra)
            .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN);
        let proc = Proc::spawn(&format!("server {listen}"), cmd);
        let url = banner_url(&proc);
        Self::connect(proc, url).await
    }

    /// `testbed server` on a fresh port with a redb store and blobs under `dir`.
    pub async fn server_in(dir: &Path, extra: &[&str]) -> Platform {
        let listen = format!("127.0.0.1:{}", free_port());
        let store = format!("redb:{}", dir.join("s.redb").display());
        Self::server(&store, &dir.join("blobs"), &listen, extra).await
    }

    async fn connect(proc: Proc, url: String) -> Platform {
        Self::connect_with(proc, url, reqwest::Client::new()).await
    }

    /// A platform of `proc` at `url`, logged in as the admin through `http`.
    pub async fn connect_with(proc: Proc, url: String, http: reqwest::Client) -> Platform {
        let token = login(&http, &url, "admin", ADMIN_PASSWORD).await;
        Platform {
            proc,
            url,
            token,
            join_token: JOIN_TOKEN.to_string(),
            http,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        status_and_json(self.request_as(reqwest::Method::GET, path, &self.token)).await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .request_as(reqwest::Method::GET, path, &self.token)
            .send()
            .await
            .expect("GET");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        post_as(&self.http, &self.url, &self.token, path, body).await
    }

    /// Submits a seed-002 test case; panics unless accepted. Returns the task id.
    pub async fn run(&self, plugin: &str, host: &str, method: &str, params: Value) -> String {
        let (status, body) = self
            .post(
                "/v2.1/testcases",
                json!({"plugin": plugin, "host": host, "method": method, "parameters": params}),
            )
            .await;
        assert_eq!(status, 201, "submit failed: {body}");
        body["task_id"].as_str().expect("task_id").to_string()
    }

    pub async fn task(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/tasks/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls until the task's status is terminal (or `timeout`).
    pub async fn wait_task(&self, id: &str, timeout: Duration) -> Value {
        self.wait_task_until(id, timeout, "done", |t| {
            !matches!(t["status"].as_str(), Some("queued" | "running"))
        })
        .await
    }

    /// [`Platform::wait_task`], checking that the task succeeded (its log in
    /// the message when not); the task.
    pub async fn wait_succeeded(&self, id: &str, timeout: Duration) -> Value {
        let t = self.wait_task(id, timeout).await;
        if t["status"] != "succeeded" {
            panic!("task {id} did not succeed: {t}\n{}", self.log(id).await);
        }
        t
    }

    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_task_until(id, timeout, status, |t| t["status"] == status)
            .await
    }

    /// Polls the task until `f` holds for it; `what` names the awaited state.
    async fn wait_task_until(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        poll(
            timeout,
            || self.task(id),
            f,
            |t| format!("task {id} is {} not {what} after {timeout:?}", t["status"]),
        )
        .await
    }

    /// Waits until `/v2.1/slaves/detail` lists exactly `n` live agents.
    pub async fn wait_agents(&self, n: usize) -> Value {
        let (_, body) = poll(
            Duration::from_secs(30),
            || self.get("/v2.1/slaves/detail"),
            |(status, body)| *status == 200 && body.as_object().map(|m| m.len()) == Some(n),
            |(_, body)| format!("expected {n} live agents, have {body}"),
        )
        .await;
        body
    }

    pub async fn log(&self, id: &str) -> String {
        let (status, text) = self.get_text(&format!("/api/tasks/{id}/log")).await;
        assert_eq!(status, 200, "{text}");
        text
    }

    /// Creates a user with `role` and returns its token.
    pub async fn user(&self, name: &str, role: &str) -> String {
        let (s, b) = self
            .post(
                "/api/users",
                json!({"username": name, "password": "password-123", "role": role}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        login(&self.http, &self.url, name, "password-123").await
    }
}

pub async fn login(http: &reqwest::Client, url: &str, user: &str, password: &str) -> String {
    let r = http
        .post(format!("{url}/api/auth/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 200, "login as {user}");
    let v: Value = r.json().await.expect("login json");
    v["token"].as_str().expect("token").to_string()
}

pub async fn post_as(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    status_and_json(
        http.post(format!("{url}{path}"))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

/// `testbed server` over HTTPS with `cert` and `key` on a fresh port, its
/// store and blobs in `dir`, with the tests' admin password and join token:
/// the process, once it printed its "listening" line, that line, and the port.
pub fn tls_server_proc(dir: &Path, cert: &Path, key: &Path, extra: &[&str]) -> (Proc, String, u16) {
    let port = free_port();
    let mut cmd = Command::new(bin());
    cmd.args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--store")
        .arg(format!("redb:{}", dir.join("s.redb").display()))
        .arg("--blobs")
        .arg(dir.join("blobs"))
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .args(extra)
        .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN);
    let proc = Proc::spawn("tls server", cmd);
    let listening = proc.wait_line("Testbed is listening on ", Duration::from_secs(60));
    (proc, listening, port)
}

/// `testbed`, set up by `configure` (arguments, environment, directory),
/// under `/usr/bin/time -f` when it exists: its output, GNU time's lines
/// taken out of its stderr, and its peak resident memory in KiB (`None`
/// without GNU time).
pub fn testbed_measured(
    configure: impl FnOnce(&mut Command),
) -> (std::process::Output, Option<u64>) {
    const MARK: &str = "testbed-peak-kib=";
    let time = Path::new("/usr/bin/time");
    let mut cmd = if time.is_file() {
        let mut c = Command::new(time);
        c.args(["-f", &format!("{MARK}%M"), env!("CARGO_BIN_EXE_testbed")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_testbed"))
    };
    configure(&mut cmd);
    let mut out = cmd.output().expect("running testbed");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut peak = None;
    let mut kept = String::new();
    for line in stderr.lines() {
        match line.strip_prefix(MARK) {
            Some(kib) => peak = kib.trim().parse().ok(),
            // GNU time's own line about the exit status.
            None if line.starts_with("Command exited with non-zero status") => {}
            None => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    out.stderr = kept.into_bytes();
    (out, peak)
}

/// A separate `testbed agent` process.
pub fn agent(url: &str, name: &str, state: &Path, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--server", url, "--name", name, "--state-dir"])
        .arg(state)
        .args(extra)
        // The join token never goes on a command line (`ps` shows it).
        .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN);
    Proc::spawn(&format!("agent {name}"), cmd)
}

/// A real etcd cluster of `n` members on 127.0.0.1.
pub struct Etcd {
    pub members: Vec<Option<Proc>>,
    pub client_urls: Vec<String>,
    args: Vec<Vec<String>>,
}

impl Etcd {
    pub fn start(n: usize, dir: &Path) -> Etcd {
        let etcd = which_etcd();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut client_urls = Vec::new();
        let mut args = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let a = vec![
                "--name".to_string(),
                format!("m{i}"),
                "--data-dir".into(),
                dir.join(format!("m{i}")).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                cluster.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--log-level".into(),
                "error".into(),
            ];
            let mut cmd = Command::new(&etcd);
            cmd.args(&a);
            members.push(Some(Proc::spawn(&format!("etcd m{i}"), cmd)));
            client_urls.push(format!("127.0.0.1:{client}"));
            args.push(a);
        }
        let e = Etcd {
            members,
            client_urls,
            args,
        };
        e.wait_healthy();
        e
    }

    pub fn spec(&self) -> String {
        format!("etcd://{}", self.client_urls.join(","))
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in &self.client_urls {
            loop {
                let ok = Command::new("curl")
                    .args(["-sf", &format!("http://{url}/health")])
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd at {url} never became healthy"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].take() {
            p.kill9();
        }
    }
}

/// `name` as found on `PATH`, if it is there.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn which_etcd() -> PathBuf {
    if let Some(p) = which("etcd") {
        return p;
    }
    panic!("etcd not found on PATH: run the README's test command (scripts/test), which installs Debian's etcd-server");
}

/// Reads a WebSocket log stream to its end; returns (text, close reason).
pub async fn follow_ws(url: &str, token: &str, task: &str) -> (String, String) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let ws_url = format!(
        "{}/ws/tasks/{task}/log",
        url.replacen("http://", "ws://", 1)
    );
    let mut req = ws_url.into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect");
    let mut text = String::new();
    let mut reason = String::new();
    while let Some(msg) = ws.next().await {
        match msg.expect("ws message") {
            Message::Text(t) => text.push_str(&t),
            Message::Close(Some(f)) => {
                reason = f.reason.to_string();
                break;
            }
            Message::Close(None) => break,
            _ => {}
        }
    }
    (text, reason)
}

impl Platform {
    /// Starts a run of an inline YAML plan; panics unless accepted.
    pub async fn start_run(&self, yaml: &str, params: Value) -> String {
        let (s, b) = self
            .post("/api/runs", json!({"plan": yaml, "params": params}))
            .await;
        assert_eq!(s, 201, "run refused: {b}");
        b["id"].as_str().expect("run id").to_string()
    }

    pub async fn run_state(&self, id: &str) -> Value {
        let (s, b) = self.get(&format!("/api/runs/{id}")).await;
        assert_eq!(s, 200, "{b}");
        b
    }

    /// Polls until the run ends.
    pub async fn wait_run(&self, id: &str, timeout: Duration) -> Value {
        self.wait_run_until(id, timeout, |r| {
            !matches!(r["status"].as_str(), Some("pending" | "running"))
                && r["report_id"].is_string()
        })
        .await
    }

    /// Polls until `f` holds for the run.
    pub async fn wait_run_until(
        &self,
        id: &str,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        poll(
            timeout,
            || self.run_state(id),
            f,
            |r| format!("run {id}: condition not met after {timeout:?}: {r}"),
        )
        .await
    }
}

/// Calls `next` every 100 ms until `done` holds for what it returns, and
/// returns that; panics with `why` of the last one after `timeout`.
pub async fn poll<T, Fut>(
    timeout: Duration,
    next: impl Fn() -> Fut,
    done: impl Fn(&T) -> bool,
    why: impl Fn(&T) -> String,
) -> T
where
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let v = next().await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", why(&v));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A keep-alive HTTP/1.1 server on 127.0.0.1 answering each request with
/// what `reply` makes of its head and body: its address.
pub fn http_server(
    reply: impl Fn(&str, Vec<u8>) -> String + Send + Sync + 'static,
) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let reply = std::sync::Arc::new(reply);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut s, _)) = listener.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some((head, body)) = read_request(&mut s, &mut buf).await {
                        if s.write_all(reply(&head, body).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    addr
}

/// The next request on `s` (head and body, by its Content-Length); None
/// once the connection ends.
async fn read_request(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let mut more = async |buf: &mut Vec<u8>| match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    };
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if !more(buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let len: usize = header(&head, "content-length").parse().unwrap_or(0);
    while buf.len() < end + len {
        if !more(buf).await {
            return None;
        }
    }
    let body = buf.drain(..end + len).skip(end).collect();
    Some((head, body))
}

/// A header's value in a request head ("" when absent).
pub fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// A keep-alive HTTP/1.1 server answering every request `200 ok`, counting them.
pub fn serve() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    let addr = http_server(move |_, _| {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string()
    });
    (format!("http://{addr}/"), count)
}

impl Platform {
    /// A platform of two local agents (`local-1`, `local-2`) carrying the
    /// `tap` plugin, both in the group `platforms`, and the plan that runs
    /// the kit in `kit` on each of them (`each: {group: platforms}`).
    pub async fn kit_on_two_agents(data: &Path, kit: &Path) -> (Platform, String) {
        let p = Platform::up(data, 2, &["--plugins", "linux_system,tap"]).await;
        let (s, _) = p.post("/api/groups", json!({"name": "platforms"})).await;
        assert_eq!(s, 201);
        for a in ["local-1", "local-2"] {
            let path = format!("/api/groups/platforms/agents/{a}");
            let (s, b) = p.call(reqwest::Method::PUT, &path, None).await;
            assert_eq!(s, 200, "{b}");
        }
        let plan = format!(
            "name: kit\nsteps:\n  - id: kit\n    plugin: tap\n    method: run\n    target: {{each: {{group: platforms}}}}\n    params: {{path: \"{}\"}}\n",
            kit.display()
        );
        (p, plan)
    }

    /// Creates a project and, in it, a performance plan `name` with
    /// `config`; returns the plan as created.
    pub async fn perf_plan(&self, name: &str, config: Value) -> Value {
        let (s, project) = self
            .post(
                "/api/projects",
                json!({"name": name, "description": "test"}),
            )
            .await;
        assert_eq!(s, 201, "{project}");
        let (s, plan) = self
            .post(
                "/api/performance/plans/",
                json!({"name": name, "project_id": project["id"], "config": config}),
            )
            .await;
        assert_eq!(s, 201, "{plan}");
        plan
    }

    /// Starts performance plan `id`; returns the answer (execution id,
    /// WebSocket URL), which must be a 200.
    pub async fn start_perf(&self, id: u64) -> Value {
        let (s, started) = self
            .post(&format!("/api/performance/plans/{id}/start/"), json!({}))
            .await;
        assert_eq!(s, 200, "{started}");
        started
    }
}

/// A real S3-compatible server: moto's server mode (PyPI `moto[server]`,
/// installed by scripts/test), on a fresh port.
pub struct Moto {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`, what AWS_ENDPOINT_URL takes.
    pub endpoint: String,
}

impl Moto {
    /// `None` when `moto_server` is not on PATH. `env` goes to the server
    /// (e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0` to check credentials).
    pub async fn start(env: &[(&str, &str)]) -> Option<Moto> {
        let exe = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("moto_server"))
                .find(|p| p.is_file())
        })?;
        let port = free_port();
        let mut cmd = Command::new(exe);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn("moto", cmd);
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Any answer will do: a moto that checks credentials refuses
            // this unsigned request.
            if http.get(format!("{endpoint}/")).send().await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto never answered on {endpoint}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Moto { proc, endpoint })
    }

    /// Creates `bucket` (moto takes unsigned requests unless told to
    /// check credentials).
    pub async fn create_bucket(&self, bucket: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .expect("PUT bucket");
        assert!(
            r.status().is_success(),
            "creating bucket {bucket}: {}",
            r.status()
        );
    }

    /// Keys in `bucket` under `prefix` (ListObjectsV2, first page).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let xml = reqwest::Client::new()
            .get(format!(
                "{}/{bucket}?list-type=2&prefix={prefix}",
                self.endpoint
            ))
            .send()
            .await
            .expect("list")
            .text()
            .await
            .expect("list body");
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// The AWS_* variables a Testbed server needs to use this store.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
        ]
    }
}

impl Platform {
    /// `testbed server` over `store` with `--blobs BLOBS` (a URL or a
    /// directory) and extra environment variables.
    pub async fn server_env(
        store: &str,
        blobs: &str,
        listen: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Platform {
        let mut cmd = Command::new(bin());
        cmd.args([
            "server", "--listen", listen, "--store", store, "--blobs", blobs,
        ])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN);
        let proc = Proc::spawn(&format!("server {listen}"), cmd);
        let url = banner_url(&proc);
        Self::connect(proc, url).await
    }
}

impl Platform {
    /// `method path` as the holder of `token`, with an optional JSON body:
    /// the status and the JSON answer (`Null` when the answer is not JSON).
    pub async fn call_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.request_as(method, path, token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        status_and_json(req).await
    }

    /// A request for `method path` carrying `token`.
    pub fn request_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token)
    }

    /// `method path` as the admin; see [`Platform::call_as`].
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_as(method, path, &self.token, body).await
    }

    /// `method path` with a YAML body (a plan) as the holder of `token`:
    /// the status and the JSON answer.
    pub async fn send_yaml_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        yaml: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let req = self
            .request_as(method, path, token)
            .header("content-type", "application/yaml")
            .body(yaml);
        status_and_json(req).await
    }

    /// `method path` with a YAML body as the admin.
    pub async fn send_yaml(
        &self,
        method: reqwest::Method,
        path: &str,
        yaml: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        self.send_yaml_as(method, path, &self.token, yaml).await
    }

    /// Submits `command args` to `linux_system.run_shell` on `host`; the task id.
    pub async fn run_shell(&self, host: &str, command: &str, args: &str) -> String {
        self.run(
            "linux_system",
            host,
            "run_shell",
            json!({"command": command, "args": args}),
        )
        .await
    }

    /// Kills (SIGKILL) a platform started by [`Platform::server_in`]`(dir, extra)`
    /// and starts a new server on the same address, store and blobs.
    pub async fn kill_and_restart_in(&mut self, dir: &Path, extra: &[&str]) {
        let listen = self.url.trim_start_matches("http://").to_string();
        self.proc.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let store = format!("redb:{}", dir.join("s.redb").display());
        let again = Platform::server(&store, &dir.join("blobs"), &listen, extra).await;
        drop(std::mem::replace(self, again));
    }
}

/// Sends `req`: the status and the JSON answer (`Null` when it is not JSON).
pub async fn status_and_json(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The first instance's task id of step `id` in a run's state.
pub fn step_task(run: &Value, id: &str) -> String {
    run["steps"][id]["instances"][0]["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no task for step {id}: {run}"))
        .to_string()
}

/// The `details` of an error answer as `"field" "message"` lines.
pub fn detail_lines(body: &Value) -> Vec<String> {
    body["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {body}"))
        .iter()
        .map(|d| format!("{} {}", d["field"], d["message"]))
        .collect()
}

/// Asserts that one of `lines` contains every one of `parts`.
#[track_caller]
pub fn assert_some_line_has(lines: &[String], parts: &[&str]) {
    assert!(
        lines.iter().any(|l| parts.iter().all(|p| l.contains(p))),
        "no line has all of {parts:?}: {lines:#?}"
    );
}

impl Platform {
    /// Deletes `path` as the admin (204) and checks that it is gone (404).
    pub async fn delete_and_check_gone(&self, path: &str) {
        let (s, b) = self.call(reqwest::Method::DELETE, path, None).await;
        assert_eq!(s, 204, "DELETE {path}: {b}");
        let (s, b) = self.get(path).await;
        assert_eq!(s, 404, "{path} still there: {b}");
    }

    /// Waits (10 s at most) until step `step` of run `id` is `status`; the run.
    pub async fn wait_step(&self, id: &str, step: &str, status: &str) -> Value {
        self.wait_run_until(id, Duration::from_secs(10), |r| {
            r["steps"][step]["status"] == status
        })
        .await
    }

    /// `testbed` as a client of this platform, its settings in `config_dir`.
    pub fn cli(&self, config_dir: &Path) -> Command {
        let mut cmd = Command::new(bin());
        cmd.env("TESTBED_SERVER", &self.url)
            .env("TESTBED_TOKEN", &self.token)
            .env("TESTBED_CONFIG_DIR", config_dir)
            .env("TESTBED_LOG", "warn");
        cmd
    }

    /// `GET /healthz` without credentials: its JSON.
    pub async fn healthz(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/healthz", self.url))
            .send()
            .await
            .expect("GET /healthz");
        r.json().await.expect("healthz JSON")
    }

    /// Starts a run of an inline YAML plan and waits for its end.
    pub async fn run_plan(&self, yaml: &str, params: Value, timeout: Duration) -> Value {
        let id = self.start_run(yaml, params).await;
        self.wait_run(&id, timeout).await
    }
}
