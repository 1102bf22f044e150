//! The script sandbox: one fresh QuickJS runtime per script, with Postman's
//! `pm` API from `prelude.js` (compiled to bytecode once per process), a time
//! limit enforced by the engine's interrupt handler and a memory limit.
//!
//! State crosses the boundary as JSON both ways (see `prelude.js`), which keeps
//! the unsafe-adjacent surface to two tiny native functions.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::promise::PromiseState;
use rquickjs::{Context, Ctx, Function, Module, Runtime, Value as JsValue, WriteOptions};
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use super::send;
use super::vars;

const PRELUDE: &str = include_str!("prelude.js");

/// Parsing the prelude is most of what a fresh context costs (about 2 ms of
/// 2.5), so it is compiled once per process and each script's context only
/// loads the bytecode. Every script still gets a context of its own, so
/// nothing a script does to the globals or the built-ins reaches the next.
fn prelude_bytecode() -> Result<&'static [u8], EngineError> {
    static BYTECODE: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    BYTECODE
        .get_or_init(|| compile_prelude().map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|e| EngineError::Prelude(e.clone()))
}

fn compile_prelude() -> Result<Vec<u8>, EngineError> {
    let rt = Runtime::new()?;
    let ctx = Context::full(&rt)?;
    ctx.with(|ctx| {
        let module = match Module::declare(ctx.clone(), "prelude", PRELUDE) {
            Ok(m) => m,
            Err(rquickjs::Error::Exception) => {
                let e = describe(&ctx, ctx.catch());
                return Err(EngineError::Prelude(format!("{}: {}", e.name, e.message)));
            }
            Err(e) => return Err(e.into()),
        };
        // The source text would only be kept for `Function.prototype.toString`
        // of prelude functions; without it the bytecode is a quarter the size
        // and loads faster. Debug info stays, for line numbers in stacks.
        Ok(module.write(WriteOptions {
            strip_source: true,
            ..WriteOptions::default()
        })?)
    })
}

/// Runs the prelude in `ctx`, a fresh context of the runtime.
fn load_prelude(ctx: &Ctx<'_>) -> Result<(), EngineError> {
    let bytecode = prelude_bytecode()?;
    let thrown = |ctx: &Ctx<'_>| {
        let e = describe(ctx, ctx.catch());
        EngineError::Prelude(format!("{}: {}", e.name, e.message))
    };
    // SAFETY: `Module::load` needs bytes that are valid QuickJS bytecode for
    // this engine; these were written by `Module::write` of the very same
    // statically linked engine in this process and never left memory.
    let module = match unsafe { Module::load(ctx.clone(), bytecode) } {
        Ok(m) => m,
        Err(rquickjs::Error::Exception) => return Err(thrown(ctx)),
        Err(e) => return Err(e.into()),
    };
    let (_module, done) = match module.eval() {
        Ok(v) => v,
        Err(rquickjs::Error::Exception) => return Err(thrown(ctx)),
        Err(e) => return Err(e.into()),
    };
    // The prelude has no top-level await, so its evaluation is settled here;
    // a rejection is how a module reports that it threw.
    match done.state() {
        PromiseState::Resolved => Ok(()),
        PromiseState::Rejected => match done.result::<JsValue>() {
            Some(Err(rquickjs::Error::Exception)) => Err(thrown(ctx)),
            _ => Err(EngineError::Prelude("the prelude failed".into())),
        },
        PromiseState::Pending => Err(EngineError::Prelude(
            "the prelude did not finish evaluating".into(),
        )),
    }
}

/// Well inside the 2 MiB stack of tokio's blocking threads, so that runaway
/// recursion in a script ends as a JS error instead of overflowing the thread.
const STACK_LIMIT: usize = 512 * 1024;

/// Time allowed to collect a script's results after it ended.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// What `pm.sendRequest` sends with: the run's client (its cookie jar
/// included) on the run's tokio runtime, which the script's blocking thread
/// waits on.
#[derive(Clone)]
pub(crate) struct Sender {
    pub http: send::Http,
    pub handle: tokio::runtime::Handle,
    pub timeout: Duration,
}

impl Sender {
    /// Sends one script request; the reply (or what went wrong) as the JSON
    /// text the prelude reads.
    fn send(&self, request: &str) -> String {
        let built = serde_json::from_str::<send::ScriptRequest>(request)
            .map_err(|e| format!("pm.sendRequest: unreadable request: {e}"))
            .and_then(send::ScriptRequest::built);
        let reply = built.and_then(|b| {
            self.handle
                .block_on(send::send(&self.http, &b, self.timeout))
                .map_err(|e| e.to_string())
        });
        match reply {
            Ok(a) => serde_json::json!({ "response": super::run::response_view(&a) }).to_string(),
            Err(message) => serde_json::json!({ "error": message }).to_string(),
        }
    }
}

/// A `pm.cookies.jar()` call, as the prelude hands it over.
#[derive(Debug, Deserialize)]
#[serde(tag = "op")]
enum JarOp {
    #[serde(rename = "get")]
    Get { url: String, name: String },
    #[serde(rename = "getAll")]
    GetAll { url: String },
    #[serde(rename = "set")]
    Set { url: String, cookie: JarSet },
    #[serde(rename = "unset")]
    Unset { url: String, name: String },
    #[serde(rename = "clear")]
    Clear { url: String },
}

/// A cookie to set: a `Set-Cookie` text, or its fields.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JarSet {
    Header {
        header: String,
    },
    Fields {
        name: String,
        #[serde(default)]
        value: String,
        domain: Option<String>,
        path: Option<String>,
        expires: Option<Value>,
        #[serde(rename = "maxAge")]
        max_age: Option<Value>,
        #[serde(default)]
        secure: Option<bool>,
        #[serde(default, rename = "httpOnly")]
        http_only: Option<bool>,
    },
}

