//! The listener as an attacker and an operator meet it: clients that never
//! finish a request, more connections than allowed, HTTPS with a private CA,
//! certificate renewal without restart, agents that verify the server, and
//! `testbed up` refusing plain HTTP on a public address.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use testbed_testsupport::openssl;

/// A private CA made with `openssl`, issuing certificates for 127.0.0.1.
struct Ca {
    dir: PathBuf,
    name: String,
}

/// `openssl req` for a new P-256 key in `key`: a request in `out` for
/// `subject`, or with `self_signed` a certificate valid for two days.
fn new_ec_key(dir: &Path, key: &str, out: &str, subject: &str, self_signed: bool) {
    let mut args = vec!["req"];
    if self_signed {
        args.extend(["-x509", "-days", "2"]);
    }
    args.extend([
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        subject,
    ]);
    openssl(dir, &args);
}

/// A fresh `pki` folder under `dir` for CAs and their certificates.
fn pki_dir(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    pki
}

/// Two CAs of these names in a `pki` folder under `dir`.
fn cas(dir: &Path, names: [&str; 2]) -> [Ca; 2] {
    let pki = pki_dir(dir);
    names.map(|name| Ca::new(&pki, name))
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = format!("{name}.key");
        let pem = format!("{name}.pem");
        new_ec_key(dir, &key, &pem, &format!("/CN={name} test CA"), true);
        Ca {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// Issues a server certificate for 127.0.0.1 and localhost; returns
    /// (certificate, key) paths.
    fn issue(&self, leaf: &str) -> (PathBuf, PathBuf) {
        let d = &self.dir;
        let (key, csr, crt, ext) = (
            format!("{leaf}.key"),
            format!("{leaf}.csr"),
            format!("{leaf}.crt"),
            format!("{leaf}.ext"),
        );
        std::fs::write(
            d.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        new_ec_key(d, &key, &csr, "/CN=localhost", false);
        let ca_pem = format!("{}.pem", self.name);
        let ca_key = format!("{}.key", self.name);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-set_serial",
                "1",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ],
        );
        (d.join(crt), d.join(key))
    }
}

/// `openssl x509 -fingerprint -sha256` of a PEM certificate: `AB:CD:…`.
fn file_fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit('=')
        .next()
        .expect("fingerprint")
        .to_uppercase()
}

/// The fingerprint of the certificate a new TLS connection to `port` sees.
fn served_fingerprint(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().rsplit('=').next().unwrap_or("").to_uppercase()
}

/// The last word of a banner line: the URL, the fingerprint.
fn last_word(line: &str) -> String {
    line.rsplit(' ').next().unwrap().trim().to_string()
}

/// The port a platform listens on.
fn port_of(p: &Platform) -> u16 {
    p.url.rsplit(':').next().unwrap().parse().unwrap()
}

/// A platform of `proc` at `url` (HTTPS), with an admin client trusting `ca`.
async fn tls_platform(proc: Proc, url: String, ca: &Path) -> Platform {
    Platform::connect_with(proc, url, client_trusting(ca)).await
}

fn client_trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `testbed server` over HTTPS on a fresh port, and an admin client that
/// trusts `ca`; also returns the fingerprint the banner printed.
async fn tls_server(
    dir: &Path,
    cert: &Path,
    key: &Path,
    ca: &Path,
    extra: &[&str],
) -> (Platform, u16, String) {
    let (proc, listening, port) = tls_server_proc(dir, cert, key, extra);
    let url = last_word(&listening);
    assert_eq!(url, format!("https://127.0.0.1:{port}"));
    let fingerprint = last_word(&proc.wait_line(
        "TLS certificate SHA-256 fingerprint: ",
        Duration::from_secs(5),
    ));
    (tls_platform(proc, url, ca).await, port, fingerprint)
}

