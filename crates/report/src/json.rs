//! The canonical JSON form of a [`Report`]: what the server stores and serves, and
//! what every other format can be rebuilt from.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use crate::model::{Case, Report, Suite, Summary, REPORT_KIND, REPORT_VERSION};
use crate::view::{CaseList, CompactReport, View};
use crate::ReportError;

/// The report as JSON: the report's and each suite's fields on one line, then
/// one line per case (see [`write_json`]). Maps are ordered and absent optional
/// fields are left out, so equal reports give equal text.
pub fn to_json(report: &Report) -> String {
    let mut out = Vec::new();
    match write_json(report, &mut out) {
        // Only `&str` went in.
        Ok(()) => String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        // Cannot happen: every map key is a string and no Serialize impl is custom.
        // Should that change, a JSON error object beats a panic in a server.
        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
    }
}

/// Reads a report, checking that it is one (`kind`) of a version this build knows
/// (`v`). Syntax and shape errors name the line and column.
pub fn from_json(text: &str) -> Result<Report, ReportError> {
    let report: Report = serde_json::from_str(text).map_err(json_error)?;
    if report.kind != REPORT_KIND {
        return Err(ReportError::WrongKind(report.kind));
    }
    if report.v != REPORT_VERSION {
        return Err(ReportError::UnsupportedVersion {
            found: report.v,
            supported: REPORT_VERSION,
        });
    }
    Ok(report)
}

/// Writes the canonical JSON form of `v` as it goes, one case per line; a bare
/// pass (see [`crate::view::is_bare`]) is written as `{"name":…,"outcome":"pass"}`
/// and nothing else, which is what it reads back as. [`to_json`] is this, to a
/// string.
pub fn write_json<V: View>(v: &V, w: &mut dyn Write) -> io::Result<()> {
    write_json_open(v, w)?;
    close_json(w)
}

/// [`write_json`] but for the end of the suites' array, so that more suites
/// can follow ([`copy_suites`]); [`close_json`] ends the document.
pub fn write_json_open<V: View>(v: &V, w: &mut dyn Write) -> io::Result<()> {
    let r = v.head();
    let head = Head {
        kind: &r.kind,
        v: r.v,
        id: &r.id,
        name: &r.name,
        created_at: &r.created_at,
        started_at: r.started_at.as_ref(),
        finished_at: r.finished_at.as_ref(),
        properties: &r.properties,
    };
    open_object(w, &head)?;
    w.write_all(b",\"suites\":[")?;
    for (s, suite) in r.suites.iter().enumerate() {
        w.write_all(if s == 0 { b"\n" } else { b",\n" })?;
        write_suite_open(w, suite)?;
        for i in 0..v.case_count(s) {
            w.write_all(if i == 0 { b"\n" } else { b",\n" })?;
            if v.is_bare(s, i) {
                w.write_all(b"{\"name\":")?;
                serde_json::to_writer(&mut *w, v.case_name(s, i)).map_err(io::Error::other)?;
                w.write_all(b",\"outcome\":\"pass\"}")?;
            } else {
                serde_json::to_writer(&mut *w, v.case(s, i).as_ref()).map_err(io::Error::other)?;
            }
        }
        w.write_all(b"]}")?;
    }
    Ok(())
}

/// Ends a document begun with [`write_json_open`].
pub fn close_json(w: &mut dyn Write) -> io::Result<()> {
    w.write_all(b"]}\n")
}

/// What [`copy_suites`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub suites: usize,
    /// The counts of the cases copied (`duration_ms` is 0).
    pub summary: Summary,
}

