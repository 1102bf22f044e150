//! The YAML suite format (see `docs/api-tests.md`): parsing and every static
//! check, so a malformed suite reports all of its problems, each with a line
//! and column, before anything is sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use testbed_core::plan::{load_problem, locate, locate_keys, Problem as PlanProblem};

use crate::problem::Problem;

use crate::check::{self, Assert, Capture};
use crate::template;
use crate::transport::exec::ExecCall;
use crate::transport::grpc::{GrpcCall, GrpcTarget};
use crate::transport::http::{HttpRequest, HttpTarget};
use crate::transport::qmp::{QmpCall, QmpTarget};

/// A parsed, checked suite.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub description: Option<String>,
    /// The file it came from; relative paths in the suite resolve against its directory.
    pub file: PathBuf,
    pub vars: Map<String, Value>,
    pub environments: BTreeMap<String, Map<String, Value>>,
    /// The transport sections as written (checked at load); rendered with
    /// the suite's variables when first used, so a base URL may come from
    /// an environment variable.
    pub http: Value,
    pub grpc: Option<Value>,
    pub qmp: Option<Value>,
    pub requires: Vec<Requirement>,
    pub setup: Vec<Step>,
    pub teardown: Vec<Step>,
    pub tests: Vec<Test>,
    /// After the first test that fails or errors, the rest are not run
    /// (reported as skipped, naming that test); by default they all run.
    pub fail_fast: bool,
    /// The text it was read from, to locate problems found at run time.
    pub source: Arc<str>,
}

impl Suite {
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// `file:line:column` of a path in the suite (`tests[0].steps[1].grpc`),
    /// or just the file when the path cannot be found.
    pub fn position(&self, path: &str) -> String {
        let mut p = [PlanProblem::at(path.to_string(), String::new())];
        locate(&self.source, &mut p);
        match (p[0].line, p[0].column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file.display()),
            _ => self.file.display().to_string(),
        }
    }
}

/// Something the suite's target needs; when one is missing every test of the
/// suite is skipped with the reason, rather than failing on a machine that
/// simply lacks the system.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    /// A TCP listener, `host:port`.
    Tcp(String),
    /// A Unix socket that accepts connections.
    Unix(String),
    /// A program on `PATH`.
    Program(String),
    /// An environment variable that is set and not empty.
    Env(String),
    /// A URL that answers with any HTTP status.
    Http(String),
    /// A file that exists.
    File(String),
}

#[derive(Debug, Clone)]
pub struct Test {
    pub name: String,
    pub tags: Vec<String>,
    /// Data-driven iterations: a list, or a template naming one.
    pub each: Option<Value>,
    pub steps: Vec<Step>,
    /// Runs after the steps whatever happened (delete what the test made).
    pub teardown: Vec<Step>,
    pub skip: Option<String>,
    /// What this test alone needs (a VM name to power-cycle, say).
    pub requires: Vec<Requirement>,
    /// Known broken: a failure is `xfail`, a pass is `xpass`.
    pub xfail: Option<String>,
    /// `tests[3]`, for messages.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Http,
    Grpc,
    Qmp,
    Exec,
    Sleep,
    /// Waits for a background step of the same test and checks its reply.
    Await,
}

impl ActionKind {
    pub fn key(self) -> &'static str {
        match self {
            ActionKind::Http => "request",
            ActionKind::Grpc => "grpc",
            ActionKind::Qmp => "qmp",
            ActionKind::Exec => "exec",
            ActionKind::Sleep => "sleep",
            ActionKind::Await => "await",
        }
    }
}

/// An assert with its raw operands kept for template rendering at run time.
#[derive(Debug, Clone)]
pub struct StepAssert {
    pub assert: Assert,
    pub raw: Value,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: Option<String>,
    pub kind: ActionKind,
    /// The call as written; rendered with the current variables, then read
    /// into the transport's typed call.
    pub call: Value,
    pub capture: Vec<(String, Capture)>,
    pub assert: Vec<StepAssert>,
    pub until: Vec<StepAssert>,
    pub retry: Option<Retry>,
    /// Runs while the following steps run; an `await` step collects it.
    pub background: bool,
    pub path: String,
}

