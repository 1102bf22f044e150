//! Turns a collection request into HTTP: variables substituted, `:path`
//! variables filled in, auth applied, body encoded; and sends it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::collection::{Auth, Body, FormValue, Header, Request, Url};
use super::jar::RunJar;
use super::proxy::EnvProxies;
use super::vars::{self, Scopes};
use crate::transport::http::{classify, header_pairs};
use crate::TransportError;

/// A request ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: BuiltBody,
    /// A digest auth's resolved parameters: the runner answers the server's
    /// challenge with them.
    pub digest: Option<Vec<(String, String)>>,
}

#[derive(Debug, Clone)]
pub(crate) enum BuiltBody {
    None,
    Bytes(Vec<u8>),
    /// Kept as parts: a multipart form cannot be cloned or shown once built.
    Form(Vec<FormPart>),
}

#[derive(Debug, Clone)]
pub(crate) struct FormPart {
    pub name: String,
    pub value: PartValue,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum PartValue {
    Text(String),
    File { file_name: String, bytes: Vec<u8> },
}

/// Why a request could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Issue {
    /// Something this engine does not implement; named in the run's
    /// `unsupported` list.
    Unsupported(String),
    /// Something wrong with the request itself.
    Invalid(String),
}

impl Built {
    /// The body as text, for `pm.request.body` and the report.
    pub(crate) fn body_text(&self) -> Option<String> {
        match &self.body {
            BuiltBody::None => None,
            BuiltBody::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            BuiltBody::Form(parts) => Some(
                parts
                    .iter()
                    .map(|p| match &p.value {
                        PartValue::Text(t) => format!("{}={t}", p.name),
                        PartValue::File { file_name, .. } => format!("{}=@{file_name}", p.name),
                    })
                    .collect::<Vec<_>>()
                    .join("&"),
            ),
        }
    }
}

struct Resolver<'a> {
    scopes: &'a Scopes,
    issues: Vec<Issue>,
}

impl Resolver<'_> {
    fn text(&mut self, s: &str) -> String {
        let r = vars::resolve(s, self.scopes);
        for u in r.unsupported {
            let issue = Issue::Unsupported(format!("dynamic variable '{u}'"));
            if !self.issues.contains(&issue) {
                self.issues.push(issue);
            }
        }
        r.text
    }
}

/// The URL as written, before substitution: what `pm.request.url` shows in a
/// pre-request script.
pub(crate) fn url_template(url: &Url) -> String {
    match &url.host {
        Some(host) => compose(url, host),
        None => url.raw.clone().unwrap_or_default(),
    }
}

fn compose(url: &Url, host: &[String]) -> String {
    let mut s = String::new();
    if let Some(p) = &url.protocol {
        s.push_str(p.trim_end_matches("://"));
        s.push_str("://");
    }
    s.push_str(&host.join("."));
    if let Some(port) = &url.port {
        s.push(':');
        s.push_str(port);
    }
    if let Some(path) = &url.path {
        if !path.is_empty() {
            s.push('/');
            s.push_str(&path.join("/"));
        }
    }
    let query: Vec<String> = url
        .query
        .iter()
        .filter(|q| !q.disabled)
        .filter(|q| q.key.is_some() || q.value.is_some())
        .map(|q| match &q.value {
            Some(v) => format!("{}={v}", q.key.as_deref().unwrap_or_default()),
            None => q.key.clone().unwrap_or_default(),
        })
        .collect();
    if !query.is_empty() {
        s.push('?');
        s.push_str(&query.join("&"));
    }
    if let Some(h) = &url.hash {
        s.push('#');
        s.push_str(h);
    }
    s
}

