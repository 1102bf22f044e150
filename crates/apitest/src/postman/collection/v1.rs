//! Postman collection v1 (the format before v2: a flat `requests` list placed
//! by `order`, `folders` and `folders_order`), converted at load into the
//! v2.0 document the loader reads, the way Newman converts it
//! (postman-collection-transformer): folders first, in `folders_order` (or as
//! listed), each with its subfolders (`folders_order`) then its requests
//! (`order`); then the top-level requests in `order`. A request no order
//! lists is not run, as in Newman. Problems name the v1 field.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::super::locate;
use super::kind;
use crate::problem::Problem;

/// A v1 collection: no `info`, and `requests` or `order` at the top.
pub(super) fn is_v1(root: &Map<String, Value>) -> bool {
    !root.contains_key("info") && (root.contains_key("requests") || root.contains_key("order"))
}

const V20: &str = "https://schema.getpostman.com/json/collection/v2.0.0/collection.json";

/// The v2.0 document of a v1 collection, or every problem found.
pub(super) fn convert(root: &Map<String, Value>) -> Result<Value, Vec<Problem>> {
    let mut c = Converter {
        problems: Vec::new(),
        requests: HashMap::new(),
        folders: HashMap::new(),
    };
    let out = c.collection(root);
    if c.problems.is_empty() {
        Ok(out)
    } else {
        Err(c.problems)
    }
}