/// Copies the suites of a report in the form [`write_json`] writes (a line
/// for the report's fields, one for each suite's, one per case: what
/// [`write_stored`] compresses) from `input` into a document being written
/// to `out` by [`write_json_open`], after the `written` suites already
/// there. Each suite's fields go through `edit` (a platform, a property);
/// each case is copied as it is, a line at a time, its outcome counted, so
/// memory does not grow with the report. A document that ends before its
/// last suite is closed (cut short), or that is not in that form, is an
/// error naming the line.
pub fn copy_suites(
    input: impl io::BufRead,
    out: &mut dyn Write,
    written: usize,
    edit: &mut dyn FnMut(&mut Suite),
) -> Result<Copied, ReportError> {
    let mut copier = Copier {
        input,
        line: Vec::new(),
        at: 0,
    };
    let io_error = ReportError::Write;
    let mut copied = Copied {
        suites: 0,
        summary: crate::view::empty_summary(0),
    };
    // The report's own fields: only the kind and version matter here.
    let mut rest = {
        let line = copier.next_line()?;
        let (head, rest) = copier.split_open(line, b",\"suites\":[")?;
        let head: HeadKind = copier.parse(&head)?;
        if head.kind != REPORT_KIND {
            return Err(ReportError::WrongKind(head.kind));
        }
        if head.v != REPORT_VERSION {
            return Err(ReportError::UnsupportedVersion {
                found: head.v,
                supported: REPORT_VERSION,
            });
        }
        rest
    };
    // After the suites' `[` or a suite's `]}`: another suite, or the end.
    loop {
        match rest.as_slice() {
            b"]}" | b"]}]}" => break,
            b"" | b"," => {}
            _ => return Err(copier.error("expected a suite or the end of the suites")),
        }
        let line = copier.next_line()?;
        let (head, after) = copier.split_open(line, b",\"cases\":[")?;
        let mut suite: Suite = copier.parse(&head)?;
        edit(&mut suite);
        out.write_all(if written + copied.suites == 0 {
            b"\n"
        } else {
            b",\n"
        })
        .map_err(io_error)?;
        write_suite_open(out, &suite).map_err(io_error)?;
        copied.suites += 1;
        let mut first = true;
        let mut after_case = after;
        // Cases, each a line: `{…}` then `,` (more), `]},` (more suites) or
        // `]}]}` (the end); an empty suite's `]}…` is on its own line.
        while after_case.is_empty() || after_case == b"," {
            let line = copier.next_line()?;
            let (end, outcome) = copier.case_end(&line)?;
            out.write_all(if first { b"\n" } else { b",\n" })
                .map_err(io_error)?;
            out.write_all(&line[..end]).map_err(io_error)?;
            crate::view::add(&mut copied.summary, outcome);
            first = false;
            after_case = line[end..].to_vec();
        }
        out.write_all(b"]}").map_err(io_error)?;
        rest = match after_case.as_slice() {
            b"]}," => b",".to_vec(),
            b"]}]}" => b"]}".to_vec(),
            _ => return Err(copier.error("expected `,` or the end of the suite after a case")),
        };
    }
    let s = &mut copied.summary;
    s.ok = s.failed == 0 && s.errors == 0;
    // Nothing may follow the document.
    if copier.next_line_opt()?.is_some_and(|l| !l.is_empty()) {
        return Err(copier.error("more after the end of the report"));
    }
    Ok(copied)
}

/// A suite's fields, up to its `"cases":[` (written by [`write_json`] and
/// [`copy_suites`] alike).
fn write_suite_open(w: &mut dyn Write, suite: &Suite) -> io::Result<()> {
    let head = SuiteHead {
        name: &suite.name,
        platform: suite.platform.as_deref(),
        properties: &suite.properties,
        started_at: suite.started_at.as_ref(),
        duration_ms: suite.duration_ms,
        diagnostics: &suite.diagnostics,
    };
    open_object(w, &head)?;
    w.write_all(b",\"cases\":[")
}

#[derive(serde::Deserialize)]
struct HeadKind {
    kind: String,
    v: u32,
}

#[derive(serde::Deserialize)]
struct CaseOutcome {
    outcome: crate::model::Outcome,
}

/// The line reader of [`copy_suites`].
struct Copier<R> {
    input: R,
    line: Vec<u8>,
    /// The number of the last line read, from 1.
    at: usize,
}

impl<R: io::BufRead> Copier<R> {
    fn error(&self, message: &str) -> ReportError {
        ReportError::Json {
            line: self.at,
            column: 1,
            message: message.to_string(),
        }
    }

