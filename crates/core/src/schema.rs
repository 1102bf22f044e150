//! Validation of task parameters against a method's JSON schema, done on the
//! server before a task is dispatched so bad input never reaches an agent.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// One reason parameters were refused, naming the field.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
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
        .map(|e| {
            let path = e.instance_path.to_string();
            let mut field = format!("{prefix}{path}");
            // A missing required property is reported on its parent; name the
            // property itself, which is what a user needs to add.
            if let jsonschema::error::ValidationErrorKind::Required { property } = &e.kind {
                if let Some(p) = property.as_str() {
                    field = format!("{field}/{p}");
                }
            }
            FieldError {
                field,
                message: e.to_string(),
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
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
}