/// The request as it goes on the wire. `headers` are the request's headers as
/// the pre-request scripts left them; `auth` is the effective (inherited) auth;
/// `base_dir` is where form and file `src` paths are looked up.
pub(crate) fn build(
    req: &Request,
    headers: &[Header],
    auth: Option<&Auth>,
    scopes: &Scopes,
    base_dir: &Path,
) -> Result<Built, Vec<Issue>> {
    let mut r = Resolver {
        scopes,
        issues: Vec::new(),
    };
    let url_text = r.text(&url_template(&req.url));
    let url_text = if url_text.contains("://") {
        url_text
    } else {
        // Postman's default when a URL has no scheme.
        format!("http://{url_text}")
    };
    // An unset variable in the scheme, host or port would only come back as
    // a puzzling DNS or connection error: the missing variable is what the
    // reader needs to know. In the path or query it is sent as written, as
    // Newman does (collections assert that `{{unset}}` reaches the server).
    let authority_end = url_text
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| url_text[start..].find(['/', '?', '#']).map(|j| start + j))
        .unwrap_or(url_text.len());
    let unresolved = vars_pattern_names(&url_text[..authority_end]);
    let mut url = if !unresolved.is_empty() {
        r.issues.push(Issue::Invalid(format!(
            "URL {url_text:?} uses variables that are not set: {}",
            unresolved.join(", ")
        )));
        None
    } else {
        match url::Url::parse(&url_text) {
            Ok(u) => Some(u),
            Err(e) => {
                r.issues
                    .push(Issue::Invalid(format!("invalid URL {url_text:?}: {e}")));
                None
            }
        }
    };
    if let Some(u) = url.as_mut() {
        fill_path_variables(u, &req.url, &mut r);
    }

    let mut out: Vec<(String, String)> = Vec::new();
    for h in headers.iter().filter(|h| !h.disabled) {
        let key = r.text(&h.key);
        let value = r.text(&h.value);
        out.push((key, value));
    }
    let has = |out: &[(String, String)], name: &str| {
        out.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    };

    let mut body = BuiltBody::None;
    let mut default_type: Option<&str> = None;
    match &req.body {
        None | Some(Body::None) => {}
        Some(Body::Raw { raw, language }) => {
            body = BuiltBody::Bytes(r.text(raw).into_bytes());
            default_type = Some(match language.as_deref() {
                Some("json") => "application/json",
                Some("xml") => "application/xml",
                Some("html") => "text/html",
                Some("javascript") => "application/javascript",
                _ => "text/plain",
            });
        }
        Some(Body::UrlEncoded(pairs)) => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for kv in pairs.iter().filter(|kv| !kv.disabled) {
                let k = r.text(&kv.key);
                let v = r.text(&kv.value);
                form.append_pair(&k, &v);
            }
            body = BuiltBody::Bytes(form.finish().into_bytes());
            default_type = Some("application/x-www-form-urlencoded");
        }
        Some(Body::FormData(fields)) => {
            let mut parts = Vec::new();
            for f in fields.iter().filter(|f| !f.disabled) {
                let name = r.text(&f.key);
                let content_type = f.content_type.as_ref().map(|c| r.text(c));
                match &f.value {
                    FormValue::Text(t) => parts.push(FormPart {
                        name,
                        value: PartValue::Text(r.text(t)),
                        content_type,
                    }),
                    FormValue::Files(srcs) if srcs.is_empty() => {
                        r.issues.push(Issue::Unsupported(format!(
                            "file upload in form field '{name}' with no file chosen (src)"
                        )));
                    }
                    FormValue::Files(srcs) => {
                        for src in srcs {
                            match read_src(base_dir, src) {
                                Ok((file_name, bytes)) => parts.push(FormPart {
                                    name: name.clone(),
                                    value: PartValue::File { file_name, bytes },
                                    content_type: content_type.clone(),
                                }),
                                Err(e) => r.issues.push(Issue::Unsupported(format!(
                                    "file upload in form field '{name}': {e}"
                                ))),
                            }
                        }
                    }
                }
            }
            // An empty form is no body at all, as in Postman (a GET exported
            // with `"formdata": []` must not turn into a multipart upload).
            if !parts.is_empty() {
                // The boundary goes in the header; one written by hand has none.
                out.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
                body = BuiltBody::Form(parts);
            }
        }
        Some(Body::File { src }) => match src {
            None => r.issues.push(Issue::Unsupported(
                "binary file body with no file chosen (src)".into(),
            )),
            Some(src) => match read_src(base_dir, src) {
                Ok((_, bytes)) => body = BuiltBody::Bytes(bytes),
                Err(e) => r
                    .issues
                    .push(Issue::Unsupported(format!("binary file body: {e}"))),
            },
        },
        Some(Body::GraphQl { query, variables }) => {
            let query = r.text(query);
            let variables = match variables.as_deref().map(|v| r.text(v)) {
                None => Value::Null,
                Some(v) if v.trim().is_empty() => Value::Null,
                Some(v) => match serde_json::from_str(&v) {
                    Ok(v) => v,
                    Err(e) => {
                        r.issues.push(Issue::Invalid(format!(
                            "GraphQL variables are not valid JSON: {e}"
                        )));
                        Value::Null
                    }
                },
            };
            let mut doc = json!({ "query": query });
            if !variables.is_null() {
                doc["variables"] = variables;
            }
            body = BuiltBody::Bytes(doc.to_string().into_bytes());
            default_type = Some("application/json");
        }
    }
    if let Some(t) = default_type {
        if !has(&out, "content-type") {
            out.push(("Content-Type".into(), t.into()));
        }
    }

    let mut digest = None;
    match auth {
        None | Some(Auth::NoAuth) => {}
        Some(Auth::Basic { username, password }) => {
            let creds = format!("{}:{}", r.text(username), r.text(password));
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(creds)
            );
            // Postman's auth replaces a hand-written Authorization header.
            out.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
            out.push(("Authorization".into(), value));
        }
        Some(Auth::Bearer { token }) => {
            let value = format!("Bearer {}", r.text(token));
            out.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
            out.push(("Authorization".into(), value));
        }
        Some(Auth::ApiKey {
            key,
            value,
            in_query,
        }) => {
            let key = r.text(key);
            let value = r.text(value);
            if *in_query {
                if let Some(u) = url.as_mut() {
                    u.query_pairs_mut().append_pair(&key, &value);
                }
            } else {
                out.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
                out.push((key, value));
            }
        }
        Some(Auth::Helper { kind, params }) => {
            let params: Vec<(String, String)> =
                params.iter().map(|(k, v)| (k.clone(), r.text(v))).collect();
            let get = |k: &str| Auth::param(&params, k).to_string();
            let set_auth = |out: &mut Vec<(String, String)>, value: String| {
                out.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
                out.push(("Authorization".into(), value));
            };
            match (kind.as_str(), url.as_mut()) {
                ("oauth2", u) => {
                    let token = get("accessToken");
                    if get("addTokenTo") == "queryParams" {
                        if let Some(u) = u {
                            u.query_pairs_mut().append_pair("access_token", &token);
                        }
                    } else if !token.is_empty() {
                        let prefix = match get("headerPrefix").as_str() {
                            "" => "Bearer".to_string(),
                            p => p.to_string(),
                        };
                        set_auth(&mut out, format!("{prefix} {token}").trim().to_string());
                    }
                }
                ("digest", Some(u)) => {
                    let uri = match u.query() {
                        Some(q) => format!("{}?{q}", u.path()),
                        None => u.path().to_string(),
                    };
                    if let Some(h) = super::auth::digest(&params, None, &req.method, &uri) {
                        set_auth(&mut out, h);
                    }
                    digest = Some(params.clone());
                }
                ("oauth1", Some(u)) => {
                    let form: Vec<(String, String)> = match (&body, default_type) {
                        (BuiltBody::Bytes(b), Some("application/x-www-form-urlencoded")) => {
                            url::form_urlencoded::parse(b).into_owned().collect()
                        }
                        _ => Vec::new(),
                    };
                    match super::auth::oauth1(&params, &req.method, u, &form) {
                        Ok(super::auth::OAuth1::Header(h)) => set_auth(&mut out, h),
                        Ok(super::auth::OAuth1::Query(pairs)) => {
                            let mut q = u.query_pairs_mut();
                            for (k, v) in &pairs {
                                q.append_pair(k, v);
                            }
                        }
                        Err(what) => r.issues.push(Issue::Unsupported(what)),
                    }
                }
                ("hawk", Some(u)) => {
                    let ct = out
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    let payload = match &body {
                        BuiltBody::Bytes(b) => Some((b.as_slice(), ct.as_str())),
                        _ => None,
                    };
                    match super::auth::hawk(&params, &req.method, u, payload) {
                        Ok(h) => set_auth(&mut out, h),
                        Err(what) => r.issues.push(Issue::Unsupported(what)),
                    }
                }
                ("awsv4", Some(u)) => {
                    let payload = match &body {
                        BuiltBody::Bytes(b) => Some(b.as_slice()),
                        _ => None,
                    };
                    super::auth::awsv4(
                        &params,
                        &req.method,
                        u,
                        &mut out,
                        payload,
                        chrono::Utc::now(),
                    );
                }
                ("edgegrid", Some(u)) => {
                    let payload = match &body {
                        BuiltBody::Bytes(b) => Some(b.as_slice()),
                        _ => None,
                    };
                    match super::auth::edgegrid(
                        &params,
                        &req.method,
                        u,
                        &out,
                        payload,
                        chrono::Utc::now(),
                    ) {
                        Ok(Some(h)) => set_auth(&mut out, h),
                        Ok(None) => {}
                        Err(what) => r.issues.push(Issue::Invalid(what)),
                    }
                }
                _ => {}
            }
        }
        Some(Auth::Unsupported(ty)) => {
            r.issues
                .push(Issue::Unsupported(format!("auth type '{ty}'")));
        }
    }
    // The headers Postman's runtime adds to every request unless the request
    // sets them: servers and scripts that look for them see the same thing
    // under Newman and here. The user agent keeps Postman's product token
    // first, since servers match on it, and names this runner after it.
    add_default_headers(&mut out);
    // Postman's runtime sends Host as one of its own headers, so a test
    // script sees it in pm.request (Newman's sandbox-libraries asserts it).
    if let Some(u) = &url {
        if !has(&out, "host") {
            let mut host = u.host_str().unwrap_or("").to_string();
            if let Some(port) = u.port() {
                host.push_str(&format!(":{port}"));
            }
            out.push(("Host".into(), host));
        }
    }

    if !r.issues.is_empty() {
        return Err(r.issues);
    }
    let Some(url) = url else {
        return Err(vec![Issue::Invalid("no URL".into())]);
    };
    Ok(Built {
        method: req.method.clone(),
        url: url.to_string(),
        headers: out,
        body,
        digest,
    })
}