    fn next_line_opt(&mut self) -> Result<Option<Vec<u8>>, ReportError> {
        self.line.clear();
        let n = self
            .input
            .read_until(b'\n', &mut self.line)
            .map_err(|e| ReportError::Json {
                line: self.at + 1,
                column: 1,
                message: format!("reading the report: {e}"),
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.at += 1;
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        Ok(Some(std::mem::take(&mut self.line)))
    }

    fn next_line(&mut self) -> Result<Vec<u8>, ReportError> {
        self.next_line_opt()?.ok_or_else(|| {
            self.error("the report ends before its last suite is closed (cut short)")
        })
    }

    /// Splits a line `{fields…,"key":[rest` into the object `{fields…}` and
    /// `rest`. The marker cannot occur inside a string (its quotes would be
    /// escaped), nor as a key of a map of strings.
    fn split_open(&self, line: Vec<u8>, marker: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ReportError> {
        let at = line
            .windows(marker.len())
            .position(|w| w == marker)
            .ok_or_else(|| self.error("not a report in the stored form (one case a line)"))?;
        let mut head = line[..at].to_vec();
        head.push(b'}');
        Ok((head, line[at + marker.len()..].to_vec()))
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, ReportError> {
        serde_json::from_slice(bytes).map_err(|e| ReportError::Json {
            line: self.at,
            column: e.column(),
            message: e.to_string(),
        })
    }

    /// Where the case object that starts `line` ends, and its outcome.
    fn case_end(&self, line: &[u8]) -> Result<(usize, crate::model::Outcome), ReportError> {
        let mut cases = serde_json::Deserializer::from_slice(line).into_iter::<CaseOutcome>();
        match cases.next() {
            Some(Ok(c)) => Ok((cases.byte_offset(), c.outcome)),
            Some(Err(e)) => Err(ReportError::Json {
                line: self.at,
                column: e.column(),
                message: e.to_string(),
            }),
            None => Err(self.error("expected a case")),
        }
    }
}

/// Writes `value` (a JSON object) without its closing brace.
fn open_object(w: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    let text = serde_json::to_string(value).map_err(io::Error::other)?;
    w.write_all(text.strip_suffix('}').unwrap_or(&text).as_bytes())
}

fn is_empty_map(m: &&BTreeMap<String, String>) -> bool {
    m.is_empty()
}

fn is_empty_vec(v: &&Vec<String>) -> bool {
    v.is_empty()
}

#[derive(Serialize)]
struct Head<'a> {
    kind: &'a str,
    v: u32,
    id: &'a str,
    name: &'a str,
    created_at: &'a DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<&'a DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<&'a DateTime<Utc>>,
    #[serde(skip_serializing_if = "is_empty_map")]
    properties: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct SuiteHead<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'a str>,
    #[serde(skip_serializing_if = "is_empty_map")]
    properties: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<&'a DateTime<Utc>>,
    duration_ms: u64,
    #[serde(skip_serializing_if = "is_empty_vec")]
    diagnostics: &'a Vec<String>,
}

fn json_error(e: serde_json::Error) -> ReportError {
    let message = e.to_string();
    // serde_json appends " at line L column C"; we put the position up front.
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = message
        .strip_suffix(&suffix)
        .map(str::to_string)
        .unwrap_or(message);
    ReportError::Json {
        line: e.line(),
        column: e.column(),
        message,
    }
}

/// Reads a report as it streams, into a [`CompactReport`]: memory grows with
/// the failures and the names of the passing cases, never with the text. Reads
/// every document [`from_json`] reads, old pretty-printed ones included, with
/// the same checks and errors.
pub fn read_compact(reader: impl Read) -> Result<CompactReport, ReportError> {
    let mut de =
        serde_json::Deserializer::from_reader(io::BufReader::with_capacity(256 * 1024, reader));
    let report = ReportSeed.deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(json_error)?;
    if report.head.kind != REPORT_KIND {
        return Err(ReportError::WrongKind(report.head.kind));
    }
    if report.head.v != REPORT_VERSION {
        return Err(ReportError::UnsupportedVersion {
            found: report.head.v,
            supported: REPORT_VERSION,
        });
    }
    Ok(report)
}

/// Reads a report held as a JSON value (a task's result) into the compact
/// form, without copying the value or making a [`Case`] of each bare pass.
/// Like `serde_json::from_value::<Report>`, it does not check `kind` and `v`.
pub fn compact_from_value(value: &serde_json::Value) -> Result<CompactReport, ReportError> {
    ReportSeed.deserialize(value).map_err(json_error)
}

struct ReportSeed;

impl<'de> DeserializeSeed<'de> for ReportSeed {
    type Value = CompactReport;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ReportSeed {
    type Value = CompactReport;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("struct Report")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut kind, mut v, mut id, mut name, mut created_at) = (None, None, None, None, None);
        let mut started_at = None;
        let mut finished_at = None;
        let mut properties = BTreeMap::new();
        let mut suites = Vec::new();
        let mut lists = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "kind" => kind = Some(map.next_value::<String>()?),
                "v" => v = Some(map.next_value::<u32>()?),
                "id" => id = Some(map.next_value::<String>()?),
                "name" => name = Some(map.next_value::<String>()?),
                "created_at" => created_at = Some(map.next_value::<DateTime<Utc>>()?),
                "started_at" => started_at = map.next_value()?,
                "finished_at" => finished_at = map.next_value()?,
                "properties" => properties = map.next_value()?,
                "suites" => map.next_value_seed(SuitesSeed {
                    suites: &mut suites,
                    lists: &mut lists,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let head = Report {
            kind: kind.ok_or_else(|| de::Error::missing_field("kind"))?,
            v: v.ok_or_else(|| de::Error::missing_field("v"))?,
            id: id.ok_or_else(|| de::Error::missing_field("id"))?,
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            created_at: created_at.ok_or_else(|| de::Error::missing_field("created_at"))?,
            started_at,
            finished_at,
            properties,
            suites,
        };
        Ok(CompactReport { head, lists })
    }
}

struct SuitesSeed<'a> {
    suites: &'a mut Vec<Suite>,
    lists: &'a mut Vec<CaseList>,
}

impl<'de> DeserializeSeed<'de> for SuitesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SuitesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a sequence of suites")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some((suite, list)) = seq.next_element_seed(SuiteSeed)? {
            self.suites.push(suite);
            self.lists.push(list);
        }
        Ok(())
    }
}

