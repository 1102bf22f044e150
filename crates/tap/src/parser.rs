//! A streaming TAP parser (versions 12, 13 and 14) that judges a script the way
//! Perl's `prove` does and produces a [`Suite`] of the common report model.
//!
//! Feed it raw bytes with [`Parser::push`] (or whole lines with [`Parser::line`]);
//! memory stays bounded whatever the producer prints: over-long lines are cut,
//! YAML blocks and diagnostics are capped, and nothing but the top-level test
//! points is kept.

use std::collections::BTreeMap;

use testbed_report::{Case, CaseList, Outcome, Suite};

/// Lines longer than this are cut; TAP lines are short and garbage must not grow
/// the buffer without bound.
pub const MAX_LINE: usize = 64 * 1024;
/// A YAML diagnostic block is kept up to this size.
const MAX_YAML: usize = 64 * 1024;
/// At most this many diagnostics are kept per script; a binary blob would
/// otherwise produce one per "line".
const MAX_DIAGNOSTICS: usize = 100;
/// Unrecognised lines shown as diagnostics; the rest are only counted.
const MAX_UNKNOWN_SHOWN: u64 = 5;
/// Name of the case that carries script-level results (bad plan, exit status,
/// bail out, skip-all), so that JUnit shows them as a test case.
pub const SCRIPT_CASE: &str = "(script)";

/// How the producing process ended, as far as the judgement is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptExit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Killed by the harness at its time limit.
    TimedOut(std::time::Duration),
    /// Could not be started, or its output could not be read.
    Error(String),
}

impl ScriptExit {
    fn problem(&self) -> Option<(Outcome, String)> {
        match self {
            ScriptExit::Code(0) => None,
            ScriptExit::Code(c) => Some((Outcome::Fail, format!("Non-zero exit status: {c}"))),
            ScriptExit::Signal(s) => Some((Outcome::Fail, format!("died: killed by signal {s}"))),
            ScriptExit::TimedOut(d) if d.subsec_millis() == 0 => {
                Some((Outcome::Error, format!("timed out after {}s", d.as_secs())))
            }
            ScriptExit::TimedOut(d) => Some((
                Outcome::Error,
                format!("timed out after {}ms", d.as_millis()),
            )),
            ScriptExit::Error(e) => Some((Outcome::Error, e.clone())),
        }
    }
}

#[derive(Debug, Clone)]
struct Plan {
    count: u64,
    skip_all: Option<String>,
}

/// The state of one nesting level: the top-level stream, or a subtest.
#[derive(Debug, Default)]
struct Level {
    plan: Option<Plan>,
    /// Test points seen when the plan came; a plan after tests must be the last
    /// thing at its level.
    plan_after_tests: bool,
    count: u64,
    failed: Vec<String>,
    problems: Vec<String>,
}

impl Level {
    /// Closes a subtest level, returning its failures and plan problems.
    fn close(self) -> Vec<String> {
        let mut out = self.problems;
        check_plan(&self.plan, self.count, &mut out);
        out.extend(self.failed.into_iter().map(|f| format!("failed: {f}")));
        out
    }
}

fn check_plan(plan: &Option<Plan>, count: u64, out: &mut Vec<String>) {
    match plan {
        None => out.push("No plan found in TAP output".to_string()),
        Some(p) if p.skip_all.is_some() && count > 0 => {
            out.push(format!("Plan 1..0 skips everything but {count} tests ran"))
        }
        Some(p) if p.count != count => out.push(format!(
            "Bad plan. You planned {} tests but ran {count}.",
            p.count
        )),
        _ => {}
    }
}

struct Yaml {
    indent: usize,
    text: String,
    /// The top-level case it belongs to, when it belongs to one.
    case: Option<usize>,
    start_line: u64,
}

