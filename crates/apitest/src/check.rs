//! Asserts and captures: what a step checks in a [`Reply`] and what it keeps
//! for later steps.
//!
//! An assert names one *subject* and one or more *operators*:
//!
//! ```yaml
//! - status: 200                       # shorthand for {equals: 200}
//! - status: [200, 204]                # shorthand for {one_of: [...]}
//! - status: {lt: 400}
//! - header: content-type
//!   contains: json
//! - jsonpath: $.items[0].state
//!   equals: running
//! - jsonpath: $.count
//!   gte: 1
//! - jsonpath: $.error
//!   exists: false
//! - body: {matches: "^OK"}
//! - duration: {lt: 500}               # milliseconds
//! - schema: {type: object, required: [id]}   # or a file: schema: item.schema.json
//! ```

use std::path::Path;
use std::sync::Arc;

use regex::Regex;
use serde_json::{Map, Value};
use serde_json_path::JsonPath;

use crate::Reply;

/// What an assert or a capture looks at.
#[derive(Debug, Clone)]
pub enum Subject {
    Status,
    Header(String),
    JsonPath(String, Arc<JsonPath>),
    Body,
    Stderr,
    Duration,
}

/// A comparison; the right-hand side may hold templates rendered at run time.
#[derive(Debug, Clone)]
pub enum Op {
    Equals(Value),
    NotEquals(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    Contains(Value),
    NotContains(Value),
    Matches(Value),
    NotMatches(Value),
    OneOf(Value),
    Exists(bool),
    Length(Value),
    Type(String),
    Empty(bool),
}

const OPS: [&str; 15] = [
    "equals",
    "not_equals",
    "gt",
    "gte",
    "lt",
    "lte",
    "contains",
    "not_contains",
    "matches",
    "not_matches",
    "one_of",
    "exists",
    "length",
    "type",
    "empty",
];

const TYPES: [&str; 7] = [
    "string", "number", "integer", "boolean", "array", "object", "null",
];

#[derive(Debug, Clone)]
pub enum Assert {
    Compare { subject: Subject, ops: Vec<Op> },
    Schema(Arc<jsonschema::Validator>),
}

/// A problem in an assert or capture, at a path relative to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: String,
    pub message: String,
    /// The problem is the key at `path` itself (an unknown operator), so
    /// it is located where the key is written, not at its value.
    pub at_key: bool,
}

fn spec_err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        path: path.into(),
        message: message.into(),
        at_key: false,
    }
}

fn key_err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        at_key: true,
        ..spec_err(path, message)
    }
}

fn parse_op(name: &str, v: &Value) -> Result<Op, SpecError> {
    let bool_of = |v: &Value| {
        v.as_bool()
            .ok_or_else(|| spec_err(name, "must be true or false"))
    };
    Ok(match name {
        "equals" => Op::Equals(v.clone()),
        "not_equals" => Op::NotEquals(v.clone()),
        "gt" => Op::Gt(v.clone()),
        "gte" => Op::Gte(v.clone()),
        "lt" => Op::Lt(v.clone()),
        "lte" => Op::Lte(v.clone()),
        "contains" => Op::Contains(v.clone()),
        "not_contains" => Op::NotContains(v.clone()),
        "matches" | "not_matches" => {
            if let Some(s) = v.as_str() {
                if !s.contains("{{") {
                    Regex::new(s).map_err(|e| spec_err(name, format!("bad regex: {e}")))?;
                }
            } else {
                return Err(spec_err(name, "must be a regular expression string"));
            }
            if name == "matches" {
                Op::Matches(v.clone())
            } else {
                Op::NotMatches(v.clone())
            }
        }
        "one_of" => {
            if !v.is_array() && !v.as_str().is_some_and(|s| s.contains("{{")) {
                return Err(spec_err(name, "must be a list"));
            }
            Op::OneOf(v.clone())
        }
        "exists" => Op::Exists(bool_of(v)?),
        "empty" => Op::Empty(bool_of(v)?),
        "length" => Op::Length(v.clone()),
        "type" => {
            let t = v.as_str().unwrap_or_default();
            if !TYPES.contains(&t) {
                return Err(spec_err(
                    name,
                    format!("must be one of {}", TYPES.join(", ")),
                ));
            }
            Op::Type(t.to_string())
        }
        other => {
            return Err(key_err(
                other,
                format!("unknown operator `{other}` (known: {})", OPS.join(", ")),
            ))
        }
    })
}

