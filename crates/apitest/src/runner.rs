//! Runs suites and turns them into the common result model: one report
//! suite per suite file, one case per test (per iteration of a data-driven
//! test), so JUnit, TAP, HTML and JSON come from `testbed-report`.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value};
use testbed_report::{Case, Outcome, Report};
use tokio::sync::{oneshot, Mutex};

use crate::check::{self, Assert};
use crate::suite::{ActionKind, Requirement, Step, StepAssert, Suite, Test};
use crate::template::{self, Scope};
use crate::transport::grpc::{GrpcCall, GrpcClient, GrpcTarget};
use crate::transport::http::{HttpClient, HttpRequest, HttpTarget};
use crate::transport::qmp::{QmpCall, QmpSession, QmpTarget};
use crate::transport::{exec, TransportError};
use crate::Reply;

/// Receives one line of progress per test.
pub type Echo = Arc<dyn Fn(&str) + Send + Sync>;

/// What to run and with which variables.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Highest-precedence variables (`--var`, a vars file).
    pub vars: Map<String, Value>,
    /// A named environment of the suite (`environments:`).
    pub environment: Option<String>,
    /// Run only tests with one of these tags.
    pub tags: Vec<String>,
    /// Leave out tests with one of these tags.
    pub skip_tags: Vec<String>,
    pub echo: Option<Echo>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("vars", &self.vars)
            .field("environment", &self.environment)
            .field("tags", &self.tags)
            .field("skip_tags", &self.skip_tags)
            .finish()
    }
}

/// Why a step did not pass.
#[derive(Debug, Clone)]
struct StepFailure {
    /// `Fail` for a wrong answer, `Error` when no judgement was possible.
    outcome: Outcome,
    message: String,
    output: Option<String>,
}

impl StepFailure {
    fn error(message: impl Into<String>) -> Self {
        StepFailure {
            outcome: Outcome::Error,
            message: message.into(),
            output: None,
        }
    }
}

/// Connections shared by the steps of one suite.
struct Conns<'a> {
    suite: &'a Suite,
    http: std::sync::OnceLock<Result<HttpClient, TransportError>>,
    grpc: std::sync::OnceLock<Result<GrpcClient, TransportError>>,
    qmp: Mutex<Option<QmpSession>>,
}

impl<'a> Conns<'a> {
    fn new(suite: &'a Suite) -> Self {
        Conns {
            suite,
            http: std::sync::OnceLock::new(),
            grpc: std::sync::OnceLock::new(),
            qmp: Mutex::new(None),
        }
    }

    fn base(&self) -> &Path {
        self.suite.base_dir()
    }