impl JarSet {
    /// The `Set-Cookie` line, and the cookie's name.
    fn line(&self) -> Result<(String, String), String> {
        match self {
            JarSet::Header { header } => {
                let name = header.split(['=', ';']).next().unwrap_or("").trim();
                Ok((header.clone(), name.to_string()))
            }
            JarSet::Fields {
                name,
                value,
                domain,
                path,
                expires,
                max_age,
                secure,
                http_only,
            } => {
                if name.is_empty() || name.contains(['=', ';']) {
                    return Err(format!("CookieJar.set(): invalid cookie name {name:?}"));
                }
                let mut line = format!("{name}={value}");
                if let Some(d) = domain.as_deref().filter(|d| !d.is_empty()) {
                    line.push_str(&format!("; Domain={d}"));
                }
                if let Some(p) = path.as_deref().filter(|p| !p.is_empty()) {
                    line.push_str(&format!("; Path={p}"));
                }
                match max_age {
                    Some(Value::Number(n)) => line.push_str(&format!("; Max-Age={n}")),
                    Some(Value::String(n)) if !n.is_empty() => {
                        line.push_str(&format!("; Max-Age={n}"))
                    }
                    _ => {}
                }
                // A date: tough-cookie's ISO text, or a JavaScript Date as
                // JSON gives it (the same ISO text).
                if let Some(Value::String(e)) = expires {
                    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(e) {
                        line.push_str(&format!(
                            "; Expires={}",
                            t.to_utc().format("%a, %d %b %Y %H:%M:%S GMT")
                        ));
                    } else if e != "Infinity" && !e.is_empty() {
                        line.push_str(&format!("; Expires={e}"));
                    }
                }
                if secure == &Some(true) {
                    line.push_str("; Secure");
                }
                if http_only == &Some(true) {
                    line.push_str("; HttpOnly");
                }
                Ok((line, name.clone()))
            }
        }
    }
}

/// The jar's cookies that go to `url`, with their attributes, longest path
/// first (the order a `Cookie` header lists them in); `name` keeps only
/// those of that name.
fn jar_cookies(jar: &super::jar::RunJar, url: &url::Url, name: Option<&str>) -> Vec<Value> {
    // The jar decides what goes to the URL; its export gives the attributes.
    let sent: Vec<(String, String)> = jar.pairs(url);
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    let path = url.path();
    let mut out: Vec<super::jar::JarCookie> = jar
        .export()
        .into_iter()
        .filter(|c| name.is_none_or(|n| c.key == n))
        .filter(|c| sent.iter().any(|(k, v)| *k == c.key && *v == c.value))
        .filter(|c| {
            let d = c
                .domain
                .as_deref()
                .unwrap_or("")
                .trim_start_matches('.')
                .to_ascii_lowercase();
            let domain_ok = if c.host_only == Some(true) {
                host == d
            } else {
                host == d || host.ends_with(&format!(".{d}"))
            };
            let p = c.path.as_deref().unwrap_or("/");
            let path_ok = path == p
                || (path.starts_with(p) && (p.ends_with('/') || path[p.len()..].starts_with('/')));
            domain_ok && path_ok && (!c.secure || url.scheme() == "https")
        })
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.path.as_deref().map_or(0, str::len)));
    out.into_iter()
        .map(|c| {
            serde_json::json!({
                "name": c.key,
                "value": c.value,
                "domain": c.domain,
                "path": c.path,
                "expires": c.expires,
                "secure": c.secure,
                "httpOnly": c.http_only,
                "hostOnly": c.host_only == Some(true),
            })
        })
        .collect()
}

/// Stores `line` as a reply from `url` would.
fn jar_store(jar: &super::jar::RunJar, line: &str, url: &url::Url) -> Result<(), String> {
    use reqwest::cookie::CookieStore as _;
    let value = reqwest::header::HeaderValue::from_str(line)
        .map_err(|_| format!("CookieJar: not a cookie that can be sent: {line:?}"))?;
    jar.set_cookies(&mut std::iter::once(&value), url);
    Ok(())
}

/// Expires every cookie of `cookies` (as [`jar_cookies`] lists them), which
/// removes it from the jar.
fn jar_expire(jar: &super::jar::RunJar, cookies: &[Value], url: &url::Url) -> Result<(), String> {
    for c in cookies {
        let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
        let mut line = format!("{}=; Path={}; Max-Age=0", text("name"), text("path"));
        if c["hostOnly"] != Value::Bool(true) {
            line.push_str(&format!("; Domain={}", text("domain")));
        }
        jar_store(jar, &line, url)?;
    }
    Ok(())
}

