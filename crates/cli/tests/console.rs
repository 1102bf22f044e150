//! The web console against a real `testbed up`: how it is served, and its
//! session cookie (sign-in, CSRF, revocation, roles) over plain HTTP. The
//! browser scenarios are in `console_browser` below.

mod common;

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
    let id = p
        .run(
            "linux_system",
            "local-1",
            "run_shell",
            json!({"command": "echo", "args": "hello"}),
        )
        .await;
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
    let err = open(Some("http://127.0.0.1:1".into()))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("403"), "{err}");
    let err = open(None).await.err().expect("refused");
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
