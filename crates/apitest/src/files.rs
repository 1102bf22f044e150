//! The entry point shared by `testbed api run`, the `api` agent plugin and
//! the server: find the input files, tell suites from Postman collections,
//! load all of them (every problem of every file, before anything runs), and
//! run them into one report.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Map, Value};
use testbed_report::{Case, Report};

use crate::postman::{self, NewmanJson, Transcript};
use crate::runner::{self, RunOptions};
use crate::spool::{Spool, SpoolList, SpooledReport};
use crate::suite::{self, Suite};

pub type Echo = runner::Echo;

/// How to run a set of files.
#[derive(Clone, Default)]
pub struct Options {
    /// A suite environment's name, or a file of variables (YAML/JSON object,
    /// or a Postman environment export).
    pub environment: Option<String>,
    /// Postman globals.
    pub globals: Option<PathBuf>,
    /// `--var` values: win over everything else.
    pub vars: Map<String, Value>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    /// Accept any certificate (collections; suites carry their own TLS options).
    pub insecure: bool,
    /// Time limit of one collection script.
    pub script_timeout: Duration,
    /// Files run at the same time (suites and collections); 1 runs them in turn.
    pub jobs: usize,
    /// Iteration data for collections (newman's `-d`): a JSON array of
    /// objects or a CSV file, one iteration per row.
    pub data: Option<PathBuf>,
    /// Iterations of each collection (newman's `-n`); by default one per data
    /// row, or one.
    pub iterations: Option<usize>,
    /// Newman's other run options, for collections.
    pub collections: CollectionOptions,
    pub echo: Option<Echo>,
}

/// Newman's run options that have no counterpart in suites.
#[derive(Debug, Clone, Default)]
pub struct CollectionOptions {
    /// Run only these folders or requests (`--folder`, repeatable).
    pub folders: Vec<String>,
    /// Stop at the first failure or error (`--bail`).
    pub bail: bool,
    /// Run nothing when a `--folder` name is unknown (`--bail folder`).
    pub bail_on_unknown_folder: bool,
    /// Between requests (`--delay-request`).
    pub delay_request: Duration,
    /// Per request (`--timeout-request`); the runner's default when `None`.
    pub request_timeout: Option<Duration>,
    /// The whole run of each collection (`--timeout`).
    pub run_timeout: Option<Duration>,
    /// `--ignore-redirects`.
    pub ignore_redirects: bool,
    /// A tough-cookie jar to start from (`--cookie-jar`), read by [`load`].
    pub cookie_jar: Option<PathBuf>,
    /// `--global-var` values: win over the globals file.
    pub global_vars: Map<String, Value>,
    /// Where file bodies are read from (`--working-dir`); the collection's
    /// directory when `None`.
    pub working_dir: Option<PathBuf>,
}

/// One collection's run, with everything newman's reporters and exports use
/// (its report's suites without their cases, and no requests: those went
/// where [`run_streamed`] was told).
#[derive(Debug, Clone)]
pub struct CollectionRun {
    pub file: PathBuf,
    pub run: postman::PostmanRun,
}

/// What [`run_streamed`] gives: the report of every file, its cases on
/// disk; each collection's own run; and newman's JSON reporter, when asked
/// for, with every request of the run's one collection.
pub struct Streamed {
    pub report: SpooledReport,
    pub collections: Vec<CollectionRun>,
    pub newman_json: Option<NewmanJson>,
}

/// One problem of one input file, printed as `file:line:column: path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A problem with a file as a whole (unreadable, wrong kind).
fn problem(file: &Path, message: String) -> FileProblem {
    FileProblem {
        file: file.to_path_buf(),
        line: None,
        column: None,
        path: String::new(),
        message,
    }
}

/// A loader's problems, each tagged with the file they are in.
fn located(file: &Path, problems: Vec<crate::Problem>) -> Vec<FileProblem> {
    problems
        .into_iter()
        .map(|p| FileProblem {
            file: file.to_path_buf(),
            line: p.line,
            column: p.column,
            path: p.path,
            message: p.message,
        })
        .collect()
}

fn read(file: &Path) -> Result<String, Vec<FileProblem>> {
    std::fs::read_to_string(file).map_err(|e| vec![problem(file, format!("cannot read: {e}"))])
}

