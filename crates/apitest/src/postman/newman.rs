//! Text output in the shape of newman's CLI reporter: the requests with their
//! tests as they ran, the summary table, and the numbered failures.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use testbed_report::Outcome;

use super::collection::Listen;
use super::run::{Count, Execution, PostmanRun, Stats};
use super::vars::Vars;

/// The run as newman's CLI reporter prints it.
pub fn newman_summary(run: &PostmanRun) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "newman\n\n{}", run.report.name);
    let mut folder: Option<String> = None;
    let mut iteration = None;
    for ex in &run.executions {
        if run.stats.iterations.executed > 1 && iteration != Some(ex.iteration) {
            iteration = Some(ex.iteration);
            let _ = write!(
                s,
                "\nIteration {}/{}\n",
                ex.iteration + 1,
                run.stats.iterations.executed
            );
            folder = None;
        }
        let path = ex.folders.join(" / ");
        if !path.is_empty() && folder.as_deref() != Some(path.as_str()) {
            let _ = write!(s, "\n❏ {path}");
        }
        folder = Some(path);
        request(&mut s, ex);
    }
    s.push('\n');
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
    let times = response_times_ms(run);
    let received: usize = run
        .executions
        .iter()
        .filter_map(|e| e.response.as_ref())
        .map(|r| r.size)
        .sum();
    let mut notes = vec![
        format!("total run duration: {}", human(run.duration)),
        format!("total data received: {} (approx)", bytes(received)),
    ];
    if !times.is_empty() {
        let n = times.len() as f64;
        let mean = times.iter().sum::<f64>() / n;
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = times.iter().copied().fold(0.0, f64::max);
        let sd = (times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n).sqrt();
        notes.push(format!(
            "average response time: {:.0}ms [min: {:.0}ms, max: {:.0}ms, s.d.: {:.0}ms]",
            mean, min, max, sd
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
/// from, and its `error`).
pub fn newman_json(run: &PostmanRun) -> Value {
    // Which request each numbered failure belongs to.
    let mut sources: Vec<Option<&Execution>> = vec![None; run.failures.len()];
    for ex in &run.executions {
        for a in &ex.assertions {
            if let Some(slot) = a.failure.and_then(|n| sources.get_mut(n.wrapping_sub(1))) {
                *slot = Some(ex);
            }
        }
    }
    let failures: Vec<Value> = run
        .failures
        .iter()
        .zip(&sources)
        .map(|(f, ex)| {
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
                .map(|ex| ex.folders.join(" / "))
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
    let executions: Vec<Value> = run
        .executions
        .iter()
        .map(|ex| {
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
        })
        .collect();
    let times = response_times_ms(run);
    let n = times.len().max(1) as f64;
    let mean = times.iter().sum::<f64>() / n;
    let sd = (times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n).sqrt();
    let ms = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_millis());
    json!({
        "collection": {"info": {"name": run.report.name}},
        "environment": newman_scope(&run.environment, "environment", ""),
        "globals": newman_scope(&run.globals, "globals", "globals"),
        "run": {
            "stats": newman_stats(&run.stats),
            "timings": {
                "responseAverage": mean,
                "responseMin": if times.is_empty() { 0.0 } else { times.iter().copied().fold(f64::INFINITY, f64::min) },
                "responseMax": times.iter().copied().fold(0.0, f64::max),
                "responseSd": sd,
                "started": ms(run.report.started_at),
                "completed": ms(run.report.finished_at),
            },
            "executions": executions,
            "transfers": {"responseTotal": run.executions.iter().filter_map(|e| e.response.as_ref()).map(|r| r.size).sum::<usize>()},
            "failures": failures,
            "error": Value::Null,
        },
    })
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

/// The response times of a run's requests that got an answer, in ms.
fn response_times_ms(run: &PostmanRun) -> Vec<f64> {
    run.executions
        .iter()
        .filter_map(|e| e.response.as_ref())
        .map(|r| r.time.as_secs_f64() * 1000.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes(335), "335B");
        assert_eq!(bytes(2048), "2.00kB");
        assert_eq!(human(Duration::from_millis(1234)), "1.2s");
        assert_eq!(human(Duration::from_millis(61_500)), "1m 1.5s");
    }
}
