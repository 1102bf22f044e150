//! The scenario compiled for the hot path: parsed methods, URLs split into
//! origin and path, prebuilt header maps, `{{name}}` templates bound to data
//! columns, data rows loaded from CSV/JSON, and checks ready to evaluate.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::Full;
use memchr::memmem;
use serde_json_path::JsonPath;

use crate::error::{ConfigError, FieldError, LoadError};
use crate::plan::{Check, DataFormat, DataSource, Order, RequestSpec, Scenario, StatusMatch};

/// Where connections go: scheme, host and port. Requests with equal origins
/// share a virtual user's connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub https: bool,
    /// Host without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

/// A resolved request target.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub origin: Arc<Origin>,
    /// Origin-form (`/path?q`) for HTTP/1.1.
    pub path: Uri,
    /// Absolute form for HTTP/2 (`:scheme`, `:authority`).
    pub absolute: Uri,
    pub host_header: HeaderValue,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        crate::preset::check_url(url)?;
        let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let https = parsed.scheme() == "https";
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("invalid URL {url:?}: missing host"))?;
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| format!("invalid URL {url:?}: missing port"))?;
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let default_port = if https { 443 } else { 80 };
        let authority = if port == default_port {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let mut path = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            path.push('?');
            path.push_str(q);
        }
        let path_uri: Uri = path
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let absolute: Uri = format!("{}://{}{}", parsed.scheme(), authority, path)
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let host_header =
            HeaderValue::from_str(&authority).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        Ok(Target {
            origin: Arc::new(Origin {
                https,
                host: bare_host,
                port,
            }),
            path: path_uri,
            absolute,
            host_header,
        })
    }
}

/// Text with `{{name}}` placeholders bound to data columns.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Var(usize),
}

/// Placeholder names in `text`, or an error for an unclosed `{{`.
pub(crate) fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
        out.push(after[..close].trim());
        rest = &after[close + 2..];
    }
    Ok(out)
}

impl Template {
    fn compile(text: &str, columns: &[String]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
            let name = after[..close].trim();
            let idx = columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| format!("unknown variable {{{{{name}}}}} (no such data column)"))?;
            parts.push(Part::Var(idx));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts })
    }

    fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    fn render(&self, row: &[String]) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(i) => out.push_str(row.get(*i).map(String::as_str).unwrap_or("")),
            }
        }
        out
    }
}