struct Converter<'a> {
    problems: Vec<Problem>,
    /// Requests by id, with their path.
    requests: HashMap<String, (&'a Map<String, Value>, String)>,
    folders: HashMap<String, (&'a Map<String, Value>, String)>,
}

/// An id as text: exports write them as strings, hand-written files at times
/// as numbers.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl<'a> Converter<'a> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn list(&mut self, o: &'a Map<String, Value>, field: &str, path: &str) -> &'a [Value] {
        match o.get(field) {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.err(
                    &locate::key(path, field),
                    format!("expected an array, found {}", kind(other)),
                );
                &[]
            }
        }
    }

    fn text(&mut self, o: &Map<String, Value>, field: &str, path: &str) -> Option<String> {
        match o.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
            Some(other) => {
                self.err(
                    &locate::key(path, field),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// The ids of an `order`/`folders_order` list.
    fn ids(&mut self, o: &'a Map<String, Value>, field: &str, path: &str) -> Vec<String> {
        let lp = locate::key(path, field);
        let mut out = Vec::new();
        for (i, v) in self.list(o, field, path).iter().enumerate() {
            match id_text(v) {
                Some(id) if !out.contains(&id) => out.push(id),
                Some(_) => {}
                None => self.err(
                    &locate::index(&lp, i),
                    format!("expected a request or folder id, found {}", kind(v)),
                ),
            }
        }
        out
    }

    fn collection(&mut self, root: &'a Map<String, Value>) -> Value {
        for (field, into_requests) in [("requests", true), ("folders", false)] {
            let lp = locate::key("$", field);
            for (i, v) in self.list(root, field, "$").iter().enumerate() {
                let p = locate::index(&lp, i);
                let Value::Object(o) = v else {
                    self.err(&p, format!("expected an object, found {}", kind(v)));
                    continue;
                };
                let Some(id) = o.get("id").and_then(id_text) else {
                    self.err(&p, "has no \"id\": orders name requests and folders by id");
                    continue;
                };
                if into_requests {
                    self.requests.insert(id, (o, p));
                } else {
                    self.folders.insert(id, (o, p));
                }
            }
        }
        let mut items = Vec::new();
        let folder_ids = if root.contains_key("folders_order") {
            self.ids(root, "folders_order", "$")
        } else {
            self.list(root, "folders", "$")
                .iter()
                .filter_map(|f| f.get("id").and_then(id_text))
                .collect()
        };
        // Subfolders are listed by their parent, not at the top.
        let nested: Vec<String> = self
            .folders
            .values()
            .flat_map(|(f, _)| f.get("folders_order").and_then(Value::as_array))
            .flatten()
            .filter_map(id_text)
            .collect();
        for id in folder_ids.iter().filter(|id| !nested.contains(id)) {
            if let Some(folder) = self.folder(id, 0) {
                items.push(folder);
            }
        }
        for id in self.ids(root, "order", "$") {
            if let Some((r, p)) = self.requests.get(&id).cloned() {
                items.push(self.request(r, &p));
            }
        }
        let mut out = json!({
            "info": {
                "name": self.text(root, "name", "$").unwrap_or_default(),
                "schema": V20,
            },
            "item": items,
        });
        if let Some(id) = root.get("id").and_then(id_text) {
            out["info"]["_postman_id"] = json!(id);
        }
        self.common(root, "$", &mut out);
        if let Some(v) = root.get("variables").filter(|v| !v.is_null()) {
            out["variable"] = v.clone();
        }
        out
    }

    /// Auth and scripts, which collections, folders and requests all have.
    fn common(&mut self, o: &'a Map<String, Value>, path: &str, out: &mut Value) {
        if let Some(events) = self.events(o, path) {
            out["event"] = events;
        }
        if let Some(auth) = self.auth(o, path) {
            out["auth"] = auth;
        }
    }

    fn folder(&mut self, id: &str, depth: usize) -> Option<Value> {
        let (f, p) = self.folders.get(id).cloned()?;
        if depth > 64 {
            self.err(&p, "folders_order nests this folder in itself");
            return None;
        }
        let mut items = Vec::new();
        for sub in self.ids(f, "folders_order", &p) {
            if let Some(v) = self.folder(&sub, depth + 1) {
                items.push(v);
            }
        }
        for rid in self.ids(f, "order", &p) {
            if let Some((r, rp)) = self.requests.get(&rid).cloned() {
                items.push(self.request(r, &rp));
            }
        }
        let mut out = json!({
            "name": self.text(f, "name", &p).unwrap_or_default(),
            "item": items,
        });
        self.common(f, &p, &mut out);
        Some(out)
    }

    /// `events` when the export has them, else the `tests` and
    /// `preRequestScript` texts.
    fn events(&mut self, o: &'a Map<String, Value>, path: &str) -> Option<Value> {
        let events = self.list(o, "events", path);
        if !events.is_empty() {
            let mut out = Vec::new();
            for e in events {
                let mut e = e.clone();
                if let Value::Object(m) = &mut e {
                    m.entry("listen").or_insert(json!("test"));
                    if let Some(Value::Object(s)) = m.get_mut("script") {
                        if let Some(Value::String(exec)) = s.get("exec").cloned() {
                            s.insert("exec".into(), json!(exec.split('\n').collect::<Vec<_>>()));
                        }
                    }
                }
                out.push(e);
            }
            return Some(Value::Array(out));
        }
        let mut out = Vec::new();
        for (field, listen) in [("tests", "test"), ("preRequestScript", "prerequest")] {
            let exec = match o.get(field) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) if s.is_empty() => continue,
                Some(Value::String(s)) => json!(s.split('\n').collect::<Vec<_>>()),
                Some(lines @ Value::Array(_)) => lines.clone(),
                Some(other) => {
                    self.err(
                        &locate::key(path, field),
                        format!("expected the script's text, found {}", kind(other)),
                    );
                    continue;
                }
            };
            out.push(
                json!({"listen": listen, "script": {"type": "text/javascript", "exec": exec}}),
            );
        }
        (!out.is_empty()).then_some(Value::Array(out))
    }

    /// `auth` as v2 writes it, or the legacy `currentHelper` with its
    /// `helperAttributes`, in v2.0's object form.
    fn auth(&mut self, o: &'a Map<String, Value>, path: &str) -> Option<Value> {
        if let Some(a) = o.get("auth").filter(|a| !a.is_null()) {
            return Some(a.clone());
        }
        let helper = self.text(o, "currentHelper", path)?;
        let attrs = match o.get("helperAttributes") {
            Some(Value::Object(m)) => m.clone(),
            Some(Value::String(s)) => match serde_json::from_str(s) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            },
            _ => Map::new(),
        };
        // The v1 helper, the v2 type, and each v1 attribute's v2 name.
        let (ty, names): (&str, &[(&str, &str)]) = match helper.as_str() {
            "normal" | "" => return None,
            "basicAuth" => (
                "basic",
                &[("username", "username"), ("password", "password")],
            ),
            "bearerAuth" => ("bearer", &[("token", "token")]),
            "digestAuth" => (
                "digest",
                &[
                    ("username", "username"),
                    ("password", "password"),
                    ("realm", "realm"),
                    ("nonce", "nonce"),
                    ("nonceCount", "nonceCount"),
                    ("clientNonce", "clientNonce"),
                    ("opaque", "opaque"),
                    ("qop", "qop"),
                    ("algorithm", "algorithm"),
                ],
            ),
            "oAuth1" => (
                "oauth1",
                &[
                    ("consumerKey", "consumerKey"),
                    ("consumerSecret", "consumerSecret"),
                    ("token", "token"),
                    ("tokenSecret", "tokenSecret"),
                    ("signatureMethod", "signatureMethod"),
                    ("timestamp", "timestamp"),
                    ("nonce", "nonce"),
                    ("version", "version"),
                    ("realm", "realm"),
                    ("header", "addParamsToHeader"),
                    ("includeEmpty", "addEmptyParamsToSign"),
                ],
            ),
            "hawkAuth" => (
                "hawk",
                &[
                    ("hawk_id", "authId"),
                    ("hawk_key", "authKey"),
                    ("algorithm", "algorithm"),
                    ("user", "user"),
                    ("nonce", "nonce"),
                    ("ext", "extraData"),
                    ("app", "app"),
                    ("dlg", "delegation"),
                    ("timestamp", "timestamp"),
                ],
            ),
            "awsSigV4" => (
                "awsv4",
                &[
                    ("accessKey", "accessKey"),
                    ("secretKey", "secretKey"),
                    ("region", "region"),
                    ("service", "service"),
                ],
            ),
            other => {
                self.err(
                    &locate::key(path, "currentHelper"),
                    format!(
                        "unknown v1 auth helper {other:?} (basicAuth, bearerAuth, digestAuth, \
                         oAuth1, hawkAuth, awsSigV4 or normal)"
                    ),
                );
                return None;
            }
        };
        let mut params = Map::new();
        for (from, to) in names {
            if let Some(v) = attrs.get(*from).filter(|v| !v.is_null()) {
                params.insert((*to).to_string(), v.clone());
            }
        }
        Some(json!({"type": ty, ty: params}))
    }

    fn request(&mut self, r: &'a Map<String, Value>, path: &str) -> Value {
        let url = match r.get("url") {
            Some(Value::String(u)) => u.clone(),
            None | Some(Value::Null) => {
                self.err(path, "request has no \"url\"");
                String::new()
            }
            Some(other) => {
                self.err(
                    &locate::key(path, "url"),
                    format!("expected the URL's text, found {}", kind(other)),
                );
                String::new()
            }
        };
        let mut variables = Vec::new();
        let vp = locate::key(path, "pathVariableData");
        for (i, v) in self.list(r, "pathVariableData", path).iter().enumerate() {
            match v {
                Value::Object(_) => variables.push(v.clone()),
                other => self.err(
                    &locate::index(&vp, i),
                    format!("expected an object, found {}", kind(other)),
                ),
            }
        }
        match r.get("pathVariables") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    if !variables.iter().any(|x| x.get("key") == Some(&json!(k))) {
                        variables.push(json!({"key": k, "value": v}));
                    }
                }
            }
            Some(other) => self.err(
                &locate::key(path, "pathVariables"),
                format!("expected an object, found {}", kind(other)),
            ),
        }
        let url = if variables.is_empty() {
            json!(url)
        } else {
            json!({"raw": url, "variable": variables})
        };
        let mut request = json!({
            "url": url,
            "method": self.text(r, "method", path).unwrap_or_else(|| "GET".into()),
            "header": self.headers(r, path),
        });
        if let Some(body) = self.body(r, path) {
            request["body"] = body;
        }
        if let Some(d) = self.text(r, "description", path) {
            request["description"] = json!(d);
        }
        if let Some(auth) = self.auth(r, path) {
            request["auth"] = auth;
        }
        let mut item = json!({
            "name": self.text(r, "name", path).unwrap_or_default(),
            "request": request,
        });
        if let Some(events) = self.events(r, path) {
            item["event"] = events;
        }
        item
    }

    /// `headerData` (a `//` before the name or `enabled: false` disables
    /// one), then the `headers` text for the names it did not have.
    fn headers(&mut self, r: &'a Map<String, Value>, path: &str) -> Value {
        if let Some(Value::Array(list)) = r.get("headers") {
            return Value::Array(list.clone());
        }
        let mut out: Vec<Value> = Vec::new();
        let hp = locate::key(path, "headerData");
        for (i, h) in self.list(r, "headerData", path).iter().enumerate() {
            let Value::Object(h) = h else {
                self.err(
                    &locate::index(&hp, i),
                    format!("expected an object, found {}", kind(h)),
                );
                continue;
            };
            let key = h.get("key").and_then(Value::as_str).unwrap_or("");
            let commented = key.starts_with("//");
            out.push(json!({
                "key": key.trim_start_matches("//").trim(),
                "value": h.get("value").cloned().unwrap_or(json!("")),
                "disabled": commented || h.get("enabled") == Some(&json!(false)),
            }));
        }
        match r.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::String(block)) => {
                for line in block.lines() {
                    let Some((k, v)) = line.split_once(':') else {
                        continue;
                    };
                    let disabled = k.trim_start().starts_with("//");
                    let k = k.trim().trim_start_matches("//").trim();
                    if k.is_empty() || out.iter().any(|h| h["key"] == json!(k)) {
                        continue;
                    }
                    out.push(json!({"key": k, "value": v.trim(), "disabled": disabled}));
                }
            }
            Some(other) => self.err(
                &locate::key(path, "headers"),
                format!("expected the headers' text, found {}", kind(other)),
            ),
        }
        Value::Array(out)
    }

    /// The body from `dataMode` with `data` (a key/value list) or
    /// `rawModeData` (the text).
    fn body(&mut self, r: &'a Map<String, Value>, path: &str) -> Option<Value> {
        let raw_text = match r.get("rawModeData") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(a)) if a.len() == 1 => a[0].as_str().map(str::to_string),
            _ => None,
        };
        let data = r.get("data").filter(|d| !d.is_null());
        let mode = match self.text(r, "dataMode", path).as_deref() {
            Some("raw") => "raw",
            Some("urlencoded") => "urlencoded",
            Some("params") => "formdata",
            Some("binary") => "file",
            Some("graphql") => {
                return Some(
                    json!({"mode": "graphql", "graphql": r.get("graphqlModeData").cloned().unwrap_or(json!({}))}),
                );
            }
            Some(other) => {
                self.err(
                    &locate::key(path, "dataMode"),
                    format!(
                        "unknown body mode {other:?} (raw, urlencoded, params, binary or graphql)"
                    ),
                );
                return None;
            }
            None if data.is_none() && raw_text.is_none() => return None,
            None if raw_text.is_none() && data.is_some_and(Value::is_array) => "formdata",
            None => "raw",
        };
        let mut body = json!({"mode": mode});
        match mode {
            "raw" => {
                body["raw"] = json!(raw_text
                    .or_else(|| data.and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_default());
            }
            "file" => body["file"] = json!({"src": raw_text}),
            _ => {
                let dp = locate::key(path, "data");
                let mut fields = Vec::new();
                let list = match data {
                    None => &[][..],
                    Some(Value::Array(a)) => a.as_slice(),
                    Some(other) => {
                        self.err(&dp, format!("expected an array, found {}", kind(other)));
                        &[][..]
                    }
                };
                for (i, f) in list.iter().enumerate() {
                    let Value::Object(f) = f else {
                        self.err(
                            &locate::index(&dp, i),
                            format!("expected an object, found {}", kind(f)),
                        );
                        continue;
                    };
                    if f.get("key").is_none_or(|k| k.is_null() || k == "") {
                        continue;
                    }
                    let mut field = f.clone();
                    if f.get("enabled") == Some(&json!(false)) {
                        field.insert("disabled".into(), json!(true));
                    }
                    field.remove("enabled");
                    if f.get("type") == Some(&json!("file")) {
                        if let Some(v) = field.remove("value") {
                            field.insert("src".into(), v);
                        }
                    }
                    fields.push(Value::Object(field));
                }
                body[mode] = Value::Array(fields);
            }
        }
        if r.get("dataDisabled") == Some(&json!(true)) {
            body["disabled"] = json!(true);
        }
        Some(body)
    }
}
