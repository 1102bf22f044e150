//! Cases that wait on disk until the report is written, so that a run of
//! many iterations holds a few bytes a case instead of a [`Case`] each.
//!
//! An API test's case is rarely a bare pass (it has a duration, a start
//! time, often an iteration), so the compact form of `testbed tck run`
//! ([`testbed_report::CaseList`]) would keep every one whole. Here each case
//! is written to a [`Spool`] (an unlinked temporary file the caller makes)
//! as one JSON document as soon as it ends; memory keeps its name (the
//! renderers borrow names), its outcome (the summaries count them) and where
//! it is on disk. A [`SpooledReport`] is a [`View`], so every renderer of
//! `testbed-report` (JSON, JUnit, TAP, HTML, the summary) writes it as it
//! writes a [`Report`], reading each case back when it comes to it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use testbed_report::{Case, Outcome, Report, View};

/// Where spooled cases are written: one file shared by every list of a run
/// (clones append to the same file).
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Mutex<Writer>>,
}

struct Writer {
    out: BufWriter<File>,
    /// Bytes written so far: where the next case starts.
    pos: u64,
}

impl Spool {
    /// A spool writing to `file` (empty; an unlinked temporary file, so
    /// nothing is left behind whatever happens).
    pub fn new(file: File) -> Spool {
        Spool {
            inner: Arc::new(Mutex::new(Writer {
                out: BufWriter::with_capacity(256 * 1024, file),
                pos: 0,
            })),
        }
    }

    /// Appends `case`; returns where it starts and its length.
    fn append(&self, case: &Case) -> io::Result<(u64, u32)> {
        let text = serde_json::to_vec(case).map_err(io::Error::other)?;
        let len = u32::try_from(text.len())
            .map_err(|_| io::Error::other("a case of 4 GiB or more cannot be spooled"))?;
        let mut w = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("the case spool's lock is poisoned"))?;
        w.out.write_all(&text)?;
        let at = w.pos;
        w.pos += u64::from(len);
        Ok((at, len))
    }

    /// The file, every case written, for reading back.
    fn into_file(self) -> io::Result<File> {
        let mut w = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("the case spool's lock is poisoned"))?;
        w.out.flush()?;
        w.out.get_ref().try_clone()
    }
}

/// Where a case is in the spool; a bare pass is not written at all.
const BARE: u64 = u64::MAX;

/// The cases of one suite, in order: names and outcomes in memory, the rest
/// in the [`Spool`].
#[derive(Debug, Default)]
pub struct SpoolList {
    /// The names, one after the other.
    names: String,
    /// Where each name ends in `names`.
    ends: Vec<u32>,
    outcomes: Vec<Outcome>,
    /// Where each case starts in the spool ([`BARE`] for a bare pass), and
    /// its length.
    at: Vec<u64>,
    lens: Vec<u32>,
}

impl SpoolList {
    pub fn new() -> Self {
        SpoolList::default()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends `case`, writing it to `spool` unless it is a bare pass.
    pub fn push(&mut self, spool: &Spool, case: &Case) -> io::Result<()> {
        let end = u32::try_from(self.names.len() + case.name.len())
            .map_err(|_| io::Error::other("over 4 GiB of case names in one suite"))?;
        let (at, len) = if testbed_report::view::is_bare(case) {
            (BARE, 0)
        } else {
            spool.append(case)?
        };
        self.names.push_str(&case.name);
        self.ends.push(end);
        self.outcomes.push(case.outcome);
        self.at.push(at);
        self.lens.push(len);
        Ok(())
    }

    fn name(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.names.get(start..self.ends[i] as usize).unwrap_or("")
    }
}

/// A report whose cases are in [`SpoolList`]s: `head.suites[s]` has no
/// cases, `lists[s]` has them.
pub struct SpooledReport {
    head: Report,
    lists: Vec<SpoolList>,
    file: File,
    /// The case read last: a renderer asks for a case's fields one after
    /// the other, so each is read from disk once.
    last: RefCell<Option<(usize, usize, Case)>>,
}

impl SpooledReport {
    /// `head`'s suites, in order, with the cases of `lists`; `spool` is
    /// where the lists wrote them.
    pub fn new(head: Report, lists: Vec<SpoolList>, spool: Spool) -> io::Result<Self> {
        Ok(SpooledReport {
            head,
            lists,
            file: spool.into_file()?,
            last: RefCell::new(None),
        })
    }