/// Data rows for `{{name}}` substitution.
#[derive(Debug, Clone, Default)]
pub(crate) struct DataSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl DataSet {
    pub(crate) fn load(src: &DataSource) -> Result<DataSet, LoadError> {
        if let Some(rows) = &src.rows {
            return Ok(DataSet::from_objects(rows.iter()));
        }
        let Some(path) = &src.path else {
            return Ok(DataSet::default());
        };
        let shown = path.display().to_string();
        let format = src.format.unwrap_or_else(|| guess_format(path));
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::DataFile {
            path: shown.clone(),
            source,
        })?;
        let bad = |reason: String| LoadError::DataFormat {
            path: shown.clone(),
            reason,
        };
        match format {
            DataFormat::Csv => {
                let mut rdr = csv::ReaderBuilder::new()
                    .trim(csv::Trim::All)
                    .from_reader(text.as_bytes());
                let columns: Vec<String> = rdr
                    .headers()
                    .map_err(|e| bad(e.to_string()))?
                    .iter()
                    .map(str::to_string)
                    .collect();
                let mut rows = Vec::new();
                for rec in rdr.records() {
                    let rec = rec.map_err(|e| bad(e.to_string()))?;
                    rows.push(rec.iter().map(str::to_string).collect());
                }
                Ok(DataSet { columns, rows })
            }
            DataFormat::Json => {
                let v: Vec<BTreeMap<String, serde_json::Value>> = serde_json::from_str(&text)
                    .map_err(|e| bad(format!("expected an array of objects: {e}")))?;
                Ok(DataSet::from_objects(v.iter()))
            }
        }
    }

    fn from_objects<'a>(
        rows: impl Iterator<Item = &'a BTreeMap<String, serde_json::Value>> + Clone,
    ) -> DataSet {
        let mut columns: Vec<String> = Vec::new();
        for r in rows.clone() {
            for k in r.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
        let rows = rows
            .map(|r| {
                columns
                    .iter()
                    .map(|c| match r.get(c) {
                        None | Some(serde_json::Value::Null) => String::new(),
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        DataSet { columns, rows }
    }
}

fn guess_format(path: &Path) -> DataFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("json") => DataFormat::Json,
        _ => DataFormat::Csv,
    }
}

/// A check ready to run.
#[derive(Debug)]
pub(crate) enum CompiledCheck {
    Status(StatusMatch),
    BodyContains(Box<memmem::Finder<'static>>),
    JsonPath {
        path: JsonPath,
        equals: Option<serde_json::Value>,
    },
}

impl CompiledCheck {
    fn needs_body(&self) -> bool {
        !matches!(self, CompiledCheck::Status(_))
    }

    /// `json` caches the parsed body across the checks of one response.
    pub(crate) fn eval(
        &self,
        status: u16,
        body: &[u8],
        json: &mut Option<Option<serde_json::Value>>,
    ) -> bool {
        match self {
            CompiledCheck::Status(m) => m.matches(status),
            CompiledCheck::BodyContains(f) => f.find(body).is_some(),
            CompiledCheck::JsonPath { path, equals } => {
                let value = json.get_or_insert_with(|| serde_json::from_slice(body).ok());
                let Some(value) = value else {
                    return false;
                };
                let nodes = path.query(value);
                match equals {
                    None => !nodes.is_empty(),
                    Some(want) => nodes.first() == Some(want),
                }
            }
        }
    }
}

fn check_name(req_name: &str, c: &Check) -> String {
    match c {
        Check::Status(StatusMatch::One(s)) => format!("{req_name}: status {s}"),
        Check::Status(StatusMatch::Any(v)) => format!("{req_name}: status in {v:?}"),
        Check::Status(StatusMatch::Class(c)) => format!("{req_name}: status {c}"),
        Check::BodyContains(s) => format!("{req_name}: body contains {s:?}"),
        Check::JsonPath {
            path,
            equals: Some(v),
        } => format!("{req_name}: {path} == {v}"),
        Check::JsonPath { path, equals: None } => format!("{req_name}: {path} exists"),
    }
}

/// Static parts of a request plus templates for the dynamic ones.
#[derive(Debug)]
pub(crate) struct CompiledRequest {
    method: Method,
    /// Set when the URL has no placeholder.
    target: Option<Target>,
    url_tpl: Template,
    /// Static headers (`host` is added by the HTTP/1.1 encoder; HTTP/2
    /// carries the authority in the URI).
    headers: HeaderMap,
    header_tpls: Vec<(HeaderName, Template)>,
    body: Bytes,
    body_tpl: Option<Template>,
    pub weight: u32,
    pub checks: Vec<CompiledCheck>,
    /// Index of this request's first check in the run-wide check list.
    pub check_base: usize,
    pub needs_body: bool,
    /// The whole HTTP/1.1 request, encoded once, when nothing in it varies.
    h1_static: Option<Vec<u8>>,
}

/// A request instance ready to send plus where to send it.
pub(crate) struct Built<'a> {
    pub target: Cow<'a, Target>,
    dynamic_headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl CompiledRequest {
    pub(crate) fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }

    /// The HTTP/1.1 encoding of this request instance: the precomputed
    /// bytes when static, else encoded into `scratch`.
    pub(crate) fn encode_h1<'a>(&'a self, built: &Built<'_>, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        if let Some(b) = &self.h1_static {
            return b;
        }
        encode_h1(
            &self.method,
            &built.target,
            &self.headers,
            &built.dynamic_headers,
            &built.body,
            scratch,
        );
        scratch
    }

    /// Whether this request can go to an `https` origin.
    pub(crate) fn may_use_tls(&self) -> bool {
        self.target.as_ref().is_none_or(|t| t.origin.https)
    }

    /// The target and body for one iteration; `row` fills placeholders.
    pub(crate) fn prepare<'a>(&'a self, row: &[String]) -> Result<Built<'a>, String> {
        let target = match &self.target {
            Some(t) => Cow::Borrowed(t),
            None => Cow::Owned(Target::parse(&self.url_tpl.render(row))?),
        };
        let mut dynamic_headers = Vec::new();
        for (name, tpl) in &self.header_tpls {
            let v = HeaderValue::from_str(&tpl.render(row))
                .map_err(|e| format!("header {name}: {e}"))?;
            dynamic_headers.push((name.clone(), v));
        }
        let body = match &self.body_tpl {
            Some(t) => Bytes::from(t.render(row)),
            None => self.body.clone(),
        };
        Ok(Built {
            target,
            dynamic_headers,
            body,
        })
    }

    /// The hyper request for an HTTP/2 connection.
    pub(crate) fn request_h2(&self, built: &Built<'_>) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(built.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.version_mut() = Version::HTTP_2;
        *req.uri_mut() = built.target.absolute.clone();
        *req.headers_mut() = self.headers.clone();
        for (n, v) in &built.dynamic_headers {
            req.headers_mut().insert(n.clone(), v.clone());
        }
        req
    }
}

