//! The collection runner: requests in collection order (or as
//! `setNextRequest` steers), scripts in Postman's order, and the results as a
//! [`testbed_report::Report`] plus newman's counts.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use regex::Regex;
use serde_json::{json, Value};
use testbed_report::{Case, Outcome, Report, Suite};

use super::collection::{
    Auth, Body, Collection, Folder, FormValue, Header, Item, Listen, RequestItem,
};
use super::jar::{JarCookie, RunJar};
use super::script::{self, Limits, ScriptRun, Stop};
use super::send::{self, Answer, Built, Issue};
use super::vars::{Scopes, Vars};

/// How to run a collection.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub environment: Vars,
    pub globals: Vars,
    /// Per request, connecting included.
    pub timeout: Duration,
    /// Per script; a script still running then is stopped and counts as an error.
    pub script_time_limit: Duration,
    /// Per script, in bytes.
    pub script_memory_limit: usize,
    /// Accept any TLS certificate.
    pub insecure: bool,
    /// Stop at the first request with a failure or error (newman's `--bail`).
    pub bail: bool,
    /// Run nothing when a name in `folders` is not in the collection
    /// (newman's `--bail folder`); otherwise the rest still runs.
    pub bail_on_unknown_folder: bool,
    /// Wait this long before each request but the first (newman's
    /// `--delay-request`).
    pub delay_request: Duration,
    /// Follow redirects, as Postman does by default; `false` is newman's
    /// `--ignore-redirects`.
    pub follow_redirects: bool,
    /// A limit on the whole run (newman's `--timeout`): what is still running
    /// then is stopped, and the run ends with an error.
    pub run_timeout: Option<Duration>,
    /// The cookie jar the run starts with (newman's `--cookie-jar`).
    pub cookies: Vec<JarCookie>,
    /// Run only these folders or requests, by name (newman's `--folder`); empty
    /// runs everything.
    pub folders: Vec<String>,
    /// How many times to run the collection (newman's `--iteration-count`);
    /// `None` runs once per row of `data`, or once without data.
    pub iterations: Option<usize>,
    /// Iteration data (newman's `--iteration-data`): the variables of each
    /// iteration, in order; the last row serves every iteration beyond them.
    pub data: Vec<Vars>,
    /// Where form-data and binary-body files (`src`) are looked up (newman's
    /// `--working-dir`); the current directory when `None`.
    pub working_dir: Option<PathBuf>,
}

impl RunOptions {
    /// How many iterations the run is to make: `iterations`, or one per row
    /// of `data`, or one.
    pub fn planned_iterations(&self) -> usize {
        self.iterations.unwrap_or(self.data.len()).max(1)
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            environment: Vars::new(),
            globals: Vars::new(),
            timeout: Duration::from_secs(30),
            script_time_limit: Duration::from_secs(5),
            script_memory_limit: 64 << 20,
            insecure: false,
            bail: false,
            bail_on_unknown_folder: false,
            delay_request: Duration::ZERO,
            follow_redirects: true,
            run_timeout: None,
            cookies: Vec::new(),
            folders: Vec::new(),
            iterations: None,
            data: Vec::new(),
            working_dir: None,
        }
    }
}

/// Executed and failed, one row of newman's table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub executed: usize,
    pub failed: usize,
}

/// newman's summary table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub iterations: Count,
    pub requests: Count,
    pub test_scripts: Count,
    pub prerequest_scripts: Count,
    pub assertions: Count,
}

/// One entry of newman's failure list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `AssertionError`, `TypeError`, `RequestError`, `Unsupported`, `TimeLimit`…
    pub kind: String,
    /// The test's name, or what went wrong.
    pub title: String,
    /// The assertion's message; empty when the title says it all.
    pub message: String,
    /// `assertion:0 in test-script`, `test-script`, `request`…
    pub at: String,
    /// `Folder / Request`.
    pub inside: String,
}

/// The response to one request, as newman's request line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    pub code: u16,
    pub reason: String,
    pub size: usize,
    pub time: Duration,
}

/// A test of one request and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionResult {
    pub name: String,
    pub outcome: Outcome,
    pub message: Option<String>,
    /// 1-based number in [`PostmanRun::failures`], when it failed.
    pub failure: Option<usize>,
}

/// A `console.*` line, and the phase it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLine {
    pub phase: Listen,
    pub text: String,
}

/// One request as it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// 0-based.
    pub iteration: usize,
    pub name: String,
    /// Enclosing folders, outermost first.
    pub folders: Vec<String>,
    pub method: String,
    /// After substitution when it was built; as written otherwise.
    pub url: String,
    pub response: Option<ResponseInfo>,
    /// Why no response came back.
    pub error: Option<String>,
    /// Skipped by `pm.execution.skipRequest()`.
    pub skipped: bool,
    pub assertions: Vec<AssertionResult>,
    pub console: Vec<ConsoleLine>,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
}