/// A streaming TAP parser; see the module docs.
pub struct Parser {
    levels: Vec<Level>,
    /// Top-level test points; a passing one with nothing to add is kept as
    /// its name alone, so a million of them cost megabytes, not a gigabyte.
    cases: CaseList,
    yaml: Option<Yaml>,
    /// The depth and case index of the last test point, the only place a YAML
    /// block may follow.
    last_point: Option<(usize, Option<usize>)>,
    line_no: u64,
    saw_content: bool,
    version: Option<u32>,
    strict: bool,
    bailed: Option<String>,
    diagnostics: Vec<String>,
    dropped_diagnostics: u64,
    /// Parse errors that fail the script, as `prove`'s "Parse errors".
    problems: Vec<String>,
    partial: Vec<u8>,
    partial_cut: bool,
    unknown_lines: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

/// What a parsed stream amounted to, before the exit status is known.
#[derive(Debug)]
pub struct Parsed {
    /// One case per top-level test point.
    pub cases: Vec<Case>,
    pub diagnostics: Vec<String>,
    /// Script-level problems that fail it (plan, sequence, bail out, strict).
    pub problems: Vec<String>,
    /// The reason of a `1..0 # SKIP reason` plan.
    pub skip_all: Option<String>,
    pub planned: Option<u64>,
    pub bailed_out: Option<String>,
    pub version: u32,
}

impl Parser {
    pub fn new() -> Self {
        Parser {
            levels: vec![Level::default()],
            cases: CaseList::new(),
            yaml: None,
            last_point: None,
            line_no: 0,
            saw_content: false,
            version: None,
            strict: false,
            bailed: None,
            diagnostics: Vec::new(),
            dropped_diagnostics: 0,
            problems: Vec::new(),
            partial: Vec::new(),
            partial_cut: false,
            unknown_lines: 0,
        }
    }

    /// Parses a whole text at once (tests, files).
    pub fn parse_str(text: &str) -> Parsed {
        let mut p = Parser::new();
        p.push(text.as_bytes());
        p.finish()
    }

    /// Feeds a chunk of raw output; complete lines are parsed at once and the
    /// rest is kept (cut at [`MAX_LINE`]) until its newline arrives.
    pub fn push(&mut self, mut chunk: &[u8]) {
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            self.append_partial(&chunk[..pos]);
            let line = std::mem::take(&mut self.partial);
            if std::mem::take(&mut self.partial_cut) && self.unknown_lines < MAX_UNKNOWN_SHOWN {
                let n = self.line_no + 1;
                self.diag(format!("line {n}: cut at {MAX_LINE} bytes"));
            }
            self.line(&line);
            self.partial = line;
            self.partial.clear();
            chunk = &chunk[pos + 1..];
        }
        self.append_partial(chunk);
    }

