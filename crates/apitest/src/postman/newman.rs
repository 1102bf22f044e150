//! Text output in the shape of newman's CLI reporter: the requests with their
//! tests as they ran, the summary table, and the numbered failures.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::time::Duration;

use serde_json::{json, Value};
use testbed_report::Outcome;

use super::collection::Listen;
use super::run::{Count, Execution, PostmanRun, Stats};
use super::vars::Vars;

/// The run as newman's CLI reporter prints it: [`Transcript`]'s head, each
/// request, and its tail, in one string.
pub fn newman_summary(run: &PostmanRun) -> String {
    let iterations = run
        .report
        .properties
        .get("iterations")
        .and_then(|n| n.parse().ok())
        .unwrap_or(run.stats.iterations.executed);
    let mut s = Transcript::head(&run.report.name);
    s.push('\n');
    let mut t = Transcript::new(iterations);
    for ex in &run.executions {
        s.push_str(&t.request(ex));
    }
    s.push_str(&Transcript::tail(run));
    s
}

/// newman's CLI reporter as a run goes, a piece at a time: [`Self::head`]
/// before the first request, [`Self::request`] as each ends, [`Self::tail`]
/// (the table and the failures) at the end. Printed one after the other,
/// each with a newline added (as `println!` does) but for a request's, whose
/// own last newline stands for it, they are [`newman_summary`].
pub struct Transcript {
    /// The iterations the run is to make (`Iteration 2/5`, as newman counts).
    iterations: usize,
    folder: Option<String>,
    iteration: Option<usize>,
}

impl Transcript {
    pub fn new(iterations: usize) -> Self {
        Transcript {
            iterations,
            folder: None,
            iteration: None,
        }
    }

    /// What comes before the first request (without its last newline).
    pub fn head(collection: &str) -> String {
        format!("newman\n\n{collection}")
    }

    /// One request as it ran, after the iteration's and the folder's heading
    /// when it starts one; ends with a newline.
    pub fn request(&mut self, ex: &Execution) -> String {
        let mut s = String::new();
        if self.iterations > 1 && self.iteration != Some(ex.iteration) {
            self.iteration = Some(ex.iteration);
            let _ = write!(s, "\nIteration {}/{}\n", ex.iteration + 1, self.iterations);
            self.folder = None;
        }
        let path = ex.folders.join(" / ");
        if !path.is_empty() && self.folder.as_deref() != Some(path.as_str()) {
            let _ = write!(s, "\n❏ {path}");
        }
        self.folder = Some(path);
        request(&mut s, ex);
        s
    }

    /// The summary table, the numbered failures and what was unsupported.
    pub fn tail(run: &PostmanRun) -> String {
        let mut s = String::from("\n");
        table(&mut s, run);
        failures(&mut s, run);
        if !run.unsupported.is_empty() {
            let _ = writeln!(s, "\nunsupported (each is counted as an error):");
            for u in &run.unsupported {
                let _ = writeln!(s, "  - {u}");
            }
        }
        s
    }
}

fn request(s: &mut String, ex: &Execution) {
    let _ = writeln!(s, "\n→ {}", ex.name);
    console(s, ex, Listen::Prerequest);
    if ex.skipped {
        let _ = writeln!(
            s,
            "  {} {} [skipped by pm.execution.skipRequest()]",
            ex.method, ex.url
        );
    } else if let Some(r) = &ex.response {
        let _ = writeln!(
            s,
            "  {} {} [{} {}, {}, {}]",
            ex.method,
            ex.url,
            r.code,
            r.reason,
            bytes(r.size),
            millis(r.time)
        );
    } else if let Some(err) = &ex.error {
        let _ = writeln!(s, "  {} {} [errored]", ex.method, ex.url);
        let _ = writeln!(s, "     {err}");
    }
    console(s, ex, Listen::Test);
    for a in &ex.assertions {
        match (a.outcome, a.failure) {
            (Outcome::Pass, _) => {
                let _ = writeln!(s, "  ✓  {}", a.name);
            }
            (Outcome::Skip, _) => {
                let _ = writeln!(s, "  -  {}", a.name);
            }
            (_, Some(n)) => {
                let _ = writeln!(s, "  {n}. {}", a.name);
            }
            (_, None) => {
                let _ = writeln!(s, "  ✗  {}", a.name);
            }
        }
    }
}