/// The headers Postman's runtime adds to every request unless the request
/// sets them: servers and scripts that look for them see the same thing
/// under Newman and here. The user agent keeps Postman's product token
/// first, since servers match on it, and names this runner after it.
pub(crate) fn add_default_headers(out: &mut Vec<(String, String)>) {
    let postman_token = uuid::Uuid::new_v4().to_string();
    let defaults: [(&str, &str); 5] = [
        (
            "User-Agent",
            concat!("PostmanRuntime/7.39.1 testbed/", env!("CARGO_PKG_VERSION")),
        ),
        ("Accept", "*/*"),
        ("Cache-Control", "no-cache"),
        ("Postman-Token", &postman_token),
        ("Accept-Encoding", ACCEPT_ENCODING),
    ];
    for (name, value) in defaults {
        if !out.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            out.push((name.into(), value.into()));
        }
    }
}

/// A request a script sends with `pm.sendRequest`, as the prelude hands it
/// over: no variables resolved, no auth, the run's cookie jar.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ScriptRequest {
    pub url: String,
    #[serde(default = "get")]
    pub method: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: ScriptBody,
}

fn get() -> String {
    "GET".into()
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub(crate) enum ScriptBody {
    #[default]
    None,
    Raw {
        raw: String,
    },
    Urlencoded {
        pairs: Vec<(String, String)>,
    },
    Formdata {
        pairs: Vec<(String, String)>,
    },
}

impl ScriptRequest {
    pub(crate) fn built(self) -> Result<Built, String> {
        let url = if self.url.contains("://") {
            self.url
        } else {
            format!("http://{}", self.url)
        };
        let url = url::Url::parse(&url)
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?
            .to_string();
        let mut headers = self.headers;
        let body = match self.body {
            ScriptBody::None => BuiltBody::None,
            ScriptBody::Raw { raw } => BuiltBody::Bytes(raw.into_bytes()),
            ScriptBody::Urlencoded { pairs } => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in &pairs {
                    form.append_pair(k, v);
                }
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    headers.push((
                        "Content-Type".into(),
                        "application/x-www-form-urlencoded".into(),
                    ));
                }
                BuiltBody::Bytes(form.finish().into_bytes())
            }
            ScriptBody::Formdata { pairs } => {
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
                BuiltBody::Form(
                    pairs
                        .into_iter()
                        .map(|(name, v)| FormPart {
                            name,
                            value: PartValue::Text(v),
                            content_type: None,
                        })
                        .collect(),
                )
            }
        };
        add_default_headers(&mut headers);
        Ok(Built {
            method: self.method.to_ascii_uppercase(),
            url,
            headers,
            body,
            digest: None,
        })
    }
}

