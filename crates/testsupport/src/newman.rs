//! The Newman fixtures of `crates/apitest/tests/fixtures/newman/`
//! (provenance in its README), pointed at the [`crate::echo`] server.

use std::path::PathBuf;

use serde_json::{json, Value};

/// The fixture `name` (`""`: the fixtures' directory).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../apitest/tests/fixtures/newman")
        .join(name)
}

/// A fixture's text with postman-echo.com pointed at the echo server at
/// `base` (record.js does the same for Newman): in URL texts, and in URL
/// objects whose `host` parts are `["postman-echo", "com"]`.
pub fn localized(name: &str, base: &str) -> String {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    let host = base.trim_start_matches("http://");
    let text = text
        .replace("https://postman-echo.com", base)
        .replace("http://postman-echo.com", base)
        .replace("postman-echo.com", host);
    let Ok(mut doc) = serde_json::from_str::<Value>(&text) else {
        return text;
    };
    let (ip, port) = host.split_once(':').expect("host:port");
    fn walk(v: &mut Value, ip: &str, port: &str) {
        match v {
            Value::Object(o) => {
                if o.get("host") == Some(&json!(["postman-echo", "com"])) {
                    o.insert("host".into(), json!(ip.split('.').collect::<Vec<_>>()));
                    o.insert("port".into(), json!(port));
                    o.insert("protocol".into(), json!("http"));
                }
                o.values_mut().for_each(|v| walk(v, ip, port));
            }
            Value::Array(a) => a.iter_mut().for_each(|v| walk(v, ip, port)),
            _ => {}
        }
    }
    walk(&mut doc, ip, port);
    doc.to_string()
}