fn ops_of(map: &Map<String, Value>, skip: &str) -> Result<Vec<Op>, SpecError> {
    let mut ops = Vec::new();
    for (k, v) in map {
        if k == skip {
            continue;
        }
        ops.push(parse_op(k, v)?);
    }
    Ok(ops)
}

fn jsonpath(path: &str, at: &str) -> Result<Subject, SpecError> {
    let p = JsonPath::parse(path).map_err(|e| spec_err(at, format!("bad JSONPath: {e}")))?;
    Ok(Subject::JsonPath(path.to_string(), Arc::new(p)))
}

/// Parses one assert; `base` resolves a schema file name.
pub fn parse_assert(v: &Value, base: &Path) -> Result<Assert, SpecError> {
    let map = v
        .as_object()
        .ok_or_else(|| spec_err("", "an assert is a mapping such as `status: 200`"))?;
    if let Some(schema) = map.get("schema") {
        if map.len() > 1 {
            return Err(spec_err("schema", "`schema` takes no operators"));
        }
        return Ok(Assert::Schema(Arc::new(load_schema(schema, base)?)));
    }
    let subjects = ["status", "header", "jsonpath", "body", "stderr", "duration"];
    let found: Vec<&str> = subjects
        .iter()
        .copied()
        .filter(|s| map.contains_key(*s))
        .collect();
    let subject_key = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(spec_err(
                "",
                format!("an assert needs one of {} or schema", subjects.join(", ")),
            ))
        }
        many => {
            return Err(spec_err(
                many[1],
                format!("one subject per assert, found {}", many.join(" and ")),
            ))
        }
    };
    let sv = &map[subject_key];
    match subject_key {
        "header" | "jsonpath" => {
            let sel = sv
                .as_str()
                .ok_or_else(|| spec_err(subject_key, "must be a string"))?;
            let subject = if subject_key == "header" {
                Subject::Header(sel.to_ascii_lowercase())
            } else {
                jsonpath(sel, subject_key)?
            };
            let mut ops = ops_of(map, subject_key)?;
            if ops.is_empty() {
                ops.push(Op::Exists(true));
            }
            Ok(Assert::Compare { subject, ops })
        }
        _ => {
            let subject = match subject_key {
                "status" => Subject::Status,
                "body" => Subject::Body,
                "stderr" => Subject::Stderr,
                _ => Subject::Duration,
            };
            if map.len() > 1 {
                let extra = map
                    .keys()
                    .find(|k| *k != subject_key)
                    .cloned()
                    .unwrap_or_default();
                return Err(key_err(
                    extra,
                    format!("put operators under `{subject_key}`: {subject_key}: {{lt: 400}}"),
                ));
            }
            let ops = match sv {
                Value::Object(o) => {
                    let ops = ops_of(o, "").map_err(|e| SpecError {
                        path: format!("{subject_key}.{}", e.path),
                        ..e
                    })?;
                    if ops.is_empty() {
                        return Err(spec_err(subject_key, "no operator given"));
                    }
                    ops
                }
                Value::Array(_) => vec![Op::OneOf(sv.clone())],
                _ => vec![Op::Equals(sv.clone())],
            };
            Ok(Assert::Compare { subject, ops })
        }
    }
}

fn load_schema(v: &Value, base: &Path) -> Result<jsonschema::Validator, SpecError> {
    let doc = match v {
        Value::String(file) => {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| spec_err("schema", format!("cannot read {}: {e}", path.display())))?;
            serde_json::from_str(&text).map_err(|e| {
                spec_err(
                    "schema",
                    format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()),
                )
            })?
        }
        other => other.clone(),
    };
    jsonschema::validator_for(&doc)
        .map_err(|e| spec_err("schema", format!("invalid JSON Schema: {e}")))
}

/// How a capture reads its value.
#[derive(Debug, Clone)]
pub enum Capture {
    Subject(Subject),
    Regex {
        re: Regex,
        group: usize,
        from: Subject,
    },
}

