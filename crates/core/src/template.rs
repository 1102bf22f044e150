//! `{{ … }}` templates in plan parameters, `when` conditions and outputs.
//!
//! A template references values by dotted path with optional indices:
//! `{{ params.branch }}`, `{{ env.API_URL }}`, `{{ steps.build.outputs.sha }}`,
//! `{{ result.artifacts[0].url }}`. A string that is exactly one template
//! keeps the referenced value's JSON type (so `"{{ params.count }}"` is a
//! number); otherwise every reference is interpolated as text: a string as
//! itself, `null` as nothing, a list of scalars as its items separated by
//! one space, anything else as JSON text.
//!
//! Filters follow the reference, with the syntax of API test suites:
//! `{{ steps.login.outputs.token | trim }}`, `{{ steps.scan.outputs.hosts |
//! join(",") }}`, `{{ params.config | json }}`. They are checked with the
//! plan, so an unknown filter is refused before a run starts.
//!
//! Deliberately not a general-purpose template language: plans stay
//! declarative, and every reference can be checked before a run starts.

use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` in `{0}`")]
    Unclosed(String),
    #[error("empty reference `{{{{ }}}}`")]
    Empty,
    #[error("bad reference `{0}`: {1}")]
    BadPath(String, String),
    #[error("`{0}` is not defined")]
    Undefined(String),
    #[error("unknown filter `{0}` (filters are: {known})", known = FILTERS.join(", "))]
    UnknownFilter(String),
    #[error("filter `{0}`: {1}")]
    Filter(String, String),
}

/// The filters a reference may pipe its value through.
pub const FILTERS: [&str; 3] = ["trim", "join", "json"];

/// One `| name` or `| name("arg")` after a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub arg: Option<String>,
}

/// One segment of a reference path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A parsed reference such as `steps.build.outputs.sha`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The path as written (filters not included).
    pub text: String,
    pub path: Vec<Segment>,
    pub filters: Vec<Filter>,
}

impl Reference {
    /// The first `n` keys of the path, for validation (`["steps", "build"]`).
    pub fn keys(&self) -> Vec<&str> {
        self.path
            .iter()
            .map_while(|s| match s {
                Segment::Key(k) => Some(k.as_str()),
                Segment::Index(_) => None,
            })
            .collect()
    }
}

/// Parses a dotted path with indices (`steps.build.outputs.files[0]`).
pub fn parse_path(text: &str) -> Result<Vec<Segment>, TemplateError> {
    let bad = |why: &str| TemplateError::BadPath(text.to_string(), why.to_string());
    let mut out = Vec::new();
    for part in text.split('.') {
        if part.is_empty() {
            return Err(bad("empty segment"));
        }
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(bad("names are letters, digits, `_` and `-`"));
            }
            out.push(Segment::Key(name.to_string()));
        } else if out.is_empty() {
            return Err(bad("must start with a name"));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("unclosed `[`"))?;
            let idx = r[..end]
                .trim()
                .parse::<usize>()
                .map_err(|_| bad("an index is a non-negative integer"))?;
            out.push(Segment::Index(idx));
            rest = &r[end + 1..];
        }
        if !rest.is_empty() {
            return Err(bad("unexpected text after `]`"));
        }
    }
    Ok(out)
}

/// A piece of a template: literal text or a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Ref(Reference),
}

fn pieces(s: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        // `\{{` is a literal `{{`: it lets a plan carry text that is itself a
        // template for someone else, such as an inline API test suite.
        if start > 0 && rest.as_bytes()[start - 1] == b'\\' {
            out.push(Piece::Text(format!("{}{{{{", &rest[..start - 1])));
            rest = &rest[start + 2..];
            continue;
        }
        if start > 0 {
            out.push(Piece::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(s.to_string()))?;
        let inner = after[..end].trim();
        if inner.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = split_pipes(inner).into_iter();
        let text = parts.next().unwrap_or_default().trim().to_string();
        if text.is_empty() {
            return Err(TemplateError::Empty);
        }
        let filters = parts
            .map(|f| parse_filter(f.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Piece::Ref(Reference {
            path: parse_path(&text)?,
            text,
            filters,
        }));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// Splits `a | b("|")` at the pipes outside quotes.
fn split_pipes(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '|') => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `trim`, `join`, `join(", ")`, `json`.
fn parse_filter(f: &str) -> Result<Filter, TemplateError> {
    let bad = |why: &str| TemplateError::Filter(f.to_string(), why.to_string());
    let (name, arg) = match f.find('(') {
        Some(i) => {
            let inner = f[i + 1..]
                .strip_suffix(')')
                .ok_or_else(|| bad("argument without a closing `)`"))?
                .trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| inner.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
                .filter(|_| inner.len() >= 2)
                .ok_or_else(|| bad("the argument is a quoted string, like join(\", \")"))?;
            (f[..i].trim(), Some(unquoted.to_string()))
        }
        None => (f, None),
    };
    if name.is_empty() {
        return Err(TemplateError::Filter(
            f.to_string(),
            "empty filter after `|`".into(),
        ));
    }
    if !FILTERS.contains(&name) {
        return Err(TemplateError::UnknownFilter(name.to_string()));
    }
    if arg.is_some() && name != "join" {
        return Err(TemplateError::Filter(
            name.to_string(),
            "takes no argument".into(),
        ));
    }
    Ok(Filter {
        name: name.to_string(),
        arg,
    })
}

/// Applies a reference's filters, in order, to its value.
fn apply_filters(r: &Reference, v: Value) -> Result<Value, TemplateError> {
    r.filters.iter().try_fold(v, |v, f| {
        Ok(match f.name.as_str() {
            "trim" => match v {
                Value::String(s) => Value::String(s.trim().to_string()),
                Value::Array(a) => Value::Array(
                    a.into_iter()
                        .map(|x| match x {
                            Value::String(s) => Value::String(s.trim().to_string()),
                            other => other,
                        })
                        .collect(),
                ),
                other => other,
            },
            "join" => {
                let sep = f.arg.as_deref().unwrap_or(" ");
                match v {
                    Value::Array(a) => {
                        Value::String(a.iter().map(as_text).collect::<Vec<_>>().join(sep))
                    }
                    other => Value::String(as_text(&other)),
                }
            }
            "json" => Value::String(v.to_string()),
            other => return Err(TemplateError::UnknownFilter(other.to_string())),
        })
    })
}

/// The value of a reference, filters applied.
fn value_of(r: &Reference, scope: &Value) -> Result<Value, TemplateError> {
    let v = lookup(scope, &r.path)
        .cloned()
        .ok_or_else(|| TemplateError::Undefined(r.text.clone()))?;
    apply_filters(r, v)
}

/// Every reference in `s`.
pub fn references(s: &str) -> Result<Vec<Reference>, TemplateError> {
    Ok(pieces(s)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Ref(r) => Some(r),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Every reference in every string inside `v` (keys included).
pub fn references_in(v: &Value) -> Result<Vec<Reference>, TemplateError> {
    let mut out = Vec::new();
    walk_strings(v, &mut |s| {
        out.extend(references(s)?);
        Ok(())
    })?;
    Ok(out)
}

fn walk_strings(
    v: &Value,
    f: &mut dyn FnMut(&str) -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().try_for_each(|x| walk_strings(x, f)),
        Value::Object(m) => m.iter().try_for_each(|(k, x)| {
            f(k)?;
            walk_strings(x, f)
        }),
        _ => Ok(()),
    }
}

/// Looks a path up in `scope`.
pub fn lookup<'a>(scope: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(scope, |v, seg| match seg {
        Segment::Key(k) => v.get(k),
        Segment::Index(i) => v.get(*i),
    })
}

/// A value pasted into surrounding text.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        // Lists of scalars read like shell words (`a b c`); `join` picks
        // another separator and `json` keeps the JSON text.
        Value::Array(a) if a.iter().all(|x| !x.is_array() && !x.is_object()) => {
            a.iter().map(as_text).collect::<Vec<_>>().join(" ")
        }
        other => other.to_string(),
    }
}

/// Renders one string. A string that is exactly one reference becomes the
/// referenced value itself.
pub fn render_str(s: &str, scope: &Value) -> Result<Value, TemplateError> {
    let ps = pieces(s)?;
    if let [Piece::Ref(r)] = ps.as_slice() {
        return value_of(r, scope);
    }
    let mut out = String::new();
    for p in ps {
        match p {
            Piece::Text(t) => out.push_str(&t),
            Piece::Ref(r) => out.push_str(&as_text(&value_of(&r, scope)?)),
        }
    }
    Ok(Value::String(out))
}

/// Renders every string inside `v`.
pub fn render(v: &Value, scope: &Value) -> Result<Value, TemplateError> {
    Ok(match v {
        Value::String(s) => render_str(s, scope)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render(x, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                out.insert(as_text(&render_str(k, scope)?), render(x, scope)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Evaluates a `when` condition: a template that renders to a truthy value,
/// or `A == B` / `A != B` with each side rendered. Falsy: `false`, `0`,
/// `""`, `null`, `"false"`, `"no"`, `"0"`.
pub fn truthy(condition: &str, scope: &Value) -> Result<bool, TemplateError> {
    for (op, negate) in [("!=", true), ("==", false)] {
        if let Some((a, b)) = condition.split_once(op) {
            let a = as_text(&render_str(a.trim(), scope)?);
            let b = as_text(&render_str(b.trim(), scope)?);
            let strip = |s: &str| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
            return Ok((strip(&a) == strip(&b)) != negate);
        }
    }
    let v = render_str(condition.trim(), scope)?;
    Ok(match v {
        Value::Bool(b) => b,
        Value::Null => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            !(s.is_empty() || s == "false" || s == "0" || s == "no")
        }
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Value {
        json!({
            "params": {"count": 3, "branch": "main", "flag": false},
            "steps": {"build": {"outputs": {"files": ["a", "b"]}, "status": "passed"}},
        })
    }

    #[test]
    fn whole_reference_keeps_its_type() {
        assert_eq!(
            render_str("{{ params.count }}", &scope()).unwrap(),
            json!(3)
        );
        assert_eq!(
            render_str("{{params.flag}}", &scope()).unwrap(),
            json!(false)
        );
    }

    #[test]
    fn interpolation_and_indices() {
        let v = render_str(
            "b={{ params.branch }} f={{ steps.build.outputs.files[1] }}",
            &scope(),
        )
        .unwrap();
        assert_eq!(v, json!("b=main f=b"));
    }

    #[test]
    fn render_walks_objects() {
        let v = render(
            &json!({"n": "{{ params.count }}", "l": ["x-{{ params.branch }}"]}),
            &scope(),
        )
        .unwrap();
        assert_eq!(v, json!({"n": 3, "l": ["x-main"]}));
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(
            render_str("{{ params.nope }}", &scope()).unwrap_err(),
            TemplateError::Undefined("params.nope".into())
        );
        assert!(matches!(
            references("{{ a..b }}"),
            Err(TemplateError::BadPath(..))
        ));
        assert!(matches!(
            references("x {{ a"),
            Err(TemplateError::Unclosed(_))
        ));
        assert_eq!(references("{{ }}").unwrap_err(), TemplateError::Empty);
    }

    #[test]
    fn a_backslash_escapes_a_template() {
        let s = scope();
        assert_eq!(
            render_str(r"\{{ item }} and {{ params.branch }}", &s).unwrap(),
            json!("{{ item }} and main")
        );
        assert!(references(r"\{{ x.y }}").unwrap().is_empty());
    }

    #[test]
    fn filters_trim_join_json() {
        let s = json!({"o": {"tok": "token-abc\n", "hosts": ["a", "b"], "cfg": {"k": 1}}});
        assert_eq!(
            render_str("{{ o.tok | trim }}", &s).unwrap(),
            json!("token-abc")
        );
        assert_eq!(
            render_str("--token={{ o.tok|trim }}", &s).unwrap(),
            json!("--token=token-abc")
        );
        assert_eq!(
            render_str("{{ o.hosts | join(\",\") }}", &s).unwrap(),
            json!("a,b")
        );
        assert_eq!(
            render_str("{{ o.hosts | join('|') }}", &s).unwrap(),
            json!("a|b")
        );
        assert_eq!(
            render_str("{{ o.hosts | join }}", &s).unwrap(),
            json!("a b")
        );
        assert_eq!(
            render_str("{{ o.cfg | json }}", &s).unwrap(),
            json!("{\"k\":1}")
        );
        assert_eq!(
            render_str("{{ o.hosts | json }}", &s).unwrap(),
            json!("[\"a\",\"b\"]")
        );
        // A lone reference keeps the list; pasted into text it reads like words.
        assert_eq!(render_str("{{ o.hosts }}", &s).unwrap(), json!(["a", "b"]));
        assert_eq!(render_str("h: {{ o.hosts }}", &s).unwrap(), json!("h: a b"));
        // Objects pasted into text stay JSON.
        assert_eq!(
            render_str("c={{ o.cfg }}", &s).unwrap(),
            json!("c={\"k\":1}")
        );
    }

    #[test]
    fn filter_errors_name_the_filter() {
        let e = references("{{ o.tok | strip }}").unwrap_err();
        assert_eq!(e, TemplateError::UnknownFilter("strip".into()));
        assert!(e.to_string().contains("unknown filter `strip`"), "{e}");
        assert!(e.to_string().contains("trim, join, json"), "{e}");
        assert!(matches!(
            references("{{ o.tok | trim(\"x\") }}"),
            Err(TemplateError::Filter(..))
        ));
        assert!(matches!(
            references("{{ o.tok | join(,) }}"),
            Err(TemplateError::Filter(..))
        ));
        assert!(matches!(
            references("{{ o.tok | }}"),
            Err(TemplateError::Filter(..))
        ));
        let r = references("{{ a.b | trim | join(\" \") }}").unwrap();
        assert_eq!(r[0].text, "a.b");
        assert_eq!(r[0].filters.len(), 2);
    }

    #[test]
    fn conditions() {
        let s = scope();
        assert!(truthy("{{ steps.build.status }} == passed", &s).unwrap());
        assert!(!truthy("{{ steps.build.status }} != 'passed'", &s).unwrap());
        assert!(!truthy("{{ params.flag }}", &s).unwrap());
        assert!(truthy("{{ params.count }}", &s).unwrap());
    }
}
