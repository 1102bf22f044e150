//! The Postman collection v2.1 model, read from JSON with every structural
//! problem collected (not just the first, as a serde derive would stop at).

use serde_json::{Map, Value};

use super::locate::{self, Locator};
use crate::problem::Problem;

mod v1;

/// A Postman collection (format v2.0 or v2.1, or v1 converted at load).
///
/// The two formats differ in how auth parameters are written (v2.0: an object
/// `{"basic": {"username": …}}`; v2.1: a list `{"basic": [{"key", "value"}]}`);
/// both read into the same model, as Newman does.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    pub name: String,
    /// The format, from `info.schema`: `2.0` or `2.1`; `1.0` for a v1 collection.
    pub version: &'static str,
    pub postman_id: Option<String>,
    pub items: Vec<Item>,
    pub events: Vec<Event>,
    pub variables: Vec<Variable>,
    pub auth: Option<Auth>,
}

/// An entry of a collection or folder.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Folder(Folder),
    Request(Box<RequestItem>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    pub name: String,
    pub items: Vec<Item>,
    pub events: Vec<Event>,
    pub auth: Option<Auth>,
}

/// A request with its name and scripts.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestItem {
    pub name: String,
    pub request: Request,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Upper case; `GET` when the collection leaves it out.
    pub method: String,
    pub url: Url,
    pub headers: Vec<Header>,
    pub body: Option<Body>,
    /// `None` inherits from the folder or collection.
    pub auth: Option<Auth>,
    /// The request's description (legacy scripts read `request.description`).
    pub description: Option<String>,
}

/// A URL as Postman stores it: `raw`, and usually its parts too. When `host`
/// is there the parts win, as in Postman; otherwise `raw` is used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Url {
    pub raw: Option<String>,
    pub protocol: Option<String>,
    pub host: Option<Vec<String>>,
    pub port: Option<String>,
    pub path: Option<Vec<String>>,
    pub query: Vec<QueryParam>,
    pub hash: Option<String>,
    /// Values of the `:name` path variables.
    pub variables: Vec<Variable>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryParam {
    pub key: Option<String>,
    pub value: Option<String>,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub key: String,
    pub value: String,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub key: String,
    pub value: Value,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Raw {
        raw: String,
        /// `options.raw.language`: json, text, xml, html, javascript.
        language: Option<String>,
    },
    UrlEncoded(Vec<KeyValue>),
    FormData(Vec<FormField>),
    /// A file sent as the whole body.
    File {
        src: Option<String>,
    },
    GraphQl {
        query: String,
        /// The variables as the JSON text the user typed.
        variables: Option<String>,
    },
    /// A body marked `disabled`, or with no `mode`.
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FormField {
    pub key: String,
    pub value: FormValue,
    pub content_type: Option<String>,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FormValue {
    Text(String),
    /// The `src` paths of a file field (none when the file was never chosen).
    Files(Vec<String>),
}

/// Authentication of a collection, folder or request.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// Explicitly none: stops inheritance from the folder or collection.
    NoAuth,
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    ApiKey {
        key: String,
        value: String,
        in_query: bool,
    },
    /// digest, oauth1, oauth2 (token use), hawk, awsv4 or edgegrid, with Postman's parameter
    /// names (`send.rs` and `auth.rs` read them).
    Helper {
        kind: String,
        params: Vec<(String, String)>,
    },
    /// A type Postman has and this engine does not implement (ntlm, jwt…);
    /// requests that use it end as errors.
    Unsupported(String),
}

impl Auth {
    /// A helper's parameter, `""` when not set.
    pub(crate) fn param<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Auth types this engine sends.
const AUTH_SUPPORTED: [&str; 10] = [
    "noauth", "basic", "bearer", "apikey", "digest", "oauth1", "oauth2", "hawk", "awsv4",
    "edgegrid",
];
/// Auth types Postman has but this engine does not implement.
/// ntlm: NTLMv2 is a three-message handshake that must stay on one
/// kept-alive connection, which the run's pooled HTTP client does not pin.
const AUTH_UNSUPPORTED: [&str; 4] = ["ntlm", "jwt", "asap", "akamai"];

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub listen: Listen,
    /// The script, lines joined.
    pub script: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Prerequest,
    Test,
}

impl Listen {
    /// `prerequest-script` / `test-script`, as newman names them.
    pub fn script_name(self) -> &'static str {
        match self {
            Listen::Prerequest => "prerequest-script",
            Listen::Test => "test-script",
        }
    }
}