/// Parses one capture: `{jsonpath: $.Id}`, `{header: Location}`,
/// `{regex: "id=(\\w+)"}`, `status`, `body`.
pub fn parse_capture(v: &Value) -> Result<Capture, SpecError> {
    match v {
        Value::String(s) => match s.as_str() {
            "status" => Ok(Capture::Subject(Subject::Status)),
            "body" => Ok(Capture::Subject(Subject::Body)),
            "stderr" => Ok(Capture::Subject(Subject::Stderr)),
            "duration" => Ok(Capture::Subject(Subject::Duration)),
            p if p.starts_with('$') => Ok(Capture::Subject(jsonpath(p, "")?)),
            _ => Err(spec_err(
                "",
                "a capture is status, body, stderr, duration, a JSONPath ($.x), or a mapping",
            )),
        },
        Value::Object(m) => {
            if let Some(re) = m.get("regex") {
                let re = re
                    .as_str()
                    .ok_or_else(|| spec_err("regex", "must be a string"))?;
                let re =
                    Regex::new(re).map_err(|e| spec_err("regex", format!("bad regex: {e}")))?;
                let group = usize::from(re.captures_len() > 1);
                let from = match m.get("header").and_then(Value::as_str) {
                    Some(h) => Subject::Header(h.to_ascii_lowercase()),
                    None => Subject::Body,
                };
                return Ok(Capture::Regex { re, group, from });
            }
            if m.len() != 1 {
                return Err(spec_err("", "one of jsonpath, header, regex"));
            }
            let (k, v) = m
                .iter()
                .next()
                .ok_or_else(|| spec_err("", "empty capture"))?;
            let s = v
                .as_str()
                .ok_or_else(|| spec_err(k.as_str(), "must be a string"))?;
            match k.as_str() {
                "jsonpath" => Ok(Capture::Subject(jsonpath(s, "jsonpath")?)),
                "header" => Ok(Capture::Subject(Subject::Header(s.to_ascii_lowercase()))),
                other => Err(key_err(other, "unknown capture (jsonpath, header, regex)")),
            }
        }
        _ => Err(spec_err("", "a capture is a string or a mapping")),
    }
}

/// The value of a subject in a reply; `None` when it is absent.
pub fn select(subject: &Subject, reply: &Reply) -> Option<Value> {
    match subject {
        Subject::Status => reply.status.map(Value::from),
        Subject::Header(h) => reply.header(h).map(|v| Value::String(v.to_string())),
        Subject::Body => Some(Value::String(reply.text())),
        Subject::Stderr => reply.stderr.clone().map(Value::String),
        Subject::Duration => Some(Value::from(reply.duration.as_millis() as u64)),
        Subject::JsonPath(_, p) => {
            let json = reply.json.as_ref()?;
            let nodes = p.query(json).all();
            match nodes.as_slice() {
                [] => None,
                [one] => Some((*one).clone()),
                many => Some(Value::Array(many.iter().map(|v| (*v).clone()).collect())),
            }
        }
    }
}

/// Reads a capture from a reply.
pub fn capture(c: &Capture, reply: &Reply) -> Option<Value> {
    match c {
        Capture::Subject(s) => select(s, reply),
        Capture::Regex { re, group, from } => {
            let text = select(from, reply)?;
            let text = text.as_str()?;
            let caps = re.captures(text)?;
            caps.get(*group)
                .map(|m| Value::String(m.as_str().to_string()))
        }
    }
}

impl Subject {
    pub fn describe(&self) -> String {
        match self {
            Subject::Status => "status".into(),
            Subject::Header(h) => format!("header {h}"),
            Subject::JsonPath(p, _) => p.clone(),
            Subject::Body => "body".into(),
            Subject::Stderr => "stderr".into(),
            Subject::Duration => "duration (ms)".into(),
        }
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        // gRPC's JSON mapping writes 64-bit integers as strings.
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Loose equality: numbers compare by value, and a string that holds a number
/// equals that number (proto3 JSON writes int64 as strings).
pub fn loose_eq(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            matches!((num(a), num(b)), (Some(x), Some(y)) if x == y)
        }
        (Value::Number(_), Value::Number(_)) => num(a) == num(b),
        _ => false,
    }
}