struct SuiteSeed;

impl<'de> DeserializeSeed<'de> for SuiteSeed {
    type Value = (Suite, CaseList);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SuiteSeed {
    type Value = (Suite, CaseList);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("struct Suite")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut suite = Suite::default();
        let mut name = None;
        let mut list = CaseList::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => name = Some(map.next_value::<String>()?),
                "platform" => suite.platform = map.next_value()?,
                "properties" => suite.properties = map.next_value()?,
                "started_at" => suite.started_at = map.next_value()?,
                "duration_ms" => suite.duration_ms = map.next_value()?,
                "diagnostics" => suite.diagnostics = map.next_value()?,
                "cases" => map.next_value_seed(CasesSeed { list: &mut list })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        suite.name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        Ok((suite, list))
    }
}

struct CasesSeed<'a> {
    list: &'a mut CaseList,
}

impl<'de> DeserializeSeed<'de> for CasesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CasesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a sequence of cases")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(CaseSeed {
                list: &mut *self.list,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One case, read straight into a [`CaseList`]: a bare pass costs its name's
/// bytes in the list and no allocation of its own (the name is copied from
/// the parser's buffer into the list as it is read). Reads what the derived
/// `Deserialize` of [`Case`] reads, with the same defaults and errors.
struct CaseSeed<'a> {
    list: &'a mut CaseList,
}

impl<'de> DeserializeSeed<'de> for CaseSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_struct("Case", CASE_FIELDS, self)
    }
}

const CASE_FIELDS: &[&str] = &[
    "name",
    "outcome",
    "duration_ms",
    "message",
    "output",
    "log_url",
    "artifacts",
    "started_at",
    "agent",
    "attempts",
    "properties",
];

/// A key of a case object: the index of a known field in [`CASE_FIELDS`], or
/// `None` for one to ignore; read without allocating.
struct CaseKey;

impl<'de> DeserializeSeed<'de> for CaseKey {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for CaseKey {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("field identifier")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(CASE_FIELDS.iter().position(|f| *f == v))
    }
}

/// A case's name, appended to the list's name buffer.
struct NameInto<'a> {
    list: &'a mut CaseList,
}

impl<'de> DeserializeSeed<'de> for NameInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for NameInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.list.push_name_part(v);
        Ok(())
    }
}