/// The `{{name}}` references left in a text after substitution.
fn vars_pattern_names(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let name = &rest[start..start + len + 2];
        // Unknown dynamic variables are reported as unsupported instead.
        if !name.starts_with("{{$") && !out.contains(&name) {
            out.push(name);
        }
        rest = &rest[start + len + 2..];
    }
    out
}

/// Replaces `:name` path segments with the URL's `variable` values.
fn fill_path_variables(u: &mut url::Url, spec: &Url, r: &mut Resolver<'_>) {
    if spec.variables.is_empty() {
        return;
    }
    let Some(segments) = u.path_segments() else {
        return;
    };
    let segments: Vec<String> = segments.map(str::to_string).collect();
    let mut changed = false;
    let filled: Vec<String> = segments
        .into_iter()
        .map(|seg| {
            let found = seg
                .strip_prefix(':')
                .and_then(|name| spec.variables.iter().find(|v| !v.disabled && v.key == name));
            match found {
                Some(v) => {
                    changed = true;
                    r.text(&vars::value_text(&v.value))
                }
                None => seg,
            }
        })
        .collect();
    if changed {
        if let Ok(mut path) = u.path_segments_mut() {
            path.clear().extend(filled.iter().map(String::as_str));
        }
    }
}

fn read_src(base_dir: &Path, src: &str) -> Result<(String, Vec<u8>), String> {
    let path = base_dir.join(src);
    let bytes =
        std::fs::read(&path).map_err(|e| format!("file {} not readable: {e}", path.display()))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| src.to_string());
    Ok((file_name, bytes))
}

