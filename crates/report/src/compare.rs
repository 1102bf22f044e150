//! Comparing two reports: what regressed, what got fixed, which tests appeared
//! or disappeared, and which durations changed significantly.
//!
//! Tests are keyed by suite (with its platform, for matrix runs) and case name.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use crate::view::{self, View};
use crate::Outcome;
use serde::Serialize;

/// A test that exists in both reports with a different outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub suite: String,
    pub case: String,
    pub before: Outcome,
    pub after: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A test present in only one of the reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    pub suite: String,
    pub case: String,
    pub outcome: Outcome,
}

/// A suite or case whose duration changed by more than the threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurationChange {
    pub suite: String,
    /// `None` for the suite (script) as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    pub before_ms: u64,
    pub after_ms: u64,
    /// Relative change in percent, positive when slower.
    pub change_pct: f64,
}

/// The differences between report `a` (before) and `b` (after).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    pub before: String,
    pub after: String,
    pub regressions: Vec<Change>,
    pub fixes: Vec<Change>,
    /// Other outcome changes (e.g. pass → skip).
    pub changes: Vec<Change>,
    pub new: Vec<Presence>,
    pub removed: Vec<Presence>,
    pub durations: Vec<DurationChange>,
}

impl Comparison {
    pub fn has_regressions(&self) -> bool {
        !self.regressions.is_empty()
    }
}

/// How significant a duration change must be to be listed.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Relative change, in percent.
    pub percent: f64,
    /// Absolute change below which nothing is listed, since short tests jitter
    /// by far more than any sensible percentage.
    pub min_delta_ms: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            percent: 20.0,
            min_delta_ms: 100,
        }
    }
}