/// The response times of a run's answered requests and the bytes they
/// brought, as newman's summary table and JSON reporter give them: kept as
/// running sums, not a time per request, so that a run of a million
/// requests costs what a run of one does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Requests that got an answer.
    pub count: u64,
    /// Their response times in ms, summed in the order they came.
    pub sum_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// The sum of squared differences from the mean (Welford's), for the
    /// standard deviation without keeping every time.
    m2: f64,
    /// Bytes of every answer's body.
    pub received: usize,
}

impl Timings {
    pub fn add(&mut self, r: &ResponseInfo) {
        let t = r.time.as_secs_f64() * 1000.0;
        self.count += 1;
        let before = if self.count == 1 {
            t
        } else {
            self.sum_ms / (self.count - 1) as f64
        };
        self.sum_ms += t;
        let mean = self.sum_ms / self.count as f64;
        self.m2 += (t - before) * (t - mean);
        if self.count == 1 || t < self.min_ms {
            self.min_ms = t;
        }
        self.max_ms = self.max_ms.max(t);
        self.received += r.size;
    }

    /// The mean response time; 0 without any.
    pub fn mean_ms(&self) -> f64 {
        self.sum_ms / self.count.max(1) as f64
    }

    /// The population standard deviation, as newman gives it; 0 without any.
    pub fn sd_ms(&self) -> f64 {
        (self.m2.max(0.0) / self.count.max(1) as f64).sqrt()
    }
}

/// Where a run's cases and requests go as each ends ([`run_observed`]), so
/// that a caller may write them out rather than hold them.
pub trait Observer: Send {
    /// A case of the report's suite number `suite` (suites are numbered as
    /// the run first meets them; [`PostmanRun::report`] lists them, without
    /// their cases, in that order).
    fn case(&mut self, suite: usize, case: Case);
    /// A request ended (after its cases).
    fn execution(&mut self, execution: Execution);
}

/// Keeps everything: [`run`]'s observer.
#[derive(Default)]
struct Collect {
    cases: Vec<Vec<Case>>,
    executions: Vec<Execution>,
}