impl Step {
    /// A label for output: the step's name, or its call in short.
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let c = &self.call;
        match self.kind {
            ActionKind::Http => format!(
                "{} {}",
                c.get("method").and_then(Value::as_str).unwrap_or("GET"),
                c.get("url").and_then(Value::as_str).unwrap_or("")
            ),
            ActionKind::Grpc => c
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("grpc")
                .to_string(),
            ActionKind::Qmp => c
                .get("execute")
                .or_else(|| c.get("wait_event"))
                .and_then(Value::as_str)
                .unwrap_or("qmp")
                .to_string(),
            ActionKind::Exec => match c.get("command") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => "exec".into(),
            },
            ActionKind::Sleep => format!("sleep {}", c.as_str().unwrap_or("")),
            ActionKind::Await => format!("await {}", c.as_str().unwrap_or("")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub interval: Duration,
}

const TOP_KEYS: [&str; 12] = [
    "name",
    "fail_fast",
    "description",
    "vars",
    "environments",
    "http",
    "grpc",
    "qmp",
    "requires",
    "setup",
    "teardown",
    "tests",
];
const TEST_KEYS: [&str; 9] = [
    "name",
    "tags",
    "each",
    "steps",
    "teardown",
    "skip",
    "xfail",
    "description",
    "requires",
];
const STEP_KEYS: [&str; 12] = [
    "name",
    "request",
    "grpc",
    "qmp",
    "exec",
    "sleep",
    "await",
    "background",
    "capture",
    "assert",
    "until",
    "retry",
];
const ACTIONS: &str = "request, grpc, qmp, exec, sleep, await";

struct Checker<'a> {
    problems: Vec<PlanProblem>,
    /// Indexes of problems with a key itself (an unknown field or
    /// operator): located where the key is written.
    keyed: Vec<usize>,
    base: &'a Path,
}

