//! Newman parity. Collections from Newman's own repository
//! (`tests/fixtures/newman/`, provenance in its README) run against a local
//! echo server that answers like postman-echo.com for the endpoints they call
//! (`testbed_testsupport::echo`, shared with the CLI's tests), and must give
//! the counts Newman gave on the same server (`tests/fixtures/newman/counts.json`,
//! written by `record.js` there, which serves the echo server through the
//! ignored `serve_echo_for_newman`).
//!
//! The other tests here pin each piece of that parity on its own: compressed
//! replies, the cookie jar, the headers Newman sends, v2.0 auth.

use serde_json::{json, Value};
use testbed_apitest::postman::{self, PostmanRun, RunOptions, Vars};
use testbed_testsupport::echo::{serve, serve_on};
use testbed_testsupport::newman::{fixture, localized};

// ------------------------------------------------------------ echo server

/// Serves the echo server until killed, for `record.js` to run Newman against
/// (`NEWMAN_ECHO_PORT` picks the port). Not a check: ignored.
#[tokio::test]
#[ignore = "serves the echo server for record.js; not a check"]
async fn serve_echo_for_newman() {
    let port = std::env::var("NEWMAN_ECHO_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5599);
    let url = serve_on(port).await;
    println!("echo server listening on {url}");
    std::future::pending::<()>().await;
}

// ------------------------------------------------------------ helpers

fn v20(items: Value) -> String {
    json!({
        "info": {"name": "inline", "schema": "https://schema.getpostman.com/json/collection/v2.0.0/collection.json"},
        "item": items,
    })
    .to_string()
}

fn get_item(name: &str, url: String, test: &str) -> Value {
    json!({
        "name": name,
        "request": {"url": url, "method": "GET", "header": [], "body": {"mode": "formdata", "formdata": []}},
        "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": test.lines().collect::<Vec<_>>()}}],
    })
}

async fn run_text(text: &str, options: RunOptions) -> PostmanRun {
    let c = postman::load(text).unwrap_or_else(|p| panic!("{p:?}"));
    postman::run(&c, options).await
}

