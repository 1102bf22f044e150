//! Reports too large to hold as one [`Case`] per test.
//!
//! A kit can print a million test points; as [`Case`] records (a dozen fields,
//! several heap strings each) that is over a gigabyte. Almost all of them pass
//! with nothing to say, so a [`CaseList`] keeps such a case as its name alone
//! (its bytes plus 4) and only the others — failures, skips, anything with a
//! message, a duration or a link — as full [`Case`]s. A [`CompactReport`] is a
//! report whose suites hold their cases that way.
//!
//! Every renderer is written against [`View`], which both [`Report`] and
//! [`CompactReport`] implement, so the two render to the same text; the
//! functions here compute what the [`Report`] methods of the same names do.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use crate::model::{Case, Outcome, Report, Suite, Summary};

/// Read access to a report's cases, whatever holds them.
pub trait View {
    /// The report's metadata and its suites' metadata; the suites' `cases` are
    /// read through the other methods, never directly.
    fn head(&self) -> &Report;
    /// How many cases suite `s` has.
    fn case_count(&self, s: usize) -> usize;
    fn case_name(&self, s: usize, i: usize) -> &str;
    fn case_outcome(&self, s: usize, i: usize) -> Outcome;
    fn case_duration_ms(&self, s: usize, i: usize) -> u64;
    fn case_started_at(&self, s: usize, i: usize) -> Option<DateTime<Utc>>;
    /// The whole case; borrowed where it is kept whole.
    fn case(&self, s: usize, i: usize) -> Cow<'_, Case>;
    /// Whether case `i` is a bare pass (name and outcome only), which renderers
    /// may write in a shorter form.
    fn is_bare(&self, s: usize, i: usize) -> bool {
        is_bare(&self.case(s, i))
    }
}

impl View for Report {
    fn head(&self) -> &Report {
        self
    }
    fn case_count(&self, s: usize) -> usize {
        self.suites[s].cases.len()
    }
    fn case_name(&self, s: usize, i: usize) -> &str {
        &self.suites[s].cases[i].name
    }
    fn case_outcome(&self, s: usize, i: usize) -> Outcome {
        self.suites[s].cases[i].outcome
    }
    fn case_duration_ms(&self, s: usize, i: usize) -> u64 {
        self.suites[s].cases[i].duration_ms
    }
    fn case_started_at(&self, s: usize, i: usize) -> Option<DateTime<Utc>> {
        self.suites[s].cases[i].started_at
    }
    fn case(&self, s: usize, i: usize) -> Cow<'_, Case> {
        Cow::Borrowed(&self.suites[s].cases[i])
    }
}

/// A case with nothing but a name and the outcome `pass`.
pub fn is_bare(c: &Case) -> bool {
    c.outcome == Outcome::Pass
        && c.duration_ms == 0
        && c.message.is_none()
        && c.output.is_none()
        && c.log_url.is_none()
        && c.artifacts.is_empty()
        && c.started_at.is_none()
        && c.agent.is_none()
        && c.attempts == 1
        && c.properties.is_empty()
}

/// The cases of one suite, bare passes as names only (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseList {
    /// The names of the bare cases, one after the other.
    names: String,
    /// For each case, where its name ends in `names` (a whole case adds nothing).
    ends: Vec<u32>,
    /// Indexes of the cases kept whole, ascending, and those cases.
    whole_at: Vec<u32>,
    whole: Vec<Case>,
}