    fn append_partial(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.partial_cut = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn diag(&mut self, msg: String) {
        if self.diagnostics.len() < MAX_DIAGNOSTICS {
            self.diagnostics.push(msg);
        } else {
            self.dropped_diagnostics += 1;
        }
    }

    /// A script-level failure; the `(script)` case carries it.
    fn problem(&mut self, msg: String) {
        if self.problems.len() < MAX_DIAGNOSTICS {
            self.problems.push(msg);
        }
    }

    /// Parses one line (without its newline).
    pub fn line(&mut self, raw: &[u8]) {
        self.line_no += 1;
        let text = String::from_utf8_lossy(raw);
        let line = text.strip_suffix('\r').unwrap_or(&text);

        if let Some(y) = &mut self.yaml {
            let indent = y.indent;
            let body = line.get(indent..).unwrap_or("");
            // By bytes: slicing the str at `indent` panics inside a multi-byte
            // character (found by fuzzing: `fuzz/regressions/tap/`).
            let prefix_ok = line
                .as_bytes()
                .get(..indent)
                .is_some_and(|p| p.iter().all(|&b| b == b' '));
            if prefix_ok && body.trim_end() == "..." {
                self.end_yaml();
            } else if prefix_ok || line.trim().is_empty() {
                if y.text.len() + body.len() < MAX_YAML {
                    y.text.push_str(body);
                    y.text.push('\n');
                }
                return;
            } else {
                let start = y.start_line;
                self.diag(format!("line {start}: YAML block not terminated by '...'"));
                self.end_yaml();
                self.classify(line);
            }
            return;
        }
        self.classify(line);
    }

    fn classify(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let spaces = line.len() - line.trim_start_matches(' ').len();
        let body = &line[spaces..];
        let first = !self.saw_content;
        self.saw_content = true;

        if let Some((depth, case)) = self.last_point.take() {
            if spaces == depth * 4 + 2 && body.trim_end() == "---" {
                self.yaml = Some(Yaml {
                    indent: spaces,
                    text: String::new(),
                    case,
                    start_line: self.line_no,
                });
                return;
            }
        }

        if body.starts_with('#') {
            return;
        }
        if let Some(rest) = strip_prefix_ci(body, "bail out!") {
            let reason = rest.trim().to_string();
            if self.bailed.is_none() {
                self.problem(format!("Bail out! {reason}").trim_end().to_string());
                self.bailed = Some(reason);
            }
            return;
        }
        if spaces == 0 {
            if let Some(rest) = strip_prefix_ci(body, "tap version ") {
                match rest.trim().parse::<u32>() {
                    Ok(v) if first && (13..=14).contains(&v) => self.version = Some(v),
                    Ok(v) if first => self.problem(format!(
                        "Explicit TAP version must be at least 13. Got version {v}"
                    )),
                    _ if !first => self.problem(
                        "If TAP version is present it must be the first line of output".to_string(),
                    ),
                    _ => self.diag(format!("line {}: bad TAP version line", self.line_no)),
                }
                return;
            }
            if let Some(rest) = body.strip_prefix("pragma ") {
                for p in rest.split(',').map(str::trim) {
                    match p {
                        "+strict" => self.strict = true,
                        "-strict" => self.strict = false,
                        _ => {}
                    }
                }
                return;
            }
        }
        // Subtests indent by exactly four spaces per level.
        let depth = spaces / 4;
        if depth * 4 != spaces {
            self.unknown(line);
            return;
        }
        if let Some(plan) = parse_plan(body) {
            self.ensure_depth(depth, false);
            self.on_plan(depth, plan);
            return;
        }
        if let Some(point) = parse_point(body) {
            self.ensure_depth(depth, true);
            self.on_point(depth, point);
            return;
        }
        self.unknown(line);
    }

    fn unknown(&mut self, line: &str) {
        self.unknown_lines += 1;
        let excerpt: String = line
            .chars()
            .take(60)
            .map(|c| {
                if c.is_control() || c == '\u{fffd}' {
                    '?'
                } else {
                    c
                }
            })
            .collect();
        let msg = format!("unrecognised line: {excerpt:?}");
        // A few examples say what went wrong; thousands of garbage lines would
        // only bury the real diagnostics.
        if self.unknown_lines <= MAX_UNKNOWN_SHOWN {
            self.diag(format!("line {}: {msg}", self.line_no));
        }
        if self.strict {
            self.problem(format!("line {}: {msg} (pragma +strict)", self.line_no));
        }
    }

    /// Opens subtest levels down to `depth`, or closes deeper ones that were
    /// left without a closing test point.
    fn ensure_depth(&mut self, depth: usize, closing_point: bool) {
        while self.levels.len() < depth + 1 {
            self.levels.push(Level::default());
        }
        // A test point at `depth` closes the subtest at depth+1 itself.
        let keep = if closing_point { depth + 2 } else { depth + 1 };
        while self.levels.len() > keep {
            if let Some(level) = self.levels.pop() {
                let problems = level.close();
                if !problems.is_empty() {
                    self.diag(format!(
                        "line {}: subtest ended without a test point: {}",
                        self.line_no,
                        problems.join("; ")
                    ));
                }
            }
        }
    }

    fn on_plan(&mut self, depth: usize, plan: Plan) {
        let msg = {
            let level = &mut self.levels[depth];
            if level.plan.is_some() {
                Some("More than one plan found in TAP output".to_string())
            } else {
                level.plan_after_tests = level.count > 0;
                level.plan = Some(plan);
                None
            }
        };
        if let Some(m) = msg {
            self.level_problem(depth, m);
        }
    }

    fn level_problem(&mut self, depth: usize, msg: String) {
        if depth == 0 {
            self.diag(format!("line {}: {msg}", self.line_no));
            self.problem(msg);
        } else {
            let line = self.line_no;
            self.levels[depth].problems.push(msg.clone());
            self.diag(format!("line {line}: subtest: {msg}"));
        }
    }

    fn on_point(&mut self, depth: usize, p: Point) {
        let subtest = if self.levels.len() > depth + 1 {
            self.levels.pop().map(Level::close)
        } else {
            None
        };
        let (expected, late) = {
            let level = &mut self.levels[depth];
            level.count += 1;
            let late = level.plan.is_some() && level.plan_after_tests;
            (level.count, late)
        };
        if late {
            self.level_problem(
                depth,
                "Plan must be at the beginning or end of the TAP output".to_string(),
            );
        }
        if let Some(n) = p.number {
            if n != expected {
                let what = if n > expected {
                    "gap in numbering"
                } else {
                    "duplicate or out-of-order number"
                };
                self.level_problem(
                    depth,
                    format!(
                        "Tests out of sequence. Found ({n}) but expected ({expected}) ({what})"
                    ),
                );
            }
        }
        let number = p.number.unwrap_or(expected);
        // Named by description, not number, so that names survive tests being
        // added or removed when reports are compared.
        let label = if p.description.is_empty() {
            format!("test {number}")
        } else {
            p.description.clone()
        };
        let outcome = match (&p.directive, p.ok) {
            (Some(Directive::Skip(_)), _) => Outcome::Skip,
            (Some(Directive::Todo(_)), false) => Outcome::Xfail,
            (Some(Directive::Todo(_)), true) => Outcome::Xpass,
            (None, true) => Outcome::Pass,
            (None, false) => Outcome::Fail,
        };
        if outcome == Outcome::Fail {
            self.levels[depth]
                .failed
                .push(format!("{number} - {label}"));
        }
        if depth > 0 {
            self.last_point = Some((depth, None));
            return;
        }
        let mut case = Case::new(label, outcome);
        // The number only when it is not the point's position (numbering out of
        // sequence): a known-broken `script#N` means the position otherwise. The
        // description is the case's name.
        if number != expected {
            case.properties
                .insert("tap.number".to_string(), number.to_string());
        }
        match p.directive {
            Some(Directive::Skip(r)) | Some(Directive::Todo(r)) if !r.is_empty() => {
                case.message = Some(r)
            }
            _ => {}
        }
        if let Some(problems) = subtest.filter(|s| !s.is_empty()) {
            let text = format!("subtest: {}", problems.join("; "));
            if case.message.is_none() && outcome == Outcome::Fail {
                case.message = Some(text.clone());
            }
            case.output = Some(text);
        }
        self.cases.push(case);
        self.last_point = Some((0, Some(self.cases.len() - 1)));
    }

    fn end_yaml(&mut self) {
        let Some(y) = self.yaml.take() else { return };
        match testbed_core::yaml::from_str::<serde_norway::Value>(&y.text) {
            Ok(value) => {
                if let Some(i) = y.case.filter(|&i| i < self.cases.len()) {
                    let mut case = self.cases.get(i).into_owned();
                    if case.message.is_none() && case.outcome.is_failure() {
                        case.message = yaml_message(&value);
                    }
                    let out = case.output.get_or_insert_with(String::new);
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(&y.text);
                    self.cases.set(i, case);
                }
            }
            Err(e) => {
                let start = y.start_line;
                self.diag(format!("line {start}: invalid YAML diagnostic block: {e}"));
            }
        }
    }

    /// Ends the stream; judges plan and sequence.
    pub fn finish(self) -> Parsed {
        let (mut parsed, list) = self.finish_list();
        parsed.cases = list.to_vec();
        parsed
    }

    /// [`Parser::finish`], the cases in their compact list rather than in
    /// [`Parsed::cases`] (left empty).
    pub fn finish_list(mut self) -> (Parsed, CaseList) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
        if let Some(y) = &self.yaml {
            let start = y.start_line;
            self.diag(format!("line {start}: YAML block not terminated by '...'"));
            self.end_yaml();
        }
        while self.levels.len() > 1 {
            if let Some(level) = self.levels.pop() {
                let problems = level.close();
                self.diag(format!(
                    "subtest at end of output without a closing test point: {}",
                    problems.join("; ")
                ));
            }
        }
        let top = std::mem::take(&mut self.levels[0]);
        let mut skip_all = None;
        if self.bailed.is_none() {
            let mut plan_problems = Vec::new();
            check_plan(&top.plan, top.count, &mut plan_problems);
            self.problems.extend(plan_problems);
            if let Some(Plan {
                skip_all: Some(r), ..
            }) = &top.plan
            {
                if top.count == 0 {
                    skip_all = Some(r.clone());
                }
            }
        }
        if self.unknown_lines > MAX_UNKNOWN_SHOWN {
            let more = self.unknown_lines - MAX_UNKNOWN_SHOWN;
            self.diag(format!("... and {more} more unrecognised lines"));
        }
        if self.dropped_diagnostics > 0 {
            self.diagnostics
                .push(format!("... {} more diagnostics", self.dropped_diagnostics));
        }
        let parsed = Parsed {
            cases: Vec::new(),
            diagnostics: self.diagnostics,
            problems: self.problems,
            skip_all,
            planned: top.plan.map(|p| p.count),
            bailed_out: self.bailed,
            version: self.version.unwrap_or(12),
        };
        (parsed, self.cases)
    }
}