/// Parses `20%` or `20` as a percentage.
pub fn parse_percent(s: &str) -> Option<f64> {
    let v: f64 = s.trim().trim_end_matches('%').trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

fn passed(o: Outcome) -> bool {
    matches!(o, Outcome::Pass | Outcome::Xpass)
}

fn duration_change(before: u64, after: u64, t: Thresholds) -> Option<f64> {
    if before == 0 || after == 0 || before.abs_diff(after) < t.min_delta_ms {
        return None;
    }
    let pct = (after as f64 - before as f64) / before as f64 * 100.0;
    (pct.abs() >= t.percent).then_some(pct)
}

/// The case `ja` of suite `sa` of `a` and case `jb` of suite `sb` of `b` are the
/// same test: list its duration change and outcome change, if any.
#[allow(clippy::too_many_arguments)]
fn pair<A: View, B: View>(
    out: &mut Comparison,
    sname: &str,
    a: &A,
    sa: usize,
    ja: usize,
    b: &B,
    sb: usize,
    jb: usize,
    t: Thresholds,
) {
    let (before, before_ms) = (a.case_outcome(sa, ja), a.case_duration_ms(sa, ja));
    let (after, after_ms) = (b.case_outcome(sb, jb), b.case_duration_ms(sb, jb));
    if let Some(pct) = duration_change(before_ms, after_ms, t) {
        out.durations.push(DurationChange {
            suite: sname.to_string(),
            case: Some(b.case_name(sb, jb).to_string()),
            before_ms,
            after_ms,
            change_pct: pct,
        });
    }
    if before == after {
        return;
    }
    let change = Change {
        suite: sname.to_string(),
        case: b.case_name(sb, jb).to_string(),
        before,
        after,
        message: b.case(sb, jb).message.clone(),
    };
    if passed(before) && after.is_failure() {
        out.regressions.push(change);
    } else if before.is_failure() && passed(after) {
        out.fixes.push(change);
    } else {
        out.changes.push(change);
    }
}

/// Suite `sb` of `b` took `after` where its namesake took `before`: list
/// the change if it is significant.
fn suite_durations(
    out: &mut Comparison,
    sname: &str,
    before: u64,
    b: &impl View,
    sb: usize,
    t: Thresholds,
) {
    let after = view::suite_duration_ms(b, sb);
    if let Some(pct) = duration_change(before, after, t) {
        out.durations.push(DurationChange {
            suite: sname.to_string(),
            case: None,
            before_ms: before,
            after_ms: after,
            change_pct: pct,
        });
    }
}

fn presence(v: &impl View, suite: &str, s: usize, i: usize) -> Presence {
    Presence {
        suite: suite.to_string(),
        case: v.case_name(s, i).to_string(),
        outcome: v.case_outcome(s, i),
    }
}

/// Compares `a` (before) with `b` (after).
///
/// Suites are matched by name; within a pair, when both list the same names in
/// the same order (the usual case: the same kit run twice), case `i` is
/// compared with case `i` and nothing more is kept. Otherwise the k-th case of
/// a name is matched with the k-th case of that name on the other side, through
/// an index of that one suite. So comparing two reports of a million cases
/// costs no memory beyond the reports, in the usual case.
pub fn compare<A: View, B: View>(a: &A, b: &B, t: Thresholds) -> Comparison {
    let names_a: Vec<String> = a.head().suites.iter().map(|s| s.display_name()).collect();
    let names_b: Vec<String> = b.head().suites.iter().map(|s| s.display_name()).collect();
    let unique = |names: &[String]| {
        let set: HashSet<&str> = names.iter().map(String::as_str).collect();
        set.len() == names.len()
    };
    if !unique(&names_a) || !unique(&names_b) {
        return compare_any(a, b, t, &names_a, &names_b);
    }
    let mut out = Comparison {
        before: a.head().id.clone(),
        after: b.head().id.clone(),
        ..Comparison::default()
    };
    let suite_of_a: HashMap<&str, usize> = names_a
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    // Removed cases are listed in `a`'s order, at the end.
    let mut removed: Vec<Option<Vec<Presence>>> = vec![None; names_a.len()];
    for (sb, sname) in names_b.iter().enumerate() {
        let nb = b.case_count(sb);
        let Some(&sa) = suite_of_a.get(sname.as_str()) else {
            out.new.extend((0..nb).map(|j| presence(b, sname, sb, j)));
            continue;
        };
        suite_durations(&mut out, sname, view::suite_duration_ms(a, sa), b, sb, t);
        let na = a.case_count(sa);
        let same = na == nb && (0..na).all(|j| a.case_name(sa, j) == b.case_name(sb, j));
        if same {
            for j in 0..nb {
                pair(&mut out, sname, a, sa, j, b, sb, j, t);
            }
            removed[sa] = Some(Vec::new());
            continue;
        }
        let index: HashMap<(&str, usize), usize> = occurrences(a, sa)
            .map(|(j, name, k)| ((name, k), j))
            .collect();
        let mut seen = vec![false; na];
        for (j, name, k) in occurrences(b, sb) {
            match index.get(&(name, k)) {
                None => out.new.push(presence(b, sname, sb, j)),
                Some(&ja) => {
                    seen[ja] = true;
                    pair(&mut out, sname, a, sa, ja, b, sb, j, t);
                }
            }
        }
        removed[sa] = Some(
            (0..na)
                .filter(|&j| !seen[j])
                .map(|j| presence(a, sname, sa, j))
                .collect(),
        );
    }
    for (sa, r) in removed.into_iter().enumerate() {
        match r {
            Some(r) => out.removed.extend(r),
            None => out
                .removed
                .extend((0..a.case_count(sa)).map(|j| presence(a, &names_a[sa], sa, j))),
        }
    }
    out
}

/// [`compare`] when a report has two suites of the same name: one index over
/// every case of `a`, the later suite's entries winning, as it always was.
fn compare_any<A: View, B: View>(
    a: &A,
    b: &B,
    t: Thresholds,
    names_a: &[String],
    names_b: &[String],
) -> Comparison {
    let mut out = Comparison {
        before: a.head().id.clone(),
        after: b.head().id.clone(),
        ..Comparison::default()
    };
    let mut index: HashMap<(&str, &str, usize), (usize, usize)> = HashMap::new();
    let mut suite_ms: HashMap<&str, u64> = HashMap::new();
    for (sa, name) in names_a.iter().enumerate() {
        suite_ms.insert(name, view::suite_duration_ms(a, sa));
        for (j, cname, k) in occurrences(a, sa) {
            index.insert((name, cname, k), (sa, j));
        }
    }
    let mut seen: HashSet<(String, String, usize)> = HashSet::new();
    for (sb, sname) in names_b.iter().enumerate() {
        if let Some(&before) = suite_ms.get(sname.as_str()) {
            suite_durations(&mut out, sname, before, b, sb, t);
        }
        for (j, cname, k) in occurrences(b, sb) {
            match index.get(&(sname.as_str(), cname, k)) {
                None => out.new.push(presence(b, sname, sb, j)),
                Some(&(sa, ja)) => {
                    seen.insert((sname.clone(), cname.to_string(), k));
                    pair(&mut out, sname, a, sa, ja, b, sb, j, t);
                }
            }
        }
    }
    for (sa, name) in names_a.iter().enumerate() {
        for (j, cname, k) in occurrences(a, sa) {
            if !seen.contains(&(name.clone(), cname.to_string(), k)) {
                out.removed.push(presence(a, name, sa, j));
            }
        }
    }
    out
}

/// The cases of suite `s` as (index, name, occurrence): TAP descriptions may
/// repeat within a script, and the k-th occurrence of a name is matched with
/// the k-th occurrence on the other side.
fn occurrences<V: View>(v: &V, s: usize) -> impl Iterator<Item = (usize, &str, usize)> {
    let mut occ: HashMap<&str, usize> = HashMap::new();
    (0..v.case_count(s)).map(move |j| {
        let name = v.case_name(s, j);
        let k = occ.entry(name).or_insert(0);
        *k += 1;
        (j, name, *k - 1)
    })
}

/// The comparison as plain text.
pub fn to_text(c: &Comparison) -> String {
    render(c, write_text)
}

/// The comparison as JSON.
pub fn to_json(c: &Comparison) -> String {
    render(c, write_json)
}

/// The comparison as one self-contained HTML page.
pub fn to_html(c: &Comparison) -> String {
    render(c, write_html)
}

fn render(c: &Comparison, write: fn(&Comparison, &mut dyn Write) -> io::Result<()>) -> String {
    let mut out = Vec::new();
    match write(c, &mut out) {
        Ok(()) => String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        // A Vec does not fail; serde_json only on a non-string map key, and
        // there is none. A JSON error object beats a panic in a server.
        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
    }
}

fn change_row(w: &mut dyn Write, ch: &Change) -> io::Result<()> {
    write!(
        w,
        "  {} :: {}  {} -> {}",
        ch.suite, ch.case, ch.before, ch.after
    )?;
    if let Some(m) = &ch.message {
        write!(w, "  ({})", m.lines().next().unwrap_or(""))?;
    }
    writeln!(w)
}

fn presence_row(w: &mut dyn Write, p: &Presence) -> io::Result<()> {
    writeln!(w, "  {} :: {}  {}", p.suite, p.case, p.outcome)
}

fn duration_row(w: &mut dyn Write, d: &DurationChange) -> io::Result<()> {
    write!(w, "  {}", d.suite)?;
    if let Some(c) = &d.case {
        write!(w, " :: {c}")?;
    }
    writeln!(
        w,
        "  {} ms -> {} ms ({:+.0}%)",
        d.before_ms, d.after_ms, d.change_pct
    )
}

/// One section of the text form: its title and count, then a row per item;
/// nothing when there are none.
fn section<T>(
    w: &mut dyn Write,
    title: &str,
    items: &[T],
    row: fn(&mut dyn Write, &T) -> io::Result<()>,
) -> io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    write!(w, "\n{title} ({}):\n", items.len())?;
    items.iter().try_for_each(|i| row(w, i))
}

