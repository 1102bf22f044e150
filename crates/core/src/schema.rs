//! Validation of task parameters against a method's JSON schema, done on the
//! server before a task is dispatched so bad input never reaches an agent.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// One reason parameters were refused, naming the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer into the request, such as `/parameters/command`.
    pub field: String,
    pub message: String,
}

/// Checks `params` against `schema`; every violation is reported, each with
/// the JSON pointer of the offending field under `prefix`.
pub fn validate(schema: &Value, params: &Value, prefix: &str) -> Result<(), Vec<FieldError>> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![FieldError {
                field: prefix.to_string(),
                message: format!("the method's schema is invalid: {e}"),
            }])
        }
    };
    let errors: Vec<FieldError> = validator
        .iter_errors(params)
        .flat_map(|e| in_words(&e, params, prefix))
        .fold(Vec::new(), |mut all, e| {
            if !all.contains(&e) {
                all.push(e);
            }
            all
        });
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// One jsonschema error as field errors in words: the field named, the
/// problem said ("unknown parameter `ms`", not "False schema does not
/// allow 0"). An unexpected-properties error becomes one error per name.
fn in_words(e: &jsonschema::ValidationError, params: &Value, prefix: &str) -> Vec<FieldError> {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    let path = e.instance_path.to_string();
    let at = |name: &str| FieldError {
        field: format!("{prefix}{path}/{name}"),
        message: String::new(),
    };
    // The parameter's name below the parameters, as a user wrote it.
    let name = path.trim_start_matches('/').to_string();
    let field = format!("{prefix}{path}");
    let said = |problem: String| {
        if name.is_empty() {
            vec![FieldError {
                field: field.clone(),
                message: format!("the parameters: {problem}"),
            }]
        } else {
            vec![FieldError {
                field: field.clone(),
                message: format!("parameter `{name}`: {problem}"),
            }]
        }
    };
    let joined = |sub: &str| {
        if name.is_empty() {
            sub.to_string()
        } else {
            format!("{name}/{sub}")
        }
    };
    match &e.kind {
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
            unexpected
                .iter()
                .map(|u| FieldError {
                    message: format!("unknown parameter `{}`", joined(u)),
                    ..at(u)
                })
                .collect()
        }
        // `additionalProperties: false` without `properties` says no
        // property at all is allowed: every one given is unknown.
        // jsonschema reports it on the object, with the property's value as
        // the instance: the keys holding that value are the unknown ones.
        K::FalseSchema => match params.pointer(&path) {
            Some(parent @ Value::Object(map)) if *e.instance != *parent => map
                .iter()
                .filter(|(_, v)| **v == *e.instance)
                .map(|(k, _)| FieldError {
                    message: format!("unknown parameter `{}`", joined(k)),
                    ..at(k)
                })
                .collect(),
            _ => said("not allowed here".to_string()),
        },
        K::Required { property } => {
            let p = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            vec![FieldError {
                message: format!("missing parameter `{}`", joined(&p)),
                ..at(&p)
            }]
        }
        K::Type { kind } => {
            let wanted: Vec<String> = match kind {
                TypeKind::Single(t) => vec![t.to_string()],
                TypeKind::Multiple(ts) => ts.into_iter().map(|t| t.to_string()).collect(),
            };
            let wanted: Vec<String> = wanted.iter().map(|t| a_kind(t)).collect();
            let got = match &*e.instance {
                Value::Number(n) if n.is_f64() => "a number".to_string(),
                Value::Number(_) => "an integer".to_string(),
                other => {
                    a_kind(&jsonschema::primitive_type::PrimitiveType::from(other).to_string())
                }
            };
            said(format!("expected {}, got {got}", wanted.join(" or ")))
        }
        _ => said(e.to_string()),
    }
}

/// "an integer", "a string": a JSON type with its article.
fn a_kind(t: &str) -> String {
    match t {
        "integer" | "object" | "array" => format!("an {t}"),
        "null" => t.to_string(),
        _ => format!("a {t}"),
    }
}

/// Checks that a schema itself is a valid JSON schema (for exec plugins,
/// whose schemas come from outside).
pub fn check_schema(schema: &Value) -> Result<(), String> {
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["command"],
            "properties": {
                "command": {"type": "string", "minLength": 1},
                "timeout": {"type": "integer", "minimum": 1}
            },
            "additionalProperties": false
        })
    }

    #[test]
    fn accepts_valid_parameters() {
        assert!(validate(&schema(), &json!({"command": "ls"}), "/parameters").is_ok());
    }

    #[test]
    fn names_the_missing_field() {
        let errs = validate(&schema(), &json!({}), "/parameters").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "/parameters/command");
    }

    #[test]
    fn reports_every_problem() {
        let errs = validate(
            &schema(),
            &json!({"command": 3, "timeout": 0, "bogus": true}),
            "/parameters",
        )
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"/parameters/command"), "{fields:?}");
        assert!(fields.contains(&"/parameters/timeout"), "{fields:?}");
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn errors_are_said_in_words_naming_the_field() {
        let one = |schema: &Value, params: Value| {
            let errs = validate(schema, &params, "/parameters").unwrap_err();
            assert_eq!(errs.len(), 1, "{errs:?}");
            (errs[0].field.clone(), errs[0].message.clone())
        };
        let bare = json!({"type": "object", "additionalProperties": false});
        assert_eq!(
            one(&bare, json!({"ms": 0})),
            ("/parameters/ms".into(), "unknown parameter `ms`".into())
        );
        assert_eq!(
            one(&schema(), json!({"command": "ls", "bogus": 1})),
            (
                "/parameters/bogus".into(),
                "unknown parameter `bogus`".into()
            )
        );
        assert_eq!(
            one(&schema(), json!({})),
            (
                "/parameters/command".into(),
                "missing parameter `command`".into()
            )
        );
        assert_eq!(
            one(&schema(), json!({"command": "ls", "timeout": "5"})),
            (
                "/parameters/timeout".into(),
                "parameter `timeout`: expected an integer, got a string".into()
            )
        );
    }
}