impl Observer for Collect {
    fn case(&mut self, suite: usize, case: Case) {
        if self.cases.len() <= suite {
            self.cases.resize_with(suite + 1, Vec::new);
        }
        self.cases[suite].push(case);
    }
    fn execution(&mut self, execution: Execution) {
        self.executions.push(execution);
    }
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct PostmanRun {
    /// The report; from [`run_observed`], its suites without their cases
    /// (the observer had them).
    pub report: Report,
    pub stats: Stats,
    pub failures: Vec<Failure>,
    /// Each use of something this engine does not implement, e.g.
    /// `request 'Login': auth type 'oauth2'`. Each also failed a test.
    pub unsupported: Vec<String>,
    /// `console.*` output, each line prefixed with the request's name (from
    /// [`run`]; the observer of [`run_observed`] has each request's own).
    pub console: Vec<String>,
    /// Every request as it ran (from [`run`]; empty from [`run_observed`]).
    pub executions: Vec<Execution>,
    pub timings: Timings,
    pub duration: Duration,
    /// The scopes as the scripts left them (newman's `--export-*`).
    pub environment: Vars,
    pub globals: Vars,
    pub collection_variables: Vars,
    /// The cookie jar as the run left it (newman's `--export-cookie-jar`).
    pub cookies: Vec<JarCookie>,
}

impl PostmanRun {
    /// No failure, no error, nothing unsupported.
    pub fn ok(&self) -> bool {
        self.report.summary().ok && self.unsupported.is_empty()
    }
}

/// Runs `collection`. Never fails as a whole: what goes wrong ends up in the
/// report as errors.
pub async fn run(collection: &Collection, options: RunOptions) -> PostmanRun {
    let mut all = Collect::default();
    let mut run = run_observed(collection, options, &mut all).await;
    for (suite, cases) in run.report.suites.iter_mut().zip(all.cases) {
        suite.cases = cases;
    }
    run.console = all
        .executions
        .iter()
        .flat_map(|ex| {
            ex.console
                .iter()
                .map(move |l| format!("{}: {}", ex.name, l.text))
        })
        .collect();
    run.executions = all.executions;
    run
}

/// [`run`], handing each case and each request to `observer` as it ends
/// instead of keeping them: the run then holds its counts, its failures and
/// its variables, whatever the number of requests.
pub async fn run_observed(
    collection: &Collection,
    options: RunOptions,
    observer: &mut dyn Observer,
) -> PostmanRun {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let mut scopes = Scopes {
        globals: options.globals.clone(),
        environment: options.environment.clone(),
        ..Scopes::default()
    };
    for v in collection.variables.iter().filter(|v| !v.disabled) {
        scopes.collection.set(v.key.clone(), v.value.clone());
    }
    let name = if collection.name.is_empty() {
        "collection".to_string()
    } else {
        collection.name.clone()
    };
    let mut report = Report::new(uuid::Uuid::new_v4().to_string(), name.clone(), started_at);
    report.started_at = Some(started_at);
    report.properties.insert(
        "format".into(),
        format!("postman collection v{}", collection.version),
    );
    if let Some(env) = &options.environment.name {
        report.properties.insert("environment".into(), env.clone());
    }
    let iterations = options.planned_iterations();
    report
        .properties
        .insert("iterations".into(), iterations.to_string());

    let mut plan = Vec::new();
    flatten(&collection.items, &mut Vec::new(), &mut plan);

    let mut runner = Runner {
        collection,
        collection_name: name,
        limits: Limits {
            time: options.script_time_limit,
            memory: options.script_memory_limit,
        },
        client: send::client(
            options.timeout,
            options.insecure,
            options.follow_redirects,
            RunJar::with(&options.cookies),
        ),
        working_dir: options
            .working_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".")),
        options,
        scopes,
        stats: Stats::default(),
        failures: Vec::new(),
        unsupported: Vec::new(),
        timings: Timings::default(),
        suites: Vec::new(),
        observer,
    };

    let mut iterations = iterations;
    if !runner.options.folders.is_empty() {
        let wanted = runner.options.folders.clone();
        for w in &wanted {
            let known = plan
                .iter()
                .any(|e| e.item.name == *w || e.folders.iter().any(|f| f.name == *w));
            if !known {
                runner.selection_error(w);
                if runner.options.bail_on_unknown_folder {
                    iterations = 0;
                }
            }
        }
        plan.retain(|e| {
            wanted
                .iter()
                .any(|w| e.item.name == *w || e.folders.iter().any(|f| f.name == *w))
        });
    }

    let deadline = runner.options.run_timeout.map(|t| (t, t0 + t));
    let mut sent_any = false;
    'iterations: for iteration in 0..iterations {
        runner.stats.iterations.executed += 1;
        // Fresh each iteration, so that a script's `pm.iterationData.unset`
        // does not leak into the next row; past the last row it is reused,
        // as newman does when `-n` asks for more iterations than rows.
        runner.scopes.data = match runner.options.data.len() {
            0 => Vars::new(),
            n => runner.options.data[iteration.min(n - 1)].clone(),
        };
        let mut i = 0;
        let mut steps = 0;
        while i < plan.len() {
            steps += 1;
            if steps > MAX_STEPS {
                runner.loop_error(&plan[i], iteration, iterations);
                break;
            }
            if sent_any && !runner.options.delay_request.is_zero() {
                tokio::time::sleep(runner.options.delay_request).await;
            }
            sent_any = true;
            let outcome = match deadline {
                None => runner.run_entry(&plan[i], iteration, iterations).await,
                Some((limit, at)) => {
                    let left = at.saturating_duration_since(Instant::now());
                    let step = runner.run_entry(&plan[i], iteration, iterations);
                    match tokio::time::timeout(left, step).await {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            runner.timeout_error(&plan[i], limit);
                            break 'iterations;
                        }
                    }
                }
            };
            if runner.options.bail && outcome.failed {
                let suite = runner.suite(&plan[i]);
                runner.suites[suite]
                    .diagnostics
                    .push("bail: the run stopped after this suite's first failure".into());
                break 'iterations;
            }
            match outcome.next {
                None => i += 1,
                Some(None) => break,
                Some(Some(name)) => match plan.iter().position(|e| e.item.name == name) {
                    Some(j) => i = j,
                    None => break,
                },
            }
        }
    }

    let finished_at = Utc::now();
    report.finished_at = Some(finished_at);
    report.suites = runner.suites;
    let cookies = match &runner.client {
        Ok(http) => http.jar.export(),
        Err(_) => Vec::new(),
    };
    PostmanRun {
        report,
        stats: runner.stats,
        failures: runner.failures,
        unsupported: runner.unsupported,
        console: Vec::new(),
        executions: Vec::new(),
        timings: runner.timings,
        duration: t0.elapsed(),
        environment: runner.scopes.environment,
        globals: runner.scopes.globals,
        collection_variables: runner.scopes.collection,
        cookies,
    }
}

/// A `setNextRequest` loop that never ends would hang the run; polling loops
/// that do end stay far below this.
const MAX_STEPS: usize = 10_000;

struct Entry<'c> {
    folders: Vec<&'c Folder>,
    item: &'c RequestItem,
}