    /// Makes one call; `started` is told when it is under way (see
    /// [`GrpcClient::call_notify`]; other transports: as soon as it starts).
    async fn call(
        &self,
        kind: ActionKind,
        call: &Value,
        scope: &mut Scope,
        mut started: Option<oneshot::Sender<()>>,
    ) -> Result<Reply, TransportError> {
        let call = call.clone();
        if kind != ActionKind::Grpc {
            if let Some(tx) = started.take() {
                let _ = tx.send(());
            }
        }
        match kind {
            ActionKind::Http => {
                let req: HttpRequest = from_value(call)?;
                let client = self
                    .http
                    .get_or_init(|| {
                        let t: HttpTarget = render_typed(&self.suite.http, scope)?;
                        HttpClient::new(&t, self.base())
                    })
                    .as_ref()
                    .map_err(Clone::clone)?;
                client.send(&req, self.base()).await
            }
            ActionKind::Grpc => {
                let c: GrpcCall = from_value(call)?;
                let target = self.suite.grpc.as_ref().ok_or_else(|| {
                    TransportError::Invalid("the suite has no `grpc:` section".into())
                })?;
                let client = self
                    .grpc
                    .get_or_init(|| {
                        let t: GrpcTarget = render_typed(target, scope)?;
                        GrpcClient::new(&t, self.base())
                    })
                    .as_ref()
                    .map_err(Clone::clone)?;
                client.call_notify(&c, started).await
            }
            ActionKind::Qmp => {
                let c: QmpCall = from_value(call)?;
                let target = self.suite.qmp.as_ref().ok_or_else(|| {
                    TransportError::Invalid("the suite has no `qmp:` section".into())
                })?;
                let mut guard = self.qmp.lock().await;
                if guard.is_none() {
                    let t: QmpTarget = render_typed(target, scope)?;
                    let (session, greeting) = QmpSession::connect(&t).await?;
                    scope.insert("qmp_greeting".into(), greeting);
                    *guard = Some(session);
                }
                let result = match guard.as_mut() {
                    Some(s) => s.call(&c).await,
                    None => Err(TransportError::Connect("no QMP session".into())),
                };
                // A broken session (QEMU quit or restarted) is dropped, so a
                // later step connects afresh instead of failing forever.
                if matches!(
                    result,
                    Err(TransportError::Io(_)
                        | TransportError::Protocol(_)
                        | TransportError::Connect(_))
                ) {
                    *guard = None;
                }
                result
            }
            ActionKind::Exec => {
                let c = from_value(call)?;
                exec::run(&c, self.base()).await
            }
            ActionKind::Sleep => {
                let d = call.as_str().map(humantime::parse_duration);
                match d {
                    Some(Ok(d)) => {
                        tokio::time::sleep(d).await;
                        Ok(Reply::default())
                    }
                    _ => Err(TransportError::Invalid(format!(
                        "bad sleep duration {call}"
                    ))),
                }
            }
            // The runner answers `await` from the background steps.
            ActionKind::Await => Err(TransportError::Invalid("`await` is not a call".into())),
        }
    }
}

/// A background step's call, borrowing the suite's connections.
type Pending<'c> = Pin<Box<dyn Future<Output = Result<Reply, TransportError>> + Send + 'c>>;

/// The background steps of one test (its steps and teardown), of setup, or
/// of the suite's teardown. They are polled in this task whenever a later
/// step runs, so they need no `'static` connections, and dropping one
/// cancels its call (a gRPC stream is reset, an `exec` group killed).
#[derive(Default)]
struct Background<'c> {
    running: Vec<(String, Pending<'c>)>,
    /// Ended, not yet awaited.
    done: Vec<(String, Result<Reply, TransportError>)>,
}

impl<'c> Background<'c> {
    /// Polls every running step once, keeping the results of those that end.
    fn poll(&mut self, cx: &mut Context<'_>) {
        let mut i = 0;
        while i < self.running.len() {
            if let Poll::Ready(result) = self.running[i].1.as_mut().poll(cx) {
                let (name, _) = self.running.remove(i);
                self.done.push((name, result));
            } else {
                i += 1;
            }
        }
    }

    /// Runs `fg` to its end while the background steps progress too.
    async fn drive<T>(&mut self, fg: impl Future<Output = T>) -> T {
        let mut fg = std::pin::pin!(fg);
        std::future::poll_fn(|cx| {
            self.poll(cx);
            fg.as_mut().poll(cx)
        })
        .await
    }

    /// Starts a step in the background and returns once it is under way.
    async fn start(&mut self, name: String, call: Pending<'c>, started: oneshot::Receiver<()>) {
        self.running.push((name, call));
        // Err: the call ended before saying so; its result is kept.
        let _ = self.drive(started).await;
    }

    /// The result of the named step, waiting for it if it still runs;
    /// `None` when no such step was started (an earlier step failed).
    async fn wait(&mut self, name: &str) -> Option<Result<Reply, TransportError>> {
        if !self.running.iter().any(|(n, _)| n == name) && !self.done.iter().any(|(n, _)| n == name)
        {
            return None;
        }
        let result = std::future::poll_fn(|cx| {
            self.poll(cx);
            match self.done.iter().position(|(n, _)| n == name) {
                Some(i) => Poll::Ready(self.done.remove(i).1),
                None => Poll::Pending,
            }
        })
        .await;
        Some(result)
    }

