//! OpenAPI contract checks: call every operation of a spec with values made
//! from its own examples and schemas, and hold each answer to what the spec
//! promises — a documented status code and a body that fits the schema for it.
//!
//! Deliberately a smoke-level contract check, not a fuzzer: one well-formed
//! call per operation, so it is fast enough for every CI run.
//!
//! Read-only unless told otherwise: by default only `GET`, `HEAD` and
//! `OPTIONS` are called, since the server checked may hold real data. With
//! `write`, the other methods are called too, but only on resources this
//! check created itself — a path id is never made up or taken from existing
//! data, because an example id such as `1` names a real record — and what it
//! created is deleted at the end. Operations run in spec order with the ones
//! that need a created id after the creates, and `DELETE`s last.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Map, Value};
use testbed_report::{Case, Outcome, Report, Suite};
use thiserror::Error;

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];
const SPEC_URI: &str = "urn:testbed:openapi-spec";

#[derive(Debug, Error)]
pub enum SpecError {
    #[error("not an OpenAPI 3 document: {0}")]
    NotOpenApi(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// How to reach the server under test.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub base_url: String,
    /// Sent with every request, e.g. `authorization: Bearer …`.
    pub headers: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub insecure: bool,
    /// `METHOD /path` patterns (exact, or a path prefix ending in `*`) to leave out.
    pub skip: Vec<String>,
    /// Also call each operation that requires credentials without them, and
    /// expect a documented 401 or 403.
    pub check_auth: bool,
    /// Call unsafe methods (POST, PUT, PATCH, DELETE) too — only on what
    /// this check created, which it deletes at the end.
    pub write: bool,
}

/// The report property listing what `write` created and could not delete.
pub const LEFTOVERS: &str = "leftovers";

fn is_safe(method: &str) -> bool {
    matches!(method, "get" | "head" | "options")
}

/// A resource this check created: `POST {collection}` answered with an id.
#[derive(Debug, Clone)]
struct Created {
    /// The POST's path template without a trailing slash, e.g. `/api/projects`.
    collection: String,
    /// The same with its parameters filled in.
    concrete: String,
    id: String,
    deleted: bool,
}

impl Created {
    fn path(&self) -> String {
        format!("{}/{}", self.concrete, self.id)
    }
}

/// Each `{param}` of `template` with the template before it (no trailing slash).
fn path_params(template: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        let prefix = template[..offset + open].trim_end_matches('/').to_string();
        out.push((name.to_string(), prefix));
        offset += open + close + 1;
        rest = &template[offset..];
    }
    out
}

/// Values for the path parameters of `template` from resources this check
/// created; `Err(name)` names the first one it has none for.
fn created_values(template: &str, created: &[Created]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (name, prefix) in path_params(template) {
        match created
            .iter()
            .rev()
            .find(|c| !c.deleted && c.collection == prefix)
        {
            Some(c) => {
                out.insert(name, c.id.clone());
            }
            None => return Err(name),
        }
    }
    Ok(out)
}

/// The id in a create's answer: `id`, else `name`, else `username`.
fn created_id(body: &Value) -> Option<String> {
    ["id", "name", "username"]
        .iter()
        .find_map(|k| match body.get(*k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
}

/// One operation of the spec.
#[derive(Debug, Clone)]
struct Operation {
    method: String,
    path: String,
    op: Value,
    /// Parameters declared on the path item, which every operation inherits.
    shared_params: Vec<Value>,
}

impl Operation {
    fn label(&self) -> String {
        format!("{} {}", self.method.to_ascii_uppercase(), self.path)
    }
}

fn operations(spec: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    if let Some(paths) = spec.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            let shared: Vec<Value> = item
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for m in METHODS {
                if let Some(op) = item.get(m) {
                    ops.push(Operation {
                        method: m.to_string(),
                        path: path.clone(),
                        op: op.clone(),
                        shared_params: shared.clone(),
                    });
                }
            }
        }
    }
    // Stable: spec order within each group. Creates come before the
    // operations that need a created id, deletes last.
    ops.sort_by_key(|o| {
        if o.method == "delete" {
            2
        } else if !is_safe(&o.method) && o.path.contains('{') {
            1
        } else {
            0
        }
    });
    ops
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    let mut cur = v;
    for _ in 0..16 {
        match cur.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with("#/") => match spec.pointer(&r[1..]) {
                Some(t) => cur = t,
                None => return cur,
            },
            _ => return cur,
        }
    }
    cur
}