/// The whole scenario, compiled.
#[derive(Debug)]
pub(crate) struct CompiledScenario {
    pub requests: Vec<CompiledRequest>,
    pub order: Order,
    /// Cumulative weights for the weighted pick.
    cumulative: Vec<u64>,
    pub data: DataSet,
    pub check_names: Vec<String>,
}

impl CompiledScenario {
    pub(crate) fn compile(s: &Scenario) -> Result<CompiledScenario, LoadError> {
        let data = match &s.data {
            Some(d) => DataSet::load(d)?,
            None => DataSet::default(),
        };
        let mut errs = Vec::new();
        let mut requests = Vec::new();
        let mut check_names = Vec::new();
        for (i, r) in s.requests.iter().enumerate() {
            match compile_request(i, r, &data.columns, check_names.len()) {
                Ok((req, names)) => {
                    check_names.extend(names);
                    requests.push(req);
                }
                Err(mut e) => errs.append(&mut e),
            }
        }
        if !errs.is_empty() {
            return Err(ConfigError { errors: errs }.into());
        }
        let mut acc = 0;
        let cumulative = requests
            .iter()
            .map(|r| {
                acc += u64::from(r.weight);
                acc
            })
            .collect();
        Ok(CompiledScenario {
            requests,
            order: s.order,
            cumulative,
            data,
            check_names,
        })
    }

    /// Index of the request for a weighted pick given a random number.
    pub(crate) fn pick(&self, random: u64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 || self.requests.len() == 1 {
            return 0;
        }
        let x = random % total;
        self.cumulative.partition_point(|&c| c <= x)
    }
}