/// A response as the runner and the scripts see it.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub time: Duration,
    /// Body plus headers, approximately what went over the wire.
    pub size: usize,
    /// The cookies of the run's jar for the URL of the reply.
    pub cookies: Vec<(String, String)>,
}

/// What Postman offers: the encodings [`decode`] reads.
pub(crate) const ACCEPT_ENCODING: &str = "gzip, deflate, br";

/// A decoded body larger than this is refused: a small compressed reply must
/// not be able to exhaust memory.
const MAX_DECODED: u64 = 512 << 20;

/// The client of one run, with the run's cookie jar: a `Set-Cookie` is sent
/// back on later requests to the same site, as Newman does, and scripts read
/// the jar's cookies for the URL they got their reply from.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    pub(crate) jar: Arc<RunJar>,
}

/// `follow_redirects: false` is Newman's `--ignore-redirects`: a 3xx reply is
/// the response the tests see.
pub(crate) fn client(
    timeout: Duration,
    insecure: bool,
    follow_redirects: bool,
    jar: RunJar,
) -> Result<Http, TransportError> {
    let jar = Arc::new(jar);
    let redirects = if follow_redirects {
        // Postman's default `maxRedirects`.
        reqwest::redirect::Policy::limited(10)
    } else {
        reqwest::redirect::Policy::none()
    };
    // Proxies are Newman's (HTTP_PROXY, HTTPS_PROXY, NO_PROXY and their
    // lower-case forms, read as postman-request reads them), so reqwest's own
    // reading of the environment, which differs (see proxy.rs), is off.
    let proxies = EnvProxies::from_env()?;
    let mut builder = reqwest::Client::builder().no_proxy();
    if !proxies.is_empty() {
        builder = builder.proxy(reqwest::Proxy::custom(move |url| {
            proxies.for_url(url).cloned()
        }));
    }
    builder
        .cookie_provider(jar.clone())
        .redirect(redirects)
        .timeout(timeout)
        .danger_accept_invalid_certs(insecure)
        .build()
        .map(|client| Http { client, jar })
        .map_err(|e| TransportError::Invalid(format!("cannot set up the HTTP client: {e}")))
}

