//! Typed method parameters: a method's JSON schema is derived from its
//! parameter struct and its parameters are parsed by serde into the same
//! struct, so the schema the server checks and the parsing the plugin does
//! cannot disagree.
//!
//! Errors name the field and say the problem in words ("unknown parameter
//! `ms`", "parameter `ms`: expected a non-negative integer, got a string"),
//! whatever serde's own message was.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use testbed_core::agent::{MethodSpec, PluginSpec};

use super::PluginError;

/// The spec of a method whose parameters are `P`: its schema is `P`'s
/// (draft 2020-12, subschemas inline, absent fields absent — not `null`).
pub fn method<P: JsonSchema>(name: &str, description: &str) -> MethodSpec {
    MethodSpec {
        name: name.to_string(),
        description: description.to_string(),
        schema: schema_of::<P>(),
    }
}

/// `P`'s JSON schema, as [`method`] announces it.
pub fn schema_of<P: JsonSchema>() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    // One self-contained schema reads better in `/v2.1/slaves` and in docs
    // than `$ref`s into `$defs`.
    settings.inline_subschemas = true;
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<P>()
        .to_value();
    if let Value::Object(map) = &mut schema {
        // The struct's Rust name means nothing to a user.
        map.remove("title");
    }
    drop_null(&mut schema);
    schema
}

/// `Option<T>` fields come out as "T or null"; a parameter is either given
/// or left out, as the hand-written schemas always said.
fn drop_null(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                if types.len() > 1 {
                    types.retain(|t| t != "null");
                    if types.len() == 1 {
                        let only = types.remove(0);
                        map.insert("type".into(), only);
                    }
                }
            }
            if let Some(Value::Array(any)) = map.get("anyOf") {
                let non_null: Vec<&Value> = any
                    .iter()
                    .filter(|s| s.get("type") != Some(&Value::from("null")))
                    .collect();
                if non_null.len() == 1 && any.len() == 2 {
                    let keep = non_null[0].clone();
                    map.remove("anyOf");
                    if let Value::Object(inner) = keep {
                        for (k, val) in inner {
                            map.entry(k).or_insert(val);
                        }
                    }
                }
            }
            map.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// The parameters of a plugin with one method: parsed into `P` (as
/// [`parse_params`]) when `method` is the one `spec` announces, so that the
/// name is written once, in the spec; the unknown-method answer otherwise.
pub fn parse_only<P: DeserializeOwned>(
    spec: &PluginSpec,
    method: &str,
    params: Value,
) -> Result<P, PluginError> {
    match spec.methods.as_slice() {
        [only] if only.name == method => parse_params(params),
        _ => Err(PluginError::unknown_method(method, spec)),
    }
}

/// Parses a method's parameters into `P`. `null` stands for "no
/// parameters". The error names the field, as a `/`-separated path below
/// the parameters (`env/A`, `args/1`), or `parameters` for the whole.
pub fn parse_params<P: DeserializeOwned>(params: Value) -> Result<P, PluginError> {
    let params = match params {
        Value::Null => Value::Object(Map::new()),
        other => other,
    };
    let root_kind = type_name(&params);
    serde_path_to_error::deserialize(params).map_err(|e: serde_path_to_error::Error<_>| {
        let path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        from_serde(&path, &e.inner().to_string(), root_kind)
    })
}

/// Words for one serde error at `path`.
fn from_serde(path: &[String], message: &str, root_kind: &str) -> PluginError {
    let join = |name: Option<&str>| {
        let mut parts: Vec<&str> = path.iter().map(String::as_str).collect();
        if let Some(n) = name {
            if parts.last() != Some(&n) {
                parts.push(n);
            }
        }
        parts.join("/")
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let known = rest
            .split_once("expected ")
            .map(|(_, k)| k.replace("one of ", "").replace('`', ""))
            .unwrap_or_default();
        return PluginError::unknown_param(join(Some(name)), &known);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        return PluginError::missing_param(join(Some(name)));
    }
    let field = join(None);
    if field.is_empty() {
        return PluginError::InvalidParams {
            field: "parameters".into(),
            message: format!("the parameters must be an object, got {root_kind}"),
        };
    }
    let words = if let Some(rest) = message.strip_prefix("invalid type: ") {
        match rest.split_once(", expected ") {
            Some((got, expected)) => {
                format!(
                    "expected {}, got {}",
                    expected_words(expected),
                    got_words(got)
                )
            }
            None => rest.to_string(),
        }
    } else if let Some(rest) = message.strip_prefix("invalid value: ") {
        match rest.split_once(", expected ") {
            Some((got, expected)) => format!(
                "expected {}, got {}",
                expected_words(expected),
                got.split('`').nth(1).unwrap_or(got)
            ),
            None => rest.to_string(),
        }
    } else {
        message.to_string()
    };
    PluginError::invalid(field, words)
}

/// serde's name of what it wanted, in JSON terms.
fn expected_words(expected: &str) -> String {
    let e = expected.trim();
    match e {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a map" => "an object".into(),
        "a sequence" => "an array".into(),
        "a boolean" | "a string" => e.into(),
        _ if e.starts_with("struct ") || e.starts_with("a map") => "an object".into(),
        _ => e.into(),
    }
}

/// serde's description of what it got (`string "x"`, `integer `5``).
fn got_words(got: &str) -> String {
    let kind = got.split([' ', '`']).next().unwrap_or(got);
    match kind {
        "string" => "a string".into(),
        "integer" | "floating" => format!(
            "{} ({})",
            if kind == "integer" {
                "an integer"
            } else {
                "a number"
            },
            got.split('`').nth(1).unwrap_or("?")
        ),
        "boolean" => "a boolean".into(),
        "map" => "an object".into(),
        "sequence" => "an array".into(),
        "unit" | "null" => "null".into(),
        _ => got.into(),
    }
}

/// A JSON value's kind, for messages: "a string", "an object".
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// Waits.
    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Sleep {
        /// Milliseconds.
        ms: u64,
        note: Option<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    }

    fn err(params: Value) -> String {
        parse_params::<Sleep>(params).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field_in_words() {
        assert_eq!(
            err(json!({"ms": 1, "mss": 2})),
            "unknown parameter `mss` (this method takes: ms, note, env)"
        );
        assert_eq!(err(json!({})), "missing parameter `ms`");
        assert_eq!(
            err(json!({"ms": "5"})),
            "parameter `ms`: expected a non-negative integer, got a string"
        );
        assert_eq!(
            err(json!({"ms": -1})),
            "parameter `ms`: expected a non-negative integer, got -1"
        );
        assert_eq!(
            err(json!({"ms": 1, "env": {"A": 1}})),
            "parameter `env/A`: expected a string, got an integer (1)"
        );
        assert_eq!(
            err(json!("ls")),
            "the parameters must be an object, got a string"
        );
        let p: Sleep = parse_params(json!({"ms": 3})).unwrap();
        assert_eq!((p.ms, p.note, p.env.len()), (3, None, 0));
    }

    #[test]
    fn the_schema_is_derived_and_says_what_the_struct_says() {
        let s = schema_of::<Sleep>();
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], json!(["ms"]));
        assert_eq!(s["properties"]["ms"]["description"], "Milliseconds.");
        assert_eq!(s["properties"]["note"]["type"], "string");
        assert!(s.get("title").is_none());
        testbed_core::schema::check_schema(&s).unwrap();
    }
}