impl Parsed {
    /// Whether the script passes as `prove` would judge it, ignoring exit status.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && !self.cases.iter().any(|c| c.outcome.is_failure())
    }

    /// The suite of the report model, judged with the script's exit status: a
    /// `(script)` case carries a skip-all, or every script-level failure.
    pub fn into_suite(mut self, name: impl Into<String>, exit: &ScriptExit) -> Suite {
        let cases = std::mem::take(&mut self.cases);
        let (mut suite, list) = self.into_suite_list(cases.into_iter().collect(), name, exit);
        suite.cases = list.to_vec();
        suite
    }

    /// [`Parsed::into_suite`] for cases in a compact list (from
    /// [`Parser::finish_list`]): the suite has no cases, the list has them all.
    pub fn into_suite_list(
        self,
        cases: CaseList,
        name: impl Into<String>,
        exit: &ScriptExit,
    ) -> (Suite, CaseList) {
        let mut cases = cases;
        let mut suite = Suite::new(name);
        suite.diagnostics = self.diagnostics;
        let mut problems = self.problems;
        let mut outcome = Outcome::Fail;
        if let Some((o, msg)) = exit.problem() {
            outcome = o;
            problems.push(msg);
        }
        if !problems.is_empty() {
            let mut case = Case::new(SCRIPT_CASE, outcome);
            case.message = Some(problems.join("; "));
            cases.push(case);
        } else if let Some(reason) = self.skip_all {
            let mut case = Case::new(SCRIPT_CASE, Outcome::Skip);
            case.message = Some(if reason.is_empty() {
                "skipped".to_string()
            } else {
                reason
            });
            cases.push(case);
        }
        let mut props = BTreeMap::new();
        props.insert("tap.version".to_string(), self.version.to_string());
        if let Some(p) = self.planned {
            props.insert("tap.planned".to_string(), p.to_string());
        }
        suite.properties = props;
        (suite, cases)
    }
}