fn jar_op(jar: &super::jar::RunJar, op: &str) -> Result<Value, String> {
    let op: JarOp =
        serde_json::from_str(op).map_err(|e| format!("CookieJar: unreadable call: {e}"))?;
    let parse = |u: &str| {
        let text = if u.contains("://") {
            u.to_string()
        } else {
            format!("http://{u}")
        };
        url::Url::parse(&text).map_err(|e| format!("CookieJar: invalid url {u:?}: {e}"))
    };
    Ok(match op {
        JarOp::Get { url, name } => {
            serde_json::json!({ "cookies": jar_cookies(jar, &parse(&url)?, Some(&name)) })
        }
        JarOp::GetAll { url } => {
            serde_json::json!({ "cookies": jar_cookies(jar, &parse(&url)?, None) })
        }
        JarOp::Set { url, cookie } => {
            let u = parse(&url)?;
            let (line, name) = cookie.line()?;
            jar_store(jar, &line, &u)?;
            let stored = jar_cookies(jar, &u, Some(&name));
            if stored.is_empty() {
                // tough-cookie's refusal, in its words.
                return Err(format!(
                    "Cookie not in this host's domain or path, or already expired: {line} for {url}"
                ));
            }
            serde_json::json!({ "cookies": stored })
        }
        JarOp::Unset { url, name } => {
            let u = parse(&url)?;
            let found = jar_cookies(jar, &u, Some(&name));
            jar_expire(jar, &found[..found.len().min(1)], &u)?;
            serde_json::json!({})
        }
        JarOp::Clear { url } => {
            let u = parse(&url)?;
            jar_expire(jar, &jar_cookies(jar, &u, None), &u)?;
            serde_json::json!({})
        }
    })
}