fn console(s: &mut String, ex: &Execution, phase: Listen) {
    let lines: Vec<_> = ex.console.iter().filter(|c| c.phase == phase).collect();
    if lines.is_empty() {
        return;
    }
    s.push_str("  ┌\n");
    for l in lines {
        for part in l.text.lines() {
            let _ = writeln!(s, "  │ {part}");
        }
    }
    s.push_str("  └\n");
}

const W1: usize = 25;
const W2: usize = 19;
const W3: usize = 18;

fn table(s: &mut String, run: &PostmanRun) {
    let st = &run.stats;
    let rows = [
        ("iterations", st.iterations),
        ("requests", st.requests),
        ("test-scripts", st.test_scripts),
        ("prerequest-scripts", st.prerequest_scripts),
        ("assertions", st.assertions),
    ];
    let t = &run.timings;
    let mut notes = vec![
        format!("total run duration: {}", human(run.duration)),
        format!("total data received: {} (approx)", bytes(t.received)),
    ];
    if t.count > 0 {
        notes.push(format!(
            "average response time: {:.0}ms [min: {:.0}ms, max: {:.0}ms, s.d.: {:.0}ms]",
            t.mean_ms(),
            t.min_ms,
            t.max_ms,
            t.sd_ms()
        ));
    }
    let inner = notes
        .iter()
        .map(|n| n.chars().count() + 2)
        .max()
        .unwrap_or(0)
        .max(W1 + W2 + W3 + 2);
    // The third column takes up what the notes need beyond the default width.
    let w3 = inner - W1 - W2 - 2;
    let rule = |l: &str, m: &str, r: &str, s: &mut String| {
        let _ = writeln!(
            s,
            "{l}{}{m}{}{m}{}{r}",
            "─".repeat(W1),
            "─".repeat(W2),
            "─".repeat(w3)
        );
    };
    rule("┌", "┬", "┐", s);
    let _ = writeln!(
        s,
        "│{:>w1$}│{:>w2$}│{:>w3$}│",
        "",
        "executed ",
        "failed ",
        w1 = W1,
        w2 = W2,
        w3 = w3
    );
    for (name, c) in rows {
        rule("├", "┼", "┤", s);
        let _ = writeln!(
            s,
            "│{:>w1$}│{:>w2$}│{:>w3$}│",
            format!("{name} "),
            format!("{} ", c.executed),
            format!("{} ", c.failed),
            w1 = W1,
            w2 = W2,
            w3 = w3
        );
    }
    rule("├", "┴", "┤", s);
    for (i, note) in notes.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(s, "├{}┤", "─".repeat(inner));
        }
        let pad = inner - note.chars().count() - 1;
        let _ = writeln!(s, "│ {note}{}│", " ".repeat(pad));
    }
    let _ = writeln!(s, "└{}┘", "─".repeat(inner));
}

fn failures(s: &mut String, run: &PostmanRun) {
    if run.failures.is_empty() {
        return;
    }
    let kind_w = run
        .failures
        .iter()
        .map(|f| f.kind.chars().count())
        .max()
        .unwrap_or(0)
        .max("failure".len());
    let num_w = run.failures.len().to_string().len() + 1;
    let indent = " ".repeat(num_w + 3 + kind_w + 2);
    let _ = writeln!(
        s,
        "\n {:>num_w$}  {:<kind_w$}  detail\n",
        "#",
        "failure",
        num_w = num_w,
        kind_w = kind_w
    );
    for (i, f) in run.failures.iter().enumerate() {
        let _ = writeln!(
            s,
            " {:>num_w$}  {:<kind_w$}  {}",
            format!("{}.", i + 1),
            f.kind,
            f.title,
            num_w = num_w,
            kind_w = kind_w
        );
        for line in f.message.lines() {
            let _ = writeln!(s, "{indent}{line}");
        }
        let _ = writeln!(s, "{indent}at {}", f.at);
        let _ = writeln!(s, "{indent}inside \"{}\"\n", f.inside);
    }
}

/// `run.stats` as newman's JSON reporter writes it: each row's `total`,
/// `pending` and `failed`.
pub fn newman_stats(stats: &Stats) -> Value {
    let row = |c: Count| json!({"total": c.executed, "pending": 0, "failed": c.failed});
    json!({
        "iterations": row(stats.iterations),
        "requests": row(stats.requests),
        "testScripts": row(stats.test_scripts),
        "prerequestScripts": row(stats.prerequest_scripts),
        "assertions": row(stats.assertions),
    })
}