/// A value that fits `schema`: its example, default or first enum value,
/// else a minimal instance (required properties only).
fn example(spec: &Value, schema: &Value, depth: usize) -> Value {
    let s = resolve(spec, schema);
    let first = |key: &str| s.get(key)?.as_array()?.first();
    let given = s
        .get("example")
        .or_else(|| first("examples"))
        .or_else(|| s.get("default"))
        .or_else(|| first("enum"))
        .or_else(|| s.get("const"));
    if let Some(v) = given {
        return v.clone();
    }
    if depth > 8 {
        return Value::Null;
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(first) = s.get(key).and_then(Value::as_array).and_then(|a| {
            a.iter()
                .find(|x| resolve(spec, x).get("type").and_then(Value::as_str) != Some("null"))
        }) {
            if key != "allOf" {
                return example(spec, first, depth + 1);
            }
            let mut merged = Map::new();
            for part in s.get(key).and_then(Value::as_array).into_iter().flatten() {
                if let Value::Object(o) = example(spec, part, depth + 1) {
                    merged.extend(o);
                }
            }
            return Value::Object(merged);
        }
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, p) in props {
                    if required.contains(&k.as_str()) {
                        out.insert(k.clone(), example(spec, p, depth + 1));
                    }
                }
            }
            Value::Object(out)
        }
        "array" => {
            let min = s.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            match s.get("items") {
                Some(items) if min > 0 => {
                    Value::Array(vec![example(spec, items, depth + 1); min as usize])
                }
                _ => json!([]),
            }
        }
        "integer" => json!(s.get("minimum").and_then(Value::as_i64).unwrap_or(1).max(1)),
        "number" => json!(s.get("minimum").and_then(Value::as_f64).unwrap_or(1.0)),
        "boolean" => json!(false),
        "null" => Value::Null,
        _ => match s.get("format").and_then(Value::as_str) {
            Some("uuid") => json!("00000000-0000-4000-8000-000000000000"),
            Some("date-time") => json!("2026-01-01T00:00:00Z"),
            Some("date") => json!("2026-01-01"),
            Some("uri") | Some("url") => json!("http://example.invalid/"),
            Some("email") => json!("user@example.invalid"),
            _ => {
                let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
                json!(format!("{:x<width$}", "contract", width = min.max(8)))
            }
        },
    }
}

fn param_value(spec: &Value, p: &Value) -> Value {
    if let Some(e) = p.get("example") {
        return e.clone();
    }
    match p.get("schema") {
        Some(s) => example(spec, s, 0),
        None => json!("contract"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// JSON Pointer escaping (`/` → `~1`, `~` → `~0`).
fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The response declared for `status`: exact code, then `4XX`-style range,
/// then `default`. Returns its key for pointers.
fn documented(responses: &Map<String, Value>, status: u16) -> Option<String> {
    let exact = status.to_string();
    let range = format!("{}XX", status / 100);
    [
        exact,
        range.clone(),
        range.to_ascii_lowercase(),
        "default".into(),
    ]
    .into_iter()
    .find(|k| responses.contains_key(k))
}

/// Rewrites OpenAPI 3.0's `nullable: true` as a JSON Schema null type, so a
/// 3.0 spec validates the way its authors meant.
fn nullable_to_types(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if o.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = o.get("type").cloned() {
                    o.insert("type".into(), json!([t, "null"]));
                }
            }
            o.values_mut().for_each(nullable_to_types);
        }
        Value::Array(a) => a.iter_mut().for_each(nullable_to_types),
        _ => {}
    }
}

struct Checker {
    spec: Value,
    resource: jsonschema::Resource,
}

