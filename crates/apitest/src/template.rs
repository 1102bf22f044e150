//! `{{ … }}` templates in suites: variables, captures, iteration items,
//! environment variables, a few generators and filters.
//!
//! ```text
//! {{ name }}  {{ item.key }}  {{ env.DOCKER_HOST | default("unix:///var/run/docker.sock") }}
//! {{ key | base64 }}  {{ prefix ~ 'a' | base64 }}  {{ $uuid }}  {{ $timestamp }}  {{ $random_int }}
//! ```
//!
//! A string that is exactly one template keeps the value's JSON type, so
//! `count: "{{ n }}"` stays a number; otherwise values are interpolated as
//! text. Templates are parsed when a suite loads, so a typo in a filter name is
//! a load error with a line and column, not a failure halfway through a run.

use base64::Engine;
use serde_json::{Map, Value};
use testbed_core::template::{self as plan_template, Segment};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` in {0:?}")]
    Unclosed(String),
    #[error("bad template {0:?}: {1}")]
    Syntax(String, String),
    #[error("`{0}` is not defined")]
    Undefined(String),
    #[error("filter `{0}`: {1}")]
    Filter(String, String),
}

/// The variables a template sees: a JSON object whose keys are the top-level
/// names (`vars`, captures, `item`, `env`).
pub type Scope = Map<String, Value>;

#[derive(Debug, Clone, PartialEq)]
enum Primary {
    /// A variable path, as written and parsed (the same paths as plans').
    Path(String, Vec<Segment>),
    Literal(Value),
    Generator(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Expr {
    /// Terms joined with `~` (string concatenation); usually one.
    terms: Vec<Primary>,
    filters: Vec<(String, Option<Value>)>,
}

const GENERATORS: [&str; 4] = ["$uuid", "$timestamp", "$timestamp_ms", "$random_int"];
const FILTERS: [&str; 9] = [
    "base64",
    "base64_decode",
    "default",
    "json",
    "upper",
    "lower",
    "urlencode",
    "string",
    "int",
];

/// Checks every template in `s` without evaluating it.
pub fn check(s: &str) -> Result<(), TemplateError> {
    pieces(s).map(|_| ())
}

/// Checks every string inside a JSON value; the error names the first bad one.
pub fn check_value(v: &Value) -> Result<(), TemplateError> {
    match v {
        Value::String(s) => check(s),
        Value::Array(a) => a.iter().try_for_each(check_value),
        Value::Object(o) => o.values().try_for_each(check_value),
        _ => Ok(()),
    }
}

enum Piece<'a> {
    Text(&'a str),
    Expr(Expr),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(s.to_string()))?;
        let inner = &after[..end];
        out.push(Piece::Expr(parse_expr(inner)?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

fn parse_expr(text: &str) -> Result<Expr, TemplateError> {
    let bad = |why: &str| TemplateError::Syntax(text.trim().to_string(), why.to_string());
    let mut parts = split_top(text, '|').into_iter();
    let head = parts.next().unwrap_or_default();
    let mut terms = Vec::new();
    for term in split_top(&head, '~') {
        terms.push(parse_primary(term.trim()).map_err(|w| bad(&w))?);
    }
    let mut filters = Vec::new();
    for f in parts {
        let f = f.trim();
        let (name, arg) = match f.find('(') {
            Some(i) => {
                let inner = f[i + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| bad("filter argument without `)`"))?;
                let arg = literal(inner.trim())
                    .ok_or_else(|| bad("filter argument must be a literal"))?;
                (f[..i].trim(), Some(arg))
            }
            None => (f, None),
        };
        if !FILTERS.contains(&name) {
            return Err(bad(&format!(
                "unknown filter `{name}` (known: {})",
                FILTERS.join(", ")
            )));
        }
        if name == "default" && arg.is_none() {
            return Err(bad("`default` needs a value: default(\"x\")"));
        }
        filters.push((name.to_string(), arg));
    }
    Ok(Expr { terms, filters })
}

fn parse_primary(head: &str) -> Result<Primary, String> {
    if head.is_empty() {
        return Err("empty expression".into());
    }
    if head.starts_with('$') {
        if !GENERATORS.contains(&head) {
            return Err(format!(
                "unknown generator (known: {})",
                GENERATORS.join(", ")
            ));
        }
        return Ok(Primary::Generator(head.to_string()));
    }
    if head.starts_with([
        '"', '\'', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
    ]) {
        return literal(head)
            .map(Primary::Literal)
            .ok_or_else(|| "bad literal".into());
    }
    match plan_template::parse_path(head) {
        Ok(p) => Ok(Primary::Path(head.to_string(), p)),
        Err(plan_template::TemplateError::BadPath(_, why)) => Err(why),
        Err(e) => Err(e.to_string()),
    }
}

/// Splits on `sep` outside quotes.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == sep => {
                out.push(String::new());
                continue;
            }
            None => {}
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

fn literal(s: &str) -> Option<Value> {
    if let Some(inner) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Some(Value::String(inner.to_string()));
    }
    serde_json::from_str(s).ok()
}

/// Looks a path up; the scope is an object, so the first segment is a key.
fn lookup<'a>(scope: &'a Scope, path: &[Segment]) -> Option<&'a Value> {
    match path.split_first()? {
        (Segment::Key(k), rest) => plan_template::lookup(scope.get(k)?, rest),
        (Segment::Index(_), _) => None,
    }
}

fn eval_primary(p: &Primary, scope: &Scope) -> Option<Value> {
    match p {
        Primary::Literal(v) => Some(v.clone()),
        Primary::Path(_, p) => lookup(scope, p).cloned(),
        Primary::Generator(g) => Some(generate(g)),
    }
}

fn eval(e: &Expr, scope: &Scope) -> Result<Value, TemplateError> {
    let mut v = match e.terms.as_slice() {
        [one] => eval_primary(one, scope),
        many => {
            let mut s = String::new();
            for t in many {
                match eval_primary(t, scope) {
                    Some(v) => s.push_str(&as_text(&v)),
                    None => return Err(undefined(t)),
                }
            }
            Some(Value::String(s))
        }
    };
    for (name, arg) in &e.filters {
        if name == "default" {
            if v.as_ref().is_none_or(Value::is_null) {
                v = arg.clone();
            }
            continue;
        }
        let cur = match v {
            Some(c) => c,
            None => break,
        };
        v = Some(apply(name, cur)?);
    }
    v.ok_or_else(|| {
        e.terms
            .first()
            .map_or(TemplateError::Undefined("?".into()), undefined)
    })
}

fn undefined(p: &Primary) -> TemplateError {
    match p {
        Primary::Path(text, _) => TemplateError::Undefined(text.clone()),
        _ => TemplateError::Undefined("?".into()),
    }
}

fn generate(g: &str) -> Value {
    let now = chrono::Utc::now();
    match g {
        "$uuid" => Value::String(uuid::Uuid::new_v4().to_string()),
        "$timestamp" => Value::from(now.timestamp()),
        "$timestamp_ms" => Value::from(now.timestamp_millis()),
        _ => Value::from(uuid::Uuid::new_v4().as_u128() as u32 % 1000),
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn apply(name: &str, v: Value) -> Result<Value, TemplateError> {
    let err = |m: String| TemplateError::Filter(name.to_string(), m);
    Ok(match name {
        "base64" => Value::String(base64::engine::general_purpose::STANDARD.encode(as_text(&v))),
        "base64_decode" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(as_text(&v).trim())
                .map_err(|e| err(e.to_string()))?;
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
        "json" => Value::String(v.to_string()),
        "upper" => Value::String(as_text(&v).to_uppercase()),
        "lower" => Value::String(as_text(&v).to_lowercase()),
        "urlencode" => {
            Value::String(url::form_urlencoded::byte_serialize(as_text(&v).as_bytes()).collect())
        }
        "string" => Value::String(as_text(&v)),
        "int" => {
            let t = as_text(&v);
            Value::from(
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| err(format!("{t:?} is not an integer")))?,
            )
        }
        _ => return Err(err("unknown filter".into())),
    })
}

/// Renders a string: a lone template keeps its value's type.
pub fn render_str(s: &str, scope: &Scope) -> Result<Value, TemplateError> {
    if !s.contains("{{") {
        return Ok(Value::String(s.to_string()));
    }
    let ps = pieces(s)?;
    if let [Piece::Expr(e)] = ps.as_slice() {
        return eval(e, scope);
    }
    let mut out = String::with_capacity(s.len());
    for p in &ps {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Expr(e) => out.push_str(&as_text(&eval(e, scope)?)),
        }
    }
    Ok(Value::String(out))
}

/// Renders a string to text (for URLs, names, header values).
pub fn render_text(s: &str, scope: &Scope) -> Result<String, TemplateError> {
    render_str(s, scope).map(|v| as_text(&v))
}

/// Renders every string in a JSON value (keys stay as written).
pub fn render_value(v: &Value, scope: &Scope) -> Result<Value, TemplateError> {
    Ok(match v {
        Value::String(s) => render_str(s, scope)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(x, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => {
            let mut m = Map::with_capacity(o.len());
            for (k, x) in o {
                m.insert(k.clone(), render_value(x, scope)?);
            }
            Value::Object(m)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        json!({"n": 3, "key": "foo", "item": {"list": [1, {"x": "y"}]}, "env": {"HOME": "/root"}})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn lone_template_keeps_type_and_mixed_text_interpolates() {
        let s = scope();
        assert_eq!(render_str("{{ n }}", &s).unwrap(), json!(3));
        assert_eq!(render_str("n={{n}}!", &s).unwrap(), json!("n=3!"));
        assert_eq!(render_str("{{ item.list[1].x }}", &s).unwrap(), json!("y"));
        assert_eq!(render_str("{{ env.HOME }}", &s).unwrap(), json!("/root"));
    }

    #[test]
    fn filters_and_defaults() {
        let s = scope();
        assert_eq!(render_str("{{ key | base64 }}", &s).unwrap(), json!("Zm9v"));
        assert_eq!(
            render_str("{{ \"Zm9v\" | base64_decode | upper }}", &s).unwrap(),
            json!("FOO")
        );
        assert_eq!(
            render_str("{{ env.NOPE | default('x') }}", &s).unwrap(),
            json!("x")
        );
        assert_eq!(render_str("{{ '12' | int }}", &s).unwrap(), json!(12));
        assert_eq!(
            render_str("{{ key ~ '/' ~ n | base64 }}", &s).unwrap(),
            json!("Zm9vLzM=")
        );
        assert_eq!(
            render_str("{{ 'a b' | urlencode }}", &s).unwrap(),
            json!("a+b")
        );
    }

    #[test]
    fn undefined_and_syntax_errors_name_the_reference() {
        let s = scope();
        assert_eq!(
            render_str("{{ nope.x }}", &s).unwrap_err(),
            TemplateError::Undefined("nope.x".into())
        );
        assert!(
            matches!(check("{{ key | frob }}"), Err(TemplateError::Syntax(_, m)) if m.contains("frob"))
        );
        assert!(matches!(check("{{ key "), Err(TemplateError::Unclosed(_))));
        assert!(matches!(
            check("{{ $nope }}"),
            Err(TemplateError::Syntax(_, _))
        ));
    }

    #[test]
    fn generators_produce_fresh_values() {
        let s = scope();
        let a = render_text("{{ $uuid }}", &s).unwrap();
        let b = render_text("{{ $uuid }}", &s).unwrap();
        assert_ne!(a, b);
        assert!(render_str("{{ $timestamp }}", &s).unwrap().is_i64());
    }
}
