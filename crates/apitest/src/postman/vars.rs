//! Variable scopes and `{{name}}` substitution, including Postman's dynamic
//! variables (`{{$guid}}`, `{{$timestamp}}`, `{{$randomInt}}`…).

use std::sync::OnceLock;

use rand::Rng;
use regex::Regex;
use serde_json::Value;

use super::locate;
use crate::problem::Problem;

/// One scope of variables (an environment, the globals, a collection's
/// variables…), in the order they were defined.
///
/// Values keep their JSON type: a script's `pm.environment.set("n", 5)` reads
/// back as a number in the next script, as in Postman.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vars {
    /// The environment's `name`, when the file had one.
    pub name: Option<String>,
    entries: Vec<(String, Value)>,
}

impl Vars {
    pub fn new() -> Self {
        Vars::default()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value as it is substituted into a request.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).map(value_text)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    pub fn unset(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `[[key, value], …]`, the form the script sandbox exchanges.
    pub(crate) fn to_pairs(&self) -> Value {
        Value::Array(
            self.entries
                .iter()
                .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), v.clone()]))
                .collect(),
        )
    }

    /// Reads back the form of [`Vars::to_pairs`]; anything else is ignored.
    pub(crate) fn from_pairs(name: Option<String>, pairs: &Value) -> Self {
        let mut vars = Vars {
            name,
            entries: Vec::new(),
        };
        for pair in pairs.as_array().into_iter().flatten() {
            if let Some([Value::String(k), v]) = pair.as_array().map(Vec::as_slice) {
                vars.set(k.clone(), v.clone());
            }
        }
        vars
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Vars {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let mut vars = Vars::new();
        for (k, v) in iter {
            vars.set(k, v);
        }
        vars
    }
}

/// How a value reads inside a URL, header or body.
pub(crate) fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Reads a Postman environment or globals file in every shape Postman and
/// Newman write:
/// - an environment or globals export, `{"name": …, "values": [{"key",
///   "value", "enabled", "type"}, …]}`;
/// - a bare list of `{"key", "value"}` entries (Newman's own globals fixtures
///   and `--export-globals` of old versions).
///
/// As in Newman, an entry with `"disabled": true` or `"enabled": false` is
/// left out, so a disabled duplicate never hides the enabled one; among
/// enabled duplicates the last wins. A `type` of `string`, `number` or
/// `boolean` converts the value as Postman's variable types do.
pub fn load_environment(text: &str) -> Result<Vars, Vec<Problem>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: Value = serde_json::from_str(text).map_err(|e| vec![super::syntax_problem(&e)])?;
    let mut problems = Vec::new();
    let mut vars = Vars::new();
    let wrong = |path: &str, expected: &str, found: &Value| {
        Problem::new(
            path,
            format!(
                "expected {expected}, found {}",
                super::collection::kind(found)
            ),
        )
    };
    let (values, values_path) = match &doc {
        Value::Array(values) => (Some(values), "$"),
        Value::Object(o) => {
            match o.get("name") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => vars.name = Some(s.clone()),
                Some(other) => problems.push(wrong("$.name", "a string", other)),
            }
            match o.get("values") {
                Some(Value::Array(values)) => (Some(values), "$.values"),
                Some(other) => {
                    problems.push(wrong("$.values", "an array", other));
                    (None, "")
                }
                None if o.contains_key("info") && o.contains_key("item") => {
                    problems.push(Problem::new(
                        "$",
                        "this is a collection, not an environment or globals file",
                    ));
                    (None, "")
                }
                None => {
                    problems.push(Problem::new(
                        "$",
                        "missing \"values\" (expected a Postman environment or globals export)",
                    ));
                    (None, "")
                }
            }
        }
        other => {
            problems.push(wrong(
                "$",
                "an object (an environment export) or an array of {key, value}",
                other,
            ));
            (None, "")
        }
    };
    for (i, v) in values.into_iter().flatten().enumerate() {
        let path = locate::index(values_path, i);
        if let Some(Some((key, value))) = environment_entry(v, &path, &mut problems) {
            vars.set(key, value);
        }
    }
    if problems.is_empty() {
        Ok(vars)
    } else {
        locate::Locator::new(text).locate(&mut problems);
        Err(problems)
    }
}