impl Checker {
    fn validate(&self, pointer: &str, body: &Value) -> Result<(), String> {
        // A JSON Pointer in a URI fragment is percent-encoded (RFC 6901 §6):
        // path templates bring `{` and `}`.
        let fragment: String = pointer
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        let schema = json!({"$ref": format!("{SPEC_URI}#{fragment}")});
        let v = jsonschema::options()
            .with_resource(SPEC_URI, self.resource.clone())
            .build(&schema)
            .map_err(|e| format!("the spec's schema at {pointer} is invalid: {e}"))?;
        crate::check::schema_errors(&v, body)
    }
}

fn skipped(skip: &[String], label: &str) -> bool {
    skip.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => label.starts_with(prefix),
        None => label == p,
    })
}

/// Checks every operation of `spec` against the server at `opts.base_url`.
pub async fn check(spec: &Value, opts: &CheckOptions) -> Result<Report, SpecError> {
    let version = spec
        .get("openapi")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !version.starts_with("3.") {
        return Err(SpecError::NotOpenApi(format!(
            "`openapi` is {:?}, expected 3.x",
            spec.get("openapi")
        )));
    }
    let mut spec = spec.clone();
    if version.starts_with("3.0") {
        nullable_to_types(&mut spec);
    }
    let resource = jsonschema::Resource::from_contents(spec.clone())
        .map_err(|e| SpecError::NotOpenApi(e.to_string()))?;
    let checker = Checker { spec, resource };
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(opts.insecure)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(opts.timeout.unwrap_or(Duration::from_secs(30)))
        .build()
        .map_err(|e| SpecError::Client(e.to_string()))?;
    let title = checker
        .spec
        .pointer("/info/title")
        .and_then(Value::as_str)
        .unwrap_or("API")
        .to_string();
    let mut report = Report::new(
        uuid::Uuid::new_v4().to_string(),
        format!("{title} contract"),
        Utc::now(),
    );
    report.started_at = Some(Utc::now());
    report
        .properties
        .insert("base_url".into(), opts.base_url.clone());
    let mut suite = Suite::new(title);
    let started = Instant::now();
    let ops = operations(&checker.spec);
    let mut created: Vec<Created> = Vec::new();
    let none = BTreeMap::new();
    for op in &ops {
        let label = op.label();
        if skipped(&opts.skip, &label) {
            let mut c = Case::new(label, Outcome::Skip);
            c.message = Some("skipped by --skip".into());
            suite.cases.push(c);
            continue;
        }
        // Without credentials first: a DELETE checked with them would
        // leave nothing for the unauthenticated call to be refused on.
        // Anonymous calls may use example ids even on unsafe methods: the
        // server must refuse them before touching anything.
        if opts.check_auth && needs_credentials(&checker.spec, op) {
            let (case, _) = check_operation(&checker, &client, op, opts, false, &none).await;
            suite.cases.push(case);
        }
        let safe = is_safe(&op.method);
        if !safe && !opts.write {
            let mut c = Case::new(label, Outcome::Skip);
            c.message = Some("unsafe method; pass --write to call it".into());
            suite.cases.push(c);
            continue;
        }
        if !safe && op.path.trim_end_matches('/').ends_with("/logout") {
            // It would end the session every later call is made with.
            let mut c = Case::new(label, Outcome::Skip);
            c.message = Some("would log this check out".into());
            suite.cases.push(c);
            continue;
        }
        let values = match created_values(&op.path, &created) {
            Ok(v) => v,
            // A read with an example id is harmless; a write is not.
            Err(_) if safe => BTreeMap::new(),
            Err(name) => {
                let mut c = Case::new(label, Outcome::Skip);
                c.message = Some(format!(
                    "no resource created by this check for {{{name}}}; existing data is never written"
                ));
                suite.cases.push(c);
                continue;
            }
        };
        let (case, body) = check_operation(&checker, &client, op, opts, true, &values).await;
        let ok = case
            .properties
            .get("status")
            .is_some_and(|s| s.starts_with('2'));
        if ok && op.method == "post" {
            if let Some(id) = body.as_ref().and_then(created_id) {
                created.push(Created {
                    collection: op.path.trim_end_matches('/').to_string(),
                    concrete: fill(&op.path, &values).trim_end_matches('/').to_string(),
                    id,
                    deleted: false,
                });
            }
        }
        if ok && op.method == "delete" {
            let gone = fill(&op.path, &values).trim_end_matches('/').to_string();
            for c in created.iter_mut().filter(|c| c.path() == gone) {
                c.deleted = true;
            }
        }
        suite.cases.push(case);
    }
    let leftovers = clean_up(&client, &ops, opts, &mut created, &mut suite).await;
    if !leftovers.is_empty() {
        report
            .properties
            .insert(LEFTOVERS.into(), leftovers.join(" "));
    }
    suite.duration_ms = started.elapsed().as_millis() as u64;
    report.suites.push(suite);
    report.finished_at = Some(Utc::now());
    Ok(report)
}