/// Writes [`to_text`] as it goes: memory does not grow with the differences.
pub fn write_text(c: &Comparison, w: &mut dyn Write) -> io::Result<()> {
    writeln!(w, "Comparing {} -> {}", c.before, c.after)?;
    section(w, "Regressions", &c.regressions, change_row)?;
    section(w, "Fixes", &c.fixes, change_row)?;
    section(w, "Other changes", &c.changes, change_row)?;
    section(w, "New tests", &c.new, presence_row)?;
    section(w, "Removed tests", &c.removed, presence_row)?;
    section(w, "Duration changes", &c.durations, duration_row)?;
    write!(
        w,
        "\nRegressions={}, Fixes={}, New={}, Removed={}, Duration changes={}\nResult: {}\n",
        c.regressions.len(),
        c.fixes.len(),
        c.new.len(),
        c.removed.len(),
        c.durations.len(),
        if c.has_regressions() {
            "REGRESSED"
        } else {
            "OK"
        }
    )
}

/// Writes [`to_json`] (pretty-printed) as it goes.
pub fn write_json(c: &Comparison, w: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, c).map_err(io::Error::other)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn table<T>(
    w: &mut dyn Write,
    title: &str,
    head: &str,
    items: &[T],
    row: fn(&mut dyn Write, &T) -> io::Result<()>,
) -> io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    write!(w, "<h2>{title}</h2><table><tr>{head}</tr>")?;
    items.iter().try_for_each(|i| row(w, i))?;
    w.write_all(b"</table>")
}