impl<'de> Visitor<'de> for CaseSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("struct Case")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mark = self.list.name_mark();
        let mut seen = 0u32;
        let mut outcome = None;
        let mut c = Case::new(String::new(), crate::Outcome::Pass);
        while let Some(key) = map.next_key_seed(CaseKey)? {
            let Some(k) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if seen & (1 << k) != 0 {
                return Err(de::Error::duplicate_field(CASE_FIELDS[k]));
            }
            seen |= 1 << k;
            match k {
                0 => map.next_value_seed(NameInto {
                    list: &mut *self.list,
                })?,
                1 => outcome = Some(map.next_value()?),
                2 => c.duration_ms = map.next_value()?,
                3 => c.message = map.next_value()?,
                4 => c.output = map.next_value()?,
                5 => c.log_url = map.next_value()?,
                6 => c.artifacts = map.next_value()?,
                7 => c.started_at = map.next_value()?,
                8 => c.agent = map.next_value()?,
                9 => c.attempts = map.next_value()?,
                _ => c.properties = map.next_value()?,
            }
        }
        if seen & 1 == 0 {
            return Err(de::Error::missing_field("name"));
        }
        c.outcome = outcome.ok_or_else(|| de::Error::missing_field("outcome"))?;
        if crate::view::is_bare(&c) {
            self.list.finish_bare(mark);
        } else {
            c.name = self.list.take_name(mark);
            self.list.push(c);
        }
        Ok(())
    }
}

/// The report as stored by the server: its JSON ([`write_json`]),
/// gzip-compressed (a passing case then costs a few bytes).
pub fn to_stored(v: &impl View) -> io::Result<Vec<u8>> {
    write_stored(v, Vec::new())
}

/// [`to_stored`] to any writer (a file), as it goes: memory does not grow
/// with the report. Returns the writer, the gzip stream finished.
pub fn write_stored<W: Write>(v: &impl View, out: W) -> io::Result<W> {
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
    {
        let mut w = io::BufWriter::with_capacity(256 * 1024, &mut gz);
        write_json(v, &mut w)?;
        w.flush()?;
    }
    gz.finish()
}

/// [`write_stored`] of `v`'s suites followed by those `more` writes (with
/// [`copy_suites`], given the writer and the number of suites already
/// written): one stored report assembled as it streams.
pub fn write_stored_with<W: Write>(
    v: &impl View,
    out: W,
    more: impl FnOnce(&mut dyn Write, usize) -> Result<(), ReportError>,
) -> Result<W, ReportError> {
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
    {
        let mut w = io::BufWriter::with_capacity(256 * 1024, &mut gz);
        write_json_open(v, &mut w).map_err(ReportError::Write)?;
        more(&mut w, v.head().suites.len())?;
        close_json(&mut w).map_err(ReportError::Write)?;
        w.flush().map_err(ReportError::Write)?;
    }
    gz.finish().map_err(ReportError::Write)
}

/// [`copy_suites`] from a stored report as it streams, gzip-compressed
/// ([`write_stored`]) or plain: a compressed stream cut short is an error.
pub fn copy_stored_suites(
    stored: impl Read,
    out: &mut dyn Write,
    written: usize,
    edit: &mut dyn FnMut(&mut Suite),
) -> Result<Copied, ReportError> {
    let mut input = io::BufReader::with_capacity(64 * 1024, stored);
    let gzip = io::BufRead::fill_buf(&mut input)
        .map_err(|e| ReportError::Json {
            line: 1,
            column: 1,
            message: format!("reading the report: {e}"),
        })?
        .starts_with(&[0x1f, 0x8b]);
    if gzip {
        let plain = io::BufReader::with_capacity(64 * 1024, flate2::bufread::GzDecoder::new(input));
        copy_suites(plain, out, written, edit)
    } else {
        copy_suites(input, out, written, edit)
    }
}

/// Reads a stored report, compressed ([`to_stored`]) or plain JSON (as reports
/// were stored before), into the compact form.
pub fn read_stored(body: &[u8]) -> Result<CompactReport, ReportError> {
    if body.starts_with(&[0x1f, 0x8b]) {
        read_compact(flate2::read::GzDecoder::new(body))
    } else {
        read_compact(body)
    }
}