fn flatten<'c>(items: &'c [Item], parents: &mut Vec<&'c Folder>, out: &mut Vec<Entry<'c>>) {
    for item in items {
        match item {
            Item::Request(r) => out.push(Entry {
                folders: parents.clone(),
                item: r,
            }),
            Item::Folder(f) => {
                parents.push(f);
                flatten(&f.items, parents, out);
                parents.pop();
            }
        }
    }
}

struct Runner<'c, 'o> {
    collection: &'c Collection,
    collection_name: String,
    options: RunOptions,
    limits: Limits,
    client: Result<send::Http, crate::TransportError>,
    working_dir: PathBuf,
    scopes: Scopes,
    stats: Stats,
    failures: Vec<Failure>,
    unsupported: Vec<String>,
    timings: Timings,
    /// The suites met so far, without their cases: those go to `observer`.
    suites: Vec<Suite>,
    observer: &'o mut dyn Observer,
}

/// What one request left for the loop.
struct EntryOutcome {
    failed: bool,
    next: Option<Option<String>>,
}

/// State of the request being run.
struct Current {
    name: String,
    inside: String,
    headers: Vec<Header>,
    record: Execution,
    cases: Vec<Case>,
    next: Option<Option<String>>,
    skip: bool,
}

fn request_name(item: &RequestItem) -> String {
    if item.name.is_empty() {
        "(unnamed request)".into()
    } else {
        item.name.clone()
    }
}

/// What tells apart the cases of each iteration when there are several, so
/// that names stay unique (JUnit readers merge cases of the same name).
fn suffix(iteration: usize, iterations: usize) -> String {
    if iterations > 1 {
        format!(" [iteration {}]", iteration + 1)
    } else {
        String::new()
    }
}

fn case(name: String, outcome: Outcome, message: Option<String>) -> Case {
    let mut c = Case::new(name, outcome);
    c.message = message;
    c
}