pub(crate) async fn send(
    http: &Http,
    built: &Built,
    timeout: Duration,
) -> Result<Answer, TransportError> {
    let method = reqwest::Method::from_bytes(built.method.as_bytes())
        .map_err(|_| TransportError::Invalid(format!("not an HTTP method: {}", built.method)))?;
    let mut rb = http.client.request(method, &built.url);
    for (k, v) in &built.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    rb = match &built.body {
        BuiltBody::None => rb,
        BuiltBody::Bytes(b) => rb.body(b.clone()),
        BuiltBody::Form(parts) => {
            let mut form = reqwest::multipart::Form::new();
            for p in parts {
                let mut part = match &p.value {
                    PartValue::Text(t) => reqwest::multipart::Part::text(t.clone()),
                    PartValue::File { file_name, bytes } => {
                        reqwest::multipart::Part::bytes(bytes.clone()).file_name(file_name.clone())
                    }
                };
                if let Some(ct) = &p.content_type {
                    part = part.mime_str(ct).map_err(|e| {
                        TransportError::Invalid(format!("content type {ct:?}: {e}"))
                    })?;
                }
                form = form.part(p.name.clone(), part);
            }
            rb.multipart(form)
        }
    };
    let start = Instant::now();
    let resp = rb.send().await.map_err(|e| classify(&e, timeout))?;
    // What the jar holds for the final URL (after redirects) once this reply's
    // `Set-Cookie` went in: Newman's `responseCookies`. The jar gives names and
    // values only, not the attributes.
    let mut cookies = http.jar.pairs(resp.url());
    // The jar's order changes from run to run; scripts see a stable one.
    cookies.sort();
    let code = resp.status().as_u16();
    let reason = resp.status().canonical_reason().unwrap_or("").to_string();
    let headers = header_pairs(resp.headers());
    let wire = resp
        .bytes()
        .await
        .map_err(|e| classify(&e, timeout))?
        .to_vec();
    let time = start.elapsed();
    let encoding = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-encoding"))
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let body = decode(&encoding, &wire).map_err(TransportError::Invalid)?;
    let size = wire.len()
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>();
    Ok(Answer {
        code,
        reason,
        headers,
        body,
        time,
        size,
        cookies,
    })
}