fn yaml_message(v: &serde_norway::Value) -> Option<String> {
    let map = v.as_mapping()?;
    for key in ["message", "error", "failureType"] {
        if let Some(s) = map.get(key).and_then(|m| m.as_str()) {
            return Some(s.to_string());
        }
    }
    None
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn parse_plan(body: &str) -> Option<Plan> {
    let rest = body.strip_prefix("1..")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let count: u64 = rest[..digits].parse().ok()?;
    let tail = rest[digits..].trim();
    let skip_all = if tail.is_empty() {
        None
    } else {
        let comment = tail.strip_prefix('#')?.trim();
        match strip_prefix_ci(comment, "skip") {
            Some(r) if count == 0 => {
                let r = r.trim_start_matches(|c: char| c.is_ascii_alphabetic());
                Some(r.trim().to_string())
            }
            _ => None,
        }
    };
    if count == 0 {
        return Some(Plan {
            count,
            skip_all: Some(skip_all.unwrap_or_default()),
        });
    }
    Some(Plan { count, skip_all })
}

#[derive(Debug, PartialEq)]
enum Directive {
    Skip(String),
    Todo(String),
}

#[derive(Debug)]
struct Point {
    ok: bool,
    number: Option<u64>,
    description: String,
    directive: Option<Directive>,
}

fn parse_point(body: &str) -> Option<Point> {
    let (ok, rest) = if let Some(r) = body.strip_prefix("not ok") {
        (false, r)
    } else {
        (true, body.strip_prefix("ok")?)
    };
    if !(rest.is_empty() || rest.starts_with([' ', '\t', '#'])) {
        return None;
    }
    let rest = rest.trim_start();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (number, rest) = if digits > 0 {
        (rest[..digits].parse().ok(), &rest[digits..])
    } else {
        (None, rest)
    };
    // Split at the first '#' not escaped with a backslash.
    let mut split = None;
    let bytes = rest.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1] != b'\\') {
            split = Some(i);
            break;
        }
    }
    let (desc, comment) = match split {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let desc = desc.trim();
    let desc = desc.strip_prefix('-').unwrap_or(desc).trim();
    let directive = comment.and_then(|c| {
        let c = c.trim_start();
        let word_len = c.bytes().take_while(u8::is_ascii_alphabetic).count();
        let word = c[..word_len].to_ascii_lowercase();
        let reason = c[word_len..].trim().to_string();
        if word.starts_with("skip") {
            Some(Directive::Skip(reason))
        } else if word == "todo" {
            Some(Directive::Todo(reason))
        } else {
            None
        }
    });
    Some(Point {
        ok,
        number,
        description: desc.replace("\\#", "#"),
        directive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(p: &Parsed) -> Vec<(String, Outcome)> {
        p.cases
            .iter()
            .map(|c| (c.name.clone(), c.outcome))
            .collect()
    }

    #[test]
    fn yaml_block_line_with_a_multibyte_character_in_the_indent() {
        // Found by fuzzing: the block's indent fell inside `é` and slicing panicked.
        let p = Parser::parse_str("1..1\nnot ok 1 - x\n  ---\n é: 1\n  ...\n");
        assert_eq!(p.cases.len(), 1);
        assert_eq!(p.cases[0].outcome, Outcome::Fail);
    }

    #[test]
    fn basic_points_and_directives() {
        let p = Parser::parse_str(
            "TAP version 13\n1..5\nok 1 - first\nnot ok 2 - second # TODO not yet\nok 3 # skip no disk\nok 4 - fine # todo done\nok - five \\# hash\n",
        );
        assert_eq!(p.version, 13);
        assert_eq!(
            outcomes(&p),
            vec![
                ("first".into(), Outcome::Pass),
                ("second".into(), Outcome::Xfail),
                ("test 3".into(), Outcome::Skip),
                ("fine".into(), Outcome::Xpass),
                ("five # hash".into(), Outcome::Pass),
            ]
        );
        assert_eq!(p.cases[2].message.as_deref(), Some("no disk"));
        assert!(p.is_ok(), "{:?}", p.problems);
    }

    #[test]
    fn plan_at_end_and_tap12() {
        let p = Parser::parse_str("ok 1\nok 2\n1..2\n");
        assert!(p.is_ok());
        assert_eq!(p.version, 12);
    }

    #[test]
    fn bad_plan_and_missing_plan() {
        let p = Parser::parse_str("1..3\nok 1\nok 2\n");
        assert!(!p.is_ok());
        assert!(p.problems[0].contains("planned 3 tests but ran 2"));
        let p = Parser::parse_str("ok 1\n");
        assert!(p.problems[0].contains("No plan"));
    }

    #[test]
    fn plan_in_the_middle_and_twice() {
        let p = Parser::parse_str("ok 1\n1..2\nok 2\n");
        assert!(p.problems.iter().any(|m| m.contains("beginning or end")));
        let p = Parser::parse_str("1..1\nok 1\n1..1\n");
        assert!(p.problems.iter().any(|m| m.contains("More than one plan")));
    }

    #[test]
    fn skip_all() {
        let p = Parser::parse_str("1..0 # SKIP no iscsi-server configured\n");
        assert!(p.is_ok());
        assert_eq!(p.skip_all.as_deref(), Some("no iscsi-server configured"));
        let s = p.into_suite("x.t", &ScriptExit::Code(0));
        assert_eq!(s.skip_reason(), Some("no iscsi-server configured"));
    }

    #[test]
    fn numbering_problems() {
        let p = Parser::parse_str("1..3\nok 1\nok 3\nok 2\n");
        assert!(p.problems.iter().any(|m| m.contains("gap")));
        assert!(p.problems.iter().any(|m| m.contains("duplicate")));
        assert_eq!(p.cases.len(), 3);
    }

    #[test]
    fn bail_out() {
        let p = Parser::parse_str("1..3\nok 1\nBail out! database gone\n");
        assert_eq!(p.bailed_out.as_deref(), Some("database gone"));
        let s = p.into_suite("b.t", &ScriptExit::Code(255));
        let script = s.cases.iter().find(|c| c.name == SCRIPT_CASE).unwrap();
        assert_eq!(script.outcome, Outcome::Fail);
        assert!(script
            .message
            .as_deref()
            .unwrap()
            .contains("Bail out! database gone"));
        assert!(script
            .message
            .as_deref()
            .unwrap()
            .contains("exit status: 255"));
    }

    #[test]
    fn yaml_attached_to_previous_point() {
        let p = Parser::parse_str(
            "TAP version 13\n1..2\nnot ok 1 - boom\n  ---\n  message: 'expected 1 got 2'\n  severity: fail\n  ...\nok 2\n",
        );
        assert_eq!(p.cases[0].message.as_deref(), Some("expected 1 got 2"));
        assert!(p.cases[0].output.as_deref().unwrap().contains("severity"));
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let p = Parser::parse_str("1..1\nok 1\n  ---\n  a: [unclosed\n  ...\n");
        assert!(p.diagnostics.iter().any(|d| d.contains("invalid YAML")));
        let p = Parser::parse_str("1..1\nok 1\n  ---\n  a: 1\n");
        assert!(p.diagnostics.iter().any(|d| d.contains("not terminated")));
    }

    #[test]
    fn subtests() {
        let text = "1..2\n# Subtest: inner\n    1..2\n    ok 1 - a\n    not ok 2 - b\nnot ok 1 - inner\n    # Subtest: deep\n    ok 1 - x\n    1..1\nok 2 - second\n";
        let p = Parser::parse_str(text);
        assert_eq!(
            outcomes(&p),
            vec![
                ("inner".into(), Outcome::Fail),
                ("second".into(), Outcome::Pass)
            ]
        );
        assert!(p.cases[0].message.as_deref().unwrap().contains("2 - b"));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        // A subtest with a bad plan is reported even if the parent says ok.
        let p = Parser::parse_str("1..1\n    1..3\n    ok 1\nok 1 - s\n");
        assert!(p.cases[0].output.as_deref().unwrap().contains("planned 3"));
    }

    #[test]
    fn unknown_lines_and_strict() {
        let p = Parser::parse_str("1..1\nhello\nok 1\n");
        assert!(p.is_ok());
        assert_eq!(p.diagnostics.len(), 1);
        let p = Parser::parse_str("pragma +strict\n1..1\nhello\nok 1\n");
        assert!(!p.is_ok());
    }

    #[test]
    fn version_rules() {
        let p = Parser::parse_str("1..1\nTAP version 13\nok 1\n");
        assert!(!p.is_ok());
        let p = Parser::parse_str("TAP version 12\n1..1\nok 1\n");
        assert!(!p.is_ok());
        let p = Parser::parse_str("TAP version 14\n1..1\nok 1\n");
        assert!(p.is_ok());
        assert_eq!(p.version, 14);
    }

    #[test]
    fn garbage_is_bounded() {
        let mut parser = Parser::new();
        let mut seed = 12345u64;
        let mut chunk = vec![0u8; 8192];
        for _ in 0..200 {
            for b in chunk.iter_mut() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                *b = (seed >> 33) as u8;
            }
            parser.push(&chunk);
        }
        // One enormous line without a newline.
        parser.push(&vec![b'x'; 3 * MAX_LINE]);
        let p = parser.finish();
        assert!(
            p.diagnostics.len() <= MAX_UNKNOWN_SHOWN as usize + 3,
            "{:?}",
            p.diagnostics
        );
        assert!(p
            .diagnostics
            .iter()
            .any(|d| d.contains("more unrecognised lines")));
        assert!(!p.is_ok());
    }

    #[test]
    fn exit_status_fails_a_passing_script() {
        let p = Parser::parse_str("1..1\nok 1\n");
        let s = p.into_suite("x", &ScriptExit::Signal(9));
        assert!(s.is_failure());
        let p = Parser::parse_str("1..1\nok 1\n");
        let s = p.into_suite(
            "x",
            &ScriptExit::TimedOut(std::time::Duration::from_secs(3)),
        );
        assert_eq!(s.cases[1].outcome, Outcome::Error);
        assert_eq!(s.cases[1].message.as_deref(), Some("timed out after 3s"));
    }

    #[test]
    fn not_a_test_point() {
        assert!(parse_point("okay").is_none());
        assert!(parse_point("ok").is_some());
        assert!(parse_plan("1..x").is_none());
    }
}