/// One entry of an environment's `values`: `None` when it has a problem
/// (added to `problems`), `Some(None)` when it is disabled.
fn environment_entry(
    v: &Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Option<(String, Value)>> {
    let wrong = |path: String, expected: &str, found: &Value| {
        Problem::new(
            path,
            format!(
                "expected {expected}, found {}",
                super::collection::kind(found)
            ),
        )
    };
    let Some(entry) = v.as_object() else {
        problems.push(wrong(path.to_string(), "an object", v));
        return None;
    };
    let key = match entry.get("key") {
        Some(Value::String(k)) => k.clone(),
        Some(other) => {
            problems.push(wrong(locate::key(path, "key"), "a string", other));
            return None;
        }
        None => {
            problems.push(Problem::new(path, "missing \"key\""));
            return None;
        }
    };
    let mut flag = |field: &str| match entry.get(field) {
        None | Some(Value::Null) => Some(None),
        Some(Value::Bool(b)) => Some(Some(*b)),
        Some(other) => {
            problems.push(wrong(locate::key(path, field), "true or false", other));
            None
        }
    };
    let enabled = flag("enabled")?;
    let disabled = flag("disabled")?;
    if enabled == Some(false) || disabled == Some(true) {
        return Some(None);
    }
    let value = entry.get("value").cloned().unwrap_or(Value::Null);
    let value = match entry.get("type").and_then(Value::as_str) {
        Some("string") => Value::String(value_text(&value)),
        Some("number") => match &value {
            Value::Number(_) => value,
            other => value_text(other)
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(other.clone(), Value::Number),
        },
        // JavaScript's Boolean(): any non-empty string is true.
        Some("boolean") => Value::Bool(match &value {
            Value::Bool(b) => *b,
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            _ => true,
        }),
        _ => value,
    };
    Some(Some((key, value)))
}

/// Every scope a request sees, by Postman's precedence: local > data >
/// environment > collection > global.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scopes {
    pub globals: Vars,
    pub collection: Vars,
    pub environment: Vars,
    pub data: Vars,
    pub local: Vars,
}

impl Scopes {
    pub(crate) fn lookup(&self, key: &str) -> Option<&Value> {
        self.local
            .get(key)
            .or_else(|| self.data.get(key))
            .or_else(|| self.environment.get(key))
            .or_else(|| self.collection.get(key))
            .or_else(|| self.globals.get(key))
    }
}

/// A text with its variables substituted, and the dynamic variables that are
/// not supported (left in place, like unknown variables, so they show).
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub text: String,
    pub unsupported: Vec<String>,
}

fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\{\{([^{}]+?)\}\}").unwrap_or_else(|_| unreachable!()))
}

/// Substitutes `{{name}}` from the scopes and `{{$dynamic}}` variables. A
/// value may itself hold `{{…}}`; that is substituted too, to a bounded depth
/// so that a variable referring to itself cannot loop.
pub(crate) fn resolve(text: &str, scopes: &Scopes) -> Resolved {
    let mut out = Resolved {
        text: text.to_string(),
        unsupported: Vec::new(),
    };
    for _ in 0..20 {
        if !out.text.contains("{{") {
            break;
        }
        let mut changed = false;
        let next = pattern()
            .replace_all(&out.text, |caps: &regex::Captures<'_>| {
                let whole = caps.get(0).map_or("", |m| m.as_str());
                let name = caps.get(1).map_or("", |m| m.as_str());
                if let Some(dynamic) = name.strip_prefix('$') {
                    if let Some(v) = dynamic_value(dynamic) {
                        changed = true;
                        return v;
                    }
                    if !out.unsupported.iter().any(|u| u == whole) {
                        out.unsupported.push(whole.to_string());
                    }
                    return whole.to_string();
                }
                match scopes.lookup(name) {
                    Some(v) => {
                        changed = true;
                        value_text(v)
                    }
                    None => whole.to_string(),
                }
            })
            .into_owned();
        out.text = next;
        if !changed {
            break;
        }
    }
    out
}

const FIRST_NAMES: [&str; 8] = [
    "Ada", "Alan", "Grace", "Linus", "Barbara", "Dennis", "Edsger", "Frances",
];
const LAST_NAMES: [&str; 8] = [
    "Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Ritchie", "Dijkstra", "Allen",
];
const WORDS: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];