    /// Cancels what still runs; what was never awaited, said in one line
    /// (`None` when everything was awaited).
    fn finish(&mut self) -> Option<String> {
        let mut notes: Vec<String> = self
            .running
            .drain(..)
            .map(|(n, _)| format!("background step `{n}` was still running at the end: cancelled"))
            .collect();
        notes.extend(self.done.drain(..).map(|(n, r)| match r {
            Ok(_) => format!("background step `{n}` ended but was never awaited"),
            Err(e) => format!("background step `{n}` failed and was never awaited: {e}"),
        }));
        (!notes.is_empty()).then(|| notes.join("; "))
    }
}

fn from_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, TransportError> {
    serde_json::from_value(v).map_err(|e| TransportError::Invalid(e.to_string()))
}

/// Renders the templates of a suite-wide target section (a base URL from an
/// environment variable, say) and reads it back.
fn render_typed<T: serde::de::DeserializeOwned>(
    v: &Value,
    scope: &Scope,
) -> Result<T, TransportError> {
    let v = template::render_value(v, scope).map_err(|e| TransportError::Invalid(e.to_string()))?;
    from_value(v)
}

fn excerpt(reply: &Reply) -> String {
    let mut s = String::new();
    if let Some(st) = reply.status {
        s.push_str(&format!("status {st}\n"));
    }
    s.push_str(&check::clip(&reply.text(), 2000));
    if let Some(e) = reply.stderr.as_deref().filter(|e| !e.is_empty()) {
        s.push_str("\nstderr: ");
        s.push_str(&check::clip(e, 1000));
    }
    s
}

/// Checks asserts; a template that cannot be rendered is named with its
/// place in the suite (`at` is `tests[0].steps[1].assert`).
fn evaluate(
    suite: &Suite,
    at: &str,
    asserts: &[StepAssert],
    reply: &Reply,
    scope: &Scope,
) -> Result<(), String> {
    for (i, a) in asserts.iter().enumerate() {
        match &a.assert {
            Assert::Schema(v) => check::validate_schema(v, reply)?,
            Assert::Compare { subject, ops } => {
                let actual = check::select(subject, reply);
                for op in ops {
                    let mut op = op.clone();
                    if let Some(v) = op.operand_mut() {
                        *v = template::render_value(v, scope).map_err(|e| {
                            format!("{}: {e}", suite.position(&format!("{at}[{i}]")))
                        })?;
                    }
                    check::apply(subject, &op, actual.as_ref())?;
                }
            }
        }
    }
    Ok(())
}