fn short(v: &Value) -> String {
    clip(&v.to_string(), 200)
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` when cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn contains(hay: &Value, needle: &Value) -> bool {
    match hay {
        Value::String(s) => s.contains(
            &needle
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| needle.to_string()),
        ),
        Value::Array(a) => a.iter().any(|x| loose_eq(x, needle)),
        Value::Object(o) => needle.as_str().is_some_and(|k| o.contains_key(k)),
        _ => false,
    }
}

fn regex_match(actual: &Value, re: &Value) -> Result<bool, String> {
    let re = Regex::new(re.as_str().unwrap_or_default()).map_err(|e| format!("bad regex: {e}"))?;
    let text = match actual {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(re.is_match(&text))
}

/// Checks one operator against the (rendered) actual value; `Err` explains
/// the failure.
pub fn apply(subject: &Subject, op: &Op, actual: Option<&Value>) -> Result<(), String> {
    let what = subject.describe();
    if let Op::Exists(want) = op {
        let is = actual.is_some_and(|v| !v.is_null());
        return if is == *want {
            Ok(())
        } else if *want {
            Err(format!("{what}: expected to exist, but it is absent"))
        } else {
            Err(format!(
                "{what}: expected to be absent, got {}",
                short(actual.unwrap_or(&Value::Null))
            ))
        };
    }
    let Some(a) = actual else {
        return Err(format!("{what}: absent (no value to compare)"));
    };
    let fail = |expect: String| Err(format!("{what}: expected {expect}, got {}", short(a)));
    let cmp = |b: &Value, f: fn(f64, f64) -> bool, sym: &str| match (num(a), num(b)) {
        (Some(x), Some(y)) if f(x, y) => Ok(()),
        (Some(_), Some(_)) => Err(format!(
            "{what}: expected {sym} {}, got {}",
            short(b),
            short(a)
        )),
        _ => Err(format!(
            "{what}: cannot compare {} with {}",
            short(a),
            short(b)
        )),
    };
    match op {
        Op::Equals(b) if loose_eq(a, b) => Ok(()),
        Op::Equals(b) => fail(short(b)),
        Op::NotEquals(b) if !loose_eq(a, b) => Ok(()),
        Op::NotEquals(b) => fail(format!("not {}", short(b))),
        Op::Gt(b) => cmp(b, |x, y| x > y, ">"),
        Op::Gte(b) => cmp(b, |x, y| x >= y, ">="),
        Op::Lt(b) => cmp(b, |x, y| x < y, "<"),
        Op::Lte(b) => cmp(b, |x, y| x <= y, "<="),
        Op::Contains(b) if contains(a, b) => Ok(()),
        Op::Contains(b) => fail(format!("to contain {}", short(b))),
        Op::NotContains(b) if !contains(a, b) => Ok(()),
        Op::NotContains(b) => fail(format!("not to contain {}", short(b))),
        Op::Matches(re) => match regex_match(a, re)? {
            true => Ok(()),
            false => fail(format!("to match /{}/", re.as_str().unwrap_or_default())),
        },
        Op::NotMatches(re) => match regex_match(a, re)? {
            false => Ok(()),
            true => fail(format!(
                "not to match /{}/",
                re.as_str().unwrap_or_default()
            )),
        },
        Op::OneOf(list) => match list.as_array() {
            Some(l) if l.iter().any(|x| loose_eq(a, x)) => Ok(()),
            _ => fail(format!("one of {}", short(list))),
        },
        Op::Length(n) => {
            let len = match a {
                Value::Array(x) => x.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.chars().count(),
                _ => return fail("something with a length".into()),
            };
            let want = num(n).unwrap_or(-1.0);
            if len as f64 == want {
                Ok(())
            } else {
                Err(format!("{what}: expected length {}, got {len}", short(n)))
            }
        }
        Op::Type(t) => {
            let actual = type_name(a);
            if actual == t || (t == "number" && actual == "integer") {
                Ok(())
            } else {
                Err(format!("{what}: expected type {t}, got {actual}"))
            }
        }
        Op::Empty(want) => {
            let empty = match a {
                Value::Array(x) => x.is_empty(),
                Value::Object(o) => o.is_empty(),
                Value::String(s) => s.is_empty(),
                Value::Null => true,
                _ => false,
            };
            if empty == *want {
                Ok(())
            } else {
                fail(if *want {
                    "empty".into()
                } else {
                    "not empty".into()
                })
            }
        }
        Op::Exists(_) => Ok(()),
    }
}

/// Validates the reply's JSON against a schema; `Err` lists the violations.
pub fn validate_schema(v: &jsonschema::Validator, reply: &Reply) -> Result<(), String> {
    let Some(json) = &reply.json else {
        return Err("schema: the reply has no JSON body".into());
    };
    schema_errors(v, json).map_err(|e| format!("schema: {e}"))
}

/// The first few violations of `value`, each at its instance path.
pub fn schema_errors(v: &jsonschema::Validator, value: &Value) -> Result<(), String> {
    let errors: Vec<String> = v
        .iter_errors(value)
        .take(5)
        .map(|e| {
            let at = e.instance_path.to_string();
            format!("{} {e}", if at.is_empty() { "/".into() } else { at })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

impl Op {
    /// The operator's right-hand side, for template rendering.
    pub fn operand_mut(&mut self) -> Option<&mut Value> {
        match self {
            Op::Equals(v)
            | Op::NotEquals(v)
            | Op::Gt(v)
            | Op::Gte(v)
            | Op::Lt(v)
            | Op::Lte(v)
            | Op::Contains(v)
            | Op::NotContains(v)
            | Op::Matches(v)
            | Op::NotMatches(v)
            | Op::OneOf(v)
            | Op::Length(v) => Some(v),
            Op::Exists(_) | Op::Type(_) | Op::Empty(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn reply() -> Reply {
        let mut r = Reply {
            status: Some(201),
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"id":"abc","n":"42","items":[{"s":"running"},{"s":"exited"}]}"#.to_vec(),
            duration: Duration::from_millis(12),
            ..Reply::default()
        };
        r.parse_json();
        r
    }

    fn run(a: &Value) -> Result<(), String> {
        let r = reply();
        match parse_assert(a, Path::new(".")).map_err(|e| e.message)? {
            Assert::Schema(v) => validate_schema(&v, &r),
            Assert::Compare { subject, ops } => {
                let actual = select(&subject, &r);
                ops.iter()
                    .try_for_each(|op| apply(&subject, op, actual.as_ref()))
            }
        }
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("héllo", 2), "h…");
        assert_eq!(clip("héllo", 3), "hé…");
        assert_eq!(clip("ok", 5), "ok");
    }

    #[test]
    fn shorthands_and_operators() {
        assert!(run(&json!({"status": 201})).is_ok());
        assert!(run(&json!({"status": [200, 201]})).is_ok());
        assert!(run(&json!({"status": {"lt": 300, "gte": 200}})).is_ok());
        let e = run(&json!({"status": 200})).unwrap_err();
        assert!(e.contains("expected 200, got 201"), "{e}");
        assert!(run(&json!({"header": "Content-Type", "contains": "json"})).is_ok());
        assert!(
            run(&json!({"jsonpath": "$.n", "gt": 41})).is_ok(),
            "int64 as string compares"
        );
        assert!(run(&json!({"jsonpath": "$.n", "equals": 42})).is_ok());
        assert!(run(&json!({"jsonpath": "$.items[*].s", "contains": "exited"})).is_ok());
        assert!(run(&json!({"jsonpath": "$.items", "length": 2})).is_ok());
        assert!(run(&json!({"jsonpath": "$.missing", "exists": false})).is_ok());
        let e = run(&json!({"jsonpath": "$.missing"})).unwrap_err();
        assert!(e.contains("absent"), "{e}");
        assert!(run(&json!({"body": {"matches": "\"id\":\"a"}})).is_ok());
        assert!(run(&json!({"duration": {"lt": 5000}})).is_ok());
        assert!(run(&json!({"jsonpath": "$.id", "type": "string"})).is_ok());
    }

    #[test]
    fn schema_asserts_report_the_instance_path() {
        assert!(run(&json!({"schema": {"type": "object", "required": ["id"]}})).is_ok());
        let e = run(&json!({"schema": {"properties": {"items": {"items": {"properties": {"s": {"enum": ["running"]}}}}}}})).unwrap_err();
        assert!(e.contains("/items/1/s"), "{e}");
    }

    #[test]
    fn bad_asserts_name_the_field() {
        let e = parse_assert(&json!({"jsonpath": "$.x", "eq": 1}), Path::new(".")).unwrap_err();
        assert_eq!(e.path, "eq");
        assert!(e.at_key, "an unknown operator is the key's problem");
        assert!(e.message.contains("unknown operator `eq`"), "{}", e.message);
        let e =
            parse_assert(&json!({"status": {"lt": 1, "around": 2}}), Path::new(".")).unwrap_err();
        assert_eq!(e.path, "status.around");
        assert!(e.at_key);
        let e = parse_assert(&json!({"jsonpath": "$[", "equals": 1}), Path::new(".")).unwrap_err();
        assert_eq!(e.path, "jsonpath");
        let e = parse_assert(&json!({"body": {"matches": "("}}), Path::new(".")).unwrap_err();
        assert!(e.message.contains("regex"));
    }

    #[test]
    fn captures_read_json_headers_and_regex() {
        let r = reply();
        let c = parse_capture(&json!({"jsonpath": "$.id"})).unwrap();
        assert_eq!(capture(&c, &r), Some(json!("abc")));
        let c = parse_capture(&json!({"header": "Content-Type"})).unwrap();
        assert_eq!(capture(&c, &r), Some(json!("application/json")));
        let c = parse_capture(&json!({"regex": "\"id\":\"(\\w+)\""})).unwrap();
        assert_eq!(capture(&c, &r), Some(json!("abc")));
        let c = parse_capture(&json!("status")).unwrap();
        assert_eq!(capture(&c, &r), Some(json!(201)));
    }
}