fn compile_request(
    i: usize,
    r: &RequestSpec,
    columns: &[String],
    check_base: usize,
) -> Result<(CompiledRequest, Vec<String>), Vec<FieldError>> {
    let field = |f: &str| format!("scenario.requests[{i}].{f}");
    let mut errs = Vec::new();
    let method = Method::from_bytes(r.method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| errs.push(FieldError::new(field("method"), "invalid method")))
        .ok();
    let url_tpl = Template::compile(&r.url, columns)
        .map_err(|e| errs.push(FieldError::new(field("url"), e)))
        .ok();
    let target = match &url_tpl {
        Some(t) if t.is_static() => match Target::parse(&r.url) {
            Ok(t) => Some(t),
            Err(e) => {
                errs.push(FieldError::new(field("url"), e));
                None
            }
        },
        _ => None,
    };
    let mut headers = HeaderMap::new();
    let mut header_tpls = Vec::new();
    for (k, v) in &r.headers {
        let hf = field(&format!("headers.{k}"));
        let Ok(name) = HeaderName::from_bytes(k.trim().as_bytes()) else {
            errs.push(FieldError::new(hf, "invalid header name"));
            continue;
        };
        match Template::compile(v, columns) {
            Ok(t) if t.is_static() => match HeaderValue::from_str(v.trim()) {
                Ok(val) => {
                    headers.append(name, val);
                }
                Err(_) => errs.push(FieldError::new(hf, "invalid header value")),
            },
            Ok(t) => header_tpls.push((name, t)),
            Err(e) => errs.push(FieldError::new(hf, e)),
        }
    }
    if r.body.is_some() && !headers.contains_key(CONTENT_TYPE) {
        let looks_json = r
            .body
            .as_deref()
            .map(str::trim_start)
            .is_some_and(|b| b.starts_with('{') || b.starts_with('['));
        if looks_json {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    let (body, body_tpl) = match &r.body {
        None => (Bytes::new(), None),
        Some(b) => match Template::compile(b, columns) {
            Ok(t) if t.is_static() => (Bytes::from(b.clone()), None),
            Ok(t) => (Bytes::new(), Some(t)),
            Err(e) => {
                errs.push(FieldError::new(field("body"), e));
                (Bytes::new(), None)
            }
        },
    };
    let req_name = r
        .name
        .clone()
        .unwrap_or_else(|| format!("{} {}", r.method.to_ascii_uppercase(), r.url));
    let mut checks = Vec::new();
    let mut names = Vec::new();
    for (j, c) in r.checks.iter().enumerate() {
        let cf = field(&format!("checks[{j}]"));
        let compiled = match c {
            Check::Status(m) => {
                if let StatusMatch::Class(s) = m {
                    if crate::plan::class_digit(s).is_none() {
                        errs.push(FieldError::new(
                            cf,
                            format!("bad status class {s:?} (use e.g. \"2xx\")"),
                        ));
                        continue;
                    }
                }
                CompiledCheck::Status(m.clone())
            }
            Check::BodyContains(s) => CompiledCheck::BodyContains(Box::new(
                memmem::Finder::new(s.as_bytes()).into_owned(),
            )),
            Check::JsonPath { path, equals } => match JsonPath::parse(path) {
                Ok(p) => CompiledCheck::JsonPath {
                    path: p,
                    equals: equals.clone(),
                },
                Err(e) => {
                    errs.push(FieldError::new(cf, format!("bad JSONPath {path:?}: {e}")));
                    continue;
                }
            },
        };
        names.push(check_name(&req_name, c));
        checks.push(compiled);
    }
    let (Some(method), Some(url_tpl)) = (method, url_tpl) else {
        return Err(errs);
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    let needs_body = checks.iter().any(CompiledCheck::needs_body);
    let h1_static = match &target {
        Some(t) if header_tpls.is_empty() && body_tpl.is_none() => {
            let mut out = Vec::new();
            encode_h1(&method, t, &headers, &[], &body, &mut out);
            Some(out)
        }
        _ => None,
    };
    Ok((
        CompiledRequest {
            method,
            target,
            url_tpl,
            headers,
            header_tpls,
            body,
            body_tpl,
            weight: r.weight,
            checks,
            check_base,
            needs_body,
            h1_static,
        },
        names,
    ))
}

/// Writes an HTTP/1.1 request: request line, `host` (unless given),
/// headers, `content-length` when there is a body (or the method expects
/// one), the body.
fn encode_h1(
    method: &Method,
    target: &Target,
    headers: &HeaderMap,
    dynamic: &[(HeaderName, HeaderValue)],
    body: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    let path = target
        .path
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let has_host = headers.contains_key(HOST) || dynamic.iter().any(|(n, _)| n == HOST);
    if !has_host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(target.host_header.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let all = headers.iter().chain(dynamic.iter().map(|(n, v)| (n, v)));
    for (name, value) in all {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let expects_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if !body.is_empty() || expects_body {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// I/O-free validation of one request for [`crate::LoadProfile::validate`].
pub(crate) fn validate_request(i: usize, r: &RequestSpec, errs: &mut Vec<FieldError>) {
    let field = |f: &str| format!("scenario.requests[{i}].{f}");
    if Method::from_bytes(r.method.trim().to_ascii_uppercase().as_bytes()).is_err() {
        errs.push(FieldError::new(field("method"), "invalid method"));
    }
    match placeholders(&r.url) {
        Err(e) => errs.push(FieldError::new(field("url"), e)),
        Ok(vars) if vars.is_empty() => {
            if let Err(e) = Target::parse(&r.url) {
                errs.push(FieldError::new(field("url"), e));
            }
        }
        Ok(_) => {}
    }
    for (j, c) in r.checks.iter().enumerate() {
        if let Check::JsonPath { path, .. } = c {
            if let Err(e) = JsonPath::parse(path) {
                errs.push(FieldError::new(
                    field(&format!("checks[{j}]")),
                    format!("bad JSONPath {path:?}: {e}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_from_rows() {
        let cols = vec!["user".to_string(), "id".to_string()];
        let t = Template::compile("/u/{{user}}?id={{ id }}", &cols).unwrap();
        assert_eq!(t.render(&["ann".into(), "7".into()]), "/u/ann?id=7");
        assert!(Template::compile("/u/{{nope}}", &cols).is_err());
        assert!(Template::compile("/u/{{user", &cols).is_err());
    }

    #[test]
    fn targets_split_origin_and_path() {
        let t = Target::parse("http://127.0.0.1:8080/a/b?x=1").unwrap();
        assert_eq!(t.origin.port, 8080);
        assert_eq!(t.path, "/a/b?x=1");
        assert_eq!(t.absolute, "http://127.0.0.1:8080/a/b?x=1");
        assert_eq!(t.host_header, "127.0.0.1:8080");
        let t = Target::parse("https://[::1]/").unwrap();
        assert_eq!(t.origin.host, "::1");
        assert_eq!(t.origin.port, 443);
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("nonsense").is_err());
    }
}