/// Opens a connection and sends a request header without its final blank
/// line, as a slow-loris client does.
fn half_sent(port: u16) -> TcpStream {
    send_half_request(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
}

fn send_half_request(mut s: TcpStream) -> TcpStream {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    s
}

/// True when the server closed `s` within `within` (EOF or reset).
fn closed_within(s: &TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    let mut reader = s;
    match reader.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

async fn healthz_within(url: &str, bound: Duration) -> Result<Duration, String> {
    let http = reqwest::Client::builder().timeout(bound).build().unwrap();
    let started = Instant::now();
    match http.get(format!("{url}/healthz")).send().await {
        Ok(r) if r.status() == 200 => Ok(started.elapsed()),
        Ok(r) => Err(format!("status {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}

/// Polls `/healthz` (1 s a try) until it answers; fails after 15 s, saying
/// what it did not recover from.
async fn wait_healthz_recovers(url: &str, from: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if healthz_within(url, Duration::from_secs(1)).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz did not recover after {from}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_neither_block_others_nor_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &["--header-read-timeout", "3"]).await;
    let port = port_of(&p);

    let opened = Instant::now();
    let held: Vec<TcpStream> = (0..300).map(|_| half_sent(port)).collect();

    // The server keeps answering everyone else meanwhile.
    for _ in 0..5 {
        let took = healthz_within(&p.url, Duration::from_secs(2))
            .await
            .expect("/healthz answers while 300 requests hang");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    // The half-sent ones are held, not refused, while the deadline runs…
    if opened.elapsed() < Duration::from_secs(2) {
        assert!(
            !closed_within(&held[0], Duration::from_millis(300)),
            "a half-sent request was closed before its header deadline"
        );
    }
    // …and every one of them is closed once it has passed.
    let deadline = opened + Duration::from_secs(3 + 10);
    let mut still_open = 0;
    for s in held.iter() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(50));
        if !closed_within(s, left) {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "connections still open 10 s after the header timeout"
    );
    healthz_within(&p.url, Duration::from_secs(2))
        .await
        .expect("/healthz after");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_are_closed_at_once_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(
        dir.path(),
        &["--max-connections", "20", "--header-read-timeout", "3"],
    )
    .await;
    let port = port_of(&p);
    // The harness's idle keep-alive connection (its login) times out after
    // the header deadline too; then the limit is all ours.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let mut conns: Vec<TcpStream> = Vec::new();
    for _ in 0..20 {
        conns.push(half_sent(port));
        // Each is accepted (and takes its slot) before the next arrives.
        std::thread::sleep(Duration::from_millis(20));
    }
    let excess: Vec<TcpStream> = (0..20).map(|_| half_sent(port)).collect();
    let refused = excess
        .iter()
        .filter(|s| closed_within(s, Duration::from_secs(1)))
        .count();
    assert_eq!(
        refused, 20,
        "every connection beyond the limit is closed at once"
    );
    let held = conns
        .iter()
        .filter(|s| !closed_within(s, Duration::from_millis(50)))
        .count();
    assert_eq!(
        held, 20,
        "the first 20 keep their slots until their deadline"
    );
    p.proc
        .wait_line("connection limit reached", Duration::from_secs(5));

    // Once the held ones time out, the server serves again.
    wait_healthz_recovers(&p.url, "the header timeout").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_join_over_tls_only_when_they_trust_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, other] = cas(dir.path(), ["ca", "other"]);
    let (cert, key) = ca.issue("server");
    let (p, _port, printed) = tls_server(dir.path(), &cert, &key, &ca.pem(), &[]).await;
    assert_eq!(printed, file_fingerprint(&cert), "banner fingerprint");

    // Plain HTTP is not served on the TLS port.
    assert!(
        reqwest::get(p.url.replace("https://", "http://") + "/healthz")
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true),
        "plain HTTP answered on the TLS listener"
    );

    // An agent with the private CA joins and runs a task.
    let ca_file = ca.pem();
    let _good = agent(
        &p.url,
        "tls-ca",
        &dir.path().join("a1"),
        &[
            "--ca-file",
            ca_file.to_str().unwrap(),
            "--plugins",
            "linux_system,build_server",
        ],
    );
    p.wait_agents(1).await;
    let id = p.run_shell("tls-ca", "echo", "over tls").await;
    p.wait_succeeded(&id, Duration::from_secs(30)).await;
    assert!(p.log(&id).await.contains("over tls"));

    // The command-line client trusts the CA given by TESTBED_CA_FILE, for
    // HTTP and for the WebSocket that follows the log.
    let cli = |ca: Option<&Path>, args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("TESTBED_SERVER", &p.url)
            .env("TESTBED_TOKEN", &p.token)
            .env("TESTBED_CONFIG_DIR", dir.path().join("cli"))
            .env_remove("TESTBED_SERVER_FINGERPRINT");
        match ca {
            Some(ca) => cmd.env("TESTBED_CA_FILE", ca),
            None => cmd.env_remove("TESTBED_CA_FILE"),
        };
        cmd.output().unwrap()
    };
    let o = cli(
        Some(&ca_file),
        &[
            "exec",
            "--host",
            "tls-ca",
            "--",
            "echo",
            "followed over wss",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "followed over wss\n");
    let o = cli(None, &["agents", "ls", "--json"]);
    assert!(
        !o.status.success(),
        "the public roots must not trust a private CA"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // An agent trusting another CA is refused, and says why.
    let other_file = other.pem();
    let wrong_ca = agent(
        &p.url,
        "tls-wrong-ca",
        &dir.path().join("a2"),
        &["--ca-file", other_file.to_str().unwrap()],
    );
    let line = wrong_ca.wait_line("invalid peer certificate", Duration::from_secs(20));
    assert!(
        line.contains("UnknownIssuer") && line.contains("--ca-file"),
        "{line}"
    );

    // So is one pinning another fingerprint.
    let wrong_pin = "AB:".repeat(31) + "AB";
    let pinned_wrong = agent(
        &p.url,
        "tls-wrong-pin",
        &dir.path().join("a3"),
        &["--server-fingerprint", &wrong_pin],
    );
    let line = pinned_wrong.wait_line("invalid peer certificate", Duration::from_secs(20));
    assert!(line.contains("not the pinned server_fingerprint"), "{line}");
    assert!(
        line.contains(&printed),
        "names the served fingerprint: {line}"
    );

    // And one with neither: the public roots do not know a private CA.
    let no_trust = agent(&p.url, "tls-public", &dir.path().join("a4"), &[]);
    no_trust.wait_line("invalid peer certificate", Duration::from_secs(20));

    // The printed fingerprint is enough to join.
    let _pinned = agent(
        &p.url,
        "tls-pinned",
        &dir.path().join("a5"),
        &[
            "--server-fingerprint",
            &printed,
            "--plugins",
            "linux_system,build_server,load",
        ],
    );
    let agents = p.wait_agents(2).await;
    let names: Vec<&str> = agents
        .as_object()
        .unwrap()
        .values()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("wrong") || *n == "tls-public"),
        "{names:?}"
    );

    // Artifact uploads (HTTPS, not the WebSocket) use the same trust.
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("build.sh"),
        "mkdir -p out\necho built > out/app.txt\n",
    )
    .unwrap();
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(st.status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "v1"]);
    git(&["tag", "v1"]);
    for host in ["tls-ca", "tls-pinned"] {
        let id = p
            .run(
                "build_server",
                host,
                "build",
                json!({"repo": repo.display().to_string(), "ref": "v1", "command": "sh build.sh", "artifacts": {"app": "out/app.txt"}}),
            )
            .await;
        let t = p.wait_succeeded(&id, Duration::from_secs(60)).await;
        let url = t["artifacts"][0]["url"]
            .as_str()
            .expect("an artifact")
            .to_string();
        let (s, body) = p.get_text(&url).await;
        assert_eq!((s, body.as_str()), (200, "built\n"), "{host}");
    }

    // A performance test's live stream is advertised with the scheme the
    // server speaks: `wss://` under TLS.
    let plan = p
        .perf_plan(
            "tls",
            json!({"concurrent_users": 1, "hold_time": 1, "target_url": format!("{}/healthz", p.url)}),
        )
        .await;
    let (s, started) = p
        .post(
            &format!("/api/performance/plans/{}/start/", plan["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{started}");
    let ws = started["websocket_url"].as_str().unwrap();
    assert!(ws.starts_with("wss://"), "{ws}");
}

#[tokio::test(flavor = "multi_thread")]
async fn join_token_is_refused_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args([
            "agent",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "secret",
            "--name",
            "x",
            "--state-dir",
        ])
        .arg(dir.path())
        .env_remove("TESTBED_JOIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token is refused")
            && err.contains("TESTBED_JOIN_TOKEN")
            && err.contains("--token-file"),
        "{err}"
    );

    // A token file works (and the server refuses a wrong one as before).
    let p = Platform::server_in(dir.path(), &[]).await;
    let token_file = dir.path().join("join-token");
    std::fs::write(&token_file, format!("{JOIN_TOKEN}\n")).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args([
        "agent",
        "--server",
        &p.url,
        "--name",
        "from-file",
        "--token-file",
    ])
    .arg(&token_file)
    .arg("--state-dir")
    .arg(dir.path().join("agent"))
    .env_remove("TESTBED_JOIN_TOKEN");
    let _a = Proc::spawn("agent from-file", cmd);
    p.wait_agents(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_certificate_is_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let [first, second] = cas(dir.path(), ["first", "second"]);
    let (cert1, key1) = first.issue("one");
    let (cert2, key2) = second.issue("two");
    // The server reads its own copies, which the "renewal" overwrites.
    let live_cert = dir.path().join("live.crt");
    let live_key = dir.path().join("live.key");
    std::fs::copy(&cert1, &live_cert).unwrap();
    std::fs::copy(&key1, &live_key).unwrap();
    let (p, port, printed) = tls_server(dir.path(), &live_cert, &live_key, &first.pem(), &[]).await;
    assert_eq!(printed, file_fingerprint(&cert1));
    assert_eq!(served_fingerprint(port), printed);
    let second_client = || client_trusting(&second.pem());
    assert!(
        second_client()
            .get(format!("{}/healthz", p.url))
            .send()
            .await
            .is_err(),
        "a client of the second CA must not trust the first certificate"
    );

    // A broken renewal is reported and the old certificate stays.
    std::fs::write(&live_cert, "not a certificate\n").unwrap();
    p.proc
        .wait_line("TLS certificate not reloaded", Duration::from_secs(15));
    assert_eq!(served_fingerprint(port), printed);

    // The real renewal: key, then certificate, as a renewal tool might.
    std::fs::copy(&key2, &live_key).unwrap();
    std::fs::copy(&cert2, &live_cert).unwrap();
    p.proc
        .wait_line("TLS certificate reloaded", Duration::from_secs(15));
    assert_eq!(served_fingerprint(port), file_fingerprint(&cert2));
    let r = second_client()
        .get(format!("{}/healthz", p.url))
        .send()
        .await
        .expect("the renewed certificate is trusted by its CA's clients");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn up_refuses_plain_http_on_a_public_address_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let out = Command::new(bin())
        .args(["up", "--listen", &listen, "--data-dir"])
        .arg(dir.path().join("refused"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&listen)
            && err.contains("--tls-cert")
            && err.contains("--insecure")
            && err.contains("clear text"),
        "{err}"
    );

    // With --insecure it starts; its local agent works.
    let p = Platform::up_on(&dir.path().join("insecure"), 1, &listen, &["--insecure"]).await;
    assert!(p.url.starts_with("http://"), "{}", p.url);
    drop(p);

    // With TLS it starts on the public address, and its local agents trust
    // the certificate it serves.
    let pki = pki_dir(dir.path());
    let ca = Ca::new(&pki, "ca");
    let (cert, key) = ca.issue("up");
    let port = free_port();
    let mut cmd = Command::new(bin());
    cmd.args(["up", "--listen", &format!("0.0.0.0:{port}"), "--data-dir"])
        .arg(dir.path().join("tls"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN);
    let proc = Proc::spawn("up tls", cmd);
    proc.wait_line(
        "TLS certificate SHA-256 fingerprint",
        Duration::from_secs(60),
    );
    let p = tls_platform(proc, format!("https://127.0.0.1:{port}"), &ca.pem()).await;
    p.wait_agents(1).await;
    let id = p.run_shell("local-1", "echo", "local over tls").await;
    p.wait_succeeded(&id, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_low_open_file_limit_lowers_the_connection_limit_instead_of_running_out() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // 400 descriptors: without the clamp, a 600-connection flood would hit
    // EMFILE and take the store, the logs and /healthz down with it.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n 400 && exec \"$0\" server --listen 127.0.0.1:{port} --store redb:{} \
             --blobs {} --header-read-timeout 3",
            dir.path().join("s.redb").display(),
            dir.path().join("blobs").display()
        ))
        .arg(bin())
        .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN);
    let proc = Proc::spawn("server ulimit 400", cmd);
    let line = proc.wait_line("connection limit lowered", Duration::from_secs(60));
    assert!(line.contains("from 10000 to 144"), "{line}");
    let url = format!("http://127.0.0.1:{port}");
    proc.wait_line("Testbed is listening on", Duration::from_secs(10));

    let flood: Vec<TcpStream> = (0..600).map(|_| half_sent(port)).collect();
    let refused = flood
        .iter()
        .filter(|s| closed_within(s, Duration::from_millis(20)))
        .count();
    assert!(refused >= 600 - 144, "{refused} closed at once");

    // The server is still there, and serves again after the deadline.
    wait_healthz_recovers(&url, "the flood").await;
    let http = reqwest::Client::new();
    let token = login(&http, &url, "admin", ADMIN_PASSWORD).await;
    assert!(!token.is_empty());
}

/// A half-sent request from `from` (any 127.0.0.0/8 address is local).
async fn half_sent_from(from: &str, port: u16) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = sock
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .expect("connect");
    let s = stream.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    send_half_request(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_take_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(
        dir.path(),
        &[
            "--max-connections",
            "100",
            "--max-connections-per-address",
            "20",
            "--header-read-timeout",
            "5",
        ],
    )
    .await;
    let port = port_of(&p);

    let mut attack = Vec::new();
    for _ in 0..60 {
        attack.push(half_sent_from("127.0.0.2", port).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let opened = Instant::now();
    let refused = attack
        .iter()
        .filter(|s| closed_within(s, Duration::from_millis(20)))
        .count();
    assert_eq!(refused, 40, "beyond 20 from one address, closed at once");
    p.proc.wait_line(
        "per-address connection limit reached",
        Duration::from_secs(5),
    );
    // Everyone else is served while the attacker's 20 are held.
    for _ in 0..5 {
        healthz_within(&p.url, Duration::from_secs(1))
            .await
            .expect("/healthz from another address");
    }
    assert!(
        opened.elapsed() < Duration::from_secs(4),
        "the checks above must run while the attack is held"
    );
}