impl CaseList {
    pub fn new() -> Self {
        CaseList::default()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends a case, keeping it as its name alone when it is bare.
    pub fn push(&mut self, case: Case) {
        let end = self.names.len() + case.name.len();
        match u32::try_from(end) {
            Ok(end) if is_bare(&case) => {
                self.names.push_str(&case.name);
                self.ends.push(end);
            }
            _ => {
                let at = self.ends.len();
                self.ends.push(self.ends.last().copied().unwrap_or(0));
                // More than 4 billion cases in one suite: no index to keep it at.
                if let Ok(at) = u32::try_from(at) {
                    self.whole_at.push(at);
                    self.whole.push(case);
                }
            }
        }
    }

    /// Appends `part` to the name of the case being read (see
    /// [`CaseList::finish_bare`]): a reader writes a bare case's name straight
    /// into the list, without a `String` of its own.
    pub(crate) fn push_name_part(&mut self, part: &str) {
        self.names.push_str(part);
    }

    /// Where the name of the next case starts, for [`CaseList::finish_bare`].
    pub(crate) fn name_mark(&self) -> usize {
        self.names.len()
    }

    /// Ends the case whose name was appended since `mark` as a bare pass; a
    /// list too long for its offsets keeps it whole instead.
    pub(crate) fn finish_bare(&mut self, mark: usize) {
        match u32::try_from(self.names.len()) {
            Ok(end) => self.ends.push(end),
            Err(_) => {
                let name = self.take_name(mark);
                self.push(Case::new(name, Outcome::Pass));
            }
        }
    }

    /// Takes back the name appended since `mark`, for a case kept whole.
    pub(crate) fn take_name(&mut self, mark: usize) -> String {
        let name = self.names.get(mark..).unwrap_or_default().to_string();
        self.names.truncate(mark.min(self.names.len()));
        name
    }

    fn whole_index(&self, i: usize) -> Option<usize> {
        let i = u32::try_from(i).ok()?;
        self.whole_at.binary_search(&i).ok()
    }

    pub fn name(&self, i: usize) -> &str {
        match self.whole_index(i) {
            Some(w) => &self.whole[w].name,
            None => {
                let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
                &self.names[start..self.ends[i] as usize]
            }
        }
    }

    pub fn outcome(&self, i: usize) -> Outcome {
        self.whole_index(i)
            .map_or(Outcome::Pass, |w| self.whole[w].outcome)
    }

    fn whole_case(&self, i: usize) -> Option<&Case> {
        self.whole_index(i).map(|w| &self.whole[w])
    }

    pub fn get(&self, i: usize) -> Cow<'_, Case> {
        match self.whole_case(i) {
            Some(c) => Cow::Borrowed(c),
            None => Cow::Owned(Case::new(self.name(i), Outcome::Pass)),
        }
    }

    /// Replaces case `i`; it is kept whole from then on.
    pub fn set(&mut self, i: usize, case: Case) {
        if let Some(w) = self.whole_index(i) {
            self.whole[w] = case;
            return;
        }
        let Ok(at) = u32::try_from(i) else { return };
        // Its old name stays in `names`, unused: changes are few (known-broken
        // entries), so compacting the buffer would cost more than it saves.
        let pos = self.whole_at.partition_point(|&x| x < at);
        self.whole_at.insert(pos, at);
        self.whole.insert(pos, case);
    }

    /// The cases kept whole, with their indexes: every case that is not a bare
    /// pass (failures, skips…), in order.
    pub fn whole(&self) -> impl Iterator<Item = (usize, &Case)> {
        self.whole_at.iter().map(|&i| i as usize).zip(&self.whole)
    }

    /// Every case as a full [`Case`] (for small lists, and tests).
    pub fn to_vec(&self) -> Vec<Case> {
        (0..self.len()).map(|i| self.get(i).into_owned()).collect()
    }

    /// Bytes of memory held, roughly.
    pub fn heap_bytes(&self) -> usize {
        self.names.capacity() + self.ends.capacity() * 4 + self.whole_at.capacity() * 4
    }
}

impl FromIterator<Case> for CaseList {
    fn from_iter<I: IntoIterator<Item = Case>>(iter: I) -> Self {
        let mut l = CaseList::new();
        for c in iter {
            l.push(c);
        }
        l
    }
}

/// A report whose suites keep their cases in [`CaseList`]s: `head.suites[s]`
/// has no cases, `lists[s]` has them.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactReport {
    pub head: Report,
    pub lists: Vec<CaseList>,
}

impl CompactReport {
    pub fn new(head: Report) -> Self {
        let mut head = head;
        let lists = head
            .suites
            .iter_mut()
            .map(|s| std::mem::take(&mut s.cases).into_iter().collect())
            .collect();
        CompactReport { head, lists }
    }

    /// Adds a suite (its `cases`, if any, go before those of `list`).
    pub fn push_suite(&mut self, mut suite: Suite, list: CaseList) {
        let mut list = list;
        if !suite.cases.is_empty() {
            let mut first: CaseList = std::mem::take(&mut suite.cases).into_iter().collect();
            for i in 0..list.len() {
                first.push(list.get(i).into_owned());
            }
            list = first;
        }
        self.head.suites.push(suite);
        self.lists.push(list);
    }

    /// The whole report, every case as a [`Case`]: for small reports only.
    pub fn into_report(self) -> Report {
        let mut r = self.head;
        for (s, l) in r.suites.iter_mut().zip(self.lists) {
            s.cases = l.to_vec();
        }
        r
    }

    pub fn summary(&self) -> Summary {
        summary(self)
    }

    pub fn verdict(&self) -> &'static str {
        verdict(self)
    }
}