/// A loaded input.
#[derive(Debug, Clone)]
pub enum Input {
    Suite(Box<Suite>),
    Collection {
        file: PathBuf,
        collection: Box<postman::Collection>,
    },
}

/// The inputs and the side files of `Options` (a variables file, globals,
/// iteration data), each read and checked once by [`load`], so that what
/// runs is what was checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub inputs: Vec<Input>,
    /// The variables of `Options::environment` when it names a file.
    env_file: Option<Map<String, Value>>,
    /// The `name` of a Postman environment file, kept for newman's
    /// `--export-environment`.
    env_name: Option<String>,
    globals: postman::Vars,
    data: Vec<postman::Vars>,
    cookies: Vec<postman::JarCookie>,
}

impl Input {
    pub fn describe(&self) -> String {
        match self {
            Input::Suite(s) => format!(
                "{} (suite {:?}, {} tests)",
                s.file.display(),
                s.name,
                s.tests.len()
            ),
            Input::Collection { file, collection } => {
                format!(
                    "{} (Postman collection {:?})",
                    file.display(),
                    collection.name
                )
            }
        }
    }
}

/// Suites (`*.yaml`, `*.yml`) and collections (`*.json`) under `paths`,
/// directories walked in name order.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FileProblem> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| problem(p, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) =
                entries.into_iter().partition(|e| e.is_dir());
            for f in files {
                let ext = f.extension().and_then(|e| e.to_str()).unwrap_or_default();
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let is_input =
                    matches!(ext, "yaml" | "yml") || name.ends_with(".postman_collection.json");
                if is_input {
                    out.push(f);
                }
            }
            for d in dirs {
                out.extend(expand(&[d])?);
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(problem(p, "no such file or directory".into()));
        }
    }
    Ok(out)
}

/// Whether a JSON document is a Postman collection (`info.schema` names one),
/// or a v1 collection (no `info`; `requests` or `order` at the top).
fn is_collection(text: &str) -> bool {
    // The first 4 KiB, cut at a character boundary.
    let mut end = text.len().min(4096);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    if head.contains("schema.getpostman.com") || head.contains("\"_postman_id\"") {
        return true;
    }
    (head.contains("\"order\"") || head.contains("\"requests\""))
        && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok_and(|o| {
            !o.contains_key("info") && (o.contains_key("requests") || o.contains_key("order"))
        })
}

/// Loads every input and side file; on any problem returns all of them and
/// nothing runs.
pub fn load(paths: &[PathBuf], opts: &Options) -> Result<Loaded, Vec<FileProblem>> {
    let files = expand(paths).map_err(|p| vec![p])?;
    let mut inputs = Vec::new();
    let mut problems = Vec::new();
    let env_file = keep(&mut problems, environment_vars(opts)).flatten();
    let globals = keep(&mut problems, globals(opts)).unwrap_or_default();
    let data = keep(&mut problems, iteration_data(opts)).unwrap_or_default();
    let cookies = keep(&mut problems, cookie_jar(opts)).unwrap_or_default();
    for f in files {
        let Some(text) = keep(&mut problems, read(&f)) else {
            continue;
        };
        if f.extension().is_some_and(|e| e == "json") && is_collection(&text) {
            match postman::load(&text) {
                Ok(c) => inputs.push(Input::Collection {
                    file: f,
                    collection: Box::new(c),
                }),
                Err(ps) => problems.extend(located(&f, ps)),
            }
        } else {
            // Suites have their own data-driven form (`each:`); running a
            // suite as if the data applied to it would mislead.
            for (given, flag) in [
                (opts.data.is_some(), "-d/--iteration-data"),
                (opts.iterations.is_some(), "-n/--iteration-count"),
                (!opts.collections.folders.is_empty(), "--folder"),
            ] {
                if given {
                    problems.push(problem(
                        &f,
                        format!(
                            "{flag} applies to Postman collections only; this is a YAML suite \
                             (suites iterate with `each:`)"
                        ),
                    ));
                }
            }
            match suite::parse(&text, &f) {
                Ok(s) => inputs.push(Input::Suite(Box::new(s))),
                Err(ps) => problems.extend(located(&f, ps)),
            }
        }
    }
    // A collection takes an environment file, not a suite environment's
    // name: a missing file must not pass unnoticed, as in Newman.
    let only_collections =
        !inputs.is_empty() && inputs.iter().all(|i| matches!(i, Input::Collection { .. }));
    if let Some(env) = opts.environment.as_deref() {
        if only_collections && !Path::new(env).is_file() {
            problems.push(problem(
                Path::new(env),
                "-e/--environment: no such file (a Postman collection takes an environment file)"
                    .into(),
            ));
        }
    }
    if problems.is_empty() {
        Ok(Loaded {
            inputs,
            env_name: opts
                .environment
                .as_deref()
                .map(Path::new)
                .filter(|p| p.is_file())
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| postman::load_environment(&t).ok())
                .and_then(|v| v.name),
            env_file,
            globals,
            data,
            cookies,
        })
    } else {
        Err(problems)
    }
}

