//! The web console against a real `testbed up`: how it is served, and its
//! session cookie (sign-in, CSRF, revocation, roles) over plain HTTP. The
//! browser scenarios are in `console_browser` below.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;
use reqwest::header::{HeaderMap, COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{json, Value};

/// Signs in through `POST /api/auth/session`; returns the `Cookie` header
/// value and the whole `Set-Cookie`.
async fn session(p: &Platform, user: &str, password: &str) -> (String, String) {
    let r = p
        .http
        .post(format!("{}/api/auth/session", p.url))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("session");
    assert_eq!(r.status().as_u16(), 200, "sign in as {user}");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["username"], user);
    let pair = set.split(';').next().unwrap().to_string();
    (pair, set)
}

async fn send(
    p: &Platform,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let r = p
        .http
        .request(method, format!("{}{path}", p.url))
        .headers(h)
        .send()
        .await
        .expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn console_is_served_next_to_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 0, &[]).await;
    for path in [
        "/",
        "/agents",
        "/runs/some-run",
        "/performance/executions/x",
    ] {
        let r = p.http.get(format!("{}{path}", p.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let text = r.text().await.unwrap();
        assert!(text.contains("/console/"), "{text}");
    }
    // The API's space is untouched: unknown API paths are still JSON 404s.
    for path in ["/api/nope", "/v2.1/nope", "/nope"] {
        let (s, b) = send(&p, reqwest::Method::GET, path, &[]).await;
        assert_eq!(s, 404, "{path}");
        assert!(
            b["error"].as_str().unwrap().contains("no such endpoint"),
            "{b}"
        );
    }
    let (s, b) = send(&p, reqwest::Method::GET, "/healthz", &[]).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("ok")));
    // Compressed and cached assets through the real listener.
    let index = p.http.get(format!("{}/", p.url)).send().await.unwrap();
    let text = index.text().await.unwrap();
    let app = text
        .split('"')
        .find(|s| s.starts_with("/console/") && s.ends_with("/app.js"))
        .expect("app.js in index")
        .to_string();
    let r = p
        .http
        .get(format!("{}{app}", p.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
}

#[tokio::test]
async fn session_cookie_is_a_csrf_safe_session() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 0, &[]).await;
    p.user("vera", "viewer").await;

    // Wrong password: 401, no cookie.
    let r = p
        .http
        .post(format!("{}/api/auth/session", p.url))
        .json(&json!({"username": "admin", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get(SET_COOKIE).is_none());

    let (admin, set) = session(&p, "admin", ADMIN_PASSWORD).await;
    assert!(set.starts_with("testbed_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");

    let (s, me) = send(
        &p,
        reqwest::Method::GET,
        "/api/auth/me",
        &[("cookie", &admin)],
    )
    .await;
    assert_eq!((s, me["username"].as_str()), (200, Some("admin")));
    let (s, _) = send(&p, reqwest::Method::GET, "/api/auth/me", &[]).await;
    assert_eq!(s, 401);

    // A change with the cookie but neither the CSRF header nor a same-origin
    // Origin is refused before the handler runs (the run does not exist:
    // passing the check shows as 404).
    let post = reqwest::Method::POST;
    let cancel = "/api/runs/no-such-run/cancel";
    let (s, b) = send(&p, post.clone(), cancel, &[("cookie", &admin)]).await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("x-testbed-csrf"),
        "{b}"
    );
    let (s, _) = send(
        &p,
        post.clone(),
        cancel,
        &[("cookie", &admin), ("x-testbed-csrf", "1")],
    )
    .await;
    assert_eq!(s, 404);
    let host = p.url.trim_start_matches("http://").to_string();
    let own = format!("http://{host}");
    let (s, _) = send(
        &p,
        post.clone(),
        cancel,
        &[("cookie", &admin), ("origin", &own)],
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = send(
        &p,
        post.clone(),
        cancel,
        &[
            ("cookie", &admin),
            ("origin", "http://evil.example"),
            ("x-testbed-csrf", "1"),
        ],
    )
    .await;
    assert_eq!(s, 403);
    // Bearer requests are unchanged: no CSRF header needed.
    let r = p
        .http
        .post(format!("{}{cancel}", p.url))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // A viewer's cookie, CSRF header and all, may not change anything.
    let (vera, _) = session(&p, "vera", "password-123").await;
    let (s, b) = send(
        &p,
        post.clone(),
        cancel,
        &[("cookie", &vera), ("x-testbed-csrf", "1")],
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(b["error"].as_str().unwrap().contains("viewer"), "{b}");

    // Revocation ends cookie sessions like Bearer ones.
    let (s, _) = p.post("/api/users/vera/revoke", json!(null)).await;
    assert_eq!(s, 204);
    let (s, b) = send(
        &p,
        reqwest::Method::GET,
        "/api/auth/me",
        &[("cookie", &vera)],
    )
    .await;
    assert_eq!(s, 401, "{b}");
    // …and a role change applies to the next cookie request.
    let (vera, _) = session(&p, "vera", "password-123").await;
    let r = p
        .http
        .put(format!("{}/api/users/vera", p.url))
        .bearer_auth(&p.token)
        .json(&json!({"role": "operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, me) = send(
        &p,
        reqwest::Method::GET,
        "/api/auth/me",
        &[("cookie", &vera)],
    )
    .await;
    assert_eq!((s, me["role"].as_str()), (200, Some("operator")));

    // Signing out clears the cookie.
    let r = p
        .http
        .delete(format!("{}/api/auth/session", p.url))
        .header(COOKIE, &admin)
        .header("x-testbed-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let set = r.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        set.starts_with("testbed_session=;") && set.contains("Max-Age=0"),
        "{set}"
    );

    // The cookie sign-in shares the login rate limit.
    for _ in 0..10 {
        let r = p
            .http
            .post(format!("{}/api/auth/login", p.url))
            .json(&json!({"username": "ghost", "password": "nope-nope"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let r = p
        .http
        .post(format!("{}/api/auth/session", p.url))
        .json(&json!({"username": "ghost", "password": "nope-nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
}

#[tokio::test]
async fn cookie_websockets_need_the_consoles_origin() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let id = p.run_shell("local-1", "echo", "hello").await;
    p.wait_task(&id, Duration::from_secs(60)).await;
    let (cookie, _) = session(&p, "admin", ADMIN_PASSWORD).await;
    let host = p.url.trim_start_matches("http://").to_string();
    let ws = format!("ws://{host}/ws/tasks/{id}/log");
    let open = |origin: Option<String>| {
        let mut req = ws.clone().into_client_request().unwrap();
        req.headers_mut().insert(COOKIE, cookie.parse().unwrap());
        if let Some(o) = origin {
            req.headers_mut().insert(ORIGIN, o.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    // Another page (even on the same host, another port) cannot ride the cookie.
    let Err(err) = open(Some("http://127.0.0.1:1".into())).await else {
        panic!("a foreign Origin was accepted");
    };
    assert!(err.to_string().contains("403"), "{err}");
    let Err(err) = open(None).await else {
        panic!("a cookie WebSocket without Origin was accepted");
    };
    assert!(err.to_string().contains("403"), "{err}");
    let (mut sock, _) = open(Some(format!("http://{host}")))
        .await
        .expect("console's own origin");
    use futures_util::StreamExt;
    let mut text = String::new();
    while let Some(Ok(m)) = sock.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            text.push_str(&t);
        } else if m.is_close() {
            break;
        }
    }
    assert!(text.contains("hello"), "{text}");
}

// ------------------------------------------------------------------------
// Real browser: Debian's Chromium, headless, driven by chromedriver over the
// W3C WebDriver protocol. The protocol is a handful of JSON calls, spoken
// here with the reqwest client the tests already use rather than another
// dependency.

mod browser {
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use super::common::{free_port, Proc};

    pub struct Browser {
        _driver: Proc,
        http: reqwest::Client,
        session: String,
        pub base: String,
        _profile: tempfile::TempDir,
    }

    /// Chromium and chromedriver, or why not. `scripts/test` installs both
    /// (Debian's `chromium` and `chromium-driver`); without them the browser
    /// tests fail, unless TESTBED_SKIP_BROWSER=1 asks to skip them.
    pub fn available() -> bool {
        let missing: Vec<&str> = [
            ("/usr/bin/chromium", "chromium"),
            ("/usr/bin/chromedriver", "chromium-driver"),
        ]
        .iter()
        .filter(|(p, _)| !Path::new(p).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
        if missing.is_empty() {
            return true;
        }
        if std::env::var("TESTBED_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!(
                "\n*** SKIPPING the console browser test: {} not installed and \
                 TESTBED_SKIP_BROWSER=1 ***\n",
                missing.join(" and ")
            );
            return false;
        }
        panic!(
            "the console browser tests need Debian's {} (`apt-get install chromium chromium-driver`, \
             as scripts/test does); set TESTBED_SKIP_BROWSER=1 to skip them",
            missing.join(" and ")
        );
    }

    impl Browser {
        pub async fn start(base: &str) -> Browser {
            let port = free_port();
            let mut cmd = Command::new("/usr/bin/chromedriver");
            cmd.arg(format!("--port={port}"));
            // Its own process group, so Chromium (chromedriver's child) goes
            // with it on drop even when the session's DELETE does not get through.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let driver = Proc::spawn("chromedriver", cmd);
            driver.wait_line("was started successfully", Duration::from_secs(30));
            let profile = tempfile::tempdir().unwrap();
            let http = reqwest::Client::new();
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--window-size=1280,800",
                        format!("--user-data-dir={}", profile.path().display())]
                }
            }}});
            let url = format!("http://127.0.0.1:{port}");
            let r: Value = http
                .post(format!("{url}/session"))
                .json(&caps)
                .send()
                .await
                .expect("new session")
                .json()
                .await
                .expect("session json");
            let session = r["value"]["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("chromedriver refused the session: {r}"))
                .to_string();
            Browser {
                _driver: driver,
                http,
                session: format!("{url}/session/{session}"),
                base: base.to_string(),
                _profile: profile,
            }
        }

        async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
            let mut req = self.http.request(method, format!("{}{path}", self.session));
            if !body.is_null() {
                req = req.json(&body);
            }
            let v: Value = req
                .send()
                .await
                .expect("webdriver")
                .json()
                .await
                .expect("json");
            if v["value"].get("error").is_some() {
                panic!("webdriver {path}: {}", v["value"]);
            }
            v["value"].clone()
        }

        pub async fn goto(&self, path: &str) {
            let url = format!("{}{path}", self.base);
            self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
                .await;
        }

        pub async fn size(&self, width: u32, height: u32) {
            self.call(
                reqwest::Method::POST,
                "/window/rect",
                json!({"width": width, "height": height}),
            )
            .await;
        }

        /// Runs `script` (a function body) in the page.
        pub async fn js(&self, script: &str) -> Value {
            self.call(
                reqwest::Method::POST,
                "/execute/sync",
                json!({"script": script, "args": []}),
            )
            .await
        }

        /// Runs an async `script` whose last argument is the callback.
        pub async fn js_async(&self, script: &str) -> Value {
            self.call(
                reqwest::Method::POST,
                "/execute/async",
                json!({"script": script, "args": []}),
            )
            .await
        }

        /// Waits until `expr` (a JS expression) is truthy; returns its value.
        pub async fn wait(&self, what: &str, expr: &str, timeout: Duration) -> Value {
            let deadline = Instant::now() + timeout;
            // Elements become plain `true`: a reference into a frame would not
            // survive the trip back.
            let script = format!(
                "try {{ const v = ({expr}); \
                 return v && typeof v === 'object' && 'nodeType' in v ? true : v || null; }} \
                 catch (e) {{ return null; }}"
            );
            loop {
                let v = self.js(&script).await;
                if !v.is_null() && v != json!(false) {
                    return v;
                }
                if Instant::now() > deadline {
                    let body = self.js("return document.body.innerText").await;
                    let net = self
                        .js("return location.href + '\\n' + performance.getEntriesByType('resource')
                             .slice(-15).map(e => e.name + ' ' + e.responseStatus).join('\\n')")
                        .await;
                    panic!(
                        "timed out waiting for {what} ({expr}); page shows:\n{body}\n\
                         last requests:\n{}",
                        net.as_str().unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }

        async fn element(&self, css: &str) -> String {
            let v = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    json!({"using": "css selector", "value": css}),
                )
                .await;
            v.as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
                .expect("element id")
                .to_string()
        }

        pub async fn click(&self, css: &str) {
            let id = self.element(css).await;
            self.call(
                reqwest::Method::POST,
                &format!("/element/{id}/click"),
                json!({}),
            )
            .await;
        }

        pub async fn type_into(&self, css: &str, text: &str) {
            let id = self.element(css).await;
            self.call(
                reqwest::Method::POST,
                &format!("/element/{id}/value"),
                json!({ "text": text }),
            )
            .await;
        }

        /// Sends keys (WebDriver codes, e.g. `\u{e007}` for Enter) to the
        /// focused element.
        pub async fn keys_to_active(&self, keys: &str) {
            let v = self
                .call(reqwest::Method::GET, "/element/active", Value::Null)
                .await;
            let id = v
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
                .expect("active element")
                .to_string();
            self.call(
                reqwest::Method::POST,
                &format!("/element/{id}/value"),
                json!({ "text": keys }),
            )
            .await;
        }

        pub async fn path(&self) -> String {
            self.js("return location.pathname + location.search")
                .await
                .as_str()
                .unwrap_or_default()
                .to_string()
        }

        pub async fn screenshot(&self, file: &Path) {
            let v = self
                .call(reqwest::Method::GET, "/screenshot", Value::Null)
                .await;
            let png = decode_base64(v.as_str().expect("png"));
            std::fs::write(file, png).expect("write screenshot");
        }

        pub async fn sign_in(&self, user: &str, password: &str) {
            self.goto("/login").await;
            self.wait(
                "the sign-in form",
                "document.getElementById('username')",
                Duration::from_secs(20),
            )
            .await;
            self.type_into("#username", user).await;
            self.type_into("#password", password).await;
            // Enter in the password field submits, as a keyboard user would.
            self.type_into("#password", "\u{e007}").await;
            self.wait(
                "the signed-in header",
                &format!("document.getElementById('who')?.textContent.startsWith('{user} ')"),
                Duration::from_secs(20),
            )
            .await;
        }

        pub async fn sign_out(&self) {
            self.click("#sign-out").await;
            self.wait(
                "the sign-in form",
                "document.getElementById('login-form')",
                Duration::from_secs(20),
            )
            .await;
        }
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            // Ends Chromium; chromedriver is killed by its Proc.
            let http = self.http.clone();
            let url = self.session.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        let _ = http
                            .delete(url)
                            .timeout(Duration::from_secs(5))
                            .send()
                            .await;
                    });
                }
            })
            .join();
            if let Some(pid) = self._driver.child.as_ref().map(|c| c.id()) {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }

    fn decode_base64(s: &str) -> Vec<u8> {
        let val = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => (c - b'A') as u32,
                b'a'..=b'z' => (c - b'a' + 26) as u32,
                b'0'..=b'9' => (c - b'0' + 52) as u32,
                b'+' => 62,
                b'/' => 63,
                _ => 0,
            }
        };
        let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        let mut out = Vec::with_capacity(clean.len() / 4 * 3);
        for chunk in clean.chunks(4) {
            let n = chunk.iter().fold(0u32, |n, c| (n << 6) | val(*c));
            let pad = chunk.iter().filter(|c| **c == b'=').count();
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        out
    }
}

/// Where the screenshots of the docs go (only when TESTBED_SCREENSHOTS=1).
fn screenshot_path(name: &str) -> Option<std::path::PathBuf> {
    (std::env::var("TESTBED_SCREENSHOTS").as_deref() == Ok("1")).then(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs")
            .join(name)
    })
}

const FLAKY_PLAN: &str = r#"name: console-demo
description: two steps pass, one fails with a log
parameters:
  greeting: {type: string, default: hello}
steps:
  - id: prepare
    plugin: linux_system
    method: run_shell
    params: {command: echo, args: "{{ params.greeting }} from prepare"}
  - id: unit
    depends_on: [prepare]
    plugin: linux_system
    method: run_shell
    params: {command: echo, args: "unit tests ok"}
  - id: integration
    depends_on: [prepare]
    plugin: linux_system
    method: run_shell
    params: {command: sh, args: "-c 'echo boom-marker: connection refused; exit 3'"}
  - id: publish
    depends_on: [unit, integration]
    plugin: linux_system
    method: run_shell
    params: {command: echo, args: publish}
"#;

const SLOW_PLAN: &str = r#"name: console-slow
steps:
  - id: wait
    plugin: linux_system
    method: run_shell
    params: {command: sleep, args: "300"}
"#;

async fn store_plan(p: &Platform, yaml: &str) -> String {
    let r = p
        .http
        .post(format!("{}/api/plans", p.url))
        .bearer_auth(&p.token)
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn console_in_a_real_browser() {
    if !browser::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &["--lease-ttl", "3"]).await;
    p.user("vera", "viewer").await;
    let b = browser::Browser::start(&p.url).await;
    let long = Duration::from_secs(60);

    // Signing in from a deep link comes back to it.
    b.goto("/agents").await;
    b.wait(
        "the redirect to sign-in",
        "location.pathname === '/login'",
        long,
    )
    .await;
    b.type_into("#username", "admin").await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("#login-form button[type=submit]").await;
    b.wait(
        "the agents page",
        "document.querySelector('tr[data-agent=\"local-1\"]')",
        long,
    )
    .await;
    assert_eq!(b.path().await, "/agents");

    // Every page of the menu renders (a page that throws says "This page
    // failed"), each with its own title.
    for page in [
        "agents",
        "groups",
        "runs",
        "plans",
        "tasks",
        "performance",
        "reports",
        "results",
    ] {
        b.goto(&format!("/{page}")).await;
        b.wait(
            &format!("the {page} page"),
            &format!(
                "document.querySelector('main h1') && document.title.toLowerCase().startsWith('{page}')"
            ),
            long,
        )
        .await;
        let text = b.js("return document.body.innerText").await;
        assert!(
            !text.as_str().unwrap().contains("This page failed"),
            "/{page}: {text}"
        );
    }
    b.goto("/agents").await;

    let state = dir.path().join("doomed");
    let mut doomed = agent(&p.url, "doomed", &state, &[]);
    let row = "document.querySelector('tr[data-agent=\"doomed\"]')";
    b.wait(
        "the new agent online",
        &format!("{row}?.dataset.status === 'online'"),
        long,
    )
    .await;
    let text = b.wait("its row", &format!("{row}?.innerText"), long).await;
    assert!(text.as_str().unwrap().contains("online"), "{text}");
    if let Some(f) = screenshot_path("console-agents.png") {
        b.screenshot(&f).await;
    }
    doomed.kill9();
    b.wait(
        "the killed agent offline",
        &format!("{row}?.dataset.status === 'offline'"),
        long,
    )
    .await;
    let text = b.js(&format!("return {row}.innerText")).await;
    assert!(
        text.as_str().unwrap().contains("offline"),
        "status in words: {text}"
    );

    // Start a stored plan from its form; watch steps pass and one fail,
    // with the failing step's log shown.
    let plan = store_plan(&p, FLAKY_PLAN).await;
    b.goto("/plans").await;
    b.wait("the plan list", "document.querySelector('.plans a')", long)
        .await;
    b.click(".plans a").await;
    b.wait(
        "the start form",
        "document.getElementById('start-run')",
        long,
    )
    .await;
    assert!(b.path().await.ends_with(&plan));
    b.click("#start").await;
    b.wait(
        "the run page",
        "/^\\/runs\\/[0-9a-f-]{36}$/.test(location.pathname)",
        long,
    )
    .await;
    let node =
        |id: &str| format!("document.querySelector('.node[data-step=\"{id}\"]')?.dataset.status");
    for (step, status) in [
        ("prepare", "passed"),
        ("unit", "passed"),
        ("integration", "failed"),
    ] {
        b.wait(
            &format!("step {step} {status}"),
            &format!("{} === '{status}'", node(step)),
            long,
        )
        .await;
    }
    b.wait(
        "the run failed",
        "document.querySelector('h1 .status')?.textContent.includes('failed')",
        long,
    )
    .await;
    b.wait(
        "publish skipped",
        &format!("{} === 'skipped'", node("publish")),
        long,
    )
    .await;
    let log = b
        .wait(
            "the failing step's log",
            "document.getElementById('log')?.textContent.includes('boom-marker') && document.getElementById('log').textContent",
            long,
        )
        .await;
    assert!(
        log.as_str().unwrap().contains("connection refused"),
        "{log}"
    );
    let panel = b
        .js("return document.getElementById('step-panel').innerText")
        .await;
    assert!(panel.as_str().unwrap().contains("integration"), "{panel}");
    if let Some(f) = screenshot_path("console-run.png") {
        b.screenshot(&f).await;
    }
    // Back and forward move between the pages.
    let run_path = b.path().await;
    b.js("history.back()").await;
    b.wait(
        "back on the plan",
        &format!("location.pathname === '/plans/{plan}'"),
        long,
    )
    .await;
    b.js("history.forward()").await;
    b.wait(
        "forward on the run",
        &format!("location.pathname === '{run_path}'"),
        long,
    )
    .await;

    // The run's report, rendered by the server, with a log link that opens
    // with the session cookie.
    b.wait(
        "the report link",
        "document.querySelector('a.button[href^=\"/reports/\"]')",
        long,
    )
    .await;
    b.click("a.button[href^=\"/reports/\"]").await;
    let frame = "document.getElementById('report-frame')?.contentDocument";
    b.wait(
        "the report's log links",
        &format!("{frame}?.querySelector('a[href^=\"/api/tasks/\"]')"),
        long,
    )
    .await;
    b.js(&format!(
        "const links = [...{frame}.querySelectorAll('a[href^=\"/api/tasks/\"]')];
         links[links.length - 1].click();"
    ))
    .await;
    b.wait(
        "a log opened from the report",
        &format!(
            "{frame}?.location.pathname.endsWith('/log') && {frame}.body.innerText.length > 0"
        ),
        long,
    )
    .await;

    // Re-run with the same parameters, then compare the two reports.
    b.goto(&run_path).await;
    b.wait(
        "the re-run button",
        "document.getElementById('rerun')",
        long,
    )
    .await;
    b.click("#rerun").await;
    b.wait(
        "the new run",
        &format!("/^\\/runs\\/[0-9a-f-]{{36}}$/.test(location.pathname) && location.pathname !== '{run_path}'"),
        long,
    )
    .await;
    b.wait(
        "the new run's report",
        "document.querySelector('a.button[href^=\"/reports/\"]')",
        long,
    )
    .await;
    let rerun = b.path().await;
    let again = p.run_state(rerun.trim_start_matches("/runs/")).await;
    assert_eq!(again["params"]["greeting"], "hello", "{again}");
    b.goto("/reports").await;
    b.wait(
        "two reports",
        "document.querySelectorAll('#reports tbody tr').length >= 2",
        long,
    )
    .await;
    b.js(
        "const rows = document.querySelectorAll('#reports tbody tr');
          rows[1].querySelector('input[name=base]').click();
          rows[0].querySelector('input[name=new]').click();",
    )
    .await;
    b.wait(
        "the compare link",
        "document.getElementById('compare')",
        long,
    )
    .await;
    b.click("#compare").await;
    let compared = b
        .wait(
            "the comparison",
            &format!("{frame}?.body?.innerText.includes('Regressions') && {frame}.body.innerText"),
            long,
        )
        .await;
    assert!(
        compared.as_str().unwrap().contains("Regressions: 0"),
        "{compared}"
    );
    assert!(b.path().await.contains("/compare/"));

    // Groups: create one from the form and add an agent to it.
    b.goto("/groups").await;
    b.wait(
        "the group form",
        "document.getElementById('new-group')",
        long,
    )
    .await;
    b.type_into("#new-group input[name=name]", "lab-a").await;
    b.click("#new-group button[type=submit]").await;
    let group = "document.querySelector('tr[data-group=\"lab-a\"]')";
    b.wait("the new group", group, long).await;
    b.js(&format!(
        "const s = {group}.querySelector('select');
         s.value = [...s.options].find(o => o.textContent === 'local-1').value;
         s.dispatchEvent(new Event('change', {{bubbles: true}}));"
    ))
    .await;
    b.wait(
        "the agent in the group",
        &format!("{group}.innerText.includes('local-1') && {group}.innerText.includes('online')"),
        long,
    )
    .await;
    let (s, g) = p.get("/api/groups/lab-a").await;
    assert_eq!(s, 200);
    assert_eq!(g["agents"][0]["name"], "local-1", "{g}");

    // A one-off task from a form built from the method's schema: a bad value
    // gets the API's error next to its field; a good one runs, log shown.
    b.goto("/tasks/new").await;
    let choose = |id: &str, value: &str| {
        format!(
            "const s = document.getElementById('{id}');
             s.value = [...s.options].find(o => o.textContent.startsWith('{value}')).value;
             s.dispatchEvent(new Event('change', {{bubbles: true}}));"
        )
    };
    b.wait(
        "agents to choose",
        "document.querySelector('#task-agent option:nth-child(2)')",
        long,
    )
    .await;
    b.js(&choose("task-agent", "local-1")).await;
    b.wait("plugins", "document.getElementById('task-plugin')", long)
        .await;
    b.js(&choose("task-plugin", "linux_system")).await;
    b.wait("methods", "document.getElementById('task-method')", long)
        .await;
    b.js(&choose("task-method", "run_shell")).await;
    b.wait(
        "the parameter form",
        "document.getElementById('t-command')",
        long,
    )
    .await;
    b.type_into("#t-command", "echo").await;
    b.type_into("#t-args", "console-task-output").await;
    b.type_into("#t-timeout", "-5").await;
    b.click("#submit-task").await;
    let err = b
        .wait(
            "the field's error",
            "document.getElementById('te-timeout')?.textContent",
            long,
        )
        .await;
    assert!(!err.as_str().unwrap().is_empty());
    assert_eq!(
        b.js("return document.getElementById('te-command').textContent")
            .await,
        json!("")
    );
    b.js("document.getElementById('t-timeout').value = ''")
        .await;
    b.click("#submit-task").await;
    b.wait(
        "the task page",
        "/^\\/tasks\\/[0-9a-f-]{36}$/.test(location.pathname)",
        long,
    )
    .await;
    b.wait(
        "the task's log",
        "document.getElementById('log')?.textContent.includes('console-task-output')",
        long,
    )
    .await;

    // A dropped log WebSocket reconnects and the log reads the same: no
    // line twice, none missing.
    let slow_task = p
        .run_shell(
            "local-1",
            "sh",
            "-c 'for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 0.4; done'",
        )
        .await;
    b.js("const Orig = window.WebSocket;
          window.__ws = [];
          window.WebSocket = function (url, protocols) {
            const w = new Orig(url, protocols); window.__ws.push(w); return w;
          };
          window.WebSocket.prototype = Orig.prototype;")
        .await;
    // Navigate inside the page (no reload), so the wrapper stays.
    b.js(&format!(
        "history.pushState(null, '', '/tasks/{slow_task}'); dispatchEvent(new PopStateEvent('popstate'));"
    ))
    .await;
    b.wait(
        "the first lines",
        "document.getElementById('log')?.textContent.includes('line-2')",
        long,
    )
    .await;
    b.js("window.__ws[window.__ws.length - 1].close(4000)")
        .await;
    b.wait("a reconnect", "window.__ws.length >= 2", long).await;
    let log = b
        .wait(
            "the whole log",
            "document.body.innerText.includes('End of log') && document.getElementById('log').textContent",
            long,
        )
        .await;
    let log = log.as_str().unwrap();
    for i in 1..=8 {
        assert_eq!(
            log.matches(&format!("line-{i}\n")).count(),
            1,
            "line-{i} in {log:?}"
        );
    }

    // Cancel a run from its page.
    let slow = store_plan(&p, SLOW_PLAN).await;
    let (s, run) = p.post("/api/runs", json!({"plan_id": slow})).await;
    assert_eq!(s, 201, "{run}");
    let slow_run = run["id"].as_str().unwrap().to_string();
    b.goto(&format!("/runs/{slow_run}")).await;
    b.wait(
        "the step running",
        &format!("{} === 'running'", node("wait")),
        long,
    )
    .await;
    b.wait(
        "the cancel button",
        "document.getElementById('cancel-run')",
        long,
    )
    .await;
    b.click("#cancel-run").await;
    b.wait(
        "the run cancelled",
        "document.querySelector('h1 .status')?.textContent.includes('cancelled')",
        long,
    )
    .await;
    assert_eq!(p.run_state(&slow_run).await["status"], "cancelled");

    // A load test started from the console: the chart's request rate moves.
    let (target, hits) = serve();
    let plan = p
        .perf_plan(
            "console-load",
            json!({"concurrent_users": 2, "ramp_up_time": 0, "hold_time": 30,
                "test_type": "load", "target_url": target,
                "thresholds": ["p(95)<5000", "error_rate<0.5"]}),
        )
        .await;
    b.goto("/performance").await;
    let start = "tr[data-plan=\"console-load\"] button[data-action=\"start\"]";
    b.wait(
        "the start button",
        &format!("document.querySelector('{start}')"),
        long,
    )
    .await;
    b.click(start).await;
    b.wait(
        "the execution page",
        "location.pathname.startsWith('/performance/executions/')",
        long,
    )
    .await;
    b.wait(
        "the charts",
        "document.querySelector('.chart canvas') && document.querySelector('#sys-live canvas')",
        long,
    )
    .await;
    let first = b
        .wait("a request rate", "Number(document.getElementById('rps')?.dataset.rps) > 0 && Number(document.getElementById('rps').dataset.rps)", long)
        .await;
    let points = "document.querySelector('.chart')?.dataset.points";
    let seen = b
        .wait(
            "chart points",
            &format!("Number({points}) >= 1 && Number({points})"),
            long,
        )
        .await;
    b.wait(
        "more chart points",
        &format!("Number({points}) >= {} + 2", seen.as_u64().unwrap()),
        long,
    )
    .await;
    assert!(first.as_f64().unwrap() > 0.0);
    // The points sit on a real time axis (Unix seconds, within a day of now).
    let last = b
        .js("return Number(document.querySelector('.chart').dataset.last)")
        .await
        .as_f64()
        .unwrap_or(f64::NAN);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((last - now).abs() < 86400.0, "chart time {last}, now {now}");
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) > 0);
    if let Some(f) = screenshot_path("console-load.png") {
        b.screenshot(&f).await;
    }
    let (s, _) = p
        .post(
            &format!("/api/performance/plans/{}/stop/", plan["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    // The finished report: summary, thresholds judged (in words), and the
    // response-time chart with the threshold line.
    b.goto("/performance").await;
    b.wait(
        "the plan link",
        "document.querySelector('#perf-plans a')",
        long,
    )
    .await;
    b.click("#perf-plans a").await;
    b.wait(
        "the report link",
        "document.querySelector('#perf-reports a')",
        long,
    )
    .await;
    b.click("#perf-reports a").await;
    b.wait(
        "the report's chart",
        "document.querySelector('#rt-chart canvas')",
        long,
    )
    .await;
    let thresholds = b
        .wait(
            "the thresholds",
            "document.getElementById('thresholds')?.innerText",
            long,
        )
        .await;
    let thresholds = thresholds.as_str().unwrap();
    assert!(
        thresholds.contains("p(95)<5000") && thresholds.contains("passed"),
        "{thresholds}"
    );
    let legend = b
        .js("return document.querySelector('#rt-chart').innerText")
        .await;
    assert!(
        legend.as_str().unwrap().contains("threshold p(95) 5000"),
        "{legend}"
    );

    // A viewer sees the run but no cancel button, and the API refuses them.
    let (s, run) = p.post("/api/runs", json!({"plan_id": slow})).await;
    assert_eq!(s, 201, "{run}");
    let other = run["id"].as_str().unwrap().to_string();
    b.sign_out().await;
    b.sign_in("vera", "password-123").await;
    b.goto(&format!("/runs/{other}")).await;
    b.wait(
        "the step running",
        &format!("{} === 'running'", node("wait")),
        long,
    )
    .await;
    assert_eq!(
        b.js("return !!document.getElementById('cancel-run')").await,
        json!(false)
    );
    let status = b
        .js_async(&format!(
            "const done = arguments[arguments.length - 1];
             fetch('/api/runs/{other}/cancel', {{method: 'POST', headers: {{'X-Testbed-Csrf': '1'}}}})
               .then(r => done(r.status), e => done(String(e)));"
        ))
        .await;
    assert_eq!(status, json!(403));
    assert_eq!(p.run_state(&other).await["status"], "running");
    let (s, _) = p
        .post(&format!("/api/runs/{other}/cancel"), json!(null))
        .await;
    assert!(s < 300, "admin cancels the leftover run: {s}");

    // An ended session returns to sign-in, then back to the page.
    b.goto("/agents?from=revoked").await;
    b.wait(
        "the agents page",
        "document.querySelector('tr[data-agent=\"local-1\"]')",
        long,
    )
    .await;
    let (s, _) = p.post("/api/users/vera/revoke", json!(null)).await;
    assert_eq!(s, 204);
    b.wait("the sign-in page", "location.pathname === '/login'", long)
        .await;
    assert!(b.path().await.contains("next=%2Fagents%3Ffrom%3Drevoked"));
    b.type_into("#username", "vera").await;
    b.type_into("#password", "password-123").await;
    b.click("#login-form button[type=submit]").await;
    b.wait(
        "back on the page",
        "location.pathname + location.search === '/agents?from=revoked'",
        long,
    )
    .await;

    // Phone width: the run page still shows the graph and the step panel.
    b.size(390, 844).await;
    b.goto(&run_path).await;
    b.wait(
        "the graph at phone width",
        "document.querySelector('.node[data-step=\"integration\"]')",
        long,
    )
    .await;
    b.wait(
        "the step panel",
        "document.getElementById('step-panel')",
        long,
    )
    .await;
    // Nothing but the graph's own box scrolls sideways.
    let overflow = b
        .js("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "page wider than the phone by {overflow} px"
    );

    // Keyboard: a step of the graph takes focus and Enter opens it.
    b.js("document.querySelector('.node[data-step=\"unit\"]').focus()")
        .await;
    let focused = b.js("return document.activeElement.dataset.step").await;
    assert_eq!(focused, json!("unit"));
    b.keys_to_active("\u{e007}").await;
    b.wait(
        "the unit step opened",
        "location.search === '?step=unit'",
        long,
    )
    .await;
    b.wait(
        "its panel",
        "document.querySelector('#step-panel h2')?.textContent.includes('unit')",
        long,
    )
    .await;
}

/// Server CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    ticks / 100.0
}

/// Console benchmarks (docs/console.md): the agents page with 1,000
/// simulated agents, the runs list over 10,000 runs, and the server's CPU
/// while 20 consoles follow a live load test. Slow: run on demand with
/// `cargo test -p testbed-cli --test e2e console::console_benchmark -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn console_benchmark() {
    if !browser::available() {
        return;
    }
    let runs: usize = std::env::var("TESTBED_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let pid = p.proc.child.as_ref().expect("running").id();
    let long = Duration::from_secs(300);
    let b = browser::Browser::start(&p.url).await;
    b.sign_in("admin", ADMIN_PASSWORD).await;

    // 1,000 agents.
    let mut sim = {
        let mut cmd = std::process::Command::new(bin());
        cmd.args([
            "agent",
            "--server",
            &p.url,
            "--name",
            "sim",
            "--simulate",
            "1000",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("sim"))
        .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN)
        .env("TESTBED_LOG", "error");
        Proc::spawn("simulated agents", cmd)
    };
    let deadline = std::time::Instant::now() + long;
    loop {
        let (_, a) = p.get("/api/agents").await;
        let online = a
            .as_array()
            .map_or(0, |v| v.iter().filter(|x| x["status"] == "online").count());
        if online >= 1001 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{online} agents online"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.goto("/agents").await;
    let first = b
        .js_async(
            "const done = arguments[arguments.length - 1];
             const tick = () => document.querySelectorAll('#agents tbody tr').length >= 1001
               ? done(performance.now()) : requestAnimationFrame(tick);
             tick();",
        )
        .await;
    // Main-thread time spent in long tasks (>50 ms) over 10 s of live updates.
    let busy = b
        .js_async(
            "const done = arguments[arguments.length - 1];
             let sum = 0;
             const o = new PerformanceObserver(l => l.getEntries().forEach(e => sum += e.duration));
             o.observe({type: 'longtask'});
             setTimeout(() => { o.disconnect(); done(sum); }, 10000);",
        )
        .await;
    println!(
        "BENCH agents page, 1001 agents: first render {:.0} ms after navigation; long tasks {:.0} ms per 10 s of live updates",
        first.as_f64().unwrap(),
        busy.as_f64().unwrap()
    );
    assert!(first.as_f64().unwrap() < 30_000.0);
    sim.kill9();

    // 10,000 runs (each skips its one step, so no agent is needed).
    let plan = store_plan(
        &p,
        "name: bench\nparameters:\n  n: {type: integer, default: 0}\nsteps:\n  - id: s\n    when: \"{{ params.n }} == -1\"\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n",
    )
    .await;
    let started = std::time::Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut handles = Vec::new();
    for i in 0..runs {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (http, url, token, plan) =
            (p.http.clone(), p.url.clone(), p.token.clone(), plan.clone());
        handles.push(tokio::spawn(async move {
            let (s, b) = post_as(
                &http,
                &url,
                &token,
                "/api/runs",
                json!({"plan_id": plan, "params": {"n": i}}),
            )
            .await;
            drop(permit);
            assert_eq!(s, 201, "{b}");
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    println!(
        "BENCH created {runs} runs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    b.goto("/runs").await;
    let first = b
        .js_async(
            "const done = arguments[arguments.length - 1];
             const tick = () => document.querySelectorAll('#runs tbody tr').length >= 50
               ? done(performance.now()) : requestAnimationFrame(tick);
             tick();",
        )
        .await;
    let t = std::time::Instant::now();
    let (s, page) = p.get("/api/runs?page=100&page_size=50").await;
    assert_eq!(s, 200);
    let api_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(page["total"].as_u64().unwrap() as usize, runs);
    println!(
        "BENCH runs page over {runs} runs: first render {:.0} ms after navigation; GET /api/runs page 100 in {api_ms:.0} ms",
        first.as_f64().unwrap()
    );

    // 20 consoles on a live load test: each follows the metrics WebSocket
    // and polls the plan once a second, as the execution page does.
    let (target, _) = serve();
    let (_, project) = p
        .post("/api/projects", json!({"name": "bench", "description": ""}))
        .await;
    let (s, lp) = p
        .post(
            "/api/performance/plans/",
            json!({"name": "bench-load", "project_id": project["id"], "config": {
                "concurrent_users": 2, "ramp_up_time": 0, "hold_time": 40,
                "test_type": "load", "target_url": target}}),
        )
        .await;
    assert_eq!(s, 201, "{lp}");
    let (s, started) = p
        .post(
            &format!("/api/performance/plans/{}/start/", lp["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{started}");
    let exec = started["execution_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet_start = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let quiet = cpu_seconds(pid) - quiet_start;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut watchers = Vec::new();
    for _ in 0..20 {
        let (url, token, exec, plan_id, stop) = (
            p.url.clone(),
            p.token.clone(),
            exec.clone(),
            lp["id"].clone(),
            stop.clone(),
        );
        watchers.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let ws = format!(
                "{}/ws/performance/{exec}/",
                url.replacen("http://", "ws://", 1)
            );
            let mut req = ws.into_client_request().unwrap();
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let (mut sock, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
            let http = reqwest::Client::new();
            let mut messages = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::select! {
                    m = sock.next() => match m { Some(Ok(_)) => messages += 1, _ => break },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        let _ = http.get(format!("{url}/api/performance/plans/{plan_id}/"))
                            .bearer_auth(&token).send().await;
                    }
                }
            }
            messages
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy_start = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let busy = cpu_seconds(pid) - busy_start;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut messages = 0;
    for w in watchers {
        messages += w.await.unwrap();
    }
    println!(
        "BENCH live load test: server CPU {:.1} % of a core without consoles, {:.1} % with 20 consoles ({messages} metric messages received)",
        quiet * 10.0,
        busy * 10.0
    );
    assert!(messages >= 20 * 5, "{messages} messages");
}

/// Over HTTPS the session cookie is `Secure` (never sent back over plain
/// HTTP), and the console is served there too.
#[tokio::test]
async fn session_cookie_is_secure_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(d)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (scripts/test installs it)");
    assert!(status.success());
    let (_server, _, port) = tls_server_proc(d, &d.join("cert.pem"), &d.join("key.pem"), &[]);
    let url = format!("https://127.0.0.1:{port}");
    // The test's own throwaway certificate.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = http
        .post(format!("{url}/api/auth/session"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let set = r.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set.contains("; Secure"), "{set}");
    let r = http.get(format!("{url}/runs")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("/console/"));
}

/// Creates a run of `plan` through the API; returns its id and `created_at`.
async fn run_of(p: &Platform, plan: &str) -> (String, String) {
    let (s, run) = p.post("/api/runs", json!({ "plan_id": plan })).await;
    assert_eq!(s, 201, "{run}");
    (
        run["id"].as_str().unwrap().to_string(),
        run["created_at"].as_str().unwrap().to_string(),
    )
}

/// Ids of `GET /api/runs` with the query `q`.
async fn run_ids(p: &Platform, q: &str) -> Vec<String> {
    let (s, b) = p.get(&format!("/api/runs?page_size=1000&{q}")).await;
    assert_eq!(s, 200, "{q}: {b}");
    b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn q(v: &str) -> String {
    // `+01:00` offsets must not arrive as spaces.
    v.replace('+', "%2B")
}

#[tokio::test]
async fn runs_list_filters_by_date() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let plan = store_plan(&p, SLOW_PLAN).await;
    let (a, a_at) = run_of(&p, &plan).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (b, b_at) = run_of(&p, &plan).await;
    assert!(a_at < b_at, "{a_at} {b_at}");

    assert_eq!(run_ids(&p, "").await, vec![b.clone(), a.clone()]);
    // `since` is inclusive, `until` exclusive: consecutive ranges never
    // show a run twice.
    assert_eq!(
        run_ids(&p, &format!("since={}", q(&b_at))).await,
        vec![b.clone()]
    );
    assert_eq!(
        run_ids(&p, &format!("until={}", q(&b_at))).await,
        vec![a.clone()]
    );
    assert_eq!(
        run_ids(&p, &format!("since={}&until={}", q(&a_at), q(&b_at))).await,
        vec![a.clone()]
    );
    // Any offset names the same instant.
    let a_time = chrono::DateTime::parse_from_rfc3339(&a_at).unwrap();
    let shifted = a_time
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339();
    assert!(shifted.contains("+01:00"), "{shifted}");
    assert_eq!(
        run_ids(&p, &format!("since={}", q(&shifted))).await,
        vec![b.clone(), a.clone()]
    );
    assert!(run_ids(&p, "since=2999-01-01T00:00:00Z").await.is_empty());
    // An empty range holds nothing (rather than an error).
    assert!(
        run_ids(&p, &format!("since={}&until={}", q(&b_at), q(&a_at)))
            .await
            .is_empty()
    );
    // Filters combine.
    assert!(run_ids(&p, &format!("status=passed&since={}", q(&a_at)))
        .await
        .is_empty());

    // A bad value: 422 naming the parameter.
    for (query, field) in [
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("since=2026-12-03", "since"),
        ("since=2026-12-03T00:00:00Z&until=soon", "until"),
    ] {
        let (s, body) = p.get(&format!("/api/runs?{query}")).await;
        assert_eq!(s, 422, "{query}: {body}");
        assert_eq!(body["details"][0]["field"], field, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("RFC 3339"),
            "{query}: {body}"
        );
    }

    // The OpenAPI document says so (schemathesis holds the server to it).
    let (s, doc) = p.get("/api/openapi.json").await;
    assert_eq!(s, 200);
    let op = &doc["paths"]["/api/runs"]["get"];
    for name in ["since", "until"] {
        let param = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("no {name} parameter: {op}"));
        assert_eq!(param["in"], "query");
        let schema = param["schema"].to_string();
        assert!(schema.contains("date-time"), "{name}: {schema}");
    }
    assert!(op["responses"]["422"].is_object(), "{op}");

    for id in [a, b] {
        p.post(&format!("/api/runs/{id}/cancel"), json!({})).await;
    }
}

#[tokio::test]
async fn console_runs_date_filter_and_live_percentiles() {
    if !browser::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let plan = store_plan(&p, SLOW_PLAN).await;
    let (a, _) = run_of(&p, &plan).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (b_id, b_at) = run_of(&p, &plan).await;
    let b = browser::Browser::start(&p.url).await;
    let long = Duration::from_secs(60);
    b.sign_in("admin", ADMIN_PASSWORD).await;
    let rows = "document.querySelectorAll('#runs tbody tr')";

    // A shared link with an instant: only the later run, and the filter
    // says what it is.
    b.goto(&format!("/runs?since={}", q(&b_at))).await;
    b.wait(
        "the runs since the second",
        &format!("{rows}.length === 1 && document.querySelector('#filter-since-instant')"),
        long,
    )
    .await;
    let text = b.js(&format!("return {rows}[0].innerText")).await;
    assert!(text.as_str().unwrap().contains(&b_id[..8]), "{text}");
    assert!(!text.as_str().unwrap().contains(&a[..8]), "{text}");

    // The date inputs: from tomorrow shows nothing, from today both, and the
    // day is in the URL (so the filtered list can be shared).
    b.goto("/runs").await;
    b.wait("both runs", &format!("{rows}.length === 2"), long)
        .await;
    let set_day = |offset: i32| {
        format!(
            "const d = new Date(); d.setDate(d.getDate() + {offset}); \
             const day = d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' \
               + String(d.getDate()).padStart(2, '0'); \
             const i = document.getElementById('filter-since'); i.value = day; \
             i.dispatchEvent(new Event('change', {{ bubbles: true }})); return day;"
        )
    };
    let tomorrow = b.js(&set_day(1)).await;
    let tomorrow = tomorrow.as_str().unwrap().to_string();
    b.wait(
        "no runs from tomorrow",
        &format!(
            "location.search === '?since={tomorrow}' && {rows}.length === 0 \
             && /\\(0 runs\\)/.test(document.querySelector('.pager')?.innerText)"
        ),
        long,
    )
    .await;
    let today = b.js(&set_day(0)).await;
    let today = today.as_str().unwrap().to_string();
    b.wait(
        "both runs from today",
        &format!("location.search === '?since={today}' && {rows}.length === 2"),
        long,
    )
    .await;
    // `until` is inclusive of its day: until yesterday is empty, until
    // today has both (kept together with `since` in the URL).
    b.goto(&format!("/runs?since={today}&until={today}")).await;
    b.wait("both runs today", &format!("{rows}.length === 2"), long)
        .await;
    assert_eq!(
        b.js("return document.getElementById('filter-until').value")
            .await,
        json!(today)
    );
    // A bad value in the URL: the API's 422 is shown, naming the parameter.
    b.goto("/runs?until=soon").await;
    let err = b
        .wait(
            "the error",
            "document.querySelector('main .error')?.innerText",
            long,
        )
        .await;
    assert!(err.as_str().unwrap().contains("until"), "{err}");
    for id in [&a, &b_id] {
        p.post(&format!("/api/runs/{id}/cancel"), json!({})).await;
    }

    // A live load test: the chart has p50/p90/p99 series with values, and
    // the plan's response-time threshold as a line.
    let (target, hits) = serve();
    let lp = p
        .perf_plan(
            "pct-load",
            json!({"concurrent_users": 2, "ramp_up_time": 0, "hold_time": 30,
                "test_type": "load", "target_url": target,
                "thresholds": ["p(99)<4000", "error_rate<0.5"]}),
        )
        .await;
    let (s, started) = p
        .post(
            &format!("/api/performance/plans/{}/start/", lp["id"]),
            json!({}),
        )
        .await;
    assert!(s == 200 || s == 201 || s == 202, "{s} {started}");
    let exec = started["execution_id"].as_str().unwrap().to_string();
    // Without `?plan=`: the page finds the plan whose execution it is.
    b.goto(&format!("/performance/executions/{exec}")).await;
    let series = b
        .wait(
            "the live chart's series",
            "document.getElementById('live-chart')?.dataset.series",
            long,
        )
        .await;
    let series = series.as_str().unwrap().to_string();
    for label in [
        "requests/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "threshold p(99) 4000",
    ] {
        assert!(series.split('|').any(|s| s == label), "{label} in {series}");
    }
    let p99 = b
        .wait(
            "a p99 value",
            "Number(document.getElementById('live-chart').dataset.p99) > 0 \
             && Number(document.getElementById('live-chart').dataset.p99)",
            long,
        )
        .await;
    assert!(p99.as_f64().unwrap() > 0.0, "{p99}");
    // uPlot's legend names the series too (what a reader sees).
    let legend = b
        .js("return document.querySelector('#live-chart .u-legend')?.innerText || ''")
        .await;
    let legend = legend.as_str().unwrap();
    assert!(
        legend.contains("p99 ms") && legend.contains("threshold p(99) 4000"),
        "{legend}"
    );
    // Each load agent's CPU and memory, named (not only their average).
    let sys = b
        .wait(
            "the load agents' chart by agent",
            "(document.getElementById('sys-live')?.dataset.series || '').includes('local-1 CPU %') \
             && document.getElementById('sys-live').dataset.series",
            long,
        )
        .await;
    let sys = sys.as_str().unwrap();
    assert!(sys.split('|').any(|l| l == "local-1 memory %"), "{sys}");
    let text = b
        .js("return document.getElementById('rps').innerText")
        .await;
    assert!(text.as_str().unwrap().contains("p99"), "{text}");
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) > 0);
    let (s, _) = p
        .post(
            &format!("/api/performance/plans/{}/stop/", lp["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);

    // The finished report keeps each agent's series and draws them.
    let deadline = std::time::Instant::now() + long;
    let report = loop {
        let (_, list) = p
            .get(&format!("/api/performance/reports/?plan_id={}", lp["id"]))
            .await;
        if let Some(id) = list["results"][0]["id"].as_u64() {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "no report: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, r) = p.get(&format!("/api/performance/reports/{report}/")).await;
    let agent = &r["metrics"]["system_metrics"]["agents"]["local-1"];
    assert_eq!(
        agent["cpu"].as_array().map(Vec::len),
        r["metrics"]["system_metrics"]["cpu"]
            .as_array()
            .map(Vec::len),
        "{r}"
    );
    b.goto(&format!("/performance/reports/{report}")).await;
    b.wait(
        "the report's chart by agent",
        "(document.querySelector('#sys-chart .u-legend')?.innerText || '').includes('local-1 CPU %')",
        long,
    )
    .await;
}

#[tokio::test]
async fn console_kit_matrix_and_result_history() {
    if !browser::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kit = dir.path().join("kit");
    std::fs::create_dir_all(&kit).unwrap();
    std::fs::write(
        kit.join("01-feature.t"),
        "print \"1..2\\nok 1 - connects\\nnot ok 2 - lists domains\\n\";\n",
    )
    .unwrap();
    std::fs::write(
        kit.join("02-stable.t"),
        "print \"1..2\\nok 1 - stable\\nok 2 - stable\\n\";\n",
    )
    .unwrap();
    // Exactly one platform claims the file first: the platforms differ.
    std::fs::write(
        kit.join("03-claim.t"),
        "use Fcntl; print \"1..1\\n\"; \
         print sysopen(my $f, \"claimed\", O_CREAT|O_EXCL|O_WRONLY) ? \"ok\" : \"not ok\", \" 1 - first to claim\\n\";\n",
    )
    .unwrap();
    let (p, plan) = Platform::kit_on_two_agents(&dir.path().join("data"), &kit).await;
    let run = p
        .wait_run(
            &p.start_run(&plan, json!({})).await,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    let report = run["report_id"].as_str().unwrap().to_string();

    // A test case run three times in one environment: pass, pass, fail.
    let (s, b) = p
        .post(
            "/api/environments",
            json!({"name": "staging", "variables": {}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = p
        .post(
            "/api/testcases",
            json!({"name": "exits", "plugin": "linux_system", "method": "run_shell",
                   "parameters": {"command": "sh", "args": "-c 'exit {{ params.code }}'"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let cases = "name: cases\nenvironment: staging\nparameters:\n  code: {type: string, default: \"0\"}\nsteps:\n  - id: exits\n    testcase: exits\n";
    let mut history = Vec::new();
    for code in ["0", "0", "3"] {
        let id = p.start_run(cases, json!({ "code": code })).await;
        let r = p.wait_run(&id, Duration::from_secs(60)).await;
        let want = if code == "0" { "passed" } else { "failed" };
        assert_eq!(r["status"], want, "{r}");
        history.push(id);
    }
    history.reverse();

    let b = browser::Browser::start(&p.url).await;
    let long = Duration::from_secs(60);
    b.sign_in("admin", ADMIN_PASSWORD).await;

    // The report offers the matrix; the matrix is tests × platforms.
    b.goto(&format!("/reports/{report}")).await;
    b.wait(
        "the matrix link",
        "document.getElementById('matrix-link')",
        long,
    )
    .await;
    b.click("#matrix-link").await;
    b.wait(
        "the matrix",
        "document.querySelectorAll('#matrix tbody tr').length === 5",
        long,
    )
    .await;
    assert_eq!(b.path().await, format!("/reports/{report}/matrix"));
    let heads = b
        .js("return [...document.querySelectorAll('#matrix thead th')].map(t => t.innerText.split('\\n')[0])")
        .await;
    assert_eq!(heads, json!(["Test", "local-1", "local-2"]));
    let row = |name: &str| {
        format!(
            "[...document.querySelectorAll('#matrix tbody tr')].find(r => r.querySelector('th').innerText === '{name}')"
        )
    };
    let outcomes = |name: &str| {
        format!(
            "return [...{}.querySelectorAll('td')].map(td => td.dataset.outcome)",
            row(name)
        )
    };
    assert_eq!(
        b.js(&outcomes("01-feature.t › lists domains")).await,
        json!(["fail", "fail"])
    );
    // A name used twice in a script is two rows.
    for name in ["02-stable.t › stable", "02-stable.t › stable (2)"] {
        assert_eq!(
            b.js(&outcomes(name)).await,
            json!(["pass", "pass"]),
            "{name}"
        );
    }
    let claim = b.js(&outcomes("03-claim.t › first to claim")).await;
    let mut claim: Vec<String> = serde_json::from_value(claim).unwrap();
    claim.sort();
    assert_eq!(claim, ["fail", "pass"]);
    // Status in words, not colour alone.
    let text = b
        .js(&format!(
            "return {}.innerText",
            row("01-feature.t › lists domains")
        ))
        .await;
    assert!(text.as_str().unwrap().contains("failed"), "{text}");

    // A cell opens its details, with a URL of its own; back closes them.
    b.js(&format!(
        "{}.querySelector('td[data-outcome=fail] a').click()",
        row("03-claim.t › first to claim")
    ))
    .await;
    let detail = b
        .wait(
            "the cell's details",
            "document.getElementById('cell-detail')?.innerText",
            long,
        )
        .await;
    let detail = detail.as_str().unwrap();
    assert!(
        detail.contains("03-claim.t › first to claim on local-") && detail.contains("failed"),
        "{detail}"
    );
    let path = b.path().await;
    assert!(
        path.contains("test=03-claim.t") && path.contains("platform=local-"),
        "{path}"
    );
    b.js("history.back()").await;
    b.wait(
        "the details closed",
        "location.search === '' && !document.getElementById('cell-detail') && document.getElementById('matrix')",
        long,
    )
    .await;

    // Results: a cell opens the history of its test case there.
    b.goto("/results").await;
    let cell = "td[data-testcase=\"exits\"][data-environment=\"staging\"] a";
    b.wait(
        "the results cell",
        &format!("document.querySelector('{cell}')"),
        long,
    )
    .await;
    b.click(cell).await;
    b.wait(
        "the history",
        "document.querySelectorAll('#history tbody tr').length === 3",
        long,
    )
    .await;
    assert_eq!(
        b.path().await,
        "/results?testcase=exits&environment=staging"
    );
    let runs = b
        .js("return [...document.querySelectorAll('#history tbody tr')].map(r => r.dataset.run)")
        .await;
    assert_eq!(runs, json!(history));
    let words = b
        .js("return [...document.querySelectorAll('#history tbody tr')].map(r => r.children[1].innerText.trim())")
        .await;
    let words: Vec<String> = serde_json::from_value(words).unwrap();
    assert!(
        words[0].ends_with("failed")
            && words[1].ends_with("passed")
            && words[2].ends_with("passed"),
        "{words:?}"
    );
    // A history row leads to its run's step.
    b.click("#history tbody tr a").await;
    b.wait(
        "the run page",
        &format!("location.pathname === '/runs/{}'", history[0]),
        long,
    )
    .await;
}