impl<'c> Runner<'c, '_> {
    fn suite(&mut self, e: &Entry<'c>) -> usize {
        let name = if e.folders.is_empty() {
            self.collection_name.clone()
        } else {
            e.folders
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(" / ")
        };
        match self.suites.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.suites.push(Suite::new(name));
                self.suites.len() - 1
            }
        }
    }

    fn failure(&mut self, f: Failure) -> usize {
        self.failures.push(f);
        self.failures.len()
    }

    fn note_unsupported(&mut self, request: &str, what: &str) {
        let line = format!("request '{request}': {what}");
        if !self.unsupported.contains(&line) {
            self.unsupported.push(line);
        }
    }

    fn top_suite(&mut self) -> usize {
        let name = self.collection_name.clone();
        match self.suites.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.suites.push(Suite::new(name));
                self.suites.len() - 1
            }
        }
    }

    fn selection_error(&mut self, wanted: &str) {
        let message = format!("no folder or request named '{wanted}' in the collection");
        self.failure(Failure {
            kind: "SelectionError".into(),
            title: message.clone(),
            message: String::new(),
            at: "folder selection".into(),
            inside: self.collection_name.clone(),
        });
        let s = self.top_suite();
        self.observer.case(
            s,
            case(format!("folder '{wanted}'"), Outcome::Error, Some(message)),
        );
    }

    /// The run's time limit ran out while `e` was running.
    fn timeout_error(&mut self, e: &Entry<'c>, limit: Duration) {
        let message = format!(
            "the run's time limit ({} ms) ran out; the run stopped here",
            limit.as_millis()
        );
        self.failure(Failure {
            kind: "TimeoutError".into(),
            title: message.clone(),
            message: String::new(),
            at: "run".into(),
            inside: request_name(e.item),
        });
        let s = self.suite(e);
        self.observer.case(
            s,
            case(
                format!("{} › run time limit", request_name(e.item)),
                Outcome::Error,
                Some(message),
            ),
        );
    }

    fn loop_error(&mut self, e: &Entry<'c>, iteration: usize, iterations: usize) {
        let message = format!(
            "stopped after {MAX_STEPS} requests in one iteration: setNextRequest keeps looping"
        );
        self.failure(Failure {
            kind: "LoopError".into(),
            title: message.clone(),
            message: String::new(),
            at: "setNextRequest".into(),
            inside: request_name(e.item),
        });
        let s = self.suite(e);
        self.observer.case(
            s,
            case(
                format!("{} › setNextRequest", request_name(e.item))
                    + &suffix(iteration, iterations),
                Outcome::Error,
                Some(message),
            ),
        );
    }

    fn auth(&self, e: &Entry<'c>) -> Option<&'c Auth> {
        e.item
            .request
            .auth
            .as_ref()
            .or_else(|| e.folders.iter().rev().find_map(|f| f.auth.as_ref()))
            .or(self.collection.auth.as_ref())
    }

    /// The scripts of one phase in Postman's order: collection, folders from
    /// the outermost, request; each with where it comes from.
    fn scripts(&self, e: &Entry<'c>, listen: Listen) -> Vec<(String, &'c str)> {
        let mut out = Vec::new();
        for ev in self
            .collection
            .events
            .iter()
            .filter(|ev| ev.listen == listen)
        {
            out.push(("collection".to_string(), ev.script.as_str()));
        }
        for f in &e.folders {
            for ev in f.events.iter().filter(|ev| ev.listen == listen) {
                out.push((format!("folder '{}'", f.name), ev.script.as_str()));
            }
        }
        for ev in e.item.events.iter().filter(|ev| ev.listen == listen) {
            out.push((String::new(), ev.script.as_str()));
        }
        out
    }

    async fn run_entry(
        &mut self,
        e: &Entry<'c>,
        iteration: usize,
        iterations: usize,
    ) -> EntryOutcome {
        let req = &e.item.request;
        let name = request_name(e.item);
        let folders: Vec<String> = e.folders.iter().map(|f| f.name.clone()).collect();
        let inside = folders
            .iter()
            .cloned()
            .chain(std::iter::once(name.clone()))
            .collect::<Vec<_>>()
            .join(" / ");
        let started_at = Utc::now();
        let t0 = Instant::now();
        self.scopes.local = Vars::new();
        let failures_before = self.failures.len();
        let mut cur = Current {
            name: name.clone(),
            inside,
            headers: req.headers.clone(),
            record: Execution {
                iteration,
                name: name.clone(),
                folders,
                method: req.method.clone(),
                url: send::url_template(&req.url),
                response: None,
                error: None,
                skipped: false,
                assertions: Vec::new(),
                console: Vec::new(),
                started_at,
                duration: Duration::ZERO,
            },
            cases: Vec::new(),
            next: None,
            skip: false,
        };
        let location: Vec<String> = cur
            .record
            .folders
            .iter()
            .cloned()
            .chain(std::iter::once(name.clone()))
            .collect();
        let info = json!({
            "requestName": name,
            "requestId": name,
            "iteration": iteration,
            "iterationCount": iterations,
        });

        self.phase(
            e,
            Listen::Prerequest,
            &mut cur,
            &info,
            &location,
            None,
            None,
        )
        .await;

        let mut response_time = None;
        if cur.skip {
            cur.record.skipped = true;
            cur.cases.push(case(
                name.clone(),
                Outcome::Skip,
                Some("skipped by pm.execution.skipRequest()".into()),
            ));
        } else {
            match send::build(
                req,
                &cur.headers,
                self.auth(e),
                &self.scopes,
                &self.working_dir,
            ) {
                Err(issues) => {
                    // Shown as far as it resolves, so the reader sees which host it was for.
                    cur.record.url = super::vars::resolve(&cur.record.url, &self.scopes).text;
                    let mut causes = Vec::new();
                    let mut any_unsupported = false;
                    for issue in issues {
                        match issue {
                            Issue::Unsupported(what) => {
                                self.note_unsupported(&name, &what);
                                any_unsupported = true;
                                causes.push(format!("unsupported: {what}"));
                            }
                            Issue::Invalid(why) => causes.push(why),
                        }
                    }
                    let kind = if any_unsupported {
                        "Unsupported"
                    } else {
                        "RequestError"
                    };
                    self.request_error(
                        e,
                        &mut cur,
                        kind,
                        format!("not sent: {}", causes.join("; ")),
                    );
                }
                Ok(built) => {
                    cur.record.method = built.method.clone();
                    cur.record.url = built.url.clone();
                    let mut sent = match &self.client {
                        Ok(client) => send::send(client, &built, self.options.timeout).await,
                        Err(e) => Err(e.clone()),
                    };
                    // Digest auth: the server's challenge answered once, as
                    // Postman's runtime does.
                    let mut built = built;
                    if let (Ok(answer), Some(params), Ok(client)) =
                        (&sent, &built.digest, &self.client)
                    {
                        if let Some(signed) = digest_retry(answer, params, &built) {
                            // Newman counts the challenge and the answer as two requests.
                            self.stats.requests.executed += 1;
                            built = signed;
                            sent = send::send(client, &built, self.options.timeout).await;
                        }
                    }
                    match sent {
                        Ok(answer) => {
                            self.stats.requests.executed += 1;
                            response_time = Some(answer.time);
                            cur.record.response = Some(ResponseInfo {
                                code: answer.code,
                                reason: answer.reason.clone(),
                                size: answer.size,
                                time: answer.time,
                            });
                            self.phase(
                                e,
                                Listen::Test,
                                &mut cur,
                                &info,
                                &location,
                                Some(&built),
                                Some(&answer),
                            )
                            .await;
                            if cur.cases.is_empty() {
                                cur.cases.push(case(name.clone(), Outcome::Pass, None));
                            }
                        }
                        Err(te) => {
                            self.request_error(e, &mut cur, "RequestError", te.to_string());
                        }
                    }
                }
            }
        }

        let duration = t0.elapsed();
        cur.record.duration = duration;
        let case_ms =
            u64::try_from(response_time.unwrap_or(duration).as_millis()).unwrap_or(u64::MAX);
        let failed = self.failures.len() > failures_before;
        let suite = self.suite(e);
        let s = &mut self.suites[suite];
        if s.started_at.is_none() {
            s.started_at = Some(started_at);
        }
        s.duration_ms += u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        if let Some(r) = &cur.record.response {
            self.timings.add(r);
        }
        for mut c in cur.cases {
            c.duration_ms = case_ms;
            c.started_at = Some(started_at);
            if iterations > 1 {
                c.name.push_str(&suffix(iteration, iterations));
                c.properties
                    .insert("iteration".into(), (iteration + 1).to_string());
            }
            self.observer.case(suite, c);
        }
        self.observer.execution(cur.record);
        EntryOutcome {
            failed,
            next: cur.next,
        }
    }

    /// The request got no response (or was not sent): its tests are errors
    /// with the cause, named from the test scripts when they can be found.
    fn request_error(&mut self, e: &Entry<'c>, cur: &mut Current, kind: &str, cause: String) {
        self.stats.requests.executed += 1;
        self.stats.requests.failed += 1;
        cur.record.error = Some(cause.clone());
        let n = self.failure(Failure {
            kind: kind.into(),
            title: cause.clone(),
            message: String::new(),
            at: "request".into(),
            inside: cur.inside.clone(),
        });
        let names: Vec<String> = self
            .scripts(e, Listen::Test)
            .iter()
            .flat_map(|(_, src)| test_names(src))
            .collect();
        if names.is_empty() {
            cur.cases
                .push(case(cur.name.clone(), Outcome::Error, Some(cause.clone())));
            cur.record.assertions.push(AssertionResult {
                name: cur.name.clone(),
                outcome: Outcome::Error,
                message: Some(cause),
                failure: Some(n),
            });
        } else {
            for t in names {
                cur.cases.push(case(
                    format!("{} › {t}", cur.name),
                    Outcome::Error,
                    Some(cause.clone()),
                ));
                cur.record.assertions.push(AssertionResult {
                    name: t,
                    outcome: Outcome::Error,
                    message: Some(cause.clone()),
                    failure: Some(n),
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn phase(
        &mut self,
        e: &Entry<'c>,
        listen: Listen,
        cur: &mut Current,
        info: &Value,
        location: &[String],
        built: Option<&Built>,
        answer: Option<&Answer>,
    ) {
        for (origin, source) in self.scripts(e, listen) {
            let script_name = listen.script_name();
            let label = if origin.is_empty() {
                script_name.to_string()
            } else {
                format!("{script_name} ({origin})")
            };
            let count = match listen {
                Listen::Prerequest => &mut self.stats.prerequest_scripts,
                Listen::Test => &mut self.stats.test_scripts,
            };
            count.executed += 1;
            let mut request = match built {
                Some(b) => built_view(b, &e.item.request.body),
                None => template_view(e.item, &cur.headers),
            };
            request["description"] = json!(e.item.request.description);
            let mut info = info.clone();
            info["eventName"] = Value::String(
                match listen {
                    Listen::Prerequest => "prerequest",
                    Listen::Test => "test",
                }
                .into(),
            );
            let input = json!({
                "kind": info["eventName"],
                "vars": {
                    "globals": self.scopes.globals.to_pairs(),
                    "collection": self.scopes.collection.to_pairs(),
                    "environment": self.scopes.environment.to_pairs(),
                    "data": self.scopes.data.to_pairs(),
                    "local": self.scopes.local.to_pairs(),
                },
                "envName": self.scopes.environment.name,
                "info": info,
                "location": location,
                "request": request,
                "response": answer.map(response_view),
            });
            let sender = self.client.as_ref().ok().map(|http| script::Sender {
                http: http.clone(),
                handle: tokio::runtime::Handle::current(),
                timeout: self.options.timeout,
            });
            let run = run_script(source, &label, input, self.limits, sender).await;
            self.apply(listen, &label, cur, run);
        }
    }

    fn apply(&mut self, listen: Listen, label: &str, cur: &mut Current, run: ScriptRun) {
        let out = run.output;
        if let Some(v) = out.vars {
            let s = &mut self.scopes;
            s.globals = Vars::from_pairs(s.globals.name.clone(), &v.globals);
            s.collection = Vars::from_pairs(None, &v.collection);
            s.environment = Vars::from_pairs(s.environment.name.clone(), &v.environment);
            s.data = Vars::from_pairs(None, &v.data);
            s.local = Vars::from_pairs(None, &v.local);
        }
        if listen == Listen::Prerequest {
            if let Some(headers) = out.headers {
                cur.headers = headers
                    .into_iter()
                    .map(|h| Header {
                        key: h.key,
                        value: h.value,
                        disabled: h.disabled,
                    })
                    .collect();
            }
            cur.skip |= out.skip;
        }
        if out.next.set {
            cur.next = Some(out.next.name);
        }
        for line in out.console {
            cur.record.console.push(ConsoleLine {
                phase: listen,
                text: line,
            });
        }
        let script_name = listen.script_name();
        let mut covered: Vec<String> = Vec::new();
        for t in out.tests {
            let outcome = match t.status.as_str() {
                "pass" => Outcome::Pass,
                "fail" => Outcome::Fail,
                "skip" => Outcome::Skip,
                _ => Outcome::Error,
            };
            if outcome != Outcome::Skip {
                self.stats.assertions.executed += 1;
            }
            let mut failure = None;
            let stopped = t.status == "running";
            let message = match &t.error {
                Some(err) if err.name == "AssertionError" => Some(err.message.clone()),
                Some(err) => Some(format!("{}: {}", err.name, err.message)),
                None if stopped => Some(format!(
                    "did not finish: {}",
                    run.failure
                        .as_ref()
                        .map_or("the script stopped", |f| f.message.as_str())
                )),
                None => None,
            };
            if outcome.is_failure() {
                self.stats.assertions.failed += 1;
                let err = t.error.clone().unwrap_or_else(|| script::ErrInfo {
                    name: "Error".into(),
                    message: message.clone().unwrap_or_default(),
                    unsupported: None,
                });
                if let Some(what) = &err.unsupported {
                    self.note_unsupported(&cur.name, what);
                    covered.push(what.clone());
                }
                failure = Some(self.failure(Failure {
                    kind: if err.name.is_empty() {
                        "Error".into()
                    } else {
                        err.name
                    },
                    title: t.name.clone(),
                    message: err.message,
                    at: format!("assertion:{} in {script_name}", t.index),
                    inside: cur.inside.clone(),
                }));
            }
            cur.cases.push(case(
                format!("{} › {}", cur.name, t.name),
                outcome,
                message.clone(),
            ));
            cur.record.assertions.push(AssertionResult {
                name: t.name,
                outcome,
                message,
                failure,
            });
        }
        if let Some(f) = run.failure {
            let count = match listen {
                Listen::Prerequest => &mut self.stats.prerequest_scripts,
                Listen::Test => &mut self.stats.test_scripts,
            };
            count.failed += 1;
            let outcome = match &f.stop {
                Stop::Thrown => Outcome::Fail,
                Stop::Unsupported(what) => {
                    self.note_unsupported(&cur.name, what);
                    covered.push(what.clone());
                    Outcome::Error
                }
                Stop::TimeLimit | Stop::MemoryLimit | Stop::Engine => Outcome::Error,
            };
            let message = format!("{}: {}", f.name, f.message);
            let n = self.failure(Failure {
                kind: f.name.clone(),
                title: f.message.clone(),
                message: String::new(),
                at: label.to_string(),
                inside: cur.inside.clone(),
            });
            cur.cases.push(case(
                format!("{} › {label}", cur.name),
                outcome,
                Some(message.clone()),
            ));
            cur.record.assertions.push(AssertionResult {
                name: label.to_string(),
                outcome,
                message: Some(message),
                failure: Some(n),
            });
        }
        for what in out.unsupported {
            self.note_unsupported(&cur.name, &what);
            if covered.contains(&what) {
                continue;
            }
            let message = format!("{what} is not supported by this runner");
            let n = self.failure(Failure {
                kind: "Unsupported".into(),
                title: message.clone(),
                message: String::new(),
                at: label.to_string(),
                inside: cur.inside.clone(),
            });
            cur.cases.push(case(
                format!("{} › unsupported: {what}", cur.name),
                Outcome::Error,
                Some(message.clone()),
            ));
            cur.record.assertions.push(AssertionResult {
                name: format!("unsupported: {what}"),
                outcome: Outcome::Error,
                message: Some(message),
                failure: Some(n),
            });
        }
    }
}

async fn run_script(
    source: &str,
    label: &str,
    input: Value,
    limits: Limits,
    sender: Option<script::Sender>,
) -> ScriptRun {
    let source = source.to_string();
    let label = label.to_string();
    // The engine blocks for up to the time limit; keep it off the async workers.
    // The result comes back before the script's runtime is freed, so the run
    // goes on while the blocking thread frees it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _freeing = tokio::task::spawn_blocking(move || {
        script::run_then(&source, &label, &input, limits, sender, |run| {
            // The run may have been dropped meanwhile; nobody is left to tell.
            let _ = tx.send(run);
        })
    });
    match rx.await {
        Ok(run) => run,
        Err(_) => ScriptRun {
            output: script::Output::default(),
            failure: Some(script::Failure {
                stop: Stop::Engine,
                name: "Error".into(),
                message: "the script thread failed before it gave a result".into(),
            }),
        },
    }
}

/// The request again with an `Authorization` answering the digest challenge
/// of `answer`, when it is one.
fn digest_retry(answer: &Answer, params: &[(String, String)], built: &Built) -> Option<Built> {
    if answer.code != 401 || Auth::param(params, "disableRetryRequest") == "true" {
        return None;
    }
    let challenge = answer
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("www-authenticate"))
        .find_map(|(_, v)| super::auth::digest_challenge(v))?;
    let url = url::Url::parse(&built.url).ok()?;
    let uri = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let header = super::auth::digest(params, Some(&challenge), &built.method, &uri)?;
    let mut signed = built.clone();
    signed
        .headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
    signed.headers.push(("Authorization".into(), header));
    Some(signed)
}

/// `pm.request` before the request is built: as written, with the headers as
/// earlier scripts left them.
fn template_view(item: &RequestItem, headers: &[Header]) -> Value {
    let req = &item.request;
    json!({
        "url": send::url_template(&req.url),
        "method": req.method,
        "headers": headers.iter().map(|h| json!({"key": h.key, "value": h.value, "disabled": h.disabled})).collect::<Vec<_>>(),
        "body": body_view(&req.body),
    })
}

fn body_view(body: &Option<Body>) -> Value {
    match body {
        None | Some(Body::None) => Value::Null,
        Some(Body::Raw { raw, .. }) => json!({"mode": "raw", "raw": raw}),
        Some(Body::UrlEncoded(pairs)) => json!({
            "mode": "urlencoded",
            "urlencoded": pairs.iter().map(|kv| json!({"key": kv.key, "value": kv.value, "disabled": kv.disabled})).collect::<Vec<_>>(),
        }),
        Some(Body::FormData(fields)) => json!({
            "mode": "formdata",
            "formdata": fields.iter().map(|f| match &f.value {
                FormValue::Text(t) => json!({"key": f.key, "value": t, "type": "text"}),
                FormValue::Files(src) => json!({"key": f.key, "src": src, "type": "file"}),
            }).collect::<Vec<_>>(),
        }),
        Some(Body::File { src }) => json!({"mode": "file", "file": {"src": src}}),
        Some(Body::GraphQl { query, variables }) => {
            json!({"mode": "graphql", "graphql": {"query": query, "variables": variables}})
        }
    }
}

/// `pm.request` in test scripts: the request as it was sent.
fn built_view(b: &Built, body: &Option<Body>) -> Value {
    let mode = match body {
        Some(Body::Raw { .. }) => "raw",
        Some(Body::UrlEncoded(_)) => "urlencoded",
        Some(Body::FormData(_)) => "formdata",
        Some(Body::File { .. }) => "file",
        Some(Body::GraphQl { .. }) => "graphql",
        None | Some(Body::None) => "none",
    };
    json!({
        "url": b.url,
        "method": b.method,
        "headers": b.headers.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        "body": b.body_text().map(|raw| json!({"mode": mode, "raw": raw})),
    })
}

pub(crate) fn response_view(a: &Answer) -> Value {
    json!({
        "code": a.code,
        "status": a.reason,
        "headers": a.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "body": String::from_utf8_lossy(&a.body),
        "responseTime": u64::try_from(a.time.as_millis()).unwrap_or(u64::MAX),
        "responseSize": a.size,
        "cookies": a.cookies.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
    })
}

/// The names of the tests a script would define, read from its text, so that a
/// request that got no response still names the tests it could not run.
fn test_names(src: &str) -> Vec<String> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    let Some(re) = RE
        .get_or_init(|| {
            Regex::new(
                r#"(?:pm|postman)\.test\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|`([^`$]*)`)|\btests\[\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\s*\]\s*="#,
            )
            .ok()
        })
        .as_ref()
    else {
        return Vec::new();
    };
    re.captures_iter(src)
        .filter_map(|c| {
            (1..=5)
                .find_map(|i| c.get(i))
                .map(|m| m.as_str().replace("\\'", "'").replace("\\\"", "\""))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_from_script_text() {
        let src = "pm.test(\"Status is 200\", function () {});\npm.test('it\\'s ok', () => {});\ntests[\"legacy\"] = true;\npm.test(`tpl`, f);";
        assert_eq!(
            test_names(src),
            vec!["Status is 200", "it's ok", "legacy", "tpl"]
        );
    }
}