fn change_tr(w: &mut dyn Write, ch: &Change) -> io::Result<()> {
    write!(
        w,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(&ch.suite),
        esc(&ch.case),
        ch.before,
        ch.after,
        esc(ch.message.as_deref().unwrap_or(""))
    )
}

fn presence_tr(w: &mut dyn Write, p: &Presence) -> io::Result<()> {
    write!(
        w,
        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(&p.suite),
        esc(&p.case),
        p.outcome
    )
}

fn duration_tr(w: &mut dyn Write, d: &DurationChange) -> io::Result<()> {
    write!(
        w,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:+.0}%</td></tr>",
        esc(&d.suite),
        esc(d.case.as_deref().unwrap_or("")),
        d.before_ms,
        d.after_ms,
        d.change_pct
    )
}

/// Writes [`to_html`] as it goes.
pub fn write_html(c: &Comparison, w: &mut dyn Write) -> io::Result<()> {
    w.write_all(
        b"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Report comparison</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}.fail{color:#b00}.pass{color:#070}</style></head><body>",
    )?;
    write!(
        w,
        "<h1>{} &rarr; {}</h1><p class=\"{}\">Regressions: {}, fixes: {}, new: {}, removed: {}, duration changes: {}</p>",
        esc(&c.before),
        esc(&c.after),
        if c.has_regressions() { "fail" } else { "pass" },
        c.regressions.len(),
        c.fixes.len(),
        c.new.len(),
        c.removed.len(),
        c.durations.len()
    )?;
    let change_head = "<th>suite</th><th>test</th><th>before</th><th>after</th><th>message</th>";
    table(w, "Regressions", change_head, &c.regressions, change_tr)?;
    table(w, "Fixes", change_head, &c.fixes, change_tr)?;
    table(w, "Other changes", change_head, &c.changes, change_tr)?;
    let ph = "<th>suite</th><th>test</th><th>outcome</th>";
    table(w, "New tests", ph, &c.new, presence_tr)?;
    table(w, "Removed tests", ph, &c.removed, presence_tr)?;
    table(
        w,
        "Duration changes",
        "<th>suite</th><th>test</th><th>before ms</th><th>after ms</th><th>change</th>",
        &c.durations,
        duration_tr,
    )?;
    w.write_all(b"</body></html>\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Case, Report, Suite};
    use chrono::Utc;

    fn report(id: &str, cases: &[(&str, &str, Outcome)], suite_ms: u64) -> Report {
        let mut r = Report::new(id, "kit", Utc::now());
        for (s, c, o) in cases {
            if !r.suites.iter().any(|x| x.name == *s) {
                let mut su = Suite::new(*s);
                su.duration_ms = suite_ms;
                r.suites.push(su);
            }
            if let Some(su) = r.suites.iter_mut().find(|x| x.name == *s) {
                su.cases.push(Case::new(*c, *o));
            }
        }
        r
    }

    type Row<'a> = (&'a str, &'a str, Outcome);

    /// Reports "a" and "b": row k holds the k-th case of each (not
    /// necessarily one test seen twice), then each report's suite duration.
    fn reports(rows: &[(Row, Row)], suite_ms: (u64, u64)) -> (Report, Report) {
        let (before, after): (Vec<Row>, Vec<Row>) = rows.iter().copied().unzip();
        (
            report("a", &before, suite_ms.0),
            report("b", &after, suite_ms.1),
        )
    }

    #[test]
    fn finds_regressions_fixes_new_removed() {
        use Outcome::*;
        let (a, b) = reports(
            &[
                (("x.t", "1", Pass), ("x.t", "1", Fail)),
                (("x.t", "2", Fail), ("x.t", "2", Pass)),
                (("x.t", "3", Pass), ("x.t", "4", Pass)),
                (("y.t", "1", Pass), ("y.t", "1", Skip)),
            ],
            (1000, 2000),
        );
        let c = compare(&a, &b, Thresholds::default());
        assert_eq!(c.regressions.len(), 1);
        assert_eq!(c.regressions[0].case, "1");
        assert_eq!(c.fixes.len(), 1);
        assert_eq!(c.fixes[0].case, "2");
        assert_eq!(c.new.len(), 1);
        assert_eq!(c.removed.len(), 1);
        assert_eq!(c.removed[0].case, "3");
        assert_eq!(c.changes.len(), 1);
        assert_eq!(c.durations.len(), 2);
        assert!((c.durations[0].change_pct - 100.0).abs() < 1e-9);
        assert!(c.has_regressions());
        let text = to_text(&c);
        assert!(text.contains("Regressions (1)"), "{text}");
        assert!(to_json(&c).contains("\"regressions\""));
        assert!(to_html(&c).contains("<h2>Fixes</h2>"));
    }

    #[test]
    fn thresholds() {
        let t = Thresholds::default();
        assert_eq!(duration_change(1000, 1100, t), None);
        assert_eq!(duration_change(10, 50, t), None);
        assert!(duration_change(1000, 500, t).is_some());
        assert_eq!(parse_percent("20%"), Some(20.0));
        assert_eq!(parse_percent("x"), None);
    }

    #[test]
    fn identical_reports() {
        let a = report("a", &[("x.t", "1", Outcome::Pass)], 10);
        let c = compare(&a, &a, Thresholds::default());
        assert!(!c.has_regressions());
        assert!(c.new.is_empty() && c.removed.is_empty() && c.durations.is_empty());
    }

    /// The per-suite matching (same order, or an index of one suite) finds
    /// exactly what one index over the whole report does.
    #[test]
    fn suite_by_suite_matches_the_whole_report_index() {
        use Outcome::*;
        let (mut a, mut b) = reports(
            &[
                (("s1", "x", Pass), ("s1", "y", Fail)),
                (("s1", "x", Fail), ("s1", "x", Pass)),
                (("s1", "y", Pass), ("s1", "x", Pass)),
                (("s1", "z", Error), ("s1", "new", Skip)),
                (("s2", "p", Pass), ("s2", "p", Fail)),
                (("s3", "gone", Pass), ("s4", "fresh", Pass)),
            ],
            (100, 400),
        );
        a.suites[1].cases[0].duration_ms = 1000;
        b.suites[1].cases[0].duration_ms = 3000;
        let names = |r: &Report| {
            r.suites
                .iter()
                .map(|s| s.display_name())
                .collect::<Vec<_>>()
        };
        let t = Thresholds::default();
        for (x, y) in [(&a, &b), (&b, &a), (&a, &a)] {
            let fast = compare(x, y, t);
            let slow = compare_any(x, y, t, &names(x), &names(y));
            assert_eq!(fast, slow);
        }
        let c = compare(&a, &b, t);
        assert_eq!(c.regressions.len(), 2, "{c:?}");
        assert_eq!(c.removed.len(), 2, "{c:?}");
        assert_eq!(c.new.len(), 2, "{c:?}");
    }
}