/// A variable scope as newman exports it (`--export-environment`,
/// `--export-globals`, and the JSON reporter's `environment`/`globals`).
pub fn newman_scope(vars: &Vars, scope: &str, default_name: &str) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": vars.name.clone().unwrap_or_else(|| default_name.to_string()),
        "values": vars
            .iter()
            .map(|(k, v)| json!({"type": "any", "value": v, "key": k, "enabled": true}))
            .collect::<Vec<_>>(),
        "_postman_variable_scope": scope,
        "_postman_exported_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "_postman_exported_using": concat!("Testbed/", env!("CARGO_PKG_VERSION")),
    })
}

/// The run as newman's JSON reporter (`-r json`) writes it: `collection`,
/// `environment`, `globals` and `run` with `stats`, `timings`,
/// `executions` and `failures` (each with its `source`, the request it came
/// from, and its `error`). [`NewmanJson`] writes the same document as a run
/// goes.
pub fn newman_json(run: &PostmanRun) -> Value {
    let mut sources = Vec::new();
    for ex in &run.executions {
        note_sources(&mut sources, ex);
    }
    let executions: Vec<Value> = run.executions.iter().map(execution_json).collect();
    document(run, &sources, Value::Array(executions))
}

/// Which request a numbered failure came from: its name, its folders and
/// its iteration.
#[derive(Debug, Clone)]
struct Source {
    name: String,
    folders: String,
    iteration: usize,
}

/// Notes the request of each failure among `ex`'s assertions, at the
/// failure's number (1-based) less one.
fn note_sources(sources: &mut Vec<Option<Source>>, ex: &Execution) {
    for a in &ex.assertions {
        let Some(i) = a.failure.and_then(|n| n.checked_sub(1)) else {
            continue;
        };
        if sources.len() <= i {
            sources.resize(i + 1, None);
        }
        sources[i] = Some(Source {
            name: ex.name.clone(),
            folders: ex.folders.join(" / "),
            iteration: ex.iteration,
        });
    }
}

/// One entry of `run.executions`.
fn execution_json(ex: &Execution) -> Value {
    let mut e = json!({
        "cursor": {"iteration": ex.iteration},
        "item": {"name": ex.name},
        "request": {"method": ex.method, "url": ex.url},
        "assertions": ex.assertions.iter().map(|a| {
            let mut v = json!({"assertion": a.name, "skipped": a.outcome == Outcome::Skip});
            if a.outcome.is_failure() {
                v["error"] = json!({"message": a.message});
            }
            v
        }).collect::<Vec<_>>(),
    });
    if let Some(r) = &ex.response {
        e["response"] = json!({
            "code": r.code,
            "status": r.reason,
            "responseTime": u64::try_from(r.time.as_millis()).unwrap_or(u64::MAX),
            "responseSize": r.size,
        });
    }
    if let Some(err) = &ex.error {
        e["requestError"] = json!({"message": err});
    }
    e
}

/// The reporter's document, with `executions` as given.
fn document(run: &PostmanRun, sources: &[Option<Source>], executions: Value) -> Value {
    let failures: Vec<Value> = run
        .failures
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ex = sources.get(i).and_then(Option::as_ref);
            let message = if f.message.is_empty() {
                &f.title
            } else {
                &f.message
            };
            let mut error = json!({"name": f.kind, "message": message});
            if f.at.starts_with("assertion:") {
                error["test"] = json!(f.title);
            }
            let source = ex.map_or(f.inside.as_str(), |ex| ex.name.as_str());
            let parent = ex
                .map(|ex| ex.folders.clone())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| run.report.name.clone());
            json!({
                "error": error,
                "at": f.at,
                "source": {"name": source},
                "parent": {"name": parent},
                "cursor": {"iteration": ex.map(|ex| ex.iteration)},
            })
        })
        .collect();
    let t = &run.timings;
    let ms = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_millis());
    json!({
        "collection": {"info": {"name": run.report.name}},
        "environment": newman_scope(&run.environment, "environment", ""),
        "globals": newman_scope(&run.globals, "globals", "globals"),
        "run": {
            "stats": newman_stats(&run.stats),
            "timings": {
                "responseAverage": t.mean_ms(),
                "responseMin": if t.count == 0 { 0.0 } else { t.min_ms },
                "responseMax": t.max_ms,
                "responseSd": t.sd_ms(),
                "started": ms(run.report.started_at),
                "completed": ms(run.report.finished_at),
            },
            "executions": executions,
            "transfers": {"responseTotal": t.received},
            "failures": failures,
            "error": Value::Null,
        },
    })
}

