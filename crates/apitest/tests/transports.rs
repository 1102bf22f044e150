//! The gRPC, QMP and exec transports against real programs: an `etcd`
//! server (plain and with mutual TLS, certificates from the `openssl`
//! command), a `qemu-system-x86_64` monitor, and `sh`/`python3`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::prelude::{Engine as _, BASE64_STANDARD};
use serde_json::{json, Value};
use testbed_apitest::runner::{self, RunOptions};
use testbed_apitest::transport::exec::{self, ExecCall};
use testbed_apitest::transport::grpc::{GrpcCall, GrpcClient, GrpcTarget};
use testbed_apitest::transport::http::TlsOptions;
use testbed_apitest::transport::qmp::{QmpCall, QmpSession, QmpTarget};
use testbed_apitest::{suite, Reply, TransportError};
use testbed_report::Outcome;

/// Kills and reaps a child process when the test ends, pass or fail.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn b64(s: &str) -> String {
    BASE64_STANDARD.encode(s)
}

fn etcd_suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../suites/etcd")
}

fn etcd_target(port: u16) -> GrpcTarget {
    GrpcTarget {
        address: format!("http://127.0.0.1:{port}"),
        protos: vec!["proto/etcd.proto".into()],
        includes: vec![],
        tls: None,
        metadata: Default::default(),
    }
}

/// An `https://` target whose TLS files are absolute paths, so the suite
/// directory still finds the protos.
fn etcd_tls_target(port: u16, dir: &Path, ca: bool, cert: bool, insecure: bool) -> GrpcTarget {
    let file = |name: &str| Some(dir.join(name).display().to_string());
    GrpcTarget {
        address: format!("https://127.0.0.1:{port}"),
        tls: Some(TlsOptions {
            ca: if ca { file("ca.pem") } else { None },
            cert: if cert { file("client.pem") } else { None },
            key: if cert { file("client.key") } else { None },
            insecure,
        }),
        ..etcd_target(port)
    }
}

fn grpc_call(v: Value) -> GrpcCall {
    serde_json::from_value(v).unwrap()
}

/// A single-member etcd on free loopback ports, its data in a temp dir.
struct Etcd {
    client_port: u16,
    peer_port: u16,
    data: tempfile::TempDir,
    /// Where the certificates are when clients must use mutual TLS.
    tls: Option<PathBuf>,
    process: Option<Killed>,
}

impl Etcd {
    async fn start() -> Etcd {
        Etcd::start_with(None).await
    }

    /// Serves clients over TLS only, requiring a certificate from the CA
    /// in `certs` (see [`certificates`]).
    async fn start_tls(certs: &Path) -> Etcd {
        Etcd::start_with(Some(certs.to_path_buf())).await
    }

    async fn start_with(tls: Option<PathBuf>) -> Etcd {
        let mut etcd = Etcd {
            client_port: free_port(),
            peer_port: free_port(),
            data: tempfile::tempdir().unwrap(),
            tls,
            process: None,
        };
        etcd.launch().await;
        etcd
    }

    fn target(&self) -> GrpcTarget {
        match &self.tls {
            None => etcd_target(self.client_port),
            Some(dir) => etcd_tls_target(self.client_port, dir, true, true, false),
        }
    }