async fn run_step<'c>(
    conns: &'c Conns<'_>,
    step: &Step,
    scope: &mut Scope,
    bg: &mut Background<'c>,
) -> Result<Duration, StepFailure> {
    let suite = conns.suite;
    let label = step.label();
    let err_at = |m: String| StepFailure::error(format!("{label}: {m}"));
    let call = match template::render_value_at(&step.call, scope) {
        Ok(c) => c,
        Err((below, e)) => {
            // Located, so the template at fault is found in the file.
            let mut path = format!("{}.{}", step.path, step.kind.key());
            if !below.is_empty() && !below.starts_with('[') {
                path.push('.');
            }
            path.push_str(&below);
            return Err(err_at(format!("{}: {e}", suite.position(&path))));
        }
    };
    if step.background {
        let name = step.name.clone().unwrap_or_else(|| label.clone());
        let (tx, rx) = oneshot::channel();
        let mut own = scope.clone();
        let kind = step.kind;
        let pending: Pending<'c> =
            Box::pin(async move { conns.call(kind, &call, &mut own, Some(tx)).await });
        bg.start(name, pending, rx).await;
        return Ok(Duration::ZERO);
    }
    let attempts = step.retry.map_or(1, |r| r.attempts);
    let interval = step.retry.map_or(Duration::ZERO, |r| r.interval);
    let started = Instant::now();
    let mut last: Option<StepFailure> = None;
    let assert_at = format!("{}.assert", step.path);
    let until_at = format!("{}.until", step.path);
    for attempt in 1..=attempts {
        if attempt > 1 {
            bg.drive(tokio::time::sleep(interval)).await;
        }
        let result = if step.kind == ActionKind::Await {
            let name = call.as_str().unwrap_or_default();
            match bg.wait(name).await {
                Some(Ok(reply)) => Ok(reply),
                Some(Err(e)) => {
                    return Err(err_at(format!("the background step `{name}` failed: {e}")))
                }
                None => {
                    return Err(err_at(format!(
                        "the background step `{name}` was not started (an earlier step failed)"
                    )))
                }
            }
        } else {
            bg.drive(conns.call(step.kind, &call, scope, None)).await
        };
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
                let permanent = matches!(e, TransportError::Invalid(_));
                last = Some(err_at(e.to_string()));
                if permanent {
                    break;
                }
                continue;
            }
        };
        if !step.until.is_empty() {
            if let Err(m) = evaluate(suite, &until_at, &step.until, &reply, scope) {
                last = Some(StepFailure {
                    outcome: Outcome::Fail,
                    message: format!("{label}: still not there after {attempt} attempt(s): {m}"),
                    output: Some(excerpt(&reply)),
                });
                continue;
            }
        }
        if let Err(m) = evaluate(suite, &assert_at, &step.assert, &reply, scope) {
            last = Some(StepFailure {
                outcome: Outcome::Fail,
                message: format!("{label}: {m}"),
                output: Some(excerpt(&reply)),
            });
            if step.until.is_empty() {
                continue;
            }
            break;
        }
        for (name, cap) in &step.capture {
            match check::capture(cap, &reply) {
                Some(v) => {
                    scope.insert(name.clone(), v);
                }
                None => {
                    return Err(StepFailure {
                        outcome: Outcome::Fail,
                        message: format!("{label}: capture `{name}` found no value"),
                        output: Some(excerpt(&reply)),
                    })
                }
            }
        }
        return Ok(started.elapsed());
    }
    Err(last.unwrap_or_else(|| err_at("no attempt was made".into())))
}

/// Runs steps in order, stopping at the first failure.
async fn run_steps<'c>(
    conns: &'c Conns<'_>,
    steps: &[Step],
    scope: &mut Scope,
    bg: &mut Background<'c>,
) -> Result<(), StepFailure> {
    for s in steps {
        run_step(conns, s, scope, bg).await?;
    }
    Ok(())
}

