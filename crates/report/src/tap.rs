//! TAP version 13, for `prove`-style consumers and anything else that reads TAP.
//!
//! A report with one suite is written flat: its cases are the test points. With
//! several suites, each becomes a subtest in the form `Test::More` writes (a
//! `# Subtest: name` comment, then the suite's plan and test points indented four
//! spaces), closed by one test point of the parent named after the suite, so
//! consumers that ignore subtests still see one result per suite. A suite with no
//! cases is a skipped subtest (`1..0 # SKIP no tests`).
//!
//! | outcome | test point |
//! | --- | --- |
//! | `pass` | `ok N - name` |
//! | `fail`, `error` | `not ok N - name`, then a YAML block with the outcome, message, duration, agent, attempts, links and output |
//! | `skip` | `ok N - name # SKIP reason` |
//! | `xfail` | `not ok N - name # TODO reason` |
//! | `xpass` | `ok N - name # TODO reason` (TAP's "unexpectedly succeeded") |
//!
//! The YAML is kept within what Perl's `TAP::Parser` (YAMLish) reads: single-line
//! strings double-quoted, multi-line strings as `|` blocks whose blank lines keep
//! their indentation (YAMLish ends a block at a line indented less), falling back
//! to a quoted string with `\n` escapes when a block cannot hold the text as is.
//! Suite diagnostics are written as `#` comments.

use std::io;

use crate::model::{Case, Outcome};
use crate::text::{clean, one_line, render_to_string, Out};
use crate::view::{self, View};
use crate::Report;

/// The report as a TAP version 13 stream.
pub fn to_tap(report: &Report) -> String {
    render_to_string(|w| write_tap(report, w))
}

/// Writes any [`View`] of a report as a TAP version 13 stream.
pub fn write_tap<V: View>(v: &V, w: &mut dyn io::Write) -> io::Result<()> {
    let mut out = Out::new(w);
    out.push_str("TAP version 13\n");
    let suites = &v.head().suites;
    match suites.len() {
        0 => out.push_str("1..0 # SKIP no tests\n"),
        1 => {
            comment(
                &mut out,
                "",
                &format!("suite: {}", suites[0].display_name()),
            );
            write_suite(&mut out, "", v, 0);
        }
        n => {
            out.push_str(&format!("1..{n}\n"));
            for (i, suite) in suites.iter().enumerate() {
                let name = suite.display_name();
                comment(&mut out, "    ", &format!("Subtest: {name}"));
                write_suite(&mut out, "    ", v, i);
                write_suite_point(&mut out, i + 1, &name, v, i);
            }
        }
    }
    out.finish()
}

fn write_suite<V: View>(out: &mut Out<'_>, indent: &str, v: &V, s: usize) {
    for diagnostic in &v.head().suites[s].diagnostics {
        for line in diagnostic.lines() {
            comment(out, indent, line);
        }
    }
    let n = v.case_count(s);
    if n == 0 {
        out.push_str(indent);
        out.push_str("1..0 # SKIP no tests\n");
        return;
    }
    out.push_str(&format!("{indent}1..{n}\n"));
    for i in 0..n {
        if v.is_bare(s, i) {
            test_point(out, indent, true, i + 1, v.case_name(s, i), None);
        } else {
            write_case(out, indent, i + 1, &v.case(s, i));
        }
    }
}

fn write_case(out: &mut Out<'_>, indent: &str, number: usize, case: &Case) {
    let reason = one_line(case.message.as_deref().unwrap_or(""));
    let (ok, directive) = match case.outcome {
        Outcome::Pass => (true, None),
        Outcome::Fail | Outcome::Error => (false, None),
        Outcome::Skip => (true, Some("SKIP")),
        Outcome::Xfail => (false, Some("TODO")),
        Outcome::Xpass => (true, Some("TODO")),
    };
    test_point(
        out,
        indent,
        ok,
        number,
        &case.name,
        directive.map(|d| (d, reason.as_str())),
    );
    if case.outcome.is_failure() {
        write_yaml(out, indent, case);
    }
}