impl Checker<'_> {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems
            .push(PlanProblem::at(path.into(), message.into()));
    }

    fn push_key(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.keyed.push(self.problems.len());
        self.push(path, message);
    }

    fn keys(&mut self, map: &Map<String, Value>, allowed: &[&str], path: &str) {
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                self.push_key(
                    join(path, k),
                    format!(
                        "unknown field `{k}` (expected one of {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// Checks the templates in `v`; a bad one is reported at its own string.
    fn templates(&mut self, v: &Value, path: &str) {
        if let Err((below, e)) = template::check_value(v) {
            let at = if below.starts_with('[') || below.is_empty() {
                format!("{path}{below}")
            } else {
                join(path, &below)
            };
            self.push(at, e.to_string());
        }
    }

    /// Reads a typed section; serde's message names the field, which is
    /// appended to the path so the location points at it.
    fn typed<T: DeserializeOwned>(&mut self, v: &Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let msg = e.into_inner().to_string();
                // serde names an unknown field in the message, not the path.
                let unknown = msg
                    .split('`')
                    .nth(1)
                    .filter(|_| msg.starts_with("unknown field"));
                let mut at = join(path, if inner == "." { "" } else { &inner });
                if let Some(f) = unknown {
                    if !at.ends_with(f) {
                        at = join(&at, f);
                    }
                }
                let msg = if msg.contains("untagged enum Command") {
                    "a command is a string (split like a shell) or a list of strings".to_string()
                } else {
                    msg
                };
                self.push(at, msg);
                None
            }
        }
    }

    fn string(&mut self, v: Option<&Value>, path: &str) -> Option<String> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.push(path, "must be a string");
                None
            }
        }
    }

    fn requirement(&mut self, v: &Value, path: &str) -> Option<Requirement> {
        let kinds = ["tcp", "unix", "program", "env", "http", "file"];
        let Some(m) = v.as_object().filter(|m| m.len() == 1) else {
            self.push(
                path,
                format!("a requirement is one of {}: VALUE", kinds.join(", ")),
            );
            return None;
        };
        let (k, val) = m.iter().next()?;
        let Some(s) = val.as_str().map(str::to_string) else {
            self.push(join(path, k), "must be a string");
            return None;
        };
        self.templates(val, &join(path, k));
        Some(match k.as_str() {
            "tcp" => Requirement::Tcp(s),
            "unix" => Requirement::Unix(s),
            "program" => Requirement::Program(s),
            "env" => Requirement::Env(s),
            "http" => Requirement::Http(s),
            "file" => Requirement::File(s),
            other => {
                self.push_key(
                    join(path, other),
                    format!("unknown requirement (expected one of {})", kinds.join(", ")),
                );
                return None;
            }
        })
    }

    fn requirements(&mut self, v: Option<&Value>, path: &str) -> Vec<Requirement> {
        match v {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter_map(|(i, r)| self.requirement(r, &format!("{path}[{i}]")))
                .collect(),
            Some(_) => {
                self.push(path, "a list such as [{tcp: \"127.0.0.1:2379\"}]");
                Vec::new()
            }
        }
    }

    fn asserts(&mut self, v: Option<&Value>, path: &str) -> Vec<StepAssert> {
        let Some(v) = v else { return Vec::new() };
        let Some(list) = v.as_array() else {
            self.push(path, "must be a list of asserts");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, a) in list.iter().enumerate() {
            let at = format!("{path}[{i}]");
            self.templates(a, &at);
            match check::parse_assert(a, self.base) {
                Ok(assert) => out.push(StepAssert {
                    assert,
                    raw: a.clone(),
                }),
                Err(e) if e.at_key => self.push_key(join(&at, &e.path), e.message),
                Err(e) => self.push(join(&at, &e.path), e.message),
            }
        }
        out
    }

    fn steps(
        &mut self,
        v: Option<&Value>,
        path: &str,
        required: bool,
        suite: &SuiteTargets,
    ) -> Vec<Step> {
        let Some(v) = v else {
            if required {
                self.push(path, "a test needs `steps`");
            }
            return Vec::new();
        };
        let Some(list) = v.as_array() else {
            self.push(path, "must be a list of steps");
            return Vec::new();
        };
        if list.is_empty() && required {
            self.push(path, "no steps");
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| self.step(s, &format!("{path}[{i}]"), suite))
            .collect()
    }

    /// Background steps and the `await` steps that collect them, over the
    /// blocks that share them (a test's steps, then its teardown): every
    /// await names a background step started before it and not yet
    /// awaited, and background names are unique.
    fn background_links(&mut self, blocks: &[&[Step]]) {
        let mut started: Vec<(&str, &str)> = Vec::new();
        let mut awaited: Vec<(&str, &str)> = Vec::new();
        for step in blocks.iter().flat_map(|b| b.iter()) {
            if step.background {
                let Some(name) = step.name.as_deref() else {
                    continue;
                };
                if let Some((_, at)) = started.iter().find(|(n, _)| *n == name) {
                    self.push(
                        join(&step.path, "name"),
                        format!("a background step named {name:?} already starts at {at}"),
                    );
                    continue;
                }
                started.push((name, &step.path));
            } else if step.kind == ActionKind::Await {
                let name = step.call.as_str().unwrap_or_default();
                let at = join(&step.path, "await");
                if let Some((_, first)) = awaited.iter().find(|(n, _)| *n == name) {
                    self.push(at, format!("{name:?} is already awaited at {first}"));
                } else if started.iter().any(|(n, _)| *n == name) {
                    awaited.push((name, &step.path));
                } else {
                    let known: Vec<&str> = started.iter().map(|(n, _)| *n).collect();
                    self.push(
                        at,
                        format!(
                            "no background step named {name:?} before this one ({})",
                            if known.is_empty() {
                                "there is none: mark the step to wait for `background: true`"
                                    .to_string()
                            } else {
                                format!("background steps: {}", known.join(", "))
                            }
                        ),
                    );
                }
            }
        }
    }

    fn step(&mut self, v: &Value, path: &str, suite: &SuiteTargets) -> Option<Step> {
        let Some(m) = v.as_object() else {
            self.push(path, format!("a step is a mapping with one of {ACTIONS}"));
            return None;
        };
        self.keys(m, &STEP_KEYS, path);
        let kinds: Vec<ActionKind> = [
            ActionKind::Http,
            ActionKind::Grpc,
            ActionKind::Qmp,
            ActionKind::Exec,
            ActionKind::Sleep,
            ActionKind::Await,
        ]
        .into_iter()
        .filter(|k| m.contains_key(k.key()))
        .collect();
        let kind = match kinds.as_slice() {
            [k] => *k,
            [] => {
                self.push(path, format!("a step needs one of {ACTIONS}"));
                return None;
            }
            [_, second, ..] => {
                self.push(
                    join(path, second.key()),
                    format!(
                        "one action per step, found {}",
                        kinds
                            .iter()
                            .map(|k| k.key())
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                );
                return None;
            }
        };
        let call = m.get(kind.key()).cloned().unwrap_or(Value::Null);
        let at = join(path, kind.key());
        self.templates(&call, &at);
        let typed_ok = match kind {
            ActionKind::Http => {
                let r: Option<HttpRequest> = self.typed(&call, &at);
                if let Some(r) = &r {
                    if r.bodies().len() > 1 {
                        self.push(
                            &at,
                            format!("one body per request, found {}", r.bodies().join(" and ")),
                        );
                    }
                }
                r.is_some()
            }
            ActionKind::Grpc => {
                if !suite.grpc {
                    self.push(
                        &at,
                        "a grpc step needs the suite's `grpc:` section (address, protos)",
                    );
                }
                self.typed::<GrpcCall>(&call, &at).is_some()
            }
            ActionKind::Qmp => {
                if !suite.qmp {
                    self.push(
                        &at,
                        "a qmp step needs the suite's `qmp:` section (socket or address)",
                    );
                }
                let q: Option<QmpCall> = self.typed(&call, &at);
                if let Some(q) = &q {
                    if q.execute.is_some() == q.wait_event.is_some() {
                        self.push(&at, "one of `execute` or `wait_event`");
                    }
                }
                q.is_some()
            }
            ActionKind::Exec => self.typed::<ExecCall>(&call, &at).is_some(),
            ActionKind::Sleep => match call.as_str() {
                Some(s) if s.contains("{{") || humantime::parse_duration(s).is_ok() => true,
                _ => {
                    self.push(&at, "a duration such as 500ms or 2s");
                    false
                }
            },
            ActionKind::Await => match call.as_str() {
                Some(s) if !s.is_empty() && !s.contains("{{") => true,
                _ => {
                    self.push(&at, "the name of a background step of this test");
                    false
                }
            },
        };
        let background = match m.get("background") {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => {
                let at = join(path, "background");
                match kind {
                    ActionKind::Http | ActionKind::Grpc | ActionKind::Exec => {}
                    ActionKind::Qmp => self.push(
                        &at,
                        "a qmp step cannot run in the background: the suite has one QMP \
                         session, and events are kept for `wait_event` anyway",
                    ),
                    other => self.push(
                        &at,
                        format!(
                            "only request, grpc and exec steps run in the background, not {}",
                            other.key()
                        ),
                    ),
                }
                if !m.get("name").is_some_and(Value::is_string) {
                    self.push(&at, "a background step needs a `name`, which `await` names");
                }
                for field in ["capture", "assert", "until", "retry"] {
                    if m.contains_key(field) {
                        self.push(
                            join(path, field),
                            format!(
                                "a background step's reply is checked by the step that awaits \
                                 it: move `{field}` to the `await` step"
                            ),
                        );
                    }
                }
                true
            }
            Some(_) => {
                self.push(join(path, "background"), "true or false");
                false
            }
        };
        if kind == ActionKind::Await {
            for field in ["until", "retry"] {
                if m.contains_key(field) {
                    self.push(
                        join(path, field),
                        format!("an `await` step waits once; `{field}` does not apply"),
                    );
                }
            }
        }
        // Keep going after a bad action, so its asserts are checked too.
        let mut capture = Vec::new();
        match m.get("capture") {
            None => {}
            Some(Value::Object(c)) => {
                for (name, spec) in c {
                    match check::parse_capture(spec) {
                        Ok(cap) => capture.push((name.clone(), cap)),
                        Err(e) if e.at_key => self.push_key(
                            join(&join(&join(path, "capture"), name), &e.path),
                            e.message,
                        ),
                        Err(e) => self.push(
                            join(&join(&join(path, "capture"), name), &e.path),
                            e.message,
                        ),
                    }
                }
            }
            Some(_) => self.push(
                join(path, "capture"),
                "a mapping of name: jsonpath/header/regex",
            ),
        }
        let assert = self.asserts(m.get("assert"), &join(path, "assert"));
        let until = self.asserts(m.get("until"), &join(path, "until"));
        let retry = match m.get("retry") {
            None => (!until.is_empty()).then_some(Retry {
                attempts: 30,
                interval: Duration::from_secs(1),
            }),
            Some(r) => self.retry(r, &join(path, "retry")),
        };
        let name = self.string(m.get("name"), &join(path, "name"));
        if !typed_ok {
            return None;
        }
        Some(Step {
            name,
            kind,
            call,
            capture,
            assert,
            until,
            retry,
            background,
            path: path.to_string(),
        })
    }

    fn retry(&mut self, v: &Value, path: &str) -> Option<Retry> {
        let Some(m) = v.as_object() else {
            self.push(path, "retry is {attempts: N, interval: 1s}");
            return None;
        };
        self.keys(m, &["attempts", "interval"], path);
        let attempts = match m.get("attempts") {
            None => 30,
            Some(a) => match a.as_u64() {
                Some(n @ 1..=100_000) => n as u32,
                _ => {
                    self.push(join(path, "attempts"), "a whole number from 1");
                    return None;
                }
            },
        };
        let interval = match m.get("interval") {
            None => Duration::from_secs(1),
            Some(i) => match i.as_str().map(humantime::parse_duration) {
                Some(Ok(d)) => d,
                _ => {
                    self.push(join(path, "interval"), "a duration such as 500ms or 2s");
                    return None;
                }
            },
        };
        Some(Retry { attempts, interval })
    }

    fn test(&mut self, v: &Value, path: &str, suite: &SuiteTargets) -> Option<Test> {
        let Some(m) = v.as_object() else {
            self.push(path, "a test is a mapping with name and steps");
            return None;
        };
        self.keys(m, &TEST_KEYS, path);
        let name = self.string(m.get("name"), &join(path, "name"));
        if name.is_none() {
            self.push(path, "a test needs a `name`");
        }
        if let Some(n) = m.get("name") {
            self.templates(n, &join(path, "name"));
        }
        let tags = match m.get("tags") {
            None => Vec::new(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(_) => {
                self.push(join(path, "tags"), "a list of strings");
                Vec::new()
            }
        };
        let each = match m.get("each") {
            None => None,
            Some(e @ Value::Array(_)) => Some(e.clone()),
            Some(e @ Value::String(s)) if s.contains("{{") => {
                self.templates(e, &join(path, "each"));
                Some(e.clone())
            }
            Some(_) => {
                self.push(
                    join(path, "each"),
                    "a list of items, or a template such as \"{{ images }}\"",
                );
                None
            }
        };
        let requires = self.requirements(m.get("requires"), &join(path, "requires"));
        let steps = self.steps(m.get("steps"), &join(path, "steps"), true, suite);
        let teardown = self.steps(m.get("teardown"), &join(path, "teardown"), false, suite);
        self.background_links(&[&steps, &teardown]);
        Some(Test {
            name: name?,
            tags,
            each,
            steps,
            teardown,
            skip: self.string(m.get("skip"), &join(path, "skip")),
            requires,
            xfail: self.string(m.get("xfail"), &join(path, "xfail")),
            path: path.to_string(),
        })
    }

    fn vars(&mut self, v: Option<&Value>, path: &str) -> Map<String, Value> {
        match v {
            None => Map::new(),
            Some(Value::Object(m)) => {
                self.templates(&Value::Object(m.clone()), path);
                m.clone()
            }
            Some(_) => {
                self.push(path, "a mapping of name: value");
                Map::new()
            }
        }
    }
}

struct SuiteTargets {
    grpc: bool,
    qmp: bool,
}

fn join(path: &str, key: &str) -> String {
    match (path.is_empty(), key.is_empty()) {
        (_, true) => path.to_string(),
        (true, false) => key.to_string(),
        _ => format!("{path}.{key}"),
    }
}

fn from_plan(p: PlanProblem) -> Problem {
    Problem {
        path: p.path,
        line: p.line,
        column: p.column,
        message: p.message,
    }
}

/// Parses YAML text into a JSON value, with the location of a syntax error,
/// within the input limits of `testbed_core::yaml`.
pub fn yaml_value(text: &str) -> Result<Value, Problem> {
    testbed_core::yaml::from_str::<Value>(text).map_err(|e| from_plan(load_problem(&e)))
}

/// Parses and checks a suite. `file` names it in messages and anchors its
/// relative paths (schemas, bodies from files, protos).
pub fn parse(text: &str, file: &Path) -> Result<Suite, Vec<Problem>> {
    let root = yaml_value(text).map_err(|p| vec![p])?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut c = Checker {
        problems: Vec::new(),
        keyed: Vec::new(),
        base,
    };
    let Some(m) = root.as_object() else {
        return Err(vec![Problem::new(
            "",
            "a suite is a mapping with name and tests",
        )]);
    };
    c.keys(m, &TOP_KEYS, "");
    let name = c.string(m.get("name"), "name").unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "suite".into())
    });
    let http = m.get("http").cloned().unwrap_or(Value::Object(Map::new()));
    c.templates(&http, "http");
    c.typed::<HttpTarget>(&http, "http");
    let grpc = m.get("grpc").cloned();
    if let Some(g) = &grpc {
        c.templates(g, "grpc");
        c.typed::<GrpcTarget>(g, "grpc");
    }
    let qmp = m.get("qmp").cloned();
    if let Some(q) = &qmp {
        c.templates(q, "qmp");
        c.typed::<QmpTarget>(q, "qmp");
    }
    let targets = SuiteTargets {
        grpc: m.contains_key("grpc"),
        qmp: m.contains_key("qmp"),
    };
    let vars = c.vars(m.get("vars"), "vars");
    let mut environments = BTreeMap::new();
    match m.get("environments") {
        None => {}
        Some(Value::Object(envs)) => {
            for (k, v) in envs {
                let vs = c.vars(Some(v), &join("environments", k));
                environments.insert(k.clone(), vs);
            }
        }
        Some(_) => c.push("environments", "a mapping of environment name: {variables}"),
    }
    let requires = c.requirements(m.get("requires"), "requires");
    let fail_fast = match m.get("fail_fast") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            c.push("fail_fast", "true or false");
            false
        }
    };
    let setup = c.steps(m.get("setup"), "setup", false, &targets);
    let teardown = c.steps(m.get("teardown"), "teardown", false, &targets);
    c.background_links(&[&setup]);
    c.background_links(&[&teardown]);
    let tests: Vec<Test> = match m.get("tests") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, t)| c.test(t, &format!("tests[{i}]"), &targets))
            .collect(),
        Some(_) => {
            c.push("tests", "a list of tests");
            Vec::new()
        }
        None => {
            c.push("", "a suite needs `tests`");
            Vec::new()
        }
    };
    let mut seen = std::collections::HashSet::new();
    for t in &tests {
        if t.each.is_none() && !seen.insert(t.name.clone()) {
            c.push(
                join(&t.path, "name"),
                format!("duplicate test name {:?}", t.name),
            );
        }
    }
    if !c.problems.is_empty() {
        // Plans and suites share the YAML locator; the problems leave as
        // this crate's type, which collections use too.
        let mut problems = c.problems;
        for i in c.keyed {
            if let Some(p) = problems.get_mut(i) {
                locate_keys(text, std::slice::from_mut(p));
            }
        }
        locate(text, &mut problems);
        return Err(problems.into_iter().map(from_plan).collect());
    }
    Ok(Suite {
        name,
        description: m
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        file: file.to_path_buf(),
        vars,
        environments,
        http,
        grpc,
        qmp,
        requires,
        setup,
        teardown,
        tests,
        fail_fast,
        source: Arc::from(text),
    })
}

/// Reads and parses a suite file; problems carry the file's line and column.
pub fn load(file: &Path) -> Result<Suite, Vec<Problem>> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        vec![Problem::new(
            "",
            format!("cannot read {}: {e}", file.display()),
        )]
    })?;
    parse(&text, file)
}