/// Runs cleanup steps: all of them, whatever fails, reporting the first failure.
async fn run_cleanup<'c>(
    conns: &'c Conns<'_>,
    steps: &[Step],
    scope: &mut Scope,
    bg: &mut Background<'c>,
) -> Result<(), StepFailure> {
    let mut first = None;
    for s in steps {
        if let Err(e) = run_step(conns, s, scope, bg).await {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn env_scope() -> Value {
    Value::Object(
        std::env::vars()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// The suite's starting variables: suite `vars`, then the chosen
/// environment's, then the caller's; each rendered against what came before.
fn initial_scope(suite: &Suite, opts: &RunOptions) -> Result<Scope, String> {
    let mut scope = Scope::new();
    scope.insert("env".into(), env_scope());
    let mut layers: Vec<&Map<String, Value>> = vec![&suite.vars];
    if let Some(name) = &opts.environment {
        match suite.environments.get(name) {
            Some(e) => layers.push(e),
            None if suite.environments.is_empty() => {}
            None => {
                return Err(format!(
                    "no environment {name:?} (the suite has {})",
                    suite
                        .environments
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }
    layers.push(&opts.vars);
    for layer in layers {
        // Maps do not keep the file's order, so variables that use other
        // variables are rendered once those are: passes until nothing moves.
        let mut pending: Vec<(&String, &Value)> = layer.iter().collect();
        while !pending.is_empty() {
            let mut left = Vec::new();
            let mut first_error = None;
            for (k, v) in &pending {
                match template::render_value(v, &scope) {
                    Ok(v) => {
                        scope.insert((*k).clone(), v);
                    }
                    Err(e) => {
                        // The suite's own vars are located in its file.
                        let at = if std::ptr::eq(layer, &suite.vars) {
                            format!("{}: ", suite.position(&format!("vars.{k}")))
                        } else {
                            String::new()
                        };
                        first_error.get_or_insert(format!("{at}vars.{k}: {e}"));
                        left.push((*k, *v));
                    }
                }
            }
            if left.len() == pending.len() {
                return Err(first_error.unwrap_or_default());
            }
            pending = left;
        }
    }
    Ok(scope)
}

async fn unmet(req: &Requirement, scope: &Scope) -> Option<String> {
    let render = |s: &str| template::render_text(s, scope);
    let (what, arg) = match req {
        Requirement::Tcp(a) => ("tcp", a),
        Requirement::Unix(a) => ("unix", a),
        Requirement::Program(a) => ("program", a),
        Requirement::Env(a) => ("env", a),
        Requirement::Http(a) => ("http", a),
        Requirement::File(a) => ("file", a),
    };
    let arg = match render(arg) {
        Ok(a) => a,
        Err(e) => return Some(format!("requires {what}: {e}")),
    };
    let timeout = Duration::from_secs(3);
    let why = match req {
        Requirement::Tcp(_) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&arg)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("timed out".into()),
            }
        }
        Requirement::Unix(_) => match tokio::net::UnixStream::connect(&arg).await {
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        },
        Requirement::Program(_) => which(&arg).is_none().then(|| "not found on PATH".into()),
        Requirement::Env(_) => std::env::var(&arg)
            .ok()
            .filter(|v| !v.is_empty())
            .is_none()
            .then(|| "not set".into()),
        Requirement::File(_) => (!Path::new(&arg).exists()).then(|| "does not exist".into()),
        Requirement::Http(_) => {
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .danger_accept_invalid_certs(true)
                .build();
            match client {
                Ok(c) => c.get(&arg).send().await.err().map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            }
        }
    };
    why.map(|w| format!("requires {what} {arg}: {w}"))
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| program.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn selected(t: &Test, opts: &RunOptions) -> bool {
    (opts.tags.is_empty() || t.tags.iter().any(|g| opts.tags.contains(g)))
        && !t.tags.iter().any(|g| opts.skip_tags.contains(g))
}

/// One concrete run of a test: its name and the iteration (index, item), if any.
type Instance = (String, Option<(usize, Value)>);

fn instances(t: &Test, scope: &Scope) -> Result<Vec<Instance>, String> {
    let Some(each) = &t.each else {
        return Ok(vec![(t.name.clone(), None)]);
    };
    let items = template::render_value(each, scope).map_err(|e| format!("each: {e}"))?;
    let Value::Array(items) = items else {
        return Err(format!("each: expected a list, got {items}"));
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut s = scope.clone();
        s.insert("item".into(), item.clone());
        s.insert("index".into(), Value::from(i));
        let name = if t.name.contains("{{") {
            template::render_text(&t.name, &s).unwrap_or_else(|_| format!("{} [{i}]", t.name))
        } else {
            format!("{} [{i}]", t.name)
        };
        out.push((name, Some((i, item))));
    }
    Ok(out)
}

fn echo(opts: &RunOptions, line: &str) {
    if let Some(e) = &opts.echo {
        e(line);
    }
}

fn finish_case(case: &mut Case, xfail: Option<&str>) {
    if let Some(reason) = xfail {
        case.outcome = match case.outcome {
            Outcome::Fail | Outcome::Error => {
                let m = case.message.take().unwrap_or_default();
                case.message = Some(format!("known broken: {reason} ({m})"));
                Outcome::Xfail
            }
            Outcome::Pass => {
                case.message = Some(format!("passed, but expected to fail: {reason}"));
                Outcome::Xpass
            }
            o => o,
        };
    }
}

fn echo_case(opts: &RunOptions, case: &Case) {
    let tag = match case.outcome {
        Outcome::Pass => "ok  ",
        Outcome::Fail => "FAIL",
        Outcome::Error => "ERR ",
        Outcome::Skip => "skip",
        Outcome::Xfail => "xfail",
        Outcome::Xpass => "XPASS",
    };
    let msg = case
        .message
        .as_deref()
        .map(|m| format!(" — {m}"))
        .unwrap_or_default();
    echo(
        opts,
        &format!("  {tag} {} ({} ms){msg}", case.name, case.duration_ms),
    );
}

/// Runs one suite.
pub async fn run_suite(suite: &Suite, opts: &RunOptions) -> testbed_report::Suite {
    let mut cases = Vec::new();
    let mut out = run_suite_into(suite, opts, &mut |c| cases.push(c)).await;
    out.cases = cases;
    out
}

/// [`run_suite`], handing each case to `sink` as it ends instead of keeping
/// it: the suite returned has no cases.
pub async fn run_suite_into(
    suite: &Suite,
    opts: &RunOptions,
    sink: &mut (dyn FnMut(Case) + Send),
) -> testbed_report::Suite {
    let mut out = testbed_report::Suite::new(suite.name.clone());
    out.started_at = Some(Utc::now());
    out.properties
        .insert("file".into(), suite.file.display().to_string());
    let started = Instant::now();
    echo(opts, &format!("{} ({})", suite.name, suite.file.display()));
    let tests: Vec<&Test> = suite.tests.iter().filter(|t| selected(t, opts)).collect();
    let all_cases = |outcome: Outcome, message: &str, scope: &Scope| -> Vec<Case> {
        let mut cases = Vec::new();
        for t in &tests {
            let names = instances(t, scope)
                .map(|v| v.into_iter().map(|(n, _)| n).collect())
                .unwrap_or_else(|_| vec![t.name.clone()]);
            for n in names {
                let mut c = Case::new(n, outcome);
                c.message = Some(message.to_string());
                cases.push(c);
            }
        }
        cases
    };
    let mut scope = match initial_scope(suite, opts) {
        Ok(s) => s,
        Err(e) => {
            all_cases(Outcome::Error, &e, &Scope::new())
                .into_iter()
                .for_each(&mut *sink);
            out.diagnostics.push(e);
            return out;
        }
    };
    for r in &suite.requires {
        if let Some(why) = unmet(r, &scope).await {
            echo(opts, &format!("  skipped: {why}"));
            all_cases(Outcome::Skip, &why, &scope)
                .into_iter()
                .for_each(&mut *sink);
            out.diagnostics.push(format!("skipped: {why}"));
            return out;
        }
    }
    let conns = Conns::new(suite);
    let mut bg = Background::default();
    let setup = run_steps(&conns, &suite.setup, &mut scope, &mut bg).await;
    if let Some(note) = bg.finish() {
        echo(opts, &format!("  setup: {note}"));
        out.diagnostics.push(format!("setup: {note}"));
    }
    drop(bg);
    if let Err(f) = &setup {
        let msg = format!("setup failed: {}", f.message);
        echo(opts, &format!("  {msg}"));
        all_cases(Outcome::Error, &msg, &scope)
            .into_iter()
            .for_each(&mut *sink);
        out.diagnostics.push(msg);
    } else {
        // Set by the first failure or error when the suite is fail_fast.
        let mut stopped: Option<String> = None;
        for t in &tests {
            if let Some(first) = &stopped {
                let names = instances(t, &scope)
                    .map(|v| v.into_iter().map(|(n, _)| n).collect())
                    .unwrap_or_else(|_| vec![t.name.clone()]);
                for n in names {
                    let mut c = Case::new(n, Outcome::Skip);
                    c.message = Some(format!("not run: fail_fast, after `{first}`"));
                    echo_case(opts, &c);
                    sink(c);
                }
                continue;
            }
            let runs = match instances(t, &scope) {
                Ok(r) => r,
                Err(e) => {
                    let mut c = Case::new(t.name.clone(), Outcome::Error);
                    c.message = Some(e);
                    echo_case(opts, &c);
                    sink(c);
                    continue;
                }
            };
            for (name, item) in runs {
                if let Some(first) = &stopped {
                    let mut c = Case::new(name, Outcome::Skip);
                    c.message = Some(format!("not run: fail_fast, after `{first}`"));
                    echo_case(opts, &c);
                    sink(c);
                    continue;
                }
                let case = run_test(&conns, t, name, item, &scope).await;
                echo_case(opts, &case);
                if suite.fail_fast && matches!(case.outcome, Outcome::Fail | Outcome::Error) {
                    stopped = Some(case.name.clone());
                }
                sink(case);
            }
        }
    }
    let mut bg = Background::default();
    let teardown = run_cleanup(&conns, &suite.teardown, &mut scope, &mut bg).await;
    if let Some(note) = bg.finish() {
        echo(opts, &format!("  teardown: {note}"));
        out.diagnostics.push(format!("teardown: {note}"));
    }
    drop(bg);
    if let Err(f) = teardown {
        let mut c = Case::new("teardown", f.outcome);
        c.message = Some(f.message);
        c.output = f.output;
        echo_case(opts, &c);
        sink(c);
    }
    out.duration_ms = started.elapsed().as_millis() as u64;
    out
}

async fn run_test(
    conns: &Conns<'_>,
    t: &Test,
    name: String,
    item: Option<(usize, Value)>,
    scope: &Scope,
) -> Case {
    let started_at = Utc::now();
    let started = Instant::now();
    let mut case = Case::new(name, Outcome::Pass);
    case.started_at = Some(started_at);
    if let Some(reason) = &t.skip {
        case.outcome = Outcome::Skip;
        case.message = Some(reason.clone());
        return case;
    }
    for r in &t.requires {
        if let Some(why) = unmet(r, scope).await {
            case.outcome = Outcome::Skip;
            case.message = Some(why);
            return case;
        }
    }
    let mut scope = scope.clone();
    if let Some((i, v)) = item {
        scope.insert("item".into(), v);
        scope.insert("index".into(), Value::from(i));
    }
    // The test's steps and its teardown share background steps, so the
    // teardown may await one the steps started.
    let mut bg = Background::default();
    let result = run_steps(conns, &t.steps, &mut scope, &mut bg).await;
    let cleanup = run_cleanup(conns, &t.teardown, &mut scope, &mut bg).await;
    let left = bg.finish();
    drop(bg);
    match (result, cleanup) {
        (Err(f), _) => {
            case.outcome = f.outcome;
            case.message = Some(f.message);
            case.output = f.output;
        }
        (Ok(()), Err(f)) => {
            case.outcome = Outcome::Error;
            case.message = Some(format!("teardown: {}", f.message));
            case.output = f.output;
        }
        (Ok(()), Ok(())) => {}
    }
    // Reported without changing the outcome: a step left running on
    // purpose (a lease kept alive for the test) is not a failure.
    if let Some(note) = left {
        case.message = Some(match case.message.take() {
            Some(m) => format!("{m}; {note}"),
            None => note,
        });
    }
    finish_case(&mut case, t.xfail.as_deref());
    case.duration_ms = started.elapsed().as_millis() as u64;
    case
}

/// Runs suites one after another into one report named `name`.
pub async fn run(name: &str, suites: &[Suite], opts: &RunOptions) -> Report {
    let mut report = Report::new(uuid::Uuid::new_v4().to_string(), name, Utc::now());
    report.started_at = Some(Utc::now());
    if let Some(e) = &opts.environment {
        report.properties.insert("environment".into(), e.clone());
    }
    if !opts.tags.is_empty() {
        report.properties.insert("tags".into(), opts.tags.join(","));
    }
    for s in suites {
        report.suites.push(run_suite(s, opts).await);
    }
    report.finished_at = Some(Utc::now());
    report
}