/// The parent's test point that closes a suite's subtest.
fn write_suite_point<V: View>(out: &mut Out<'_>, number: usize, name: &str, v: &V, s: usize) {
    if v.case_count(s) == 0 {
        test_point(out, "", true, number, name, Some(("SKIP", "no tests")));
        return;
    }
    if let Some(reason) = view::skip_reason(v, s) {
        test_point(
            out,
            "",
            true,
            number,
            name,
            Some(("SKIP", &one_line(&reason))),
        );
        return;
    }
    let sum = view::suite_summary(v, s);
    test_point(out, "", sum.ok, number, name, None);
    if !sum.ok {
        let mut yaml = Yaml::open(out, "");
        let failing = sum.failed + sum.errors;
        yaml.string(
            "message",
            &format!("Failed {failing}/{} subtests", sum.total),
        );
        yaml.number("duration_ms", sum.duration_ms);
        yaml.close();
    }
}

fn test_point(
    out: &mut Out<'_>,
    indent: &str,
    ok: bool,
    number: usize,
    name: &str,
    directive: Option<(&str, &str)>,
) {
    out.push_str(indent);
    out.push_str(if ok { "ok " } else { "not ok " });
    out.push_str(&number.to_string());
    // An unescaped `#` would start a directive, so the name escapes it as TAP says.
    let name = one_line(name).replace('#', "\\#");
    if !name.is_empty() {
        out.push_str(" - ");
        out.push_str(&name);
    }
    if let Some((word, reason)) = directive {
        out.push_str(" # ");
        out.push_str(word);
        if !reason.is_empty() {
            out.push(' ');
            out.push_str(reason);
        }
    }
    out.push('\n');
}

fn comment(out: &mut Out<'_>, indent: &str, text: &str) {
    out.push_str(indent);
    out.push_str("# ");
    out.push_str(&one_line(text));
    out.push('\n');
}

fn write_yaml(out: &mut Out<'_>, indent: &str, case: &Case) {
    let mut yaml = Yaml::open(out, indent);
    yaml.string("outcome", case.outcome.as_str());
    if let Some(message) = &case.message {
        yaml.string("message", message);
    }
    yaml.number("duration_ms", case.duration_ms);
    if let Some(agent) = &case.agent {
        yaml.string("agent", agent);
    }
    if case.attempts > 1 {
        yaml.number("attempts", u64::from(case.attempts));
    }
    if let Some(url) = &case.log_url {
        yaml.string("log_url", url);
    }
    if !case.artifacts.is_empty() {
        yaml.key("artifacts");
        for link in &case.artifacts {
            yaml.nested_string(&link.name, &link.url);
        }
    }
    if let Some(output) = &case.output {
        yaml.string("output", output);
    }
    yaml.close();
}

/// A YAML diagnostics block, written line by line.
struct Yaml<'a, 'w> {
    out: &'a mut Out<'w>,
    /// Indentation of the block's keys: the test point's plus two spaces.
    pad: String,
}

impl<'a, 'w> Yaml<'a, 'w> {
    fn open(out: &'a mut Out<'w>, indent: &str) -> Self {
        let pad = format!("{indent}  ");
        out.push_str(&pad);
        out.push_str("---\n");
        Yaml { out, pad }
    }

    fn close(self) {
        self.out.push_str(&self.pad);
        self.out.push_str("...\n");
    }

    fn number(&mut self, key: &str, value: u64) {
        self.out.push_str(&format!("{}{key}: {value}\n", self.pad));
    }

    fn key(&mut self, key: &str) {
        self.out.push_str(&format!("{}{key}:\n", self.pad));
    }

    fn string(&mut self, key: &str, value: &str) {
        let pad = self.pad.clone();
        write_string(self.out, &pad, key, value);
    }

    fn nested_string(&mut self, key: &str, value: &str) {
        let pad = format!("{}  ", self.pad);
        write_string(self.out, &pad, &quoted(key), value);
    }
}

fn write_string(out: &mut Out<'_>, pad: &str, key: &str, value: &str) {
    let cleaned = clean(value);
    let text = cleaned.replace("\r\n", "\n").replace('\r', "\n");
    let text = text.trim_end_matches('\n');
    // A block cannot start with whitespace without an indentation indicator, which
    // YAMLish does not read.
    let as_block = text.contains('\n') && !text.starts_with([' ', '\t']);
    if !as_block {
        out.push_str(&format!("{pad}{key}: {}\n", quoted(text)));
        return;
    }
    out.push_str(&format!("{pad}{key}: |\n"));
    for line in text.split('\n') {
        out.push_str(pad);
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

/// A YAML double-quoted scalar using only the escapes YAMLish understands.
fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            _ => q.push(c),
        }
    }
    q.push('"');
    q
}