/// Every assertion of the run, as `name: outcome (message)`, for messages.
fn assertions(run: &PostmanRun) -> String {
    run.executions
        .iter()
        .flat_map(|e| e.assertions.iter())
        .map(|a| format!("{}: {:?} {:?}", a.name, a.outcome, a.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_all_pass(run: &PostmanRun, executed: usize) {
    let text = format!(
        "{}\n{}\nunsupported: {:?}",
        postman::newman_summary(run),
        assertions(run),
        run.unsupported
    );
    assert_eq!(
        (run.stats.assertions.executed, run.stats.assertions.failed),
        (executed, 0),
        "{text}"
    );
    assert_eq!(run.stats.requests.failed, 0, "{text}");
    assert!(run.unsupported.is_empty(), "{text}");
}

// ------------------------------------------------------------ each piece

#[tokio::test]
async fn compressed_replies_are_decoded_with_content_encoding_kept() {
    let base = serve().await;
    let check = |flag: &str, encoding: &str| {
        format!(
            "var res = JSON.parse(responseBody);\n\
             tests['decoded'] = res.{flag} === true;\n\
             tests['offered'] = res.headers['accept-encoding'] === 'gzip, deflate, br';\n\
             pm.test('encoding header kept', () => pm.expect(pm.response.headers.get('Content-Encoding')).to.equal('{encoding}'));"
        )
    };
    let text = v20(json!([
        get_item("gzip", format!("{base}/gzip"), &check("gzipped", "gzip")),
        get_item(
            "deflate",
            format!("{base}/deflate"),
            &check("deflated", "deflate")
        ),
        get_item("brotli", format!("{base}/brotli"), &check("brotli", "br")),
    ]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 9);
}

#[tokio::test]
async fn requests_carry_newmans_default_headers_unless_set() {
    let base = serve().await;
    let test = "var h = JSON.parse(responseBody).headers;\n\
        tests['token'] = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(h['postman-token']);\n\
        tests['cache-control'] = h['cache-control'] === 'no-cache';\n\
        tests['accept'] = h['accept'] === '*/*';\n\
        tests['user agent'] = h['user-agent'].indexOf('PostmanRuntime/') === 0;\n\
        pm.environment.set('token' + pm.info.iteration, h['postman-token']);";
    let mut own = get_item(
        "own headers",
        format!("{base}/headers"),
        "var h = JSON.parse(responseBody).headers;\n\
         tests['own accept kept'] = h['accept'] === 'application/json';\n\
         tests['own cache-control kept'] = h['cache-control'] === 'max-age=0';\n\
         tests['one accept'] = h['accept'].indexOf(',') < 0;",
    );
    own["request"]["header"] = json!([
        {"key": "Accept", "value": "application/json"},
        {"key": "cache-control", "value": "max-age=0"},
    ]);
    let text = v20(json!([
        get_item("defaults", format!("{base}/headers"), test),
        own
    ]));
    let run = run_text(
        &text,
        RunOptions {
            iterations: Some(2),
            ..RunOptions::default()
        },
    )
    .await;
    assert_all_pass(&run, 14);
    // A fresh Postman-Token on every request.
    let (a, b) = (
        run.environment.get_str("token0"),
        run.environment.get_str("token1"),
    );
    assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
}

#[tokio::test]
async fn cookies_set_by_a_reply_are_sent_back_within_the_run_only() {
    let base = serve().await;
    let text = v20(json!([
        // postman-echo sets the cookies and redirects to /cookies; the jar
        // already sends them on the redirected request.
        get_item(
            "set",
            format!("{base}/cookies/set?foo1=bar1&foo2=bar2"),
            "var c = JSON.parse(responseBody).cookies;\ntests['after redirect'] = c.foo1 === 'bar1' && c.foo2 === 'bar2';"
        ),
        get_item(
            "later",
            format!("{base}/cookies"),
            "var c = JSON.parse(responseBody).cookies;\n\
             tests['sent back'] = c.foo1 === 'bar1' && c.foo2 === 'bar2';\n\
             tests['legacy cookie'] = postman.getResponseCookie('foo1').value === 'bar1' && postman.getResponseCookie('nope') === undefined;\n\
             tests['responseCookies'] = responseCookies.length === 2 && responseCookies[1].name === 'foo2';\n\
             pm.test('pm.cookies', () => { pm.expect(pm.cookies.get('foo2')).to.equal('bar2'); pm.expect(pm.cookies.has('x')).to.be.false; pm.expect(pm.cookies.toObject()).to.eql({foo1: 'bar1', foo2: 'bar2'}); });"
        ),
    ]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 5);
    // A new run starts with an empty jar.
    let text = v20(json!([get_item(
        "fresh",
        format!("{base}/cookies"),
        "tests['empty jar'] = Object.keys(JSON.parse(responseBody).cookies).length === 0;"
    )]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 1);
}

#[tokio::test]
async fn v2_0_auth_objects_and_legacy_scripts_run() {
    let base = serve().await;
    // v2.0 writes auth parameters as an object; this is postman-echo's own
    // example, with a legacy test script.
    let text = json!({
        "info": {"name": "v2.0 auth", "schema": "https://schema.getpostman.com/json/collection/v2.0.0/collection.json"},
        "item": [{
            "name": "basic",
            "request": {
                "url": format!("{base}/basic-auth"),
                "method": "GET",
                "auth": {"type": "basic", "basic": {"username": "postman", "password": "password", "saveHelperData": true, "showPassword": false}}
            },
            "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": [
                "tests['status'] = responseCode.code === 200;",
                "tests['body has'] = responseBody.has('authenticated');",
                "tests['json'] = JSON.parse(responseBody).authenticated === true;",
                "postman.setEnvironmentVariable('code', responseCode.code);"
            ]}}]
        }]
    })
    .to_string();
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 3);
    assert_eq!(run.report.properties["format"], "postman collection v2.0");
    // Legacy setters store text, as Newman does.
    assert_eq!(run.environment.get("code"), Some(&Value::from("200")));
}

#[tokio::test]
async fn send_request_callback_and_promise_forms_use_the_runs_jar() {
    let base = serve().await;
    let script = format!(
        "pm.sendRequest('{base}/cookies/set?sr=1', function (err, res) {{\n\
           pm.test('callback', () => {{ pm.expect(err).to.equal(null); pm.expect(res.code).to.equal(200); pm.expect(res.json().cookies.sr).to.equal('1'); }});\n\
         }});\n\
         const res = await pm.sendRequest({{url: '{base}/post', method: 'POST', header: {{'X-A': 'b'}}, body: {{mode: 'urlencoded', urlencoded: [{{key: 'k', value: 'v'}}]}}}});\n\
         pm.test('promise', () => {{ pm.expect(res.json().form).to.eql({{k: 'v'}}); pm.expect(res.json().headers['x-a']).to.equal('b'); pm.response.to.have.status(200); }});\n\
         pm.sendRequest('http://127.0.0.1:1/none', (err, r) => pm.test('error', () => {{ pm.expect(err).to.be.an('error'); pm.expect(r).to.equal(undefined); }}));\n\
         pm.visualizer.set('<b>{{{{x}}}}</b>', {{x: 1}});"
    );
    let text = v20(json!([
        get_item("send", format!("{base}/get"), &script),
        // The cookie the script's request got is in the run's jar.
        get_item(
            "later",
            format!("{base}/cookies"),
            "pm.test('jar', () => pm.expect(pm.response.json().cookies.sr).to.equal('1'));"
        ),
    ]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 4);
    // What a callback throws fails its script, as a throw in the script would.
    let text = v20(json!([get_item(
        "throws",
        format!("{base}/get"),
        &format!("pm.sendRequest('{base}/get', () => {{ throw new TypeError('late'); }});")
    )]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_eq!(run.stats.test_scripts.failed, 1, "{}", assertions(&run));
    assert!(
        assertions(&run).contains("TypeError: late"),
        "{}",
        assertions(&run)
    );
}

#[tokio::test]
async fn auth_helpers_are_accepted_by_servers_that_check_them() {
    let base = serve().await;
    let item = |name: &str, path: &str, auth: Value, test: &str| {
        let mut i = get_item(name, format!("{base}{path}"), test);
        i["request"]["auth"] = auth;
        i
    };
    let text = v20(json!([
        item("digest", "/digest-auth?x=1", json!({"type": "digest", "digest": {"username": "{{user}}", "password": "password"}}),
             "pm.test('digest', () => pm.expect(pm.response.json().authenticated).to.equal(true));"),
        item("digest wrong", "/digest-auth", json!({"type": "digest", "digest": {"username": "postman", "password": "nope"}}),
             "pm.test('refused', () => pm.response.to.have.status(401));"),
        item("oauth1", "/oauth1?a=b%20c", json!({"type": "oauth1", "oauth1": {"consumerKey": "RKCGzna7bv9YD57c", "consumerSecret": "D+EdQ-gs$-%@2Nu7", "signatureMethod": "HMAC-SHA1"}}),
             "pm.test('oauth1', () => pm.expect(pm.response.json().status).to.equal('pass'));"),
        item("hawk", "/auth/hawk?q=1", json!({"type": "hawk", "hawk": {"authId": "dh37fgj492je", "authKey": "werxhqb98rpaxn39848xrunpaw3489ruxnpa98w4rxn", "algorithm": "sha256", "extraData": "some-app-data"}}),
             "pm.test('hawk', () => pm.response.to.have.status(200));"),
        item("oauth2", "/headers", json!({"type": "oauth2", "oauth2": {"accessToken": "tok", "addTokenTo": "header"}}),
             "pm.test('bearer', () => pm.expect(pm.response.json().headers.authorization).to.equal('Bearer tok'));"),
        item("oauth2 query", "/get", json!({"type": "oauth2", "oauth2": {"accessToken": "tok", "addTokenTo": "queryParams"}}),
             "pm.test('query', () => pm.expect(pm.response.json().args.access_token).to.equal('tok'));"),
    ]));
    let mut env = Vars::new();
    env.set("user", "postman");
    let run = run_text(
        &text,
        RunOptions {
            environment: env,
            ..RunOptions::default()
        },
    )
    .await;
    assert_all_pass(&run, 6);
    // The challenge and its answer are two requests, as Newman counts them.
    assert_eq!(run.stats.requests.executed, 8);
}

#[tokio::test]
async fn awsv4_and_edgegrid_are_accepted_by_servers_that_verify_them() {
    let base = serve().await;
    let aws = |extra: Value| {
        let mut a = json!({"accessKey": "AKIDEXAMPLE", "secretKey": "{{awsSecret}}"});
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"type": "awsv4", "awsv4": a})
    };
    let edge = |extra: Value| {
        let mut a = json!({"clientToken": "ct", "accessToken": "at", "clientSecret": "edgegrid-client-secret"});
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"type": "edgegrid", "edgegrid": a})
    };
    let item = |name: &str,
                method: &str,
                path: &str,
                auth: Value,
                body: Value,
                header: Value,
                test: &str| {
        let mut i = get_item(name, format!("{base}{path}"), test);
        i["request"]["auth"] = auth;
        i["request"]["method"] = json!(method);
        i["request"]["body"] = body;
        i["request"]["header"] = header;
        i
    };
    let none = json!({});
    let no_headers = json!([]);
    let raw = json!({"mode": "raw", "raw": "{\"k\": \"{{v}}\"}", "options": {"raw": {"language": "json"}}});
    let form = json!({"mode": "urlencoded", "urlencoded": [{"key": "a b", "value": "c&d"}]});
    let empty_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let text = v20(json!([
        item("aws get", "GET", "/aws/a%20b/c?b=2&a=1&a=0&e=", aws(json!({"sessionToken": "tok"})), none.clone(), no_headers.clone(),
             "pm.test('aws get', () => { const r = pm.response.json(); pm.expect(r.authenticated).to.equal(true); pm.expect([r.service, r.region, r.token, r.bodyHashHeader]).to.eql(['execute-api', 'us-east-1', 'tok', null]); pm.expect(r.signedHeaders).to.equal('host;x-amz-date;x-amz-security-token'); });"),
        item("aws raw", "POST", "/aws/fn/invoke", aws(json!({"service": "lambda", "region": "eu-west-1"})), raw, json!([{"key": "X-Custom", "value": "  a   b "}, {"key": "X-Amz-Date", "value": "stale"}]),
             "pm.test('aws raw', () => { const r = pm.response.json(); pm.expect(r.authenticated).to.equal(true); pm.expect(r.signedHeaders).to.equal('content-type;host;x-amz-content-sha256;x-amz-date;x-custom'); pm.expect(r.bodyHashHeader).to.have.lengthOf(64); });"),
        item("aws form s3", "PUT", "/aws/bucket/key.txt", aws(json!({"service": "s3"})), form, no_headers.clone(),
             "pm.test('aws form', () => { pm.response.to.have.status(200); pm.expect(pm.response.json().signedHeaders).to.include('x-amz-content-sha256'); });"),
        item("aws s3 empty", "GET", "/aws/bucket/", aws(json!({"service": "s3", "region": "us-west-2"})), none.clone(), no_headers.clone(),
             &format!("pm.test('aws s3 empty', () => pm.expect(pm.response.json().bodyHashHeader).to.equal('{empty_hash}'));")),
        item("aws query", "GET", "/aws/q?x=1", aws(json!({"addAuthDataToQuery": true, "sessionToken": "qtok"})), none.clone(), no_headers.clone(),
             "pm.test('aws query', () => { const r = pm.response.json(); pm.expect([r.authenticated, r.inQuery, r.token, r.signedHeaders]).to.eql([true, true, 'qtok', 'host']); });"),
        item("aws wrong secret", "GET", "/aws/x", json!({"type": "awsv4", "awsv4": {"accessKey": "AKIDEXAMPLE", "secretKey": "nope"}}), none.clone(), no_headers.clone(),
             "pm.test('aws refused', () => pm.response.to.have.status(403));"),
        item("edgegrid get", "GET", "/edgegrid/x?p=1&q=2", edge(json!({})), none.clone(), no_headers.clone(),
             "pm.test('edgegrid get', () => pm.expect(pm.response.json()).to.eql({authenticated: true, signedHeaders: 0, bodyHashed: false}));"),
        item("edgegrid post", "POST", "/edgegrid/post", edge(json!({"headersToSign": "X-Test1, x-test2"})), json!({"mode": "raw", "raw": "datadata"}),
             json!([{"key": "X-Test1", "value": "  one   two "}, {"key": "X-Test2", "value": "b"}]),
             "pm.test('edgegrid post', () => pm.expect(pm.response.json()).to.eql({authenticated: true, signedHeaders: 2, bodyHashed: true}));"),
        item("edgegrid base url", "GET", "/edgegrid/b", edge(json!({"baseURL": base})), none.clone(), no_headers.clone(),
             "pm.test('edgegrid base url', () => pm.response.to.have.status(200));"),
        item("edgegrid wrong secret", "GET", "/edgegrid/x", edge(json!({"clientSecret": "nope"})), none.clone(), no_headers.clone(),
             "pm.test('edgegrid refused', () => pm.response.to.have.status(401));"),
    ]));
    let mut env = Vars::new();
    env.set("awsSecret", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    env.set("v", "body value");
    let run = run_text(
        &text,
        RunOptions {
            environment: env,
            ..RunOptions::default()
        },
    )
    .await;
    assert_all_pass(&run, 10);
}

#[tokio::test]
async fn cookie_jar_methods_reach_the_runs_jar() {
    let base = serve().await;
    let host = base
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let mut first = get_item(
        "jar set",
        format!("{base}/cookies"),
        &format!(
            "pm.test('sent', () => pm.expect(pm.response.json().cookies).to.eql({{pre: 'one', obj: 'two', raw: 'three'}}));\n\
             pm.test('set callbacks', () => pm.expect([pm.environment.get('setErr'), pm.environment.get('setName')]).to.eql(['null', 'pre']));\n\
             pm.test('foreign domain refused', () => pm.expect(pm.environment.get('domainErr')).to.include('domain'));\n\
             pm.test('bad arguments', () => {{ pm.expect(() => pm.cookies.jar().get(null, 'x', () => {{}})).to.throw(TypeError); pm.expect(() => pm.cookies.jar().get('{base}/', 'x')).to.throw(TypeError); }});\n\
             const jar = pm.cookies.jar();\n\
             jar.get('{base}/cookies', 'raw', (err, value) => pm.test('get', () => pm.expect([err, value]).to.eql([null, 'three'])));\n\
             jar.get('{base}/', 'raw', (err, value) => pm.test('path kept', () => pm.expect(value).to.equal(null)));\n\
             jar.getAll('{base}/cookies', (err, cookies) => pm.test('getAll', () => {{\n\
               pm.expect(cookies.count()).to.equal(3);\n\
               pm.expect(cookies.toObject()).to.eql({{pre: 'one', obj: 'two', raw: 'three'}});\n\
               const o = cookies.one('obj');\n\
               pm.expect([o.path, o.httpOnly, o.hostOnly, o.domain, o.expires]).to.eql(['/', true, true, '{host}', null]);\n\
               pm.expect(cookies.one('raw').path).to.equal('/cookies');\n\
             }}));\n\
             jar.unset('{base}/cookies', 'pre', (err) => pm.test('unset', () => pm.expect(err).to.equal(null)));"
        ),
    );
    first["event"].as_array_mut().unwrap().push(json!({"listen": "prerequest", "script": {"exec": [
        "pm.test('empty before the reply', () => pm.expect(pm.cookies.count()).to.equal(0));",
        "const jar = pm.cookies.jar();",
        format!("jar.set('{base}/cookies', 'pre', 'one', (err, cookie) => {{ pm.environment.set('setErr', String(err)); pm.environment.set('setName', cookie.name); }});"),
        format!("jar.set('{base}/', {{name: 'obj', value: 'two', path: '/', httpOnly: true}}, () => {{}});"),
        format!("jar.set('{base}/', 'raw=three; Path=/cookies');"),
        format!("jar.set('{base}/', {{name: 'elsewhere', value: 'x', domain: 'example.com'}}, (err) => pm.environment.set('domainErr', err ? err.message : 'none'));"),
    ]}}));
    let text = v20(json!([
        first,
        get_item(
            "after unset",
            format!("{base}/cookies"),
            &format!(
                "pm.test('pre gone', () => pm.expect(pm.response.json().cookies).to.eql({{obj: 'two', raw: 'three'}}));\n\
                 pm.cookies.jar().clear('{base}/cookies', (err) => pm.test('clear', () => pm.expect(err).to.equal(null)));"
            )
        ),
        get_item(
            "after clear",
            format!("{base}/cookies"),
            "pm.test('all gone', () => pm.expect(pm.response.json().cookies).to.eql({}));"
        ),
    ]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 12);
}

#[tokio::test]
async fn v1_collections_run_converted_as_newman_converts_them() {
    let base = serve().await;
    // A v1 export: folders placed by folders_order (a subfolder by its
    // parent), requests by each order, the top-level ones last; one request
    // no order lists, which Newman does not run either.
    let text = json!({
        "id": "c1", "name": "v1 collection",
        "order": ["top"],
        "folders_order": ["f1"],
        "folders": [
            {"id": "f1", "name": "outer", "order": ["form"], "folders_order": ["f2"]},
            {"id": "f2", "name": "inner", "order": ["raw"]}
        ],
        "requests": [
            {"id": "top", "name": "top", "method": "GET", "url": format!("{base}/basic-auth"),
             "currentHelper": "basicAuth", "helperAttributes": {"username": "postman", "password": "password"},
             "tests": "tests['order'] = pm.environment.get('seen') === 'raw,form';\ntests['auth'] = responseCode.code === 200;"},
            {"id": "form", "name": "form", "method": "POST", "url": format!("{base}/post"),
             "dataMode": "urlencoded", "data": [{"key": "a", "value": "1", "type": "text"}, {"key": "off", "value": "x", "enabled": false}],
             "headers": "X-Text: t\n// X-Off: o\nX-Both: from text",
             "headerData": [{"key": "X-Both", "value": "from data"}],
             "preRequestScript": "pm.environment.set('seen', pm.environment.get('seen') + ',form');",
             "tests": "var r = JSON.parse(responseBody);\ntests['form'] = JSON.stringify(r.form) === '{\"a\":\"1\"}';\ntests['headers'] = r.headers['x-text'] === 't' && r.headers['x-off'] === undefined && r.headers['x-both'] === 'from data';"},
            {"id": "raw", "name": "raw", "method": "POST", "url": format!("{base}/post"),
             "dataMode": "raw", "rawModeData": "{\"k\": \"{{v}}\"}", "headers": "Content-Type: application/json",
             "preRequestScript": "pm.environment.set('seen', 'raw');",
             "tests": "pm.test('raw', () => pm.expect(pm.response.json().json).to.eql({k: 'var'}));"},
            {"id": "orphan", "name": "orphan", "method": "GET", "url": format!("{base}/get"), "tests": "tests['never'] = false;"}
        ]
    })
    .to_string();
    let collection = postman::load(&text).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(collection.version, "1.0");
    let mut env = Vars::new();
    env.set("v", "var");
    let run = postman::run(
        &collection,
        RunOptions {
            environment: env,
            ..RunOptions::default()
        },
    )
    .await;
    assert_all_pass(&run, 5);
    assert_eq!(run.stats.requests.executed, 3);
    assert_eq!(run.report.properties["format"], "postman collection v1.0");
}

// ------------------------------------------------------------ Newman's counts

/// One collection of the corpus, as counts.json lists it.
struct Case {
    name: String,
    collection: String,
    environment: Option<String>,
    globals: Option<String>,
    data: Option<String>,
    newman: Value,
}

fn cases() -> (Value, Vec<Case>) {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("counts.json")).unwrap()).unwrap();
    let file = |c: &Value, k: &str| c[k].as_str().map(str::to_string);
    let cases = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            collection: file(c, "collection").unwrap(),
            environment: file(c, "environment"),
            globals: file(c, "globals"),
            data: file(c, "data"),
            newman: c["newman"].clone(),
        })
        .collect();
    (doc, cases)
}