/// `template` with its `{params}` replaced from `values`.
fn fill(template: &str, values: &BTreeMap<String, String>) -> String {
    values.iter().fold(template.to_string(), |p, (k, v)| {
        p.replace(&format!("{{{k}}}"), v)
    })
}

/// Deletes, newest first, what this check created and did not delete
/// itself; returns the paths of what is left behind.
async fn clean_up(
    client: &reqwest::Client,
    ops: &[Operation],
    opts: &CheckOptions,
    created: &mut [Created],
    suite: &mut Suite,
) -> Vec<String> {
    let mut left = Vec::new();
    for c in created.iter_mut().rev().filter(|c| !c.deleted) {
        let delete = ops.iter().find(|o| {
            o.method == "delete"
                && path_params(&o.path)
                    .last()
                    .is_some_and(|(_, prefix)| *prefix == c.collection)
                && o.path.trim_end_matches('/').ends_with('}')
        });
        let path = c.path();
        let Some(delete) = delete else {
            let mut case = Case::new(format!("clean up {path}"), Outcome::Skip);
            case.message = Some("left behind: the spec has no DELETE for it".into());
            suite.cases.push(case);
            left.push(path);
            continue;
        };
        let slash = if delete.path.ends_with('/') { "/" } else { "" };
        let url = format!("{}{path}{slash}", opts.base_url.trim_end_matches('/'));
        let mut rb = client.delete(&url);
        for (k, v) in &opts.headers {
            rb = rb.header(k, v);
        }
        let mut case = Case::new(format!("clean up DELETE {path}"), Outcome::Pass);
        match rb.send().await {
            Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => {
                case.properties
                    .insert("status".into(), r.status().as_u16().to_string());
                c.deleted = true;
            }
            Ok(r) => {
                case.properties
                    .insert("status".into(), r.status().as_u16().to_string());
                case.outcome = Outcome::Fail;
                case.message = Some(format!("left behind: DELETE answered {}", r.status()));
                left.push(path);
            }
            Err(e) => {
                case.outcome = Outcome::Error;
                case.message = Some(format!("left behind: {url}: {e}"));
                left.push(path);
            }
        }
        suite.cases.push(case);
    }
    left
}

/// Whether the operation requires credentials: a non-empty `security` of
/// its own or the document's, without an empty (anonymous) alternative.
fn needs_credentials(spec: &Value, op: &Operation) -> bool {
    let security = op.op.get("security").or_else(|| spec.get("security"));
    match security.and_then(Value::as_array) {
        Some(reqs) => {
            !reqs.is_empty()
                && !reqs
                    .iter()
                    .any(|r| r.as_object().is_some_and(Map::is_empty))
        }
        None => false,
    }
}

/// Headers that carry credentials: `authorization` and the spec's API-key headers.
fn credential_headers(spec: &Value) -> Vec<String> {
    let mut names = vec!["authorization".to_string()];
    if let Some(schemes) = spec
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object)
    {
        for s in schemes.values() {
            if s.get("type").and_then(Value::as_str) == Some("apiKey")
                && s.get("in").and_then(Value::as_str) == Some("header")
            {
                if let Some(n) = s.get("name").and_then(Value::as_str) {
                    names.push(n.to_ascii_lowercase());
                }
            }
        }
    }
    names
}