/// The value of the dynamic variable `{{$name}}`, or `None` when it is not one
/// this engine knows (Postman has hundreds of faker-based ones).
pub(crate) fn dynamic_value(name: &str) -> Option<String> {
    let mut rng = rand::thread_rng();
    let pick = |list: &[&str], rng: &mut rand::rngs::ThreadRng| {
        list[rng.gen_range(0..list.len())].to_string()
    };
    Some(match name {
        "guid" | "randomUUID" => uuid::Uuid::new_v4().to_string(),
        "timestamp" => chrono::Utc::now().timestamp().to_string(),
        "isoTimestamp" => chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .to_string(),
        "randomInt" => rng.gen_range(0..=1000).to_string(),
        "randomBoolean" => rng.gen_bool(0.5).to_string(),
        "randomAlphaNumeric" => {
            let chars = b"abcdefghijklmnopqrstuvwxyz0123456789";
            char::from(chars[rng.gen_range(0..chars.len())]).to_string()
        }
        "randomHexColor" => format!("#{:06x}", rng.gen_range(0..0x0100_0000u32)),
        "randomIP" => format!(
            "{}.{}.{}.{}",
            rng.gen_range(1..=254),
            rng.gen_range(0..=255),
            rng.gen_range(0..=255),
            rng.gen_range(1..=254)
        ),
        "randomPort" => rng.gen_range(0..=65535).to_string(),
        "randomFirstName" => pick(&FIRST_NAMES, &mut rng),
        "randomLastName" => pick(&LAST_NAMES, &mut rng),
        "randomFullName" => format!(
            "{} {}",
            pick(&FIRST_NAMES, &mut rng),
            pick(&LAST_NAMES, &mut rng)
        ),
        "randomUserName" => format!(
            "{}.{}{}",
            pick(&FIRST_NAMES, &mut rng).to_lowercase(),
            pick(&LAST_NAMES, &mut rng).to_lowercase(),
            rng.gen_range(0..100)
        ),
        "randomEmail" | "randomExampleEmail" => format!(
            "{}.{}{}@example.com",
            pick(&FIRST_NAMES, &mut rng).to_lowercase(),
            pick(&LAST_NAMES, &mut rng).to_lowercase(),
            rng.gen_range(0..100)
        ),
        "randomWord" | "randomNoun" => pick(&WORDS, &mut rng),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_nesting_and_dynamic_variables() {
        let mut s = Scopes::default();
        s.globals.set("host", "global");
        s.collection.set("host", "collection");
        s.environment.set("host", "env");
        s.environment.set("base", "http://{{host}}");
        s.globals.set("n", 5);
        let r = resolve("{{base}}/{{n}}/{{missing}}", &s);
        assert_eq!(r.text, "http://env/5/{{missing}}");
        s.local.set("host", "local");
        assert_eq!(resolve("{{base}}", &s).text, "http://local");
        let r = resolve(
            "{{$guid}} {{$timestamp}} {{$randomInt}} {{$randomCity}}",
            &s,
        );
        let parts: Vec<&str> = r.text.split(' ').collect();
        assert_eq!(parts[0].len(), 36);
        assert!(parts[1].parse::<i64>().is_ok());
        assert!(parts[2].parse::<u32>().is_ok_and(|n| n <= 1000));
        assert_eq!(parts[3], "{{$randomCity}}");
        assert_eq!(r.unsupported, vec!["{{$randomCity}}".to_string()]);
        s.environment.set("self", "{{self}}");
        assert_eq!(resolve("{{self}}", &s).text, "{{self}}");
    }

    #[test]
    fn environment_files() {
        let v = load_environment(
            r#"{"name":"local","values":[{"key":"a","value":"1","enabled":true},{"key":"b","value":"2","enabled":false}]}"#,
        )
        .unwrap();
        assert_eq!(v.name.as_deref(), Some("local"));
        assert_eq!(v.get_str("a").as_deref(), Some("1"));
        assert!(!v.has("b"));
        // Newman's disabled-and-duplicates fixture: disabled entries are
        // ignored, even as a later duplicate; the last enabled duplicate wins.
        let v = load_environment(
            r#"{"values":[{"key":"justDisabled","value":"1","disabled":true},
                {"key":"oneDisabled","value":"1"},{"key":"oneDisabled","value":"2","disabled":true},
                {"key":"duplicate","value":"1","type":"text"},{"key":"duplicate","value":"2","type":"text"}]}"#,
        )
        .unwrap();
        assert!(!v.has("justDisabled"));
        assert_eq!(v.get_str("oneDisabled").as_deref(), Some("1"));
        assert_eq!(v.get_str("duplicate").as_deref(), Some("2"));
        // A bare list, as Newman's globals fixtures are, with typed values.
        let v = load_environment(
            r#"[{"key":"g","value":"x","type":"text","name":"g","enabled":true},
                {"key":"n","value":"42","type":"number"},{"key":"s","value":7,"type":"string"},
                {"key":"b","value":"false","type":"boolean"},{"key":"off","value":"1","enabled":false}]"#,
        )
        .unwrap();
        assert_eq!(v.name, None);
        assert_eq!(v.get("g"), Some(&Value::from("x")));
        assert_eq!(v.get("n"), Some(&serde_json::json!(42.0)));
        assert_eq!(v.get("s"), Some(&Value::from("7")));
        assert_eq!(v.get("b"), Some(&Value::Bool(true)));
        assert!(!v.has("off"));
        let e = load_environment(r#"[{"key":"a","disabled":"yes"}]"#).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "1:24: $[0].disabled: expected true or false, found a string"
        );
        let e = load_environment("{\n \"values\": [\n  {\"value\": 1},\n  {\"key\": 3}\n ]\n}")
            .unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].to_string(), "3:3: $.values[0]: missing \"key\"");
        assert_eq!(
            e[1].to_string(),
            "4:11: $.values[1].key: expected a string, found a number"
        );
    }
}