/// `run.stats` of our json reporter (`-r json`), without the `pending`
/// counts (always 0) that counts.json leaves out: what Newman's json reporter
/// gave is compared with what ours writes, not with a copy of its shape.
fn newman_stats(run: &PostmanRun) -> Value {
    let mut stats = postman::newman_json(run)["run"]["stats"].take();
    for row in stats.as_object_mut().expect("stats").values_mut() {
        assert_eq!(row["pending"], 0, "{row}");
        row.as_object_mut().expect("row").remove("pending");
    }
    stats
}

#[tokio::test]
async fn newman_fixtures_give_newmans_counts() {
    let base = serve().await;
    let (doc, cases) = cases();
    assert!(
        doc["recorded_with"]
            .as_str()
            .is_some_and(|s| s.contains("newman")),
        "counts.json says which Newman recorded it"
    );
    assert!(
        cases.len() >= 20,
        "the corpus shrank: {} cases",
        cases.len()
    );
    let mut v20 = 0;
    let mut v1 = 0;
    let mut mismatches = Vec::new();
    for case in &cases {
        let text = localized(&case.collection, &base);
        let collection = postman::load(&text).unwrap_or_else(|p| panic!("{}: {p:?}", case.name));
        if collection.version == "2.0" {
            v20 += 1;
        }
        if collection.version == "1.0" {
            v1 += 1;
        }
        let vars = |file: &Option<String>| -> Vars {
            file.as_ref().map_or_else(Vars::new, |f| {
                postman::load_environment(&localized(f, &base))
                    .unwrap_or_else(|p| panic!("{f}: {p:?}"))
            })
        };
        let data = case.data.as_ref().map_or_else(Vec::new, |f| {
            let text = localized(f, &base);
            postman::load_data(&text, postman::DataFormat::of(&fixture(f), &text))
                .unwrap_or_else(|p| panic!("{f}: {p:?}"))
        });
        let options = RunOptions {
            environment: vars(&case.environment),
            globals: vars(&case.globals),
            data,
            working_dir: Some(fixture("")),
            ..RunOptions::default()
        };
        let run = postman::run(&collection, options).await;
        let ours = newman_stats(&run);
        if ours != case.newman {
            mismatches.push(format!(
                "{}: Newman {} / Testbed {}\n{}\n{}unsupported: {:?}",
                case.name,
                case.newman,
                ours,
                assertions(&run),
                postman::newman_summary(&run),
                run.unsupported
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "counts differ from Newman's:\n{}",
        mismatches.join("\n\n")
    );
    assert!(
        v20 >= 11,
        "the corpus must keep its v2.0 collections: {v20}"
    );
    assert!(v1 >= 1, "the corpus must keep its v1 collection");
}