/// Stands in for `run.executions` in the document until the entries
/// written so far take its place.
const EXECUTIONS_MARK: &str = "\u{0}testbed: executions\u{0}";

/// The indentation of an entry of `run.executions` in the pretty-printed
/// document (two spaces a level: the document, `run`, the array).
const ENTRY_INDENT: &str = "      ";

/// newman's JSON reporter as a run goes: each request's entry of
/// `run.executions` is written to a file (an unlinked temporary one) as it
/// ends, and [`NewmanJson::finish`] writes the document around them, the
/// same text as `serde_json::to_string_pretty(&newman_json(run))` — without
/// holding a value per request.
pub struct NewmanJson {
    out: BufWriter<File>,
    entries: usize,
    sources: Vec<Option<Source>>,
    /// The first write that failed: requests end where no error can go.
    error: Option<io::Error>,
}

impl NewmanJson {
    /// Entries go to `spool`, an empty file open for reading and writing.
    pub fn new(spool: File) -> Self {
        NewmanJson {
            out: BufWriter::with_capacity(256 * 1024, spool),
            entries: 0,
            sources: Vec::new(),
            error: None,
        }
    }

    /// Adds a request's entry.
    pub fn request(&mut self, ex: &Execution) {
        note_sources(&mut self.sources, ex);
        if self.error.is_some() {
            return;
        }
        let written = serde_json::to_string_pretty(&execution_json(ex))
            .map_err(io::Error::other)
            .and_then(|text| {
                if self.entries > 0 {
                    self.out.write_all(b",\n")?;
                }
                for (i, line) in text.lines().enumerate() {
                    if i > 0 {
                        self.out.write_all(b"\n")?;
                    }
                    self.out.write_all(ENTRY_INDENT.as_bytes())?;
                    self.out.write_all(line.as_bytes())?;
                }
                Ok(())
            });
        match written {
            Ok(()) => self.entries += 1,
            Err(e) => self.error = Some(e),
        }
    }

    /// Writes the document of `run` (the run these requests were of) to `w`.
    pub fn finish(self, run: &PostmanRun, w: &mut dyn io::Write) -> io::Result<()> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut spool = self.out.into_inner().map_err(|e| e.into_error())?;
        let doc = document(run, &self.sources, json!(EXECUTIONS_MARK));
        let text = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
        let mark = serde_json::to_string(EXECUTIONS_MARK).map_err(io::Error::other)?;
        let (before, after) = text
            .split_once(&mark)
            .ok_or_else(|| io::Error::other("the executions' place is not in the document"))?;
        w.write_all(before.as_bytes())?;
        if self.entries == 0 {
            w.write_all(b"[]")?;
        } else {
            w.write_all(b"[\n")?;
            io::Seek::rewind(&mut spool)?;
            io::copy(&mut spool, w)?;
            w.write_all(format!("\n{}]", &ENTRY_INDENT[2..]).as_bytes())?;
        }
        w.write_all(after.as_bytes())
    }
}

/// `text` with newman's `--disable-unicode` symbols: plain ASCII for the
/// marks, arrows and table rules.
pub fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '✓' => "ok".to_string(),
            '✗' => "x".to_string(),
            '→' => "->".to_string(),
            '❏' => "*".to_string(),
            '›' => ">".to_string(),
            '─' => "-".to_string(),
            '│' => "|".to_string(),
            '┌' | '┐' | '└' | '┘' | '├' | '┤' | '┬' | '┴' | '┼' => {
                "+".to_string()
            }
            c => c.to_string(),
        })
        .collect()
}

