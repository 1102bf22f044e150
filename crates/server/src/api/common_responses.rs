//! Answers that do not come from a handler but from what stands in front of
//! every handler — the path guard, the query and body extractors, the body
//! size limit, the token and role checks — documented once here for every operation
//! they apply to, so the OpenAPI document says what the server really does
//! (`scripts/schemathesis` holds the server to it).

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

use super::guard::MAX_PATH;

/// What [`super::guard::check_path`] lets through, for a single segment: no
/// `/`, `\` or control character (Unicode Cc), and not `.` or `..`.
pub const PATH_SEGMENT_PATTERN: &str = r"^(?!\.\.?$)[^/\\\u0000-\u001F\u007F-\u009F]+$";

/// Adds the responses and parameter constraints every operation shares.
pub fn document(api: &mut OpenApi) {
    for item in api.paths.paths.values_mut() {
        let ops = [
            (&mut item.get, false),
            (&mut item.put, true),
            (&mut item.post, true),
            (&mut item.delete, true),
            (&mut item.patch, true),
            (&mut item.head, false),
            (&mut item.options, false),
        ];
        for (op, changes) in ops {
            if let Some(op) = op.as_mut() {
                document_operation(op, changes);
            }
        }
    }
}

fn document_operation(op: &mut Operation, changes: bool) {
    let mut path_params = false;
    let mut query_params = false;
    for p in op.parameters.iter_mut().flatten() {
        match p.parameter_in {
            ParameterIn::Path => {
                path_params = true;
                if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
                    if o.schema_type == SchemaType::Type(Type::String) && o.pattern.is_none() {
                        o.pattern = Some(PATH_SEGMENT_PATTERN.to_string());
                    }
                }
            }
            ParameterIn::Query => query_params = true,
            _ => {}
        }
    }
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let body_types: Vec<String> = op
        .request_body
        .as_ref()
        .map(|b| b.content.keys().cloned().collect())
        .unwrap_or_default();
    let json_body = body_types.iter().any(|t| t.starts_with("application/json"));

    if path_params {
        add(
            op,
            "400",
            "a path segment contains `/`, `\\` or a control character, or is `.` or `..`",
        );
        add(
            op,
            "414",
            &format!("request path longer than {MAX_PATH} bytes"),
        );
    }
    if query_params {
        add(op, "400", "a query parameter has the wrong type");
    }
    if !body_types.is_empty() {
        add(op, "413", "request body larger than the server's limit");
    }
    if json_body {
        add(op, "400", "malformed JSON");
        add(
            op,
            "415",
            "the body is not sent as `Content-Type: application/json`",
        );
        add(
            op,
            "422",
            "a field is missing, unknown or has the wrong type",
        );
    }
    // Every operation that needs a token answers 401 without one (`testbed
    // api check --check-auth` holds the server to it).
    if secured {
        add(op, "401", "no token, or an invalid or expired one");
    }
    // A viewer may read but not change; an operator changes only their own
    // runs, tasks and plans. Any signed-in user may manage their own session.
    if secured && changes && !op_is_own_session(op) {
        add(
            op,
            "403",
            "the caller's role or ownership does not allow this",
        );
    }
}

/// `/api/auth/*` operations act on the caller's own session only.
fn op_is_own_session(op: &Operation) -> bool {
    op.tags
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| t == "auth"))
}

/// Adds an `{"error"}` response unless the handler documents its own.
fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        });
}