/// The value, or `None` with its problems added to `problems`.
fn keep<T>(problems: &mut Vec<FileProblem>, r: Result<T, Vec<FileProblem>>) -> Option<T> {
    r.map_err(|mut ps| problems.append(&mut ps)).ok()
}

/// When `--environment` names a file: its variables, as a flat object.
fn environment_vars(opts: &Options) -> Result<Option<Map<String, Value>>, Vec<FileProblem>> {
    let Some(env) = &opts.environment else {
        return Ok(None);
    };
    let path = Path::new(env);
    if !path.is_file() {
        return Ok(None);
    }
    vars_file(&read(path)?, path).map(Some)
}

/// A variables file: a Postman environment export (or a bare list of
/// `{"key", "value"}`), or any YAML/JSON object.
fn vars_file(text: &str, path: &Path) -> Result<Map<String, Value>, Vec<FileProblem>> {
    let start = text.trim_start_matches('\u{feff}').trim_start();
    // A Postman export, or the bare `[{"key", "value"}]` list Newman accepts.
    if (text.contains("\"values\"") && start.starts_with('{'))
        || (start.starts_with('[') && text.contains("\"key\""))
    {
        return postman::load_environment(text)
            .map(|vars| {
                vars.iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect()
            })
            .map_err(|ps| located(path, ps));
    }
    match suite::yaml_value(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(vec![problem(
            path,
            "a variables file is a mapping of name: value".into(),
        )]),
        Err(p) => Err(located(path, vec![p])),
    }
}

/// The echoed text of a file run beside others, held back until it ends:
/// in an unlinked temporary file, so that a long transcript costs no memory
/// (in memory only when no such file can be made).
struct Held {
    file: Option<io::BufWriter<File>>,
    lines: Vec<String>,
}

impl Held {
    fn new() -> Self {
        Held {
            file: unlinked_file().ok().map(io::BufWriter::new),
            lines: Vec::new(),
        }
    }

    /// Keeps one echo's text (which may span lines), length first.
    fn push(&mut self, text: &str) {
        use io::Write;
        if let Some(f) = &mut self.file {
            let len = (text.len() as u64).to_le_bytes();
            if f.write_all(&len)
                .and_then(|()| f.write_all(text.as_bytes()))
                .is_ok()
            {
                return;
            }
            // Written partly: what is in the file is still replayed whole,
            // so the rest is lost; a full disk is the only cause.
            self.file = None;
        }
        self.lines.push(text.to_string());
    }

    /// Echoes what was held, each text as it came.
    fn replay(&mut self, echo: &Echo) {
        use io::{Read, Seek};
        if let Some(f) = self.file.take() {
            let read = f
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|mut f| {
                    f.rewind()?;
                    let mut r = io::BufReader::new(f);
                    let mut len = [0u8; 8];
                    let mut text = Vec::new();
                    loop {
                        match r.read_exact(&mut len) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                            Err(e) => return Err(e),
                        }
                        text.resize(usize::try_from(u64::from_le_bytes(len)).unwrap_or(0), 0);
                        r.read_exact(&mut text)?;
                        echo(&String::from_utf8_lossy(&text));
                    }
                });
            if let Err(e) = read {
                echo(&format!(
                    "(the rest of this file's output could not be read back: {e})"
                ));
            }
        }
        for line in self.lines.drain(..) {
            echo(&line);
        }
    }
}