impl Sender {
    /// A `pm.cookies.jar()` call on the run's jar; the answer (or what went
    /// wrong) as the JSON text the prelude reads.
    fn jar(&self, op: &str) -> String {
        match jar_op(&self.http.jar, op) {
            Ok(v) => v.to_string(),
            Err(message) => serde_json::json!({ "error": message }).to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub time: Duration,
    pub memory: usize,
}

/// What a script left behind, as `__output()` reports it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Output {
    pub vars: Option<ScopesOut>,
    pub tests: Vec<TestRecord>,
    pub console: Vec<String>,
    pub unsupported: Vec<String>,
    pub headers: Option<Vec<HeaderOut>>,
    pub next: NextOut,
    pub skip: bool,
    /// What a callback that ran after the script's own code threw
    /// (`pm.sendRequest`'s, a timer's): the script failed as if it threw.
    pub thrown: Option<ErrInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ScopesOut {
    pub globals: Value,
    pub collection: Value,
    pub environment: Value,
    pub data: Value,
    pub local: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct NextOut {
    pub set: bool,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HeaderOut {
    pub key: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TestRecord {
    pub name: String,
    /// pass, fail, error or skip.
    pub status: String,
    #[serde(default)]
    pub index: usize,
    #[serde(default)]
    pub error: Option<ErrInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ErrInfo {
    pub name: String,
    pub message: String,
    #[serde(default)]
    pub unsupported: Option<String>,
}

/// Why a script as a whole did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// It threw outside `pm.test`.
    Thrown,
    /// It used something this sandbox does not have.
    Unsupported(String),
    TimeLimit,
    MemoryLimit,
    /// The sandbox itself failed.
    Engine,
}

#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub stop: Stop,
    /// The JS error's name (`TypeError`…), or what stopped the script.
    pub name: String,
    pub message: String,
}

#[derive(Debug)]
pub(crate) struct ScriptRun {
    pub output: Output,
    pub failure: Option<Failure>,
}

#[derive(Debug, Error)]
enum EngineError {
    #[error("script engine: {0}")]
    Js(#[from] rquickjs::Error),
    #[error("script engine: prelude failed: {0}")]
    Prelude(String),
    #[error("script results unreadable: {0}")]
    Output(#[from] serde_json::Error),
}

/// Runs one script to completion, or until a limit stops it. Blocking: call it
/// from a blocking thread.
#[cfg(test)]
pub(crate) fn run(
    source: &str,
    script_name: &str,
    input: &Value,
    limits: Limits,
    sender: Option<Sender>,
) -> ScriptRun {
    let mut result = None;
    run_then(source, script_name, input, limits, sender, |r| {
        result = Some(r)
    });
    result.unwrap_or_else(|| engine_failure("no result".into()))
}

/// As `run`, handing the result to `reply` before the script's runtime is
/// freed: freeing it is about a quarter of a script's time (0.2 ms of 0.9,
/// see `script_phases`), which the caller then need not wait for.
pub(crate) fn run_then(
    source: &str,
    script_name: &str,
    input: &Value,
    limits: Limits,
    sender: Option<Sender>,
    reply: impl FnOnce(ScriptRun),
) {
    let fresh = match READY.with(|ready| ready.borrow_mut().take()) {
        Some(fresh) => fresh,
        None => match Fresh::new() {
            Ok(fresh) => fresh,
            Err(e) => return reply(engine_failure(e.to_string())),
        },
    };
    match run_inner(&fresh, source, script_name, input, limits, sender) {
        Ok(run) => reply(run),
        Err(e) => reply(engine_failure(e.to_string())),
    }
    drop(fresh);
    // The next script on this thread finds its runtime and context made.
    if let Ok(next) = Fresh::new() {
        READY.with(|ready| *ready.borrow_mut() = Some(next));
    }
}

/// A new runtime with a new context, in which nothing has run yet.
struct Fresh {
    ctx: Context,
    rt: Runtime,
}

impl Fresh {
    fn new() -> Result<Self, EngineError> {
        let rt = Runtime::new()?;
        let ctx = Context::full(&rt)?;
        Ok(Fresh { ctx, rt })
    }
}

thread_local! {
    /// The runtime and context for the next script on this thread, made once
    /// the last one had replied (making them is a quarter of a script's time,
    /// see `script_phases`). Nothing runs in them before that script, so they
    /// are as fresh as ones made for it on the spot; its limits and interrupt
    /// handler are set when it starts.
    static READY: RefCell<Option<Fresh>> = const { RefCell::new(None) };
}

fn engine_failure(message: String) -> ScriptRun {
    ScriptRun {
        output: Output::default(),
        failure: Some(Failure {
            stop: Stop::Engine,
            name: "Error".into(),
            message,
        }),
    }
}

/// Runs the script in `fresh`, a runtime and context of its own.
fn run_inner(
    fresh: &Fresh,
    source: &str,
    script_name: &str,
    input: &Value,
    limits: Limits,
    sender: Option<Sender>,
) -> Result<ScriptRun, EngineError> {
    let (rt, ctx) = (&fresh.rt, &fresh.ctx);
    rt.set_memory_limit(limits.memory);
    rt.set_max_stack_size(STACK_LIMIT);
    let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
    let hit = Rc::new(Cell::new(false));
    {
        let deadline = deadline.clone();
        let hit = hit.clone();
        rt.set_interrupt_handler(Some(Box::new(move || match deadline.get() {
            Some(t) if Instant::now() >= t => {
                hit.set(true);
                true
            }
            _ => false,
        })));
    }
    let input_text = input.to_string();
    ctx.with(|ctx| -> Result<(), EngineError> {
        let g = ctx.globals();
        g.set("__input", input_text)?;
        let origin = Instant::now();
        g.set(
            "__now",
            Function::new(ctx.clone(), move || origin.elapsed().as_secs_f64() * 1000.0)?,
        )?;
        g.set(
            "__dynamic",
            Function::new(ctx.clone(), |name: String| vars::dynamic_value(&name))?,
        )?;
        g.set("__lib", Function::new(ctx.clone(), super::libs::load)?)?;
        if let Some(sender) = sender {
            let jar = sender.clone();
            g.set(
                "__jar",
                Function::new(ctx.clone(), move |op: String| jar.jar(&op))?,
            )?;
            let deadline = deadline.clone();
            let send = move |request: String| {
                // Waiting for the server is not the script's time: the
                // deadline moves by as long as the request took (the
                // request has its own timeout).
                let t0 = Instant::now();
                let reply = sender.send(&request);
                if let Some(d) = deadline.get() {
                    deadline.set(Some(d + t0.elapsed()));
                }
                reply
            };
            g.set("__send", Function::new(ctx.clone(), send)?)?;
        }
        load_prelude(&ctx)
    })?;

    deadline.set(Some(Instant::now() + limits.time));
    let thrown = ctx.with(|ctx| {
        let mut options = EvalOptions::default();
        // Postman scripts are sloppy-mode code: `x = 1` without a declaration works.
        options.strict = false;
        options.filename = Some(script_name.to_string());
        // Top-level `await` works, as in Postman (`await pm.sendRequest(…)`):
        // the script's completion is then a promise, and what it threw is
        // that promise's rejection.
        options.promise = true;
        let done = ctx.eval_with_options::<JsValue, _>(source.as_bytes().to_vec(), options);
        // Promise callbacks (`.then`, the sandbox's setTimeout) run now, still
        // under the deadline.
        while !hit.get() && ctx.execute_pending_job() {}
        match done {
            Ok(v) => match v.as_promise().map(|p| p.result::<JsValue>()) {
                Some(Some(Err(rquickjs::Error::Exception))) => {
                    Some(Ok(describe(&ctx, ctx.catch())))
                }
                Some(Some(Err(e))) => Some(Err(e)),
                _ => None,
            },
            Err(rquickjs::Error::Exception) => Some(Ok(describe(&ctx, ctx.catch()))),
            Err(e) => Some(Err(e)),
        }
    });
    deadline.set(None);
    let timed_out = hit.get();
    // An allocation failure may surface as a thrown `null` when even the error
    // object could not be allocated; the usage tells what really happened.
    let usage = rt.memory_usage();
    let near_limit = usage.malloc_size as f64 >= 0.9 * limits.memory as f64;
    // The results must be readable even when the script ran out of memory, and
    // a script that replaced what `__output` uses must still not hang the run.
    rt.set_memory_limit(limits.memory.saturating_mul(2));
    deadline.set(Some(Instant::now() + OUTPUT_GRACE));
    let text = ctx.with(|ctx| -> Result<String, rquickjs::Error> {
        let output: Function = ctx.globals().get("__output")?;
        output.call(())
    });
    deadline.set(None);
    let text = text?;
    let mut output: Output = serde_json::from_str(&text)?;
    let thrown = match (thrown, output.thrown.take()) {
        (None, Some(info)) => Some(Ok(info)),
        (t, _) => t,
    };

    let failure = if timed_out {
        Some(Failure {
            stop: Stop::TimeLimit,
            name: "TimeLimit".into(),
            message: format!(
                "script stopped: it ran longer than the time limit of {}",
                humantime::format_duration(limits.time)
            ),
        })
    } else {
        match thrown {
            None => None,
            Some(Err(e)) => Some(Failure {
                stop: Stop::Engine,
                name: "Error".into(),
                message: e.to_string(),
            }),
            Some(Ok(info)) if info.message.contains("out of memory") || near_limit => {
                Some(Failure {
                    stop: Stop::MemoryLimit,
                    name: "MemoryLimit".into(),
                    message: format!(
                        "script stopped: it used more than the memory limit of {} MiB",
                        limits.memory / (1024 * 1024)
                    ),
                })
            }
            Some(Ok(info)) => Some(Failure {
                stop: match info.unsupported {
                    Some(what) => Stop::Unsupported(what),
                    None => Stop::Thrown,
                },
                name: info.name,
                message: info.message,
            }),
        }
    };
    Ok(ScriptRun { output, failure })
}

/// Name and message of a thrown value, read without running JS (the deadline
/// may already have passed, and any JS would be interrupted again).
pub(super) fn describe<'js>(_ctx: &Ctx<'js>, v: JsValue<'js>) -> ErrInfo {
    if let Some(o) = v.as_object() {
        let name = o
            .get::<_, Option<String>>("name")
            .ok()
            .flatten()
            .unwrap_or_else(|| "Error".into());
        let message = o
            .get::<_, Option<String>>("message")
            .ok()
            .flatten()
            .unwrap_or_default();
        let unsupported = o.get::<_, Option<String>>("unsupported").ok().flatten();
        return ErrInfo {
            name,
            message,
            unsupported,
        };
    }
    let message = if let Some(s) = v.as_string() {
        s.to_string().unwrap_or_default()
    } else if let Some(n) = v.as_number() {
        n.to_string()
    } else if let Some(b) = v.as_bool() {
        b.to_string()
    } else if v.is_null() {
        "null".into()
    } else {
        "undefined".into()
    };
    ErrInfo {
        name: "Error".into(),
        message,
        unsupported: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Scripts without `pm.sendRequest`, which the runner's tests cover.
    fn run(source: &str, name: &str, input: &Value, limits: Limits) -> ScriptRun {
        super::run(source, name, input, limits, None)
    }

    fn input() -> Value {
        json!({
            "kind": "test",
            "vars": {"globals": [], "collection": [], "environment": [["a", "1"]], "data": [], "local": []},
            "envName": "e",
            "info": {"requestName": "r", "requestId": "r", "iteration": 0, "iterationCount": 1, "eventName": "test"},
            "location": ["r"],
            "request": {"url": "http://x/", "method": "GET", "headers": [], "body": null},
            "response": {"code": 200, "status": "OK", "headers": [["content-type", "application/json"]],
                         "body": "{\"id\": 7, \"tags\": [\"a\", \"b\"]}", "responseTime": 3, "responseSize": 30}
        })
    }

    fn limits() -> Limits {
        Limits {
            time: Duration::from_millis(300),
            memory: 32 << 20,
        }
    }

    #[test]
    fn chai_subset() {
        let src = r#"
            pm.test("eq", () => pm.expect(pm.response.json().id).to.equal(7));
            pm.test("deep", () => pm.expect(pm.response.json().tags).to.eql(["a", "b"]));
            pm.test("deep.equal", () => pm.expect({a: [1]}).to.deep.equal({a: [1]}));
            pm.test("not", () => pm.expect(1).to.not.equal(2));
            pm.test("types", () => { pm.expect([]).to.be.an("array"); pm.expect("s").to.be.a("string"); pm.expect(null).to.be.null; pm.expect(undefined).to.be.undefined; pm.expect(true).to.be.true; pm.expect(false).to.be.false; pm.expect(1).to.not.be.true; });
            pm.test("include", () => { pm.expect("hello").to.include("ell"); pm.expect([1,2]).to.contain(2); pm.expect({a:1,b:2}).to.include({a:1}); });
            pm.test("property", () => pm.expect({a: {b: 1}}).to.have.property("a").that.has.property("b", 1));
            pm.test("length", () => { pm.expect([1,2,3]).to.have.lengthOf(3); pm.expect("ab").to.have.length.above(1); });
            pm.test("compare", () => { pm.expect(5).to.be.above(4).and.below(6); pm.expect(5).to.be.at.least(5); pm.expect(5).to.be.at.most(5); });
            pm.test("match", () => pm.expect("abc").to.match(/b/));
            pm.test("oneOf", () => pm.expect(2).to.be.oneOf([1, 2]));
            pm.test("exist", () => { pm.expect(0).to.exist; pm.expect(null).to.not.exist; pm.expect(1).to.be.ok; });
            pm.test("response", () => { pm.response.to.have.status(200); pm.response.to.be.ok; pm.response.to.have.header("Content-Type"); pm.response.to.have.jsonBody("tags[1]", "b"); });
            pm.test("fails", () => pm.expect(1).to.equal(2));
            pm.test("fails deep", () => pm.expect({a: 1}).to.eql({a: 2}));
            tests["legacy"] = responseCode.code === 200;
            console.log("env a is", pm.environment.get("a"), {x: 1});
            pm.environment.set("b", 5);
        "#;
        let r = run(src, "test-script", &input(), limits());
        assert!(r.failure.is_none(), "{:?}", r.failure);
        let status: Vec<(String, String)> = r
            .output
            .tests
            .iter()
            .map(|t| (t.name.clone(), t.status.clone()))
            .collect();
        for (name, st) in &status {
            let want = if name.starts_with("fails") {
                "fail"
            } else {
                "pass"
            };
            assert_eq!(st, want, "{name}: {:?}", r.output.tests);
        }
        assert_eq!(status.len(), 16);
        let fail = &r.output.tests[13];
        assert_eq!(
            fail.error.as_ref().map(|e| e.message.as_str()),
            Some("expected 1 to equal 2")
        );
        assert_eq!(
            r.output.tests[14]
                .error
                .as_ref()
                .map(|e| e.message.as_str()),
            Some("expected { a: 1 } to deeply equal { a: 2 }")
        );
        assert_eq!(r.output.console, vec!["env a is 1 { x: 1 }".to_string()]);
        let env = &r.output.vars.as_ref().map(|v| v.environment.clone());
        assert_eq!(env, &Some(json!([["a", "1"], ["b", 5]])));
    }

    #[test]
    fn legacy_api_as_postman_sandbox_has_it() {
        let src = r#"
            tests["has string"] = responseBody.has('"tags"');
            tests["has regexp"] = responseBody.has(/"id":\s*7/);
            tests["has is literal"] = !responseBody.has('.*');
            tests["code"] = responseCode.code === 200 && responseCode.name === "OK";
            tests["time"] = typeof responseTime === "number";
            tests["headers any case"] = responseHeaders["Content-Type"] === "application/json"
                && "CONTENT-TYPE" in responseHeaders;
            tests["getResponseHeader"] = postman.getResponseHeader("CONTENT-type") === "application/json";
            postman.setEnvironmentVariable("n", 5);
            postman.setEnvironmentVariable("o", {a: 1});
            postman.setEnvironmentVariable("f", false);
            postman.setEnvironmentVariable("z", 0);
            postman.setGlobalVariable("g", true);
            tests["stored as text"] = pm.environment.get("n") === "5"
                && postman.getEnvironmentVariable("o") === "[object Object]"
                && pm.environment.get("f") === false && pm.environment.get("z") === 0
                && postman.getGlobalVariable("g") === "true";
            tests["environment object follows"] = environment.n === "5" && environment.a === "1" && globals.g === "true";
            postman.clearEnvironmentVariable("a");
            tests["cleared"] = environment.a === undefined && !pm.environment.has("a");
            tests["iteration and data"] = iteration === 0 && typeof data === "object";
            tests["atob/btoa"] = atob(btoa("user:pw")) === "user:pw" && btoa("hi") === "aGk=";
            tests["fails"] = 0;
            postman.setNextRequest("r");
        "#;
        let r = run(src, "test-script", &input(), limits());
        assert!(r.failure.is_none(), "{:?}", r.failure);
        let failed: Vec<&str> = r
            .output
            .tests
            .iter()
            .filter(|t| t.status != "pass")
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(failed, vec!["fails"], "{:?}", r.output.tests);
        assert_eq!(r.output.tests.len(), 13);
        assert_eq!(
            r.output.tests[12]
                .error
                .as_ref()
                .map(|e| e.message.as_str()),
            Some("expected 0 to be truthy")
        );
        assert_eq!(r.output.next.name.as_deref(), Some("r"));
        let env = r.output.vars.as_ref().map(|v| v.environment.clone());
        assert_eq!(
            env,
            Some(json!([
                ["n", "5"],
                ["o", "[object Object]"],
                ["f", false],
                ["z", 0]
            ]))
        );
        // A pre-request script has no response, so no response helpers, as
        // in postman-sandbox.
        let mut pre = input();
        pre["kind"] = json!("prerequest");
        pre["response"] = Value::Null;
        let r = run(
            "tests['no header helper'] = typeof postman.getResponseHeader === 'undefined' && typeof responseBody === 'undefined';",
            "prerequest-script",
            &pre,
            limits(),
        );
        assert!(r.failure.is_none(), "{:?}", r.failure);
        assert_eq!(r.output.tests[0].status, "pass", "{:?}", r.output.tests);
    }

    #[test]
    fn limits_and_errors() {
        let r = run("while (true) {}", "test-script", &input(), limits());
        assert_eq!(r.failure.map(|f| f.stop), Some(Stop::TimeLimit));
        let r = run(
            "var a = []; while (true) { a.push(new Array(100000).fill(1)); }",
            "test-script",
            &input(),
            Limits {
                time: Duration::from_secs(20),
                memory: 16 << 20,
            },
        );
        assert_eq!(
            r.failure.as_ref().map(|f| f.stop.clone()),
            Some(Stop::MemoryLimit),
            "{:?}",
            r.failure
        );
        // Replacing what the sandbox reports with does not lose the results.
        let r = run(
            "JSON.stringify = function () { for (;;) {} }; pm.test('x', () => {});",
            "test-script",
            &input(),
            limits(),
        );
        assert!(r.failure.is_none(), "{:?}", r.failure);
        assert_eq!(r.output.tests.len(), 1);
        // Stopped inside a test: that test must not look passed.
        let r = run(
            "pm.test('loops', () => { for (;;) {} });",
            "test-script",
            &input(),
            limits(),
        );
        assert_eq!(r.failure.map(|f| f.stop), Some(Stop::TimeLimit));
        assert_eq!(r.output.tests[0].status, "running");
        let r = run(
            "pm.test('ok', () => {}); undefinedThing.x;",
            "test-script",
            &input(),
            limits(),
        );
        let f = r.failure.unwrap();
        assert_eq!(f.stop, Stop::Thrown);
        assert_eq!(f.name, "ReferenceError");
        assert_eq!(r.output.tests.len(), 1);
        let r = run(
            "pm.test('send', () => pm.sendRequest('http://x'));",
            "test-script",
            &input(),
            limits(),
        );
        assert_eq!(r.output.tests[0].status, "error");
        assert_eq!(r.output.unsupported, vec!["pm.sendRequest".to_string()]);
    }

    #[test]
    fn scripts_do_not_share_globals() {
        let first = r#"
            var declared = 1;
            let lexical = 2;
            const constant = 3;
            function fn() {}
            class Klass {}
            implicit = 4;
            JSON.stringify = function () { return 'x'; };
            Array.prototype.extra = 5;
            pm.test('first', () => {});
        "#;
        let r = run(first, "test-script", &input(), limits());
        assert!(r.failure.is_none(), "{:?}", r.failure);
        // Declaring the same names again would be a SyntaxError if `let`,
        // `const` or `class` survived from the first script.
        let second = r#"
            let lexical = 'again';
            const constant = 'again';
            class Klass {}
            pm.test('fresh', () => {
                pm.expect(typeof declared).to.equal('undefined');
                pm.expect(typeof fn).to.equal('undefined');
                pm.expect(typeof implicit).to.equal('undefined');
                pm.expect(JSON.stringify({a: 1})).to.equal('{"a":1}');
                pm.expect([].extra).to.equal(undefined);
            });
        "#;
        let r = run(second, "test-script", &input(), limits());
        assert!(r.failure.is_none(), "{:?}", r.failure);
        assert_eq!(r.output.tests.len(), 1);
        assert_eq!(r.output.tests[0].status, "pass", "{:?}", r.output.tests);
    }

    #[test]
    fn sandbox_libraries_are_the_real_ones() {
        let src = r#"
            const lodash = require('lodash');
            pm.test('lodash 4', () => {
                pm.expect(lodash.VERSION).to.equal('4.18.1');
                pm.expect(lodash.chunk([1, 2, 3], 2)).to.eql([[1, 2], [3]]);
            });
            pm.test('legacy _ is lodash 3', () => pm.expect(_.VERSION).to.equal('3.10.2'));
            pm.test('CryptoJS', () => {
                pm.expect(CryptoJS.MD5('abc').toString()).to.equal('900150983cd24fb0d6963f7d28e17f72');
                pm.expect(require('crypto-js').HmacSHA256('m', 'k').toString(CryptoJS.enc.Base64))
                    .to.equal('tgCQ4wUil661oICInOL8S8qVfnVvrrTffTGADKHncew=');
            });
            pm.test('moment', () => {
                const moment = require('moment');
                pm.expect(moment.version).to.equal('2.30.1');
                pm.expect(moment.utc('2020-01-02T03:04:05Z').add(1, 'day').format('YYYY-MM-DD')).to.equal('2020-01-03');
            });
            pm.test('tv4', () => {
                pm.expect(tv4.validate({a: 1}, {type: 'object', properties: {a: {type: 'string'}}})).to.be.false;
                pm.expect(require('tv4').validate({a: 's'}, {properties: {a: {type: 'string'}}})).to.be.true;
            });
            pm.test('ajv', () => {
                const Ajv = require('ajv');
                const v = new Ajv({allErrors: true}).compile({type: 'object', required: ['id'], properties: {id: {type: 'integer'}}});
                pm.expect(v(pm.response.json())).to.be.true;
                pm.expect(v({id: 'x'})).to.be.false;
            });
            pm.test('chai', () => {
                const chai = require('chai');
                chai.expect([1, 2]).to.have.members([2, 1]);
                pm.expect(() => chai.assert.equal(1, 2)).to.throw();
            });
            pm.test('xml2js and xml2Json', () => {
                let parsed;
                require('xml2js').parseString('<a><b>1</b></a>', (err, r) => { parsed = r; });
                pm.expect(parsed).to.eql({a: {b: ['1']}});
                pm.expect(xml2Json('<a x="1"><b> t </b></a>')).to.eql({a: {$: {x: '1'}, b: 't'}});
            });
            pm.test('cheerio', () => {
                const $ = cheerio.load('<ul><li class="x">one</li><li>two</li></ul>');
                pm.expect($('li.x').text()).to.equal('one');
                pm.expect(require('cheerio').load('<p>hi</p>')('p').length).to.equal(1);
            });
            pm.test('csv-parse', () => {
                pm.expect(require('csv-parse/lib/sync')('a,b\n1,2', {columns: true})).to.eql([{a: '1', b: '2'}]);
            });
            pm.test('uuid', () => pm.expect(require('uuid').v4()).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/));
            pm.test('atob', () => pm.expect(require('atob')(require('btoa')('x'))).to.equal('x'));
            pm.test('unknown module', () => pm.expect(() => require('left-pad')).to.throw("Cannot find module 'left-pad'"));
        "#;
        let r = run(
            src,
            "test-script",
            &input(),
            Limits {
                time: Duration::from_secs(10),
                memory: 64 << 20,
            },
        );
        assert!(r.failure.is_none(), "{:?}", r.failure);
        let bad: Vec<_> = r
            .output
            .tests
            .iter()
            .filter(|t| t.status != "pass")
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(r.output.tests.len(), 13);
        // Every vendored library is reachable.
        assert_eq!(super::super::libs::names().count(), 11);
        // Declaring a library's global name does not load it, and a script's
        // own `_` wins.
        let r = run(
            "var _ = 5; const CryptoJS = 1; pm.test('own', () => pm.expect(_ + CryptoJS).to.equal(6));",
            "test-script",
            &input(),
            limits(),
        );
        assert!(r.failure.is_none(), "{:?}", r.failure);
        assert_eq!(r.output.tests[0].status, "pass", "{:?}", r.output.tests);
    }

    /// What a script pays for each library it uses, once the process has
    /// compiled it: `cargo test --release -p testbed-apitest --lib library_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing aid, not a check"]
    fn library_cost() {
        let lim = Limits {
            time: Duration::from_secs(10),
            memory: 64 << 20,
        };
        let base = "pm.test('status', () => pm.response.to.have.status(200));";
        let time = |src: &str| {
            let n = 200;
            let t = Instant::now();
            for _ in 0..n {
                let r = run(src, "test-script", &input(), lim);
                assert!(r.failure.is_none(), "{:?}", r.failure);
            }
            t.elapsed() / n
        };
        let none = time(base);
        eprintln!("no library: {none:?} per script");
        for name in super::super::libs::names() {
            let src = match name {
                "lodash3" => format!("_.VERSION;\n{base}"),
                _ => format!("require({name:?});\n{base}"),
            };
            let _ = time(&src); // compiles it once for the process
            eprintln!("{name}: {:?} per script", time(&src));
        }
    }

    /// `cargo test --release -p testbed-apitest --lib script_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing aid, not a check"]
    fn script_speed() {
        let src = "pm.test('status', () => pm.response.to.have.status(200));\npm.test('body', () => pm.expect(pm.response.json().id).to.equal(7));";
        let n = 1000;
        let t = Instant::now();
        for _ in 0..n {
            let r = run(src, "test-script", &input(), limits());
            assert!(r.failure.is_none(), "{:?}", r.failure);
        }
        eprintln!("{:?} per script", t.elapsed() / n);
    }

    /// What a run waits for per script, through `spawn_blocking` as the runner
    /// calls the engine: until the result (`run_then`, as the runner does)
    /// against until the thread is done (all of a script's work, as before
    /// `run_then`: making, running and freeing its runtime):
    /// `cargo test --release -p testbed-apitest --lib script_reply_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing aid, not a check"]
    fn script_reply_speed() {
        let src = "pm.test('status', () => pm.response.to.have.status(200));\npm.test('body', () => pm.expect(pm.response.json().id).to.equal(7));";
        let n = 1000;
        let tokio = tokio::runtime::Runtime::new().unwrap();
        for round in 0..2 {
            let t = Instant::now();
            for _ in 0..n {
                let r = tokio.block_on(async {
                    tokio::task::spawn_blocking(move || run(src, "test-script", &input(), limits()))
                        .await
                        .unwrap()
                });
                assert!(r.failure.is_none(), "{:?}", r.failure);
            }
            eprintln!(
                "round {round}: whole thread: {:?} per script",
                t.elapsed() / n
            );
            let t = Instant::now();
            for _ in 0..n {
                let r = tokio.block_on(async {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let _freeing = tokio::task::spawn_blocking(move || {
                        super::run_then(src, "test-script", &input(), limits(), None, |r| {
                            let _ = tx.send(r);
                        })
                    });
                    rx.await.unwrap()
                });
                assert!(r.failure.is_none(), "{:?}", r.failure);
            }
            eprintln!(
                "round {round}: until the result: {:?} per script",
                t.elapsed() / n
            );
        }
    }

    /// Where a script's time goes (the same script as `script_speed`), to
    /// tell what is worth making cheaper:
    /// `cargo test --release -p testbed-apitest --lib script_phases -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing aid, not a check"]
    fn script_phases() {
        let n = 1000u32;
        let text = input().to_string();
        let src = "pm.test('status', () => pm.response.to.have.status(200));\npm.test('body', () => pm.expect(pm.response.json().id).to.equal(7));";
        let names = [
            "runtime",
            "context",
            "prelude: load bytecode",
            "prelude: evaluate",
            "script",
            "output",
            "free",
        ];
        let mut sum = [Duration::ZERO; 7];
        for _ in 0..n {
            let mut at = [Instant::now(); 8];
            let rt = Runtime::new().unwrap();
            rt.set_memory_limit(32 << 20);
            rt.set_max_stack_size(STACK_LIMIT);
            at[1] = Instant::now();
            let ctx = Context::full(&rt).unwrap();
            at[2] = Instant::now();
            ctx.with(|ctx| {
                let g = ctx.globals();
                g.set("__input", text.clone()).unwrap();
                g.set(
                    "__lib",
                    Function::new(ctx.clone(), super::super::libs::load).unwrap(),
                )
                .unwrap();
                g.set("__now", Function::new(ctx.clone(), || 0.0f64).unwrap())
                    .unwrap();
                g.set(
                    "__dynamic",
                    Function::new(ctx.clone(), |name: String| vars::dynamic_value(&name)).unwrap(),
                )
                .unwrap();
                // SAFETY: as in `load_prelude`.
                let m = unsafe { Module::load(ctx.clone(), prelude_bytecode().unwrap()) }.unwrap();
                at[3] = Instant::now();
                let (_m, done) = m.eval().unwrap();
                assert_eq!(done.state(), PromiseState::Resolved);
            });
            at[4] = Instant::now();
            ctx.with(|ctx| ctx.eval::<(), _>(src).unwrap());
            at[5] = Instant::now();
            ctx.with(|ctx| {
                let f: Function = ctx.globals().get("__output").unwrap();
                f.call::<_, String>(()).unwrap();
            });
            at[6] = Instant::now();
            drop(ctx);
            drop(rt);
            at[7] = Instant::now();
            for (i, s) in sum.iter_mut().enumerate() {
                *s += at[i + 1] - at[i];
            }
        }
        for (name, d) in names.iter().zip(sum) {
            eprintln!("{name}: {:?} per script", d / n);
        }
    }

    /// Why every script gets a runtime of its own rather than a fresh context
    /// in a runtime kept for the next script: a context that was given a Rust
    /// function (`__now`, `__lib`…) is not freed with it, nor by a collection,
    /// only with its runtime, so a kept runtime would keep every script's
    /// context. If this fails, the engine now frees such contexts and a
    /// runtime could be reused (about 0.1 ms of a script's 0.9, see
    /// `script_phases`).
    #[test]
    fn a_context_with_rust_functions_lives_as_long_as_its_runtime() {
        let rt = Runtime::new().unwrap();
        let objects = |rt: &Runtime| {
            rt.run_gc();
            rt.memory_usage().obj_count
        };
        drop(Context::full(&rt).unwrap());
        assert_eq!(objects(&rt), 0, "a plain context is freed");
        let ctx = Context::full(&rt).unwrap();
        ctx.with(|ctx| {
            let f = Function::new(ctx.clone(), || 1.0f64).unwrap();
            ctx.globals().set("__f", f).unwrap();
        });
        drop(ctx);
        assert!(objects(&rt) > 0, "a context with a Rust function is kept");
    }
}