    /// Case `i` of suite `s`, from disk (or the last one read).
    fn read(&self, s: usize, i: usize) -> Case {
        let list = &self.lists[s];
        if list.at[i] == BARE {
            return Case::new(list.name(i), Outcome::Pass);
        }
        if let Ok(last) = self.last.try_borrow() {
            if let Some((ls, li, c)) = last.as_ref() {
                if (*ls, *li) == (s, i) {
                    return c.clone();
                }
            }
        }
        let mut buf = vec![0; list.lens[i] as usize];
        let case = self
            .file
            .read_exact_at(&mut buf, list.at[i])
            .map_err(|e| e.to_string())
            .and_then(|()| serde_json::from_slice::<Case>(&buf).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                // Our own temporary file, written moments ago: this does not
                // happen short of a failing disk, and a report still beats
                // none.
                let mut c = Case::new(list.name(i), list.outcomes[i]);
                c.message = Some(format!("this case could not be read back from disk: {e}"));
                c
            });
        if let Ok(mut last) = self.last.try_borrow_mut() {
            *last = Some((s, i, case.clone()));
        }
        case
    }

    /// The report's metadata (its suites without their cases).
    pub fn head(&self) -> &Report {
        &self.head
    }
}

impl View for SpooledReport {
    fn head(&self) -> &Report {
        &self.head
    }
    fn case_count(&self, s: usize) -> usize {
        self.lists[s].len()
    }
    fn case_name(&self, s: usize, i: usize) -> &str {
        self.lists[s].name(i)
    }
    fn case_outcome(&self, s: usize, i: usize) -> Outcome {
        self.lists[s].outcomes[i]
    }
    fn case_duration_ms(&self, s: usize, i: usize) -> u64 {
        if self.is_bare(s, i) {
            0
        } else {
            self.read(s, i).duration_ms
        }
    }
    fn case_started_at(&self, s: usize, i: usize) -> Option<DateTime<Utc>> {
        if self.is_bare(s, i) {
            None
        } else {
            self.read(s, i).started_at
        }
    }
    fn case(&self, s: usize, i: usize) -> Cow<'_, Case> {
        Cow::Owned(self.read(s, i))
    }
    fn is_bare(&self, s: usize, i: usize) -> bool {
        self.lists[s].at[i] == BARE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testbed_report::{Format, Suite};

    /// A report of every kind of case renders to the same text in every
    /// format spooled as whole.
    #[test]
    fn a_spooled_report_renders_as_the_whole_one() {
        let mut whole = Report::new("r1", "api tests", Utc::now());
        whole.started_at = Some(Utc::now());
        whole.properties.insert("iterations".into(), "3".into());
        for (name, n) in [("first", 3), ("second / inner", 2)] {
            let mut s = Suite::new(name);
            s.duration_ms = 12;
            for i in 0..n {
                let mut c = Case::new(format!("req › test \"{i}\" [iteration {i}]"), Outcome::Pass);
                if i == 1 {
                    c.outcome = Outcome::Fail;
                    c.message = Some("expected 200, got 500\nsecond line".into());
                }
                if i > 0 {
                    c.duration_ms = 7 + i as u64;
                    c.started_at = Some(Utc::now());
                    c.properties.insert("iteration".into(), i.to_string());
                }
                s.cases.push(c);
            }
            whole.suites.push(s);
        }
        let spool = Spool::new(tempfile::tempfile().unwrap());
        let mut head = whole.clone();
        let mut lists = Vec::new();
        for s in &mut head.suites {
            let mut l = SpoolList::new();
            for c in std::mem::take(&mut s.cases) {
                l.push(&spool, &c).unwrap();
            }
            lists.push(l);
        }
        let spooled = SpooledReport::new(head, lists, spool).unwrap();
        assert!(spooled.is_bare(0, 0) && !spooled.is_bare(0, 1));
        for f in Format::ALL {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            f.write(&whole, &mut a).unwrap();
            f.write(&spooled, &mut b).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b),
                "{f}"
            );
        }
        assert_eq!(testbed_report::view::summary(&spooled), whole.summary());
    }
}