/// The body of a reply as the scripts see it: undone from its
/// `Content-Encoding` (codings listed in the order they were applied, so undone
/// last first). Headers stay as received, `Content-Encoding` included, as in
/// Postman. An encoding this runner does not know leaves the body as is.
pub(crate) fn decode(encoding: &str, wire: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let codings: Vec<String> = encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    let mut body = wire.to_vec();
    // A HEAD reply, a 204 or a 304 carries the header with no body.
    if body.is_empty() {
        return Ok(body);
    }
    for coding in codings.iter().rev() {
        let mut out = Vec::new();
        let limited = |r: &mut dyn Read, out: &mut Vec<u8>| -> std::io::Result<()> {
            r.take(MAX_DECODED + 1).read_to_end(out).map(|_| ())
        };
        let read = match coding.as_str() {
            "gzip" | "x-gzip" => {
                limited(&mut flate2::read::MultiGzDecoder::new(&body[..]), &mut out)
            }
            // RFC 9110's deflate is zlib-wrapped; some servers send it raw,
            // and browsers (and Postman) accept both.
            "deflate" => {
                let zlib = limited(&mut flate2::read::ZlibDecoder::new(&body[..]), &mut out);
                if zlib.is_err() {
                    out.clear();
                    limited(&mut flate2::read::DeflateDecoder::new(&body[..]), &mut out)
                } else {
                    zlib
                }
            }
            "br" => limited(
                &mut brotli_decompressor::Decompressor::new(&body[..], 4096),
                &mut out,
            ),
            _ => return Ok(body),
        };
        read.map_err(|e| format!("the reply's {coding} body cannot be decoded: {e}"))?;
        if out.len() as u64 > MAX_DECODED {
            return Err(format!(
                "the reply's {coding} body decodes to more than {} MiB",
                MAX_DECODED >> 20
            ));
        }
        body = out;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_postman_accepts() {
        use std::io::Write;
        let doc = br#"{"gzipped": true}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(doc).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode("gzip", &gz).unwrap(), doc);
        assert_eq!(decode(" X-Gzip ", &gz).unwrap(), doc);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(doc).unwrap();
        assert_eq!(decode("deflate", &zlib.finish().unwrap()).unwrap(), doc);
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(doc).unwrap();
        assert_eq!(decode("deflate", &raw.finish().unwrap()).unwrap(), doc);
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &doc[..], &mut br, &Default::default()).unwrap();
        assert_eq!(decode("br", &br).unwrap(), doc);
        // Applied gzip then br: undone br then gzip.
        let mut both = Vec::new();
        brotli::BrotliCompress(&mut &gz[..], &mut both, &Default::default()).unwrap();
        assert_eq!(decode("gzip, br", &both).unwrap(), doc);
        assert_eq!(decode("", doc).unwrap(), doc);
        assert_eq!(decode("zstd", doc).unwrap(), doc);
        assert_eq!(decode("gzip", b"").unwrap(), b"");
        let e = decode("gzip", b"not gzip").unwrap_err();
        assert!(e.contains("gzip body cannot be decoded"), "{e}");
    }
    use crate::postman::collection::{QueryParam, Variable};

    #[test]
    fn urls_from_parts_raw_and_path_variables() {
        let mut scopes = Scopes::default();
        scopes.environment.set("baseUrl", "http://127.0.0.1:9");
        let url = Url {
            raw: Some("ignored".into()),
            host: Some(vec!["{{baseUrl}}".into()]),
            path: Some(vec!["users".into(), ":id".into()]),
            query: vec![
                QueryParam {
                    key: Some("a".into()),
                    value: Some("1".into()),
                    disabled: false,
                },
                QueryParam {
                    key: Some("b".into()),
                    value: Some("2".into()),
                    disabled: true,
                },
            ],
            variables: vec![Variable {
                key: "id".into(),
                value: Value::from(42),
                disabled: false,
            }],
            ..Url::default()
        };
        let req = Request {
            method: "GET".into(),
            url,
            headers: Vec::new(),
            body: None,
            auth: None,
            description: None,
        };
        let b = build(&req, &[], None, &scopes, Path::new(".")).unwrap();
        assert_eq!(b.url, "http://127.0.0.1:9/users/42?a=1");
        let unset = Request {
            url: Url {
                raw: Some("{{nowhere}}/x".into()),
                ..Url::default()
            },
            ..req.clone()
        };
        let e = build(&unset, &[], None, &scopes, Path::new(".")).unwrap_err();
        assert!(
            matches!(&e[0], Issue::Invalid(m) if m.ends_with("variables that are not set: {{nowhere}}")),
            "{e:?}"
        );
        // Past the host, an unset variable goes out as written, as in Newman.
        let literal = Request {
            url: Url {
                raw: Some("http://h/{{p}}?a={{q}}".into()),
                ..Url::default()
            },
            ..req.clone()
        };
        let b = build(&literal, &[], None, &scopes, Path::new(".")).unwrap();
        assert_eq!(b.url, "http://h/%7B%7Bp%7D%7D?a={{q}}");
        let req = Request {
            url: Url {
                raw: Some("localhost:8/x?q={{$randomCity}}".into()),
                ..Url::default()
            },
            ..req
        };
        let e = build(
            &req,
            &[],
            Some(&Auth::Unsupported("oauth2".into())),
            &scopes,
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            e,
            vec![
                Issue::Unsupported("dynamic variable '{{$randomCity}}'".into()),
                Issue::Unsupported("auth type 'oauth2'".into())
            ]
        );
    }
}