    async fn launch(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.data.path().join("etcd.log")).unwrap();
        let mut command = Command::new("/usr/bin/etcd");
        if let Some(dir) = &self.tls {
            command
                .arg(format!("--cert-file={}", dir.join("server.pem").display()))
                .arg(format!("--key-file={}", dir.join("server.key").display()))
                .arg("--client-cert-auth")
                .arg(format!(
                    "--trusted-ca-file={}",
                    dir.join("ca.pem").display()
                ));
        }
        let child = command
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.data.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.process = Some(Killed(child));
        let client = GrpcClient::new(&self.target(), &etcd_suite_dir()).unwrap();
        let status =
            grpc_call(json!({"method": "etcdserverpb.Maintenance/Status", "timeout": "2s"}));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.call(&status).await {
                Ok(reply) if reply.status == Some(0) => return,
                other => {
                    if Instant::now() > deadline {
                        let log = std::fs::read_to_string(self.data.path().join("etcd.log"));
                        panic!("etcd not ready: {other:?}\n{log:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn stop(&mut self) {
        self.process = None;
    }

    fn client(&self) -> GrpcClient {
        GrpcClient::new(&self.target(), &etcd_suite_dir()).unwrap()
    }
}

async fn ok(client: &GrpcClient, v: Value) -> Value {
    let reply = client.call(&grpc_call(v.clone())).await.unwrap();
    assert_eq!(reply.status, Some(0), "{v}: {reply:?}");
    reply.json.unwrap()
}

fn invalid(result: Result<Reply, TransportError>) -> String {
    match result {
        Err(TransportError::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn grpc_etcd_kv_put_range_txn_delete() {
    let etcd = Etcd::start().await;
    let client = etcd.client();

    let put = client
        .call(&grpc_call(json!({
            "method": "etcdserverpb.KV/Put",
            "message": {"key": b64("k1"), "value": b64("v1")},
        })))
        .await
        .unwrap();
    assert_eq!(put.status, Some(0));
    assert_eq!(put.header("content-type"), Some("application/grpc"));
    assert_eq!(
        put.header("grpc-status"),
        Some("0"),
        "status comes from the trailers"
    );
    assert!(!put.body.is_empty(), "body holds the raw response message");
    let put = put.json.unwrap();
    // 64-bit integers are strings, as in the proto3 JSON mapping.
    let revision: i64 = put["header"]["revision"].as_str().unwrap().parse().unwrap();
    assert!(revision >= 2, "{put}");

    let range = ok(
        &client,
        json!({"method": "etcdserverpb.KV/Range", "message": {"key": b64("k1")}}),
    )
    .await;
    assert_eq!(range["count"], json!("1"));
    assert_eq!(
        range["more"],
        json!(false),
        "default-valued fields are present"
    );
    let kv = &range["kvs"][0];
    assert_eq!(kv["key"], json!(b64("k1")));
    assert_eq!(kv["value"], json!(b64("v1")));
    assert_eq!(
        kv["create_revision"],
        json!(revision.to_string()),
        "proto field names"
    );
    assert_eq!(kv["version"], json!("1"));

    let txn = json!({
        "method": "etcdserverpb.KV/Txn",
        "message": {
            "compare": [{"key": b64("k1"), "target": "VALUE", "result": "EQUAL", "value": b64("v1")}],
            "success": [{"request_put": {"key": b64("k1"), "value": b64("v2")}}],
            "failure": [{"request_range": {"key": b64("k1")}}],
        },
    });
    let first = ok(&client, txn.clone()).await;
    assert_eq!(first["succeeded"], json!(true), "{first}");
    assert!(first["responses"][0]["response_put"].is_object(), "{first}");
    let second = ok(&client, txn).await;
    assert_eq!(second["succeeded"], json!(false), "{second}");
    assert_eq!(
        second["responses"][0]["response_range"]["kvs"][0]["value"],
        json!(b64("v2"))
    );

    let deleted = ok(
        &client,
        json!({"method": "etcdserverpb.KV/DeleteRange", "message": {"key": b64("k1"), "prev_kv": true}}),
    )
    .await;
    assert_eq!(deleted["deleted"], json!("1"));
    assert_eq!(deleted["prev_kvs"][0]["value"], json!(b64("v2")));

    let empty = ok(
        &client,
        json!({"method": "/etcdserverpb.KV/Range", "message": {"key": b64("k1")}}),
    )
    .await;
    assert_eq!(empty["count"], json!("0"));
    assert_eq!(empty["kvs"], json!([]));

    let status = ok(
        &client,
        json!({"method": "etcdserverpb.Maintenance/Status"}),
    )
    .await;
    assert!(
        status["version"].as_str().unwrap().starts_with("3."),
        "{status}"
    );
}

#[tokio::test]
async fn grpc_etcd_lease_and_error_status() {
    let etcd = Etcd::start().await;
    let client = etcd.client();

    let grant = ok(
        &client,
        json!({"method": "etcdserverpb.Lease/LeaseGrant", "message": {"TTL": 60}}),
    )
    .await;
    let id = grant["ID"].as_str().unwrap().to_owned();
    assert_ne!(id, "0");
    assert_eq!(grant["TTL"], json!("60"));

    ok(
        &client,
        json!({"method": "etcdserverpb.KV/Put", "message": {"key": b64("leased"), "value": b64("x"), "lease": id}}),
    )
    .await;
    let ttl = ok(
        &client,
        json!({"method": "etcdserverpb.Lease/LeaseTimeToLive", "message": {"ID": id, "keys": true}}),
    )
    .await;
    assert_eq!(ttl["ID"], json!(id));
    assert_eq!(ttl["grantedTTL"], json!("60"));
    let left: i64 = ttl["TTL"].as_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&left), "{ttl}");
    assert_eq!(ttl["keys"], json!([b64("leased")]));

    let leases = ok(&client, json!({"method": "etcdserverpb.Lease/LeaseLeases"})).await;
    assert_eq!(leases["leases"], json!([{"ID": id}]));

    // Bidi stream with two request messages: one answer each.
    let keepalive = client
        .call(&grpc_call(json!({
            "method": "etcdserverpb.Lease/LeaseKeepAlive",
            "messages": [{"ID": id}, {"ID": id}],
            "stream": {"max_messages": 2, "timeout": "10s"},
        })))
        .await
        .unwrap();
    assert_eq!(keepalive.status, Some(0));
    let answers = keepalive.json.unwrap();
    assert_eq!(answers.as_array().unwrap().len(), 2, "{answers}");
    assert_eq!(answers[1]["ID"], json!(id));
    assert_eq!(answers[1]["TTL"], json!("60"));
    assert!(
        keepalive.duration < Duration::from_secs(5),
        "ended by max_messages"
    );

    // etcd ends LeaseKeepAlive as soon as the request stream ends, so
    // lasting the whole listening time shows the stream was kept open, and
    // the missing grpc-status shows the client, not the server, ended it.
    let held = client
        .call(&grpc_call(json!({
            "method": "etcdserverpb.Lease/LeaseKeepAlive",
            "message": {"ID": id},
            "stream": {"timeout": "400ms"},
        })))
        .await
        .unwrap();
    assert_eq!(held.status, Some(0));
    assert!(held.duration >= Duration::from_millis(400), "{held:?}");
    assert_eq!(held.header("grpc-status"), None, "{held:?}");
    assert_eq!(held.json.unwrap().as_array().unwrap().len(), 1);

    ok(
        &client,
        json!({"method": "etcdserverpb.Lease/LeaseRevoke", "message": {"ID": id}}),
    )
    .await;
    let again = client
        .call(&grpc_call(
            json!({"method": "etcdserverpb.Lease/LeaseRevoke", "message": {"ID": id}}),
        ))
        .await
        .unwrap();
    assert_eq!(again.status, Some(5), "NOT_FOUND: {again:?}");
    assert!(
        again
            .header("grpc-message")
            .unwrap()
            .contains("lease not found"),
        "{again:?}"
    );
    assert_eq!(again.json, None);
}

#[tokio::test]
async fn grpc_etcd_watch_stream() {
    let etcd = Etcd::start().await;
    let client = etcd.client();

    let first = ok(
        &client,
        json!({"method": "etcdserverpb.KV/Put", "message": {"key": b64("w"), "value": b64("a")}}),
    )
    .await;
    let revision = first["header"]["revision"].as_str().unwrap().to_owned();
    ok(
        &client,
        json!({"method": "etcdserverpb.KV/Put", "message": {"key": b64("w"), "value": b64("b")}}),
    )
    .await;

    // start_revision replays history, so the event is there without racing
    // a concurrent Put.
    let watch = client
        .call(&grpc_call(json!({
            "method": "etcdserverpb.Watch/Watch",
            "message": {"create_request": {"key": b64("w"), "start_revision": revision}},
            "stream": {"max_messages": 2, "timeout": "10s"},
        })))
        .await
        .unwrap();
    assert_eq!(watch.status, Some(0));
    assert!(
        watch.duration < Duration::from_secs(5),
        "ended by max_messages: {watch:?}"
    );
    let messages = watch.json.unwrap();
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["created"], json!(true));
    let event = &messages[1]["events"][0];
    assert_eq!(event["type"], json!("PUT"));
    assert_eq!(event["kv"]["key"], json!(b64("w")));
    assert_eq!(event["kv"]["value"], json!(b64("a")));
    assert_eq!(event["kv"]["mod_revision"], json!(revision));

    // Without history the watch only confirms creation; the listening time
    // ends the call, not the server.
    let quiet = client
        .call(&grpc_call(json!({
            "method": "etcdserverpb.Watch/Watch",
            "message": {"create_request": {"key": b64("nothing-here")}},
            "stream": {"timeout": "400ms"},
        })))
        .await
        .unwrap();
    assert_eq!(quiet.status, Some(0));
    assert!(quiet.duration >= Duration::from_millis(400), "{quiet:?}");
    assert!(quiet.duration < Duration::from_secs(5), "{quiet:?}");
    let quiet = quiet.json.unwrap();
    assert_eq!(quiet.as_array().unwrap().len(), 1, "{quiet}");
    assert_eq!(quiet[0]["created"], json!(true));

    // The connection survives the resets of both streams.
    ok(
        &client,
        json!({"method": "etcdserverpb.KV/Range", "message": {"key": b64("w")}}),
    )
    .await;
}

#[tokio::test]
async fn grpc_reconnects_after_server_restart() {
    let mut etcd = Etcd::start().await;
    let client = etcd.client();
    ok(
        &client,
        json!({"method": "etcdserverpb.KV/Put", "message": {"key": b64("r"), "value": b64("1")}}),
    )
    .await;

    etcd.stop();
    let down = client
        .call(&grpc_call(
            json!({"method": "etcdserverpb.KV/Range", "message": {"key": b64("r")}}),
        ))
        .await;
    // The cached connection is dead; the retry on a new one is refused.
    assert!(matches!(down, Err(TransportError::Refused(_))), "{down:?}");

    etcd.launch().await;
    let range = ok(
        &client,
        json!({"method": "etcdserverpb.KV/Range", "message": {"key": b64("r")}}),
    )
    .await;
    assert_eq!(range["kvs"][0]["value"], json!(b64("1")));
}

#[tokio::test]
async fn grpc_call_errors() {
    let port = free_port();
    let client = GrpcClient::new(&etcd_target(port), &etcd_suite_dir()).unwrap();

    let unknown = invalid(
        client
            .call(&grpc_call(json!({"method": "etcdserverpb.KV/Nope"})))
            .await,
    );
    assert!(
        unknown.contains("no method `Nope`") && unknown.contains("Range"),
        "{unknown}"
    );
    let service = invalid(
        client
            .call(&grpc_call(json!({"method": "etcdserverpb.Nope/Put"})))
            .await,
    );
    assert!(
        service.contains("unknown gRPC service `etcdserverpb.Nope`"),
        "{service}"
    );
    let shape = invalid(client.call(&grpc_call(json!({"method": "Put"}))).await);
    assert!(shape.contains("package.Service/Method"), "{shape}");

    let field = invalid(
        client
            .call(&grpc_call(
                json!({"method": "etcdserverpb.KV/Put", "message": {"nope": 1}}),
            ))
            .await,
    );
    assert!(field.contains("nope"), "{field}");
    let nested = invalid(
        client
            .call(&grpc_call(json!({
                "method": "etcdserverpb.Watch/Watch",
                "message": {"create_request": {"start_revision": "soon"}},
            })))
            .await,
    );
    assert!(nested.contains("create_request.start_revision"), "{nested}");
    let two = invalid(
        client
            .call(&grpc_call(
                json!({"method": "etcdserverpb.KV/Put", "messages": [{}, {}]}),
            ))
            .await,
    );
    assert!(two.contains("exactly one"), "{two}");

    // Nothing listens on the port: validation passed, connecting fails.
    let refused = client
        .call(&grpc_call(
            json!({"method": "etcdserverpb.KV/Range", "message": {}}),
        ))
        .await;
    assert!(
        matches!(refused, Err(TransportError::Refused(_))),
        "{refused:?}"
    );

    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let slow = GrpcClient::new(&etcd_target(silent_port), &etcd_suite_dir()).unwrap();
    let start = Instant::now();
    let timed_out = slow
        .call(&grpc_call(
            json!({"method": "etcdserverpb.KV/Range", "timeout": "300ms"}),
        ))
        .await;
    assert!(
        matches!(timed_out, Err(TransportError::Timeout(_))),
        "{timed_out:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    holder.abort();

    let extra = serde_json::from_value::<GrpcCall>(json!({"method": "a.B/C", "mesage": {}}));
    assert!(extra.is_err(), "unknown keys in a call are rejected");
}

#[test]
fn grpc_proto_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.proto"),
        "syntax = \"proto3\";\npackage bad;\nmessage M { int32 x = ; }\n",
    )
    .unwrap();
    let target = GrpcTarget {
        address: "127.0.0.1:1".into(),
        protos: vec!["bad.proto".into()],
        includes: vec![],
        tls: None,
        metadata: Default::default(),
    };
    match GrpcClient::new(&target, dir.path()) {
        Err(TransportError::Invalid(message)) => {
            assert!(
                message.contains("bad.proto:3:"),
                "line and column: {message}"
            )
        }
        other => panic!("{other:?}"),
    }

    let missing = GrpcTarget {
        protos: vec!["missing.proto".into()],
        ..target.clone()
    };
    match GrpcClient::new(&missing, dir.path()) {
        Err(TransportError::Invalid(message)) => {
            assert!(message.contains("missing.proto"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // TLS settings are checked when the suite loads, not on the first call.
    let valid = GrpcTarget {
        protos: vec!["good.proto".into()],
        ..target.clone()
    };
    std::fs::write(
        dir.path().join("good.proto"),
        "syntax = \"proto3\";\npackage good;\nmessage M { int32 x = 1; }\n",
    )
    .unwrap();
    let with_tls = |address: &str, tls: Option<TlsOptions>| GrpcTarget {
        address: address.into(),
        tls,
        ..valid.clone()
    };
    GrpcClient::new(&with_tls("https://127.0.0.1:1", None), dir.path()).unwrap();
    GrpcClient::new(&with_tls("https://[::1]:1", None), dir.path()).unwrap();
    GrpcClient::new(
        &with_tls("localhost:1", Some(TlsOptions::default())),
        dir.path(),
    )
    .unwrap();
    let failure = |address: &str, tls: Option<TlsOptions>| match GrpcClient::new(
        &with_tls(address, tls),
        dir.path(),
    ) {
        Err(TransportError::Invalid(message)) => message,
        other => panic!("{address}: {other:?}"),
    };
    let plain = failure("http://127.0.0.1:1", Some(TlsOptions::default()));
    assert!(plain.contains("https://"), "{plain}");
    let scheme = failure("grpcs://127.0.0.1:1", None);
    assert!(scheme.contains("https://"), "{scheme}");
    for (tls, says) in [
        (
            TlsOptions {
                cert: Some("client.pem".into()),
                ..TlsOptions::default()
            },
            "tls.cert and tls.key go together",
        ),
        (
            TlsOptions {
                ca: Some("nope.pem".into()),
                ..TlsOptions::default()
            },
            "nope.pem",
        ),
    ] {
        let message = failure("https://127.0.0.1:1", Some(tls));
        assert!(message.contains(says), "{message}");
    }
}

#[tokio::test]
async fn grpc_etcd_mutual_tls() {
    let certs = tempfile::tempdir().unwrap();
    testbed_testsupport::certificates(certs.path());
    // Starting waits until a Status call with CA + client certificate works.
    let etcd = Etcd::start_tls(certs.path()).await;
    let port = etcd.client_port;
    let client = |ca: bool, cert: bool, insecure: bool| {
        GrpcClient::new(
            &etcd_tls_target(port, certs.path(), ca, cert, insecure),
            &etcd_suite_dir(),
        )
        .unwrap()
    };
    let put =
        json!({"method": "etcdserverpb.KV/Put", "message": {"key": b64("t"), "value": b64("s")}});
    let range = json!({"method": "etcdserverpb.KV/Range", "message": {"key": b64("t")}});

    let trusted = client(true, true, false);
    ok(&trusted, put.clone()).await;
    let found = ok(&trusted, range.clone()).await;
    assert_eq!(found["kvs"][0]["value"], json!(b64("s")), "{found}");

    // Without the CA the Mozilla roots are trusted, and they did not sign
    // the server's certificate.
    let unknown = client(false, true, false)
        .call(&grpc_call(range.clone()))
        .await;
    match &unknown {
        Err(TransportError::Tls(message)) => assert!(
            message.contains("UnknownIssuer") && message.contains("127.0.0.1"),
            "innermost cause and the server: {message}"
        ),
        other => panic!("expected Tls, got {other:?}"),
    }

    // etcd wants a client certificate; under TLS 1.3 its refusal can only
    // arrive after the client's side of the handshake, on the first request.
    let anonymous = client(true, false, false)
        .call(&grpc_call(range.clone()))
        .await;
    match &anonymous {
        Err(error @ TransportError::Tls(message)) => assert!(
            error.to_string().contains("TLS") && message.to_lowercase().contains("certificate"),
            "{error}"
        ),
        other => panic!("expected Tls, got {other:?}"),
    }

    let insecure = client(false, true, true);
    let found = ok(&insecure, range).await;
    assert_eq!(found["kvs"][0]["value"], json!(b64("s")), "{found}");

    // The same from a suite file: `tls` paths are relative to the suite.
    let proto = etcd_suite_dir().join("proto/etcd.proto");
    let write_suite = |name: &str, tls: &str| {
        let file = certs.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "name: {name}\ngrpc:\n  address: https://127.0.0.1:{port}\n  protos: [{}]\n  tls: {tls}\n\
                 tests:\n  - name: range\n    steps:\n      - grpc: {{method: etcdserverpb.KV/Range, message: {{key: {}}}}}\n\
                 \x20       assert: [{{status: 0}}, {{jsonpath: $.count, equals: \"1\"}}]\n",
                proto.display(),
                b64("t"),
            ),
        )
        .unwrap();
        file
    };
    let run = |file: PathBuf| async move {
        let loaded = suite::load(&file).unwrap_or_else(|p| panic!("{p:?}"));
        let out = runner::run_suite(&loaded, &RunOptions::default()).await;
        out.cases.into_iter().next().unwrap()
    };
    let passed = run(write_suite(
        "trusted",
        "{ca: ca.pem, cert: client.pem, key: client.key}",
    ))
    .await;
    assert_eq!(passed.outcome, Outcome::Pass, "{:?}", passed.message);
    let refused = run(write_suite(
        "untrusted",
        "{cert: client.pem, key: client.key}",
    ))
    .await;
    assert_eq!(refused.outcome, Outcome::Error, "{:?}", refused.message);
    let message = refused.message.unwrap_or_default();
    assert!(
        message.contains("TLS") && message.contains("UnknownIssuer"),
        "{message}"
    );
}

/// A QEMU with no machine, its monitor on a Unix socket and a TCP port.
struct Qemu {
    socket: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
    _process: Killed,
}

impl Qemu {
    async fn start() -> Qemu {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let port = free_port();
        let child = std::process::Command::new("qemu-system-x86_64")
            .args(["-machine", "none", "-nodefaults", "-display", "none"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .arg("-qmp")
            .arg(format!("tcp:127.0.0.1:{port},server=on,wait=off"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let qemu = Qemu {
            socket,
            port,
            _dir: dir,
            _process: Killed(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(qemu.socket.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            assert!(Instant::now() < deadline, "QEMU's monitor did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        qemu
    }

    fn unix_target(&self) -> QmpTarget {
        QmpTarget {
            socket: Some(self.socket.display().to_string()),
            address: None,
            timeout: None,
        }
    }
}

fn qmp(v: Value) -> QmpCall {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn qmp_qemu_commands_and_events() {
    let qemu = Qemu::start().await;
    let (mut session, greeting) = QmpSession::connect(&qemu.unix_target()).await.unwrap();
    assert!(
        greeting["QMP"]["version"]["qemu"]["major"].is_u64(),
        "{greeting}"
    );

    let status = session
        .call(&qmp(json!({"execute": "query-status"})))
        .await
        .unwrap();
    assert_eq!(status.status, Some(0));
    assert_eq!(
        status.json.as_ref().unwrap()["return"]["status"],
        json!("running")
    );
    assert!(
        status.text().contains("\"running\""),
        "body is the reply line"
    );

    let stop = session
        .call(&qmp(json!({"execute": "stop"})))
        .await
        .unwrap();
    assert_eq!(stop.status, Some(0));
    assert_eq!(stop.json.unwrap()["return"], json!({}));
    // QEMU emits STOP before its reply to `stop`, so by now the event sits
    // in the session's buffer; it must survive another command.
    let paused = session
        .call(&qmp(json!({"execute": "query-status", "arguments": {}})))
        .await
        .unwrap();
    assert_eq!(paused.json.unwrap()["return"]["status"], json!("paused"));
    assert_eq!(session.buffered_events().count(), 1);
    let event = session
        .call(&qmp(json!({"wait_event": "STOP", "timeout": "2s"})))
        .await
        .unwrap();
    assert_eq!(event.status, None);
    assert_eq!(event.json.as_ref().unwrap()["event"], json!("STOP"));
    assert!(event.json.unwrap()["timestamp"]["seconds"].is_u64());
    assert_eq!(session.buffered_events().count(), 0);

    let cont = session
        .call(&qmp(json!({"execute": "cont"})))
        .await
        .unwrap();
    assert_eq!(cont.status, Some(0));
    let resumed = session
        .call(&qmp(json!({"wait_event": "RESUME"})))
        .await
        .unwrap();
    assert_eq!(resumed.json.unwrap()["event"], json!("RESUME"));

    let unknown = session
        .call(&qmp(json!({"execute": "no-such-command"})))
        .await
        .unwrap();
    assert_eq!(unknown.status, Some(1));
    assert_eq!(
        unknown.json.unwrap()["error"]["class"],
        json!("CommandNotFound")
    );

    let start = Instant::now();
    let never = session
        .call(&qmp(json!({"wait_event": "SHUTDOWN", "timeout": "200ms"})))
        .await;
    assert!(
        matches!(never, Err(TransportError::Timeout(_))),
        "{never:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));

    for bad in [
        json!({"execute": "stop", "wait_event": "STOP"}),
        json!({}),
        json!({"execute": "stop", "arguments": [1]}),
    ] {
        let result = session.call(&qmp(bad.clone())).await;
        assert!(
            matches!(result, Err(TransportError::Invalid(_))),
            "{bad}: {result:?}"
        );
    }
    // Still in step after the timeout and the refused calls.
    let running = session
        .call(&qmp(json!({"execute": "query-status"})))
        .await
        .unwrap();
    assert_eq!(running.json.unwrap()["return"]["status"], json!("running"));

    let tcp = QmpTarget {
        socket: None,
        address: Some(format!("127.0.0.1:{}", qemu.port)),
        timeout: Some("5s".into()),
    };
    let (mut over_tcp, _) = QmpSession::connect(&tcp).await.unwrap();
    let status = over_tcp
        .call(&qmp(json!({"execute": "query-status"})))
        .await
        .unwrap();
    assert_eq!(status.json.unwrap()["return"]["running"], json!(true));
}

#[tokio::test]
async fn qmp_connect_errors() {
    let missing = QmpTarget {
        socket: Some("/nonexistent/qmp.sock".into()),
        address: None,
        timeout: None,
    };
    assert!(matches!(
        QmpSession::connect(&missing).await,
        Err(TransportError::Connect(_))
    ));
    let refused = QmpTarget {
        socket: None,
        address: Some(format!("127.0.0.1:{}", free_port())),
        timeout: None,
    };
    assert!(matches!(
        QmpSession::connect(&refused).await,
        Err(TransportError::Refused(_))
    ));
    let both = QmpTarget {
        socket: Some("/x".into()),
        address: Some("127.0.0.1:1".into()),
        timeout: None,
    };
    assert!(matches!(
        QmpSession::connect(&both).await,
        Err(TransportError::Invalid(_))
    ));
}

fn exec_call(v: Value) -> ExecCall {
    serde_json::from_value(v).unwrap()
}

async fn run(v: Value) -> Reply {
    exec::run(&exec_call(v), Path::new("/")).await.unwrap()
}

#[tokio::test]
async fn exec_status_stdout_json_stderr() {
    let three = run(json!({"command": "sh -c 'exit 3'"})).await;
    assert_eq!(three.status, Some(3));

    let json_out =
        run(json!({"command": ["python3", "-c", "import json; print(json.dumps({'a': [1, 2]}))"]}))
            .await;
    assert_eq!(json_out.status, Some(0));
    assert_eq!(json_out.json, Some(json!({"a": [1, 2]})));
    assert_eq!(json_out.text(), "{\"a\": [1, 2]}\n");

    let plain = run(json!({"command": "sh -c 'echo \"a  b\"; echo oops >&2; exit 1'"})).await;
    assert_eq!(plain.status, Some(1));
    assert_eq!(plain.text(), "a  b\n");
    assert_eq!(plain.json, None);
    assert_eq!(plain.stderr.as_deref(), Some("oops\n"));

    let signalled = run(json!({"command": ["sh", "-c", "kill -TERM $$"]})).await;
    assert_eq!(signalled.status, Some(128 + 15));
}

#[tokio::test]
async fn exec_stdin_env_cwd() {
    let upper = run(json!({
        "command": ["python3", "-c", "import sys; print(sys.stdin.read().upper())"],
        "stdin": "hello",
    }))
    .await;
    assert_eq!(upper.text(), "HELLO\n");

    let no_stdin =
        run(json!({"command": ["python3", "-c", "import sys; print(len(sys.stdin.read()))"]}))
            .await;
    assert_eq!(
        no_stdin.json,
        Some(json!(0)),
        "stdin is empty, not inherited"
    );

    let env =
        run(json!({"command": "sh -c 'printf %s \"$GREETING\"'", "env": {"GREETING": "hi there"}}))
            .await;
    assert_eq!(env.text(), "hi there");

    let base = tempfile::tempdir().unwrap();
    let sub = base.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let script = sub.join("tool.sh");
    std::fs::write(&script, "#!/bin/sh\npwd\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let call = exec_call(json!({"command": "./tool.sh", "cwd": "sub"}));
    let reply = exec::run(&call, base.path()).await.unwrap();
    assert_eq!(reply.status, Some(0));
    assert_eq!(
        PathBuf::from(reply.text().trim()).canonicalize().unwrap(),
        sub.canonicalize().unwrap()
    );
}

#[tokio::test]
async fn exec_timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let call = exec_call(json!({
        "command": ["sh", "-c", format!("sleep 100 & echo $! > {}; wait", pidfile.display())],
        "timeout": "500ms",
    }));
    let start = Instant::now();
    let result = exec::run(&call, dir.path()).await;
    assert!(
        matches!(result, Err(TransportError::Timeout(_))),
        "{result:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));

    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Gone, or a zombie waiting for init to reap it: either way dead.
        let state = std::fs::read_to_string(&stat).ok();
        let dead = state.as_deref().is_none_or(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        });
        if dead {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the background sleep {pid} survived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn exec_errors_and_output_cap() {
    let missing = exec::run(
        &exec_call(json!({"command": "no-such-program-testbed"})),
        Path::new("/"),
    )
    .await;
    match missing {
        Err(TransportError::Connect(message)) => {
            assert_eq!(message, "program `no-such-program-testbed` not found")
        }
        other => panic!("{other:?}"),
    }
    let empty = exec::run(&exec_call(json!({"command": []})), Path::new("/")).await;
    assert!(
        matches!(empty, Err(TransportError::Invalid(_))),
        "{empty:?}"
    );
    let quote = exec::run(
        &exec_call(json!({"command": "echo 'unclosed"})),
        Path::new("/"),
    )
    .await;
    assert!(
        matches!(quote, Err(TransportError::Invalid(_))),
        "{quote:?}"
    );
    assert!(serde_json::from_value::<ExecCall>(json!({"command": "true", "shell": true})).is_err());

    let big = run(
        json!({"command": ["python3", "-c", "import sys; sys.stdout.write('x' * (17 << 20))"]}),
    )
    .await;
    assert_eq!(big.status, Some(0), "the program is not blocked by the cap");
    assert_eq!(big.body.len(), 16 << 20);
    assert!(big.stderr.unwrap().contains("stdout cut at 16 MiB"));
}

/// The shipped etcd suite (`suites/etcd/`, which CI also runs through the
/// CLI) against a real etcd: its live watch in the background sees a put
/// made after the watch opened, and its revision arithmetic holds.
#[tokio::test]
async fn the_shipped_etcd_suite_passes_with_a_live_watch() {
    let etcd = Etcd::start().await;
    let loaded =
        suite::load(&etcd_suite_dir().join("etcd.yaml")).unwrap_or_else(|p| panic!("{p:?}"));
    let opts = RunOptions {
        vars: json!({"endpoint": format!("127.0.0.1:{}", etcd.client_port)})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..RunOptions::default()
    };
    let out = runner::run_suite(&loaded, &opts).await;
    for c in &out.cases {
        assert_eq!(
            c.outcome,
            Outcome::Pass,
            "{}: {:?}\n{:?}",
            c.name,
            c.message,
            c.output
        );
        assert_eq!(c.message, None, "{}: nothing left running", c.name);
    }
    let names: Vec<&str> = out.cases.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"a live watch sees a put made while it is open"),
        "{names:?}"
    );
    assert!(
        names.contains(&"revisions computed from a capture"),
        "{names:?}"
    );
}

/// A background watch that is never answered within its timeout is
/// reported as such where it is awaited; one still open at the end of its
/// test is cancelled (the stream reset) and reported.
#[tokio::test]
async fn background_grpc_streams_are_bounded_and_cancelled() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bg.yaml");
    std::fs::write(
        &file,
        format!(
            r#"grpc:
  address: "127.0.0.1:{port}"
  protos: ["{proto}"]
tests:
  - name: a watch that sees nothing until its time is up
    steps:
      - name: quiet
        background: true
        grpc:
          method: etcdserverpb.Watch/Watch
          message: {{create_request: {{key: "{key}"}}}}
          stream: {{max_messages: 2, timeout: 300ms}}
      - await: quiet
        assert:
          - jsonpath: $
            length: 2
  - name: a unary call that cannot finish in time
    steps:
      - name: slow
        background: true
        grpc:
          method: etcdserverpb.Watch/Watch
          message: {{create_request: {{key: "{key}"}}}}
          timeout: 300ms
      - await: slow
  - name: a watch left open
    steps:
      - name: open
        background: true
        grpc:
          method: etcdserverpb.Watch/Watch
          message: {{create_request: {{key: "{key}"}}}}
          stream: {{timeout: 60s}}
      - grpc: {{method: etcdserverpb.Maintenance/Status}}
"#,
            port = etcd.client_port,
            proto = etcd_suite_dir().join("proto/etcd.proto").display(),
            key = b64("quiet"),
        ),
    )
    .unwrap();
    let loaded = suite::load(&file).unwrap_or_else(|p| panic!("{p:?}"));
    let started = Instant::now();
    let out = runner::run_suite(&loaded, &RunOptions::default()).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "nothing waited for 60s"
    );
    let case = |name: &str| out.cases.iter().find(|c| c.name == name).unwrap();
    let quiet = case("a watch that sees nothing until its time is up");
    assert_eq!(quiet.outcome, Outcome::Fail, "{:?}", quiet.message);
    let m = quiet.message.clone().unwrap_or_default();
    assert!(
        m.contains("await quiet: $: expected length 2, got 1"),
        "{m}"
    );
    let slow = case("a unary call that cannot finish in time");
    assert_eq!(slow.outcome, Outcome::Error, "{:?}", slow.message);
    let m = slow.message.clone().unwrap_or_default();
    assert!(
        m.contains("the background step `slow` failed: timed out after 300ms"),
        "{m}"
    );
    let open = case("a watch left open");
    assert_eq!(open.outcome, Outcome::Pass, "{:?}", open.message);
    assert_eq!(
        open.message.as_deref(),
        Some("background step `open` was still running at the end: cancelled")
    );
}