/// The JSON kind of a value, for messages: "a string", "an array"…
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a collection; every problem is returned, each located in the text.
pub fn load(text: &str) -> Result<Collection, Vec<Problem>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: Value = serde_json::from_str(text).map_err(|e| vec![super::syntax_problem(&e)])?;
    if let Some(root) = doc.as_object().filter(|r| v1::is_v1(r)) {
        return load_v1(text, root);
    }
    let mut ck = Checker::default();
    let collection = ck.collection(&doc);
    if ck.problems.is_empty() {
        if let Some(c) = collection {
            return Ok(c);
        }
        ck.err("$", "not a collection");
    }
    Locator::new(text).locate(&mut ck.problems);
    Err(ck.problems)
}

/// A v1 collection: converted to the v2.0 document, then read as one.
fn load_v1(text: &str, root: &Map<String, Value>) -> Result<Collection, Vec<Problem>> {
    let doc = v1::convert(root).map_err(|mut problems| {
        Locator::new(text).locate(&mut problems);
        problems
    })?;
    let mut ck = Checker::default();
    let collection = ck.collection(&doc);
    match collection {
        Some(mut c) if ck.problems.is_empty() => {
            c.version = "1.0";
            Ok(c)
        }
        // What the conversion let through: its path is in the converted
        // document, so it says so.
        _ => Err(ck
            .problems
            .into_iter()
            .map(|p| {
                let message = format!("{} (in the v2 form of this v1 collection)", p.message);
                Problem::new(p.path, message)
            })
            .collect()),
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn wrong(&mut self, path: &str, expected: &str, found: &Value) {
        self.err(path, format!("expected {expected}, found {}", kind(found)));
    }

    fn object<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(o) => Some(o),
            other => {
                self.wrong(path, "an object", other);
                None
            }
        }
    }

    /// A field that may be missing or null; present, it must be a string.
    fn opt_str(&mut self, o: &Map<String, Value>, field: &str, path: &str) -> Option<String> {
        match o.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.wrong(&locate::key(path, field), "a string", other);
                None
            }
        }
    }

    /// Like [`Checker::opt_str`], but numbers and booleans are taken as their
    /// text: exports write header and query values that way at times.
    fn opt_text(&mut self, o: &Map<String, Value>, field: &str, path: &str) -> Option<String> {
        match o.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
            Some(other) => {
                self.wrong(&locate::key(path, field), "a string", other);
                None
            }
        }
    }

    fn opt_bool(&mut self, o: &Map<String, Value>, field: &str, path: &str) -> bool {
        match o.get(field) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.wrong(&locate::key(path, field), "true or false", other);
                false
            }
        }
    }

    fn opt_array<'v>(&mut self, o: &'v Map<String, Value>, field: &str, path: &str) -> &'v [Value] {
        match o.get(field) {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.wrong(&locate::key(path, field), "an array", other);
                &[]
            }
        }
    }

    fn collection(&mut self, doc: &Value) -> Option<Collection> {
        let root = self.object(doc, "$")?;
        let Some(info_v) = root.get("info") else {
            if root.contains_key("values") {
                self.err(
                    "$",
                    "this looks like an environment or globals file, not a collection",
                );
            } else {
                self.err(
                    "$",
                    "missing \"info\": not a Postman collection v2.0 or v2.1",
                );
            }
            return None;
        };
        let info = self.object(info_v, "$.info")?;
        let version;
        match info.get("schema") {
            Some(Value::String(schema)) => {
                if schema.contains("v1.0.0") || schema.contains("/v1/") {
                    self.err(
                        "$.info.schema",
                        format!(
                            "collection format v1 ({schema}) is not supported; export it again \
                             as \"Collection v2.1\""
                        ),
                    );
                    return None;
                }
                version = if schema.contains("v2.1.0") {
                    "2.1"
                } else if schema.contains("v2.0.0") {
                    "2.0"
                } else {
                    ""
                };
                if version.is_empty() || !schema.contains("collection") {
                    self.err(
                        "$.info.schema",
                        format!(
                            "not a Postman collection v2.0 or v2.1 schema: {schema} (expected \
                             https://schema.getpostman.com/json/collection/v2.1.0/collection.json)"
                        ),
                    );
                    return None;
                }
            }
            Some(other) => {
                self.wrong("$.info.schema", "a string", other);
                return None;
            }
            None => {
                self.err(
                    "$.info",
                    "missing \"schema\": cannot tell the collection format (v2.0 or v2.1 expected)",
                );
                return None;
            }
        }
        let name = match self.opt_str(info, "name", "$.info") {
            Some(n) => n,
            None => {
                if !info.contains_key("name") {
                    self.err("$.info", "missing \"name\"");
                }
                String::new()
            }
        };
        let postman_id = self.opt_str(info, "_postman_id", "$.info");
        let items = match root.get("item") {
            Some(Value::Array(_)) => self.items(root, "$"),
            Some(other) => {
                self.wrong("$.item", "an array", other);
                Vec::new()
            }
            None => {
                self.err("$", "missing \"item\"");
                Vec::new()
            }
        };
        let events = self.events(root, "$");
        let variables = self.variables(root, "variable", "$");
        let auth = self.auth(root, "$");
        Some(Collection {
            name,
            version,
            postman_id,
            items,
            events,
            variables,
            auth,
        })
    }

    fn items(&mut self, o: &Map<String, Value>, path: &str) -> Vec<Item> {
        let list_path = locate::key(path, "item");
        let mut items = Vec::new();
        for (i, v) in self.opt_array(o, "item", path).iter().enumerate() {
            let p = locate::index(&list_path, i);
            if let Some(item) = self.item(v, &p) {
                items.push(item);
            }
        }
        items
    }

    fn item(&mut self, v: &Value, path: &str) -> Option<Item> {
        let o = self.object(v, path)?;
        let name = self.opt_str(o, "name", path).unwrap_or_default();
        let has_request = o.get("request").is_some_and(|r| !r.is_null());
        let has_items = o.get("item").is_some_and(|r| !r.is_null());
        match (has_request, has_items) {
            (true, true) => {
                self.err(
                    path,
                    "has both \"request\" and \"item\": an entry is either a request or a folder",
                );
                None
            }
            (false, false) => {
                self.err(
                    path,
                    format!(
                        "{}has neither \"request\" nor \"item\"",
                        if name.is_empty() {
                            String::new()
                        } else {
                            format!("'{name}' ")
                        }
                    ),
                );
                None
            }
            (false, true) => {
                let items = match o.get("item") {
                    Some(Value::Array(_)) => self.items(o, path),
                    Some(other) => {
                        self.wrong(&locate::key(path, "item"), "an array", other);
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                let events = self.events(o, path);
                let auth = self.auth(o, path);
                Some(Item::Folder(Folder {
                    name,
                    items,
                    events,
                    auth,
                }))
            }
            (true, false) => {
                let rp = locate::key(path, "request");
                let request = o.get("request").and_then(|r| self.request(r, &rp));
                let events = self.events(o, path);
                request.map(|request| {
                    Item::Request(Box::new(RequestItem {
                        name,
                        request,
                        events,
                    }))
                })
            }
        }
    }

    fn request(&mut self, v: &Value, path: &str) -> Option<Request> {
        // The schema allows a bare URL string for a GET.
        if let Value::String(raw) = v {
            return Some(Request {
                method: "GET".into(),
                url: Url {
                    raw: Some(raw.clone()),
                    ..Url::default()
                },
                headers: Vec::new(),
                body: None,
                auth: None,
                description: None,
            });
        }
        let o = self.object(v, path)?;
        let method = self
            .opt_str(o, "method", path)
            .map(|m| m.to_ascii_uppercase())
            .unwrap_or_else(|| "GET".into());
        if method.is_empty()
            || !method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            self.err(
                &locate::key(path, "method"),
                format!("not an HTTP method: {method:?}"),
            );
        }
        let url_path = locate::key(path, "url");
        let url = match o.get("url") {
            None | Some(Value::Null) => {
                self.err(path, "request has no \"url\"");
                None
            }
            Some(Value::String(raw)) => Some(Url {
                raw: Some(raw.clone()),
                ..Url::default()
            }),
            Some(Value::Object(u)) => self.url(u, &url_path),
            Some(other) => {
                self.wrong(&url_path, "a string or an object", other);
                None
            }
        };
        let headers = self.headers(o, path);
        let body = match o.get("body") {
            None | Some(Value::Null) => None,
            Some(b) => self.body(b, &locate::key(path, "body")),
        };
        let auth = self.auth(o, path);
        // A text, or `{"content": …, "type": "text/markdown"}`.
        let description = match o.get("description") {
            Some(Value::String(d)) => Some(d.clone()),
            Some(Value::Object(d)) => d.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        Some(Request {
            method,
            url: url?,
            headers,
            body,
            auth,
            description,
        })
    }

    fn url(&mut self, u: &Map<String, Value>, path: &str) -> Option<Url> {
        let raw = self.opt_str(u, "raw", path);
        let protocol = self.opt_str(u, "protocol", path);
        let port = self.opt_text(u, "port", path);
        let hash = self.opt_str(u, "hash", path);
        let host = match u.get("host") {
            None | Some(Value::Null) => None,
            Some(Value::String(h)) => Some(vec![h.clone()]),
            Some(Value::Array(parts)) => {
                let hp = locate::key(path, "host");
                let mut host = Vec::new();
                for (i, part) in parts.iter().enumerate() {
                    match part {
                        Value::String(s) => host.push(s.clone()),
                        other => self.wrong(&locate::index(&hp, i), "a string", other),
                    }
                }
                Some(host)
            }
            Some(other) => {
                self.wrong(&locate::key(path, "host"), "a string or an array", other);
                None
            }
        };
        let segments = match u.get("path") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(
                p.trim_start_matches('/')
                    .split('/')
                    .map(str::to_string)
                    .collect(),
            ),
            Some(Value::Array(parts)) => {
                let pp = locate::key(path, "path");
                let mut segments = Vec::new();
                for (i, part) in parts.iter().enumerate() {
                    let ip = locate::index(&pp, i);
                    match part {
                        Value::String(s) => segments.push(s.clone()),
                        // The schema's `{type, value}` form of a segment.
                        Value::Object(seg) => {
                            segments.push(self.opt_str(seg, "value", &ip).unwrap_or_default())
                        }
                        other => self.wrong(&ip, "a string", other),
                    }
                }
                Some(segments)
            }
            Some(other) => {
                self.wrong(&locate::key(path, "path"), "a string or an array", other);
                None
            }
        };
        let mut query = Vec::new();
        let qp = locate::key(path, "query");
        for (i, q) in self.opt_array(u, "query", path).iter().enumerate() {
            let ip = locate::index(&qp, i);
            if let Some(q) = self.object(q, &ip) {
                query.push(QueryParam {
                    key: self.opt_text(q, "key", &ip),
                    value: self.opt_text(q, "value", &ip),
                    disabled: self.opt_bool(q, "disabled", &ip),
                });
            }
        }
        let variables = self.variables(u, "variable", path);
        if raw.is_none() && host.is_none() {
            self.err(path, "URL has neither \"raw\" nor \"host\"");
            return None;
        }
        Some(Url {
            raw,
            protocol,
            host,
            port,
            path: segments,
            query,
            hash,
            variables,
        })
    }

    fn headers(&mut self, o: &Map<String, Value>, path: &str) -> Vec<Header> {
        let hp = locate::key(path, "header");
        match o.get("header") {
            None | Some(Value::Null) => Vec::new(),
            // The schema's raw form: `Name: value` lines.
            Some(Value::String(block)) => block
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(k, v)| Header {
                    key: k.trim().to_string(),
                    value: v.trim().to_string(),
                    disabled: false,
                })
                .collect(),
            Some(Value::Array(list)) => {
                let mut headers = Vec::new();
                for (i, h) in list.iter().enumerate() {
                    let ip = locate::index(&hp, i);
                    let Some(h) = self.object(h, &ip) else {
                        continue;
                    };
                    let Some(key) = self.opt_text(h, "key", &ip) else {
                        if !h.contains_key("key") {
                            self.err(&ip, "header has no \"key\"");
                        }
                        continue;
                    };
                    headers.push(Header {
                        key,
                        value: self.opt_text(h, "value", &ip).unwrap_or_default(),
                        disabled: self.opt_bool(h, "disabled", &ip),
                    });
                }
                headers
            }
            Some(other) => {
                self.wrong(&hp, "an array or a string", other);
                Vec::new()
            }
        }
    }

    fn key_values(&mut self, o: &Map<String, Value>, field: &str, path: &str) -> Vec<KeyValue> {
        let lp = locate::key(path, field);
        let mut out = Vec::new();
        for (i, v) in self.opt_array(o, field, path).iter().enumerate() {
            let ip = locate::index(&lp, i);
            if let Some(kv) = self.object(v, &ip) {
                out.push(KeyValue {
                    key: self.opt_text(kv, "key", &ip).unwrap_or_default(),
                    value: self.opt_text(kv, "value", &ip).unwrap_or_default(),
                    disabled: self.opt_bool(kv, "disabled", &ip),
                });
            }
        }
        out
    }

    fn body(&mut self, v: &Value, path: &str) -> Option<Body> {
        let o = self.object(v, path)?;
        if self.opt_bool(o, "disabled", path) {
            return Some(Body::None);
        }
        let Some(mode) = self.opt_str(o, "mode", path) else {
            return Some(Body::None);
        };
        Some(match mode.as_str() {
            "raw" => {
                let raw = self.opt_str(o, "raw", path).unwrap_or_default();
                let language = o
                    .get("options")
                    .and_then(|opts| opts.get("raw"))
                    .and_then(|r| r.get("language"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Body::Raw { raw, language }
            }
            "urlencoded" => Body::UrlEncoded(self.key_values(o, "urlencoded", path)),
            "formdata" => {
                let lp = locate::key(path, "formdata");
                let mut fields = Vec::new();
                for (i, f) in self.opt_array(o, "formdata", path).iter().enumerate() {
                    let ip = locate::index(&lp, i);
                    let Some(f) = self.object(f, &ip) else {
                        continue;
                    };
                    let key = self.opt_text(f, "key", &ip).unwrap_or_default();
                    let is_file = match self.opt_str(f, "type", &ip).as_deref() {
                        None | Some("text") => false,
                        Some("file") => true,
                        Some(other) => {
                            self.err(
                                &locate::key(&ip, "type"),
                                format!("unknown form field type {other:?} (text or file)"),
                            );
                            false
                        }
                    };
                    let value = if is_file {
                        FormValue::Files(match f.get("src") {
                            None | Some(Value::Null) => Vec::new(),
                            Some(Value::String(s)) => vec![s.clone()],
                            Some(Value::Array(list)) => list
                                .iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect(),
                            Some(other) => {
                                self.wrong(&locate::key(&ip, "src"), "a string or an array", other);
                                Vec::new()
                            }
                        })
                    } else {
                        FormValue::Text(self.opt_text(f, "value", &ip).unwrap_or_default())
                    };
                    fields.push(FormField {
                        key,
                        value,
                        content_type: self.opt_str(f, "contentType", &ip),
                        disabled: self.opt_bool(f, "disabled", &ip),
                    });
                }
                Body::FormData(fields)
            }
            "file" => {
                let src = match o.get("file") {
                    None | Some(Value::Null) => None,
                    Some(file) => self
                        .object(file, &locate::key(path, "file"))
                        .and_then(|f| self.opt_str(f, "src", &locate::key(path, "file"))),
                };
                Body::File { src }
            }
            "graphql" => {
                let gp = locate::key(path, "graphql");
                match o.get("graphql") {
                    None | Some(Value::Null) => Body::GraphQl {
                        query: String::new(),
                        variables: None,
                    },
                    Some(g) => {
                        let g = self.object(g, &gp)?;
                        Body::GraphQl {
                            query: self.opt_str(g, "query", &gp).unwrap_or_default(),
                            variables: match g.get("variables") {
                                None | Some(Value::Null) => None,
                                Some(Value::String(s)) => Some(s.clone()),
                                // Hand-written collections put the object itself.
                                Some(other) => Some(other.to_string()),
                            },
                        }
                    }
                }
            }
            other => {
                self.err(
                    &locate::key(path, "mode"),
                    format!(
                        "unknown body mode {other:?} (raw, urlencoded, formdata, file or graphql)"
                    ),
                );
                return None;
            }
        })
    }

    fn auth(&mut self, o: &Map<String, Value>, path: &str) -> Option<Auth> {
        let ap = locate::key(path, "auth");
        let a = match o.get("auth") {
            None | Some(Value::Null) => return None,
            Some(a) => self.object(a, &ap)?,
        };
        let ty = match a.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(other) => {
                self.wrong(&locate::key(&ap, "type"), "a string", other);
                return None;
            }
            None => {
                self.err(&ap, "auth has no \"type\"");
                return None;
            }
        };
        // Newer exports write the default explicitly.
        if ty == "inherit" {
            return None;
        }
        if AUTH_UNSUPPORTED.contains(&ty.as_str()) {
            return Some(Auth::Unsupported(ty));
        }
        if !AUTH_SUPPORTED.contains(&ty.as_str()) {
            self.err(
                &locate::key(&ap, "type"),
                format!(
                    "unknown auth type {ty:?} (Postman's are inherit, noauth, basic, bearer, \
                     apikey, digest, oauth1, oauth2, hawk, awsv4, ntlm, edgegrid, jwt, asap, \
                     akamai)"
                ),
            );
            return None;
        }
        if ty == "noauth" {
            return Some(Auth::NoAuth);
        }
        let params = self.auth_params(a, &ty, &ap);
        let get = |k: &str| {
            params
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.clone())
        };
        Some(match ty.as_str() {
            "basic" => Auth::Basic {
                username: get("username").unwrap_or_default(),
                password: get("password").unwrap_or_default(),
            },
            "bearer" => Auth::Bearer {
                token: get("token").unwrap_or_default(),
            },
            "digest" | "oauth1" | "oauth2" | "hawk" | "awsv4" | "edgegrid" => Auth::Helper {
                kind: ty.clone(),
                params,
            },
            _ => Auth::ApiKey {
                key: get("key").unwrap_or_else(|| "x-api-key".into()),
                value: get("value").unwrap_or_default(),
                in_query: get("in").is_some_and(|i| i == "query"),
            },
        })
    }

    /// The parameters of an auth: v2.1's `[{key, value, type}]`, or the object
    /// form v2.0 used, which still turns up in hand-edited v2.1 files.
    fn auth_params(
        &mut self,
        a: &Map<String, Value>,
        ty: &str,
        path: &str,
    ) -> Vec<(String, String)> {
        let pp = locate::key(path, ty);
        match a.get(ty) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => {
                let mut out = Vec::new();
                for (i, p) in list.iter().enumerate() {
                    let ip = locate::index(&pp, i);
                    if let Some(p) = self.object(p, &ip) {
                        if let Some(k) = self.opt_str(p, "key", &ip) {
                            let v = match p.get("value") {
                                None | Some(Value::Null) => String::new(),
                                Some(Value::String(s)) => s.clone(),
                                Some(other) => other.to_string(),
                            };
                            out.push((k, v));
                        }
                    }
                }
                out
            }
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| (k.clone(), super::vars::value_text(v)))
                .collect(),
            Some(other) => {
                self.wrong(&pp, "an array (v2.1) or an object (v2.0)", other);
                Vec::new()
            }
        }
    }

    fn events(&mut self, o: &Map<String, Value>, path: &str) -> Vec<Event> {
        let lp = locate::key(path, "event");
        let mut events = Vec::new();
        for (i, e) in self.opt_array(o, "event", path).iter().enumerate() {
            let ip = locate::index(&lp, i);
            let Some(e) = self.object(e, &ip) else {
                continue;
            };
            let listen = match self.opt_str(e, "listen", &ip).as_deref() {
                Some("prerequest") => Listen::Prerequest,
                Some("test") => Listen::Test,
                Some(other) => {
                    self.err(
                        &locate::key(&ip, "listen"),
                        format!("unknown event {other:?} (prerequest or test)"),
                    );
                    continue;
                }
                None => {
                    if !e.contains_key("listen") {
                        self.err(&ip, "event has no \"listen\"");
                    }
                    continue;
                }
            };
            let disabled = self.opt_bool(e, "disabled", &ip);
            let sp = locate::key(&ip, "script");
            let script = match e.get("script") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(s)) => match s.get("exec") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(line)) => line.clone(),
                    Some(Value::Array(lines)) => {
                        let xp = locate::key(&sp, "exec");
                        let mut text = Vec::new();
                        for (j, l) in lines.iter().enumerate() {
                            match l {
                                Value::String(l) => text.push(l.as_str()),
                                other => self.wrong(&locate::index(&xp, j), "a string", other),
                            }
                        }
                        text.join("\n")
                    }
                    Some(other) => {
                        self.wrong(&locate::key(&sp, "exec"), "an array of lines", other);
                        String::new()
                    }
                },
                Some(other) => {
                    self.wrong(&sp, "an object", other);
                    String::new()
                }
            };
            if !disabled && !script.trim().is_empty() {
                events.push(Event { listen, script });
            }
        }
        events
    }

    fn variables(&mut self, o: &Map<String, Value>, field: &str, path: &str) -> Vec<Variable> {
        let lp = locate::key(path, field);
        let mut out = Vec::new();
        for (i, v) in self.opt_array(o, field, path).iter().enumerate() {
            let ip = locate::index(&lp, i);
            let Some(v) = self.object(v, &ip) else {
                continue;
            };
            let key = match (self.opt_str(v, "key", &ip), self.opt_str(v, "id", &ip)) {
                (Some(k), _) | (None, Some(k)) => k,
                (None, None) => {
                    if !v.contains_key("key") && !v.contains_key("id") {
                        self.err(&ip, "variable has no \"key\"");
                    }
                    continue;
                }
            };
            out.push(Variable {
                key,
                value: v.get("value").cloned().unwrap_or(Value::Null),
                disabled: self.opt_bool(v, "disabled", &ip),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V21: &str = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json";

    #[test]
    fn reads_folders_requests_and_auth() {
        let text = format!(
            r#"{{"info": {{"name": "c", "schema": "{V21}"}},
              "auth": {{"type": "bearer", "bearer": [{{"key": "token", "value": "t"}}]}},
              "item": [
                {{"name": "f", "item": [{{"name": "r", "request": {{"method": "post", "url": "http://x/:id"}}}}]}},
                {{"name": "s", "request": "http://y"}}
              ]}}"#
        );
        let c = load(&text).unwrap();
        assert_eq!(c.name, "c");
        assert_eq!(c.auth, Some(Auth::Bearer { token: "t".into() }));
        let Item::Folder(f) = &c.items[0] else {
            panic!("folder expected")
        };
        let Item::Request(r) = &f.items[0] else {
            panic!("request expected")
        };
        assert_eq!(r.request.method, "POST");
        assert!(
            matches!(&c.items[1], Item::Request(r) if r.request.url.raw.as_deref() == Some("http://y"))
        );
    }

    #[test]
    fn reads_v2_0_like_newman() {
        // v2.0 writes auth parameters as an object, v2.1 as a key/value list;
        // URLs may be plain strings in both.
        let v20 = r#"{"info": {"name": "old", "schema": "https://schema.getpostman.com/json/collection/v2.0.0/collection.json"},
            "auth": {"type": "basic", "basic": {"username": "u", "password": "p", "saveHelperData": true}},
            "item": [{"name": "r", "request": {"url": "http://x/get", "method": "GET",
                "auth": {"type": "apikey", "apikey": {"key": "X-K", "value": "v", "in": "header"}}}}]}"#;
        let c = load(v20).unwrap();
        assert_eq!(c.version, "2.0");
        assert_eq!(
            c.auth,
            Some(Auth::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        let Item::Request(r) = &c.items[0] else {
            panic!("request expected")
        };
        assert_eq!(r.request.url.raw.as_deref(), Some("http://x/get"));
        assert_eq!(
            r.request.auth,
            Some(Auth::ApiKey {
                key: "X-K".into(),
                value: "v".into(),
                in_query: false
            })
        );
        let v21 = format!(r#"{{"info": {{"name": "c", "schema": "{V21}"}}, "item": []}}"#);
        assert_eq!(load(&v21).unwrap().version, "2.1");
    }

    #[test]
    fn reads_v1_and_rejects_other_versions() {
        let v1 = r#"{"id": "x", "name": "c", "order": ["r"], "requests": [{"id": "r", "name": "n", "url": "http://h/:id", "pathVariables": {"id": "7"}, "headers": "A: b\n// C: d", "dataMode": "params", "data": [{"key": "f", "value": "up.txt", "type": "file"}]}]}"#;
        let c = load(v1).unwrap();
        assert_eq!(c.version, "1.0");
        let Item::Request(r) = &c.items[0] else {
            panic!("{c:?}")
        };
        assert_eq!(r.request.url.variables[0].key, "id");
        assert_eq!(
            r.request
                .headers
                .iter()
                .map(|h| (h.key.as_str(), h.disabled))
                .collect::<Vec<_>>(),
            [("A", false), ("C", true)]
        );
        assert_eq!(
            r.request.body,
            Some(Body::FormData(vec![FormField {
                key: "f".into(),
                value: FormValue::Files(vec!["up.txt".into()]),
                content_type: None,
                disabled: false
            }]))
        );
        let v3 = r#"{"info": {"name": "c", "schema": "https://schema.getpostman.com/json/collection/v3.0.0/collection.json"}, "item": []}"#;
        let e = load(v3).unwrap_err();
        assert!(e[0].message.contains("v3.0.0"), "{e:?}");
        assert_eq!(e[0].path, "$.info.schema");
    }
}