fn bytes(n: usize) -> String {
    if n < 1024 {
        format!("{n}B")
    } else if n < 1024 * 1024 {
        format!("{:.2}kB", n as f64 / 1024.0)
    } else {
        format!("{:.2}MB", n as f64 / (1024.0 * 1024.0))
    }
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m {:.1}s", ms / 60_000, (ms % 60_000) as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::postman::run::{AssertionResult, Failure, ResponseInfo, Timings};
    use crate::postman::Vars;

    fn execution(i: usize, name: &str, folders: &[&str], failure: Option<usize>) -> Execution {
        let response = (i % 3 != 2).then(|| ResponseInfo {
            code: 200,
            reason: "OK".into(),
            size: 100 + i,
            time: Duration::from_millis(3 + i as u64),
        });
        Execution {
            iteration: i,
            name: name.into(),
            folders: folders.iter().map(|f| f.to_string()).collect(),
            method: "GET".into(),
            url: format!("http://127.0.0.1/get?i={i}&q=\"x\""),
            error: response
                .is_none()
                .then(|| "connect refused\nsecond line".to_string()),
            response,
            skipped: false,
            assertions: vec![
                AssertionResult {
                    name: "status is 200".into(),
                    outcome: Outcome::Pass,
                    message: None,
                    failure: None,
                },
                AssertionResult {
                    name: "a \"quoted\" test".into(),
                    outcome: if failure.is_some() {
                        Outcome::Fail
                    } else {
                        Outcome::Skip
                    },
                    message: failure.map(|_| "expected 1 to be 2".to_string()),
                    failure,
                },
            ],
            console: Vec::new(),
            started_at: chrono::Utc::now(),
            duration: Duration::from_millis(5),
        }
    }

    /// Everything but the ids and times newman_scope makes up on each call.
    fn steady(text: &str) -> String {
        text.lines()
            .filter(|l| !l.contains("\"id\":") && !l.contains("_postman_exported_at"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The JSON reporter written as the run goes is the document
    /// `newman_json` gives, to the byte: with no request, and with several,
    /// failures among them.
    #[test]
    fn the_streamed_json_reporter_writes_newman_json() {
        for n in [0, 1, 5] {
            let executions: Vec<Execution> = (0..n)
                .map(|i| {
                    let folders: &[&str] = if i % 2 == 0 { &[] } else { &["F", "G"] };
                    execution(i, &format!("req {i}"), folders, (i == 3).then_some(2))
                })
                .collect();
            let mut timings = Timings::default();
            for r in executions.iter().filter_map(|e| e.response.as_ref()) {
                timings.add(r);
            }
            let failure = |kind: &str| Failure {
                kind: kind.into(),
                title: "a \"quoted\" test".into(),
                message: "expected 1 to be 2".into(),
                at: "assertion:1 in test-script".into(),
                inside: "F / G / req 3".into(),
            };
            let mut report = testbed_report::Report::new("r", "coll", chrono::Utc::now());
            report.started_at = Some(chrono::Utc::now());
            report.finished_at = Some(chrono::Utc::now());
            let mut run = PostmanRun {
                report,
                stats: Stats::default(),
                failures: vec![failure("SelectionError"), failure("AssertionError")],
                unsupported: Vec::new(),
                console: Vec::new(),
                executions: Vec::new(),
                timings,
                duration: Duration::from_millis(40),
                environment: Vars::new(),
                globals: Vars::new(),
                collection_variables: Vars::new(),
                cookies: Vec::new(),
            };
            let mut streamed = NewmanJson::new(tempfile::tempfile().unwrap());
            for ex in &executions {
                streamed.request(ex);
            }
            let mut text = Vec::new();
            streamed.finish(&run, &mut text).unwrap();
            run.executions = executions;
            let whole = serde_json::to_string_pretty(&newman_json(&run)).unwrap();
            assert_eq!(
                steady(&String::from_utf8(text).unwrap()),
                steady(&whole),
                "{n} requests"
            );
        }
    }

    /// The running sums give what the list of times gave.
    #[test]
    fn timings_are_the_list_s() {
        let times = [3.0, 250.0, 7.5, 7.5, 1200.25, 0.5];
        let mut t = Timings::default();
        for ms in times {
            t.add(&ResponseInfo {
                code: 200,
                reason: "OK".into(),
                size: 10,
                time: Duration::from_secs_f64(ms / 1000.0),
            });
        }
        let n = times.len() as f64;
        let mean = times.iter().sum::<f64>() / n;
        let sd = (times.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((t.mean_ms() - mean).abs() < 1e-9, "{} {mean}", t.mean_ms());
        assert!((t.sd_ms() - sd).abs() < 1e-9, "{} {sd}", t.sd_ms());
        assert!((t.min_ms - 0.5).abs() < 1e-9 && (t.max_ms - 1200.25).abs() < 1e-9);
        assert_eq!(t.received, 60);
        assert_eq!(Timings::default().mean_ms(), 0.0);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes(335), "335B");
        assert_eq!(bytes(2048), "2.00kB");
        assert_eq!(human(Duration::from_millis(1234)), "1.2s");
        assert_eq!(human(Duration::from_millis(61_500)), "1m 1.5s");
    }
}