/// A new temporary file, already unlinked: it goes away with its handle.
fn unlinked_file() -> io::Result<File> {
    let path = std::env::temp_dir().join(format!("testbed-api-{}", uuid::Uuid::new_v4()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Where one input's cases go as they end.
enum Keep {
    /// Kept, each suite's in a list ([`run`]).
    Whole(Vec<Vec<Case>>),
    /// Written to disk, each suite's in a list ([`run_streamed`]).
    Spooled {
        spool: Spool,
        lists: Vec<SpoolList>,
        /// The first case that could not be written.
        error: Option<io::Error>,
    },
}

impl Keep {
    /// Adds a case of the input's suite number `suite`.
    fn push(&mut self, suite: usize, case: Case) {
        match self {
            Keep::Whole(suites) => {
                if suites.len() <= suite {
                    suites.resize_with(suite + 1, Vec::new);
                }
                suites[suite].push(case);
            }
            Keep::Spooled {
                spool,
                lists,
                error,
            } => {
                if lists.len() <= suite {
                    lists.resize_with(suite + 1, SpoolList::new);
                }
                if let Err(e) = lists[suite].push(spool, &case) {
                    error.get_or_insert(e);
                }
            }
        }
    }
}

/// A collection's observer: its cases to [`Keep`], each request to newman's
/// CLI transcript and JSON reporter as it ends, and nothing kept per request.
struct Observe<'a> {
    keep: &'a mut Keep,
    transcript: Option<(Transcript, Echo)>,
    json: Option<&'a mut NewmanJson>,
}

impl postman::Observer for Observe<'_> {
    fn case(&mut self, suite: usize, case: Case) {
        self.keep.push(suite, case);
    }

    fn execution(&mut self, ex: postman::Execution) {
        if let Some((t, echo)) = &mut self.transcript {
            let text = t.request(&ex);
            // The echo adds the newline the text ends with.
            echo(text.strip_suffix('\n').unwrap_or(&text));
        }
        if let Some(json) = &mut self.json {
            json.request(&ex);
        }
    }
}

/// What one input gave: its suites (without their cases), where their cases
/// went, its run when it is a collection, and newman's JSON reporter when it
/// had it.
struct InputRun {
    suites: Vec<testbed_report::Suite>,
    keep: Keep,
    collection: Option<CollectionRun>,
    json: Option<NewmanJson>,
}

type SuitesFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = InputRun> + Send + 'a>>;

/// Runs loaded inputs into one report, `opts.jobs` files at a time; the
/// report lists them in the order given either way.
pub async fn run(loaded: &Loaded, opts: &Options) -> Report {
    let (mut report, done) = run_inputs(loaded, opts, || Keep::Whole(Vec::new()), None).await;
    for input in done {
        let Keep::Whole(cases) = input.keep else {
            continue;
        };
        let mut cases = cases.into_iter();
        for mut suite in input.suites {
            suite.cases = cases.next().unwrap_or_default();
            report.suites.push(suite);
        }
    }
    report
}

/// [`run`], with each case written to `spool` (an empty file, best an
/// unlinked temporary one) as it ends rather than kept, and each request
/// handed to newman's CLI transcript (`opts.echo`) and to `newman_json`
/// as it ends: memory holds a few bytes a case (its name and where it is)
/// and the failures, whatever the number of iterations. With `newman_json`,
/// the inputs are one collection, whose requests it gets.
pub async fn run_streamed(
    loaded: &Loaded,
    opts: &Options,
    spool: File,
    newman_json: Option<NewmanJson>,
) -> io::Result<Streamed> {
    let spool = Spool::new(spool);
    let keep = || Keep::Spooled {
        spool: spool.clone(),
        lists: Vec::new(),
        error: None,
    };
    let (mut head, done) = run_inputs(loaded, opts, keep, newman_json).await;
    let mut all = Vec::new();
    let mut collections = Vec::new();
    let mut newman_json = None;
    for input in done {
        let Keep::Spooled {
            mut lists, error, ..
        } = input.keep
        else {
            continue;
        };
        if let Some(e) = error {
            return Err(e);
        }
        lists.resize_with(input.suites.len().max(lists.len()), SpoolList::new);
        head.suites.extend(input.suites);
        all.extend(lists);
        collections.extend(input.collection);
        newman_json = newman_json.or(input.json);
    }
    Ok(Streamed {
        report: SpooledReport::new(head, all, spool)?,
        collections,
        newman_json,
    })
}

/// Runs every input, each one's cases into a `keep()` of its own; the
/// report's suites are left to the caller, which has their cases.
async fn run_inputs(
    loaded: &Loaded,
    opts: &Options,
    mut keep: impl FnMut() -> Keep,
    mut newman_json: Option<NewmanJson>,
) -> (Report, Vec<InputRun>) {
    let inputs = &loaded.inputs;
    // A variables file stands in for the environment's name.
    let env_name = match &loaded.env_file {
        Some(_) => None,
        None => opts.environment.clone(),
    };
    let mut vars = loaded.env_file.clone().unwrap_or_default();
    vars.extend(opts.vars.clone());
    let name = match inputs.as_slice() {
        [Input::Suite(s)] => s.name.clone(),
        [Input::Collection { collection, .. }] => collection.name.clone(),
        _ => "api tests".to_string(),
    };
    let mut report = Report::new(uuid::Uuid::new_v4().to_string(), name, chrono::Utc::now());
    report.started_at = Some(chrono::Utc::now());
    let jobs = opts.jobs.max(1);
    // Boxed one by one (not a lazy `map`): the agent's plugin future must be
    // `Send`, and a closure returning futures defeats the compiler's proof.
    let mut runs: Vec<SuitesFuture<'_>> = Vec::with_capacity(inputs.len());
    for input in inputs {
        // In parallel, a file's lines are held back and printed together
        // when it ends, so the transcripts of two files never interleave.
        let held = Arc::new(Mutex::new(Held::new()));
        let echo: Option<Echo> = match (&opts.echo, jobs) {
            (None, _) => None,
            (Some(e), 1) => Some(e.clone()),
            (Some(_), _) => {
                let held = held.clone();
                Some(Arc::new(move |l: &str| {
                    if let Ok(mut h) = held.lock() {
                        h.push(l);
                    }
                }))
            }
        };
        let suite_opts = RunOptions {
            vars: vars.clone(),
            environment: env_name.clone(),
            tags: opts.tags.clone(),
            skip_tags: opts.skip_tags.clone(),
            echo: echo.clone(),
        };
        let vars = &vars;
        let keep = keep();
        // The one collection's, when asked for.
        let json = match input {
            Input::Collection { .. } => newman_json.take(),
            Input::Suite(_) => None,
        };
        runs.push(Box::pin(async move {
            let done = run_input(input, &suite_opts, vars, loaded, opts, keep, json).await;
            if let (Some(e), Ok(mut h)) = (&opts.echo, held.lock()) {
                h.replay(e);
            }
            done
        }));
    }
    let done: Vec<InputRun> = futures_util::stream::iter(runs)
        .buffered(jobs)
        .collect()
        .await;
    // One collection: the report says what its own did (format, iterations)
    // and carries newman's counts, as the json reporter's `run.stats`, so the
    // canonical JSON report has them too.
    if let (
        [_],
        [InputRun {
            collection: Some(c),
            ..
        }],
    ) = (inputs.as_slice(), done.as_slice())
    {
        report.properties.extend(c.run.report.properties.clone());
        report.properties.insert(
            "newman.stats".into(),
            postman::newman_stats(&c.run.stats).to_string(),
        );
    }
    report.finished_at = Some(chrono::Utc::now());
    (report, done)
}

async fn run_input(
    input: &Input,
    suite_opts: &RunOptions,
    vars: &Map<String, Value>,
    loaded: &Loaded,
    opts: &Options,
    mut keep: Keep,
    mut json: Option<NewmanJson>,
) -> InputRun {
    match input {
        Input::Suite(s) => {
            let suite = runner::run_suite_into(s, suite_opts, &mut |c| keep.push(0, c)).await;
            InputRun {
                suites: vec![suite],
                keep,
                collection: None,
                json,
            }
        }
        Input::Collection { collection, file } => {
            let mut environment = postman::Vars::new();
            environment.name = loaded.env_name.clone();
            for (k, v) in vars {
                environment.set(k.clone(), v.clone());
            }
            let mut globals = loaded.globals.clone();
            for (k, v) in &opts.collections.global_vars {
                globals.set(k.clone(), v.clone());
            }
            let c = &opts.collections;
            let defaults = postman::RunOptions::default();
            let run_opts = postman::RunOptions {
                environment,
                globals,
                insecure: opts.insecure,
                script_time_limit: opts.script_timeout,
                timeout: c.request_timeout.unwrap_or(defaults.timeout),
                working_dir: c
                    .working_dir
                    .clone()
                    .or_else(|| file.parent().map(Path::to_path_buf)),
                iterations: opts.iterations,
                data: loaded.data.clone(),
                folders: c.folders.clone(),
                bail: c.bail,
                bail_on_unknown_folder: c.bail_on_unknown_folder,
                delay_request: c.delay_request,
                follow_redirects: !c.ignore_redirects,
                run_timeout: c.run_timeout,
                cookies: loaded.cookies.clone(),
                ..defaults
            };
            // newman's CLI output as the run goes: each request when it ends.
            let echo = suite_opts.echo.clone();
            if let Some(e) = &echo {
                let name = if collection.name.is_empty() {
                    "collection"
                } else {
                    &collection.name
                };
                e(&Transcript::head(name));
            }
            let transcript = echo.map(|e| (Transcript::new(run_opts.planned_iterations()), e));
            let run = {
                let mut observe = Observe {
                    keep: &mut keep,
                    transcript,
                    json: json.as_mut(),
                };
                postman::run_observed(collection, run_opts, &mut observe).await
            };
            if let Some(e) = &suite_opts.echo {
                e(&Transcript::tail(&run));
            }
            InputRun {
                suites: run.report.suites.clone(),
                keep,
                collection: Some(CollectionRun {
                    file: file.clone(),
                    run,
                }),
                json,
            }
        }
    }
}

/// The Postman globals file, when one is given.
fn globals(opts: &Options) -> Result<postman::Vars, Vec<FileProblem>> {
    let Some(path) = &opts.globals else {
        return Ok(postman::Vars::default());
    };
    postman::load_environment(&read(path)?).map_err(|ps| located(path, ps))
}

/// The cookies of the `--cookie-jar` file, when one is given.
fn cookie_jar(opts: &Options) -> Result<Vec<postman::JarCookie>, Vec<FileProblem>> {
    let Some(path) = &opts.collections.cookie_jar else {
        return Ok(Vec::new());
    };
    postman::load_cookie_jar(&read(path)?).map_err(|ps| located(path, ps))
}

/// The rows of the iteration data file, when one is given.
fn iteration_data(opts: &Options) -> Result<Vec<postman::Vars>, Vec<FileProblem>> {
    let Some(path) = &opts.data else {
        return Ok(Vec::new());
    };
    let text = read(path)?;
    postman::load_data(&text, postman::DataFormat::of(path, &text)).map_err(|ps| located(path, ps))
}

#[cfg(test)]
mod tests {
    use super::{is_collection, Echo, Held};
    use std::sync::{Arc, Mutex};

    /// Held text comes back as it was echoed, one echo at a time, from the
    /// file.
    #[test]
    fn held_output_is_replayed_as_it_came() {
        let mut held = Held::new();
        assert!(held.file.is_some(), "a temporary file");
        let texts = [
            "newman\n\nmany",
            "",
            "\n→ ping\n  GET http://x/ [200 OK, 1B, 1ms]",
            "é ✓",
        ];
        for t in texts {
            held.push(t);
        }
        assert!(held.lines.is_empty(), "nothing kept in memory");
        let got = Arc::new(Mutex::new(Vec::new()));
        let echo: Echo = {
            let got = got.clone();
            Arc::new(move |l: &str| got.lock().unwrap().push(l.to_string()))
        };
        held.replay(&echo);
        assert_eq!(*got.lock().unwrap(), texts);
    }

    #[test]
    fn collections_are_told_from_suites_by_their_content() {
        assert!(is_collection(
            r#"{"info": {"schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"}, "item": []}"#
        ));
        // v1: no info, requests and order at the top.
        assert!(is_collection(r#"{"id": "1", "order": [], "requests": []}"#));
        assert!(!is_collection(r#"{"info": {}, "order": []}"#));
        assert!(!is_collection(r#"{"name": "suite", "tests": []}"#));
        // A multi-byte character across the 4 KiB mark does not panic.
        let text = format!("{{\"x\": \"{}é\"}}", "a".repeat(4088));
        assert!(!is_collection(&text));
    }
}