impl View for CompactReport {
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
        self.lists[s].outcome(i)
    }
    fn case_duration_ms(&self, s: usize, i: usize) -> u64 {
        self.lists[s].whole_case(i).map_or(0, |c| c.duration_ms)
    }
    fn case_started_at(&self, s: usize, i: usize) -> Option<DateTime<Utc>> {
        self.lists[s].whole_case(i).and_then(|c| c.started_at)
    }
    fn case(&self, s: usize, i: usize) -> Cow<'_, Case> {
        self.lists[s].get(i)
    }
    fn is_bare(&self, s: usize, i: usize) -> bool {
        self.lists[s].whole_index(i).is_none()
    }
}

pub(crate) fn empty_summary(duration_ms: u64) -> Summary {
    Summary {
        total: 0,
        passed: 0,
        failed: 0,
        errors: 0,
        skipped: 0,
        xfailed: 0,
        xpassed: 0,
        duration_ms,
        ok: true,
    }
}

pub(crate) fn add(sum: &mut Summary, o: Outcome) {
    sum.total += 1;
    match o {
        Outcome::Pass => sum.passed += 1,
        Outcome::Fail => sum.failed += 1,
        Outcome::Error => sum.errors += 1,
        Outcome::Skip => sum.skipped += 1,
        Outcome::Xfail => sum.xfailed += 1,
        Outcome::Xpass => sum.xpassed += 1,
    }
}

/// [`Suite::summary`] of suite `s`.
pub fn suite_summary(v: &impl View, s: usize) -> Summary {
    let mut sum = empty_summary(suite_duration_ms(v, s));
    for i in 0..v.case_count(s) {
        add(&mut sum, v.case_outcome(s, i));
    }
    sum.ok = sum.failed == 0 && sum.errors == 0;
    sum
}

/// The suite's own duration or, when not recorded, the sum of its cases'.
pub fn suite_duration_ms(v: &impl View, s: usize) -> u64 {
    let own = v.head().suites[s].duration_ms;
    if own > 0 {
        own
    } else {
        (0..v.case_count(s)).map(|i| v.case_duration_ms(s, i)).sum()
    }
}

/// [`Suite::skip_reason`] of suite `s`.
pub fn skip_reason<V: View>(v: &V, s: usize) -> Option<String> {
    let n = v.case_count(s);
    if n == 0 || (0..n).any(|i| v.case_outcome(s, i) != Outcome::Skip) {
        return None;
    }
    Some(
        (0..n)
            .find_map(|i| v.case(s, i).message.clone())
            .unwrap_or_default(),
    )
}

/// [`Suite::is_failure`] of suite `s`.
pub fn suite_is_failure(v: &impl View, s: usize) -> bool {
    (0..v.case_count(s)).any(|i| v.case_outcome(s, i).is_failure())
}

/// [`Report::summary`].
pub fn summary(v: &impl View) -> Summary {
    let mut sum = empty_summary(duration_ms(v));
    for s in 0..v.head().suites.len() {
        for i in 0..v.case_count(s) {
            add(&mut sum, v.case_outcome(s, i));
        }
    }
    sum.ok = sum.failed == 0 && sum.errors == 0 && !v.head().cancelled();
    sum
}

/// [`Report::verdict`].
pub fn verdict(v: &impl View) -> &'static str {
    if v.head().cancelled() {
        "CANCELLED"
    } else if summary(v).ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// [`Report::duration_ms`].
pub fn duration_ms(v: &impl View) -> u64 {
    let r = v.head();
    if let (Some(start), Some(end)) = (r.started_at, r.finished_at) {
        return u64::try_from((end - start).num_milliseconds()).unwrap_or(0);
    }
    let n = r.suites.len();
    let starts: Vec<(DateTime<Utc>, u64)> = (0..n)
        .filter_map(|s| r.suites[s].started_at.map(|t| (t, suite_duration_ms(v, s))))
        .collect();
    if !starts.is_empty() && starts.len() == n {
        let first = starts.iter().map(|(t, _)| *t).min();
        let last_end = starts
            .iter()
            .map(|(t, d)| crate::model::add_ms(*t, *d))
            .max();
        if let (Some(first), Some(last_end)) = (first, last_end) {
            return u64::try_from((last_end - first).num_milliseconds()).unwrap_or(0);
        }
    }
    (0..n).map(|s| suite_duration_ms(v, s)).sum()
}

/// [`Report::start_time`].
pub fn start_time(v: &impl View) -> DateTime<Utc> {
    let r = v.head();
    r.started_at
        .or_else(|| {
            (0..r.suites.len())
                .flat_map(|s| {
                    r.suites[s]
                        .started_at
                        .into_iter()
                        .chain((0..v.case_count(s)).filter_map(move |i| v.case_started_at(s, i)))
                })
                .min()
        })
        .unwrap_or(r.created_at)
}

/// Total number of cases.
pub fn total_cases(v: &impl View) -> usize {
    (0..v.head().suites.len()).map(|s| v.case_count(s)).sum()
}