/// Calls one operation; `with_credentials: false` leaves out the headers
/// that carry them and expects a documented 401 or 403.
async fn check_operation(
    checker: &Checker,
    client: &reqwest::Client,
    op: &Operation,
    opts: &CheckOptions,
    with_credentials: bool,
    values: &BTreeMap<String, String>,
) -> (Case, Option<Value>) {
    let spec = &checker.spec;
    let label = if with_credentials {
        op.label()
    } else {
        format!("{} without credentials", op.label())
    };
    let dropped = if with_credentials {
        Vec::new()
    } else {
        credential_headers(spec)
    };
    let mut case = Case::new(label.clone(), Outcome::Pass);
    case.started_at = Some(Utc::now());
    let started = Instant::now();
    let mut path = op.path.clone();
    let mut query = Vec::new();
    let mut headers = Vec::new();
    let params = op.shared_params.iter().chain(
        op.op
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten(),
    );
    for p in params {
        let p = resolve(spec, p);
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
        let value = match values.get(name) {
            Some(v) => v.clone(),
            None => text(&param_value(spec, p)),
        };
        match p.get("in").and_then(Value::as_str) {
            Some("path") => path = path.replace(&format!("{{{name}}}"), &value),
            Some("query") if required => query.push((name.to_string(), value)),
            Some("header") if required => headers.push((name.to_string(), value)),
            _ => {}
        }
    }
    let url = format!("{}{}", opts.base_url.trim_end_matches('/'), path);
    let method = reqwest::Method::from_bytes(op.method.to_ascii_uppercase().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut rb = client.request(method, &url).query(&query);
    for (k, v) in opts
        .headers
        .iter()
        .filter(|(k, _)| !dropped.contains(&k.to_ascii_lowercase()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        rb = rb.header(k, v);
    }
    let body = resolve(spec, op.op.get("requestBody").unwrap_or(&Value::Null));
    if let Some(schema) = body.pointer("/content/application~1json/schema") {
        let example = body
            .pointer("/content/application~1json/example")
            .cloned()
            .unwrap_or_else(|| example(spec, schema, 0));
        case.properties
            .insert("request".into(), example.to_string());
        rb = rb.json(&example);
    }
    let mut answer = None;
    let outcome = match rb.send().await {
        Err(e) => Err((Outcome::Error, format!("{url}: {e}"))),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let bytes = resp.bytes().await.unwrap_or_default();
            answer = serde_json::from_slice(&bytes).ok();
            case.properties.insert("status".into(), status.to_string());
            case.output =
                Some(String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned());
            if !with_credentials && !matches!(status, 401 | 403) {
                Err((
                    Outcome::Fail,
                    format!("answered {status} without credentials; expected 401 or 403"),
                ))
            } else {
                judge(checker, op, status, &ctype, &bytes)
            }
        }
    };
    if let Err((o, m)) = outcome {
        case.outcome = o;
        case.message = Some(m);
    } else {
        case.output = None;
    }
    case.duration_ms = started.elapsed().as_millis() as u64;
    (case, answer)
}

fn judge(
    checker: &Checker,
    op: &Operation,
    status: u16,
    ctype: &str,
    body: &[u8],
) -> Result<(), (Outcome, String)> {
    let fail = |m: String| Err((Outcome::Fail, m));
    let empty = Map::new();
    let responses = op
        .op
        .get("responses")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let Some(key) = documented(responses, status) else {
        let mut known: Vec<&str> = responses.keys().map(String::as_str).collect();
        known.sort_unstable();
        return fail(format!(
            "status {status} is not documented (documented: {})",
            known.join(", ")
        ));
    };
    let response = resolve(&checker.spec, &responses[&key]);
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return Ok(());
    };
    let json_schema = content
        .iter()
        .find(|(mt, _)| mt.starts_with("application/json") || mt.ends_with("+json"))
        .and_then(|(mt, c)| c.get("schema").map(|_| mt.clone()));
    let Some(media) = json_schema else {
        return Ok(());
    };
    if !ctype.contains("json") {
        return fail(format!(
            "status {status}: the spec promises {media}, the server sent content-type {ctype:?}"
        ));
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return fail(format!("status {status}: body is not JSON: {e}")),
    };
    // The pointer into the original document, so $refs resolve as the spec wrote them.
    let pointer = if op
        .op
        .pointer(&format!("/responses/{}", escape(&key)))
        .and_then(|r| r.get("$ref"))
        .is_some()
    {
        let r = op
            .op
            .pointer(&format!("/responses/{}/$ref", escape(&key)))
            .and_then(Value::as_str)
            .unwrap_or_default();
        format!(
            "{}/content/{}/schema",
            r.trim_start_matches('#'),
            escape(&media)
        )
    } else {
        format!(
            "/paths/{}/{}/responses/{}/content/{}/schema",
            escape(&op.path),
            op.method,
            escape(&key),
            escape(&media)
        )
    };
    checker.validate(&pointer, &value).map_err(|m| {
        (
            Outcome::Fail,
            format!("status {status}: body does not match the schema: {m}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_fill_required_fields_and_follow_refs() {
        let spec = json!({"components": {"schemas": {
            "Name": {"type": "string", "minLength": 3},
            "Thing": {"type": "object", "required": ["name", "n", "tags", "kind"],
                       "properties": {"name": {"$ref": "#/components/schemas/Name"}, "n": {"type": "integer", "minimum": 5},
                                      "tags": {"type": "array", "items": {"type": "string"}},
                                      "kind": {"enum": ["a", "b"]}, "optional": {"type": "string"}}}}}});
        let v = example(&spec, &json!({"$ref": "#/components/schemas/Thing"}), 0);
        assert_eq!(v["n"], json!(5));
        assert_eq!(v["kind"], json!("a"));
        assert_eq!(v["tags"], json!([]));
        assert!(v["name"].as_str().is_some_and(|s| s.len() >= 3));
        assert!(v.get("optional").is_none());
    }

    #[test]
    fn documented_prefers_exact_then_range_then_default() {
        let r = json!({"200": {}, "4XX": {}, "default": {}});
        let r = r.as_object().cloned().unwrap_or_default();
        assert_eq!(documented(&r, 200).as_deref(), Some("200"));
        assert_eq!(documented(&r, 404).as_deref(), Some("4XX"));
        assert_eq!(documented(&r, 500).as_deref(), Some("default"));
        let r = json!({"200": {}}).as_object().cloned().unwrap_or_default();
        assert_eq!(documented(&r, 500), None);
    }

    #[test]
    fn unsafe_calls_take_ids_only_from_what_the_check_created() {
        let params = path_params("/api/plans/{plan_id}/start/");
        assert_eq!(
            params,
            vec![("plan_id".to_string(), "/api/plans".to_string())]
        );
        let mut created = vec![Created {
            collection: "/api/plans".into(),
            concrete: "/api/plans".into(),
            id: "7".into(),
            deleted: false,
        }];
        let v = created_values("/api/plans/{plan_id}/start/", &created);
        assert_eq!(
            v.ok().and_then(|v| v.get("plan_id").cloned()).as_deref(),
            Some("7")
        );
        assert_eq!(
            created_values("/api/projects/{id}", &created),
            Err("id".to_string())
        );
        created[0].deleted = true;
        assert!(created_values("/api/plans/{plan_id}", &created).is_err());
        assert_eq!(
            created_id(&json!({"id": 3, "name": "x"})).as_deref(),
            Some("3")
        );
        assert_eq!(created_id(&json!({"token": "t"})), None);
    }

    #[test]
    fn nullable_becomes_a_null_type() {
        let mut v = json!({"properties": {"a": {"type": "string", "nullable": true}}});
        nullable_to_types(&mut v);
        assert_eq!(v["properties"]["a"]["type"], json!(["string", "null"]));
    }
}
