//! Test-run reports for Testbed: one result model ([`model`]) and the formats it is
//! rendered to.
//!
//! | module | holds |
//! | --- | --- |
//! | [`model`] | [`Report`], [`Suite`], [`Case`], [`Outcome`], [`Summary`] and what counts as failing |
//! | [`json`] | the canonical JSON form: [`to_json`], [`from_json`] |
//! | [`junit`] | JUnit XML for Jenkins and GitLab: [`to_junit`] |
//! | [`tap`] | TAP version 13: [`to_tap`] |
//! | [`summary`] | a plain-text summary in the style of Perl's `prove`: [`to_summary`] |
//! | [`html`] | one self-contained HTML file that opens offline: [`to_html`] |
//! | [`compare`] | two reports side by side: regressions, fixes, new and removed tests, duration changes |
//!
//! Every renderer is a pure function from `&Report` to a `String`, and writes
//! any [`View`] (a [`Report`], or a [`CompactReport`] of a million cases) to an
//! `io::Write` as it goes; [`Format`] picks one by name for command lines and
//! HTTP downloads. [`view`] holds the compact form, [`read_compact`] reads a
//! JSON report into it as it streams.

use std::fmt;
use std::str::FromStr;

pub mod compare;
pub mod html;
pub mod json;
pub mod junit;
pub mod model;
pub mod summary;
pub mod tap;
mod text;
pub mod view;

pub use html::{to_html, write_html};
pub use json::{
    close_json, copy_stored_suites, copy_suites, from_json, read_compact, read_stored, to_json,
    to_stored, write_json, write_json_open, write_stored, write_stored_with, Copied,
};
pub use junit::{to_junit, write_junit};
pub use model::{Case, Link, Outcome, Report, Suite, Summary, REPORT_KIND, REPORT_VERSION};
pub use summary::{to_summary, write_summary};
pub use tap::{to_tap, write_tap};
pub use view::{CaseList, CompactReport, View};

/// Why a report could not be read or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The JSON is malformed or does not have the shape of a report.
    #[error("invalid report JSON at {line}:{column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed JSON, but some other kind of document.
    #[error("not a report: kind is {0:?}, expected \"report\"")]
    WrongKind(String),
    /// A report of a version this build cannot read.
    #[error("unsupported report version {found} (this build reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    /// The XML writer failed.
    #[error("cannot write XML: {0}")]
    Xml(#[from] std::io::Error),
    /// Writing a report ([`copy_suites`]) failed.
    #[error("cannot write the report: {0}")]
    Write(std::io::Error),
    /// An unknown format name was given to [`Format::from_str`].
    #[error("unknown report format {0:?} (expected json, junit, tap, summary or html)")]
    UnknownFormat(String),
}

/// The formats a report can be rendered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Junit,
    Tap,
    Summary,
    Html,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Json,
        Format::Junit,
        Format::Tap,
        Format::Summary,
        Format::Html,
    ];

    /// Renders `report` in this format.
    pub fn render(self, report: &Report) -> Result<String, ReportError> {
        Ok(match self {
            Format::Json => to_json(report),
            Format::Junit => to_junit(report)?,
            Format::Tap => to_tap(report),
            Format::Summary => to_summary(report),
            Format::Html => to_html(report),
        })
    }

    /// Writes any [`View`] of a report in this format as it goes: memory does
    /// not grow with the output.
    pub fn write<V: View>(self, v: &V, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        match self {
            Format::Json => write_json(v, w),
            Format::Junit => write_junit(v, w),
            Format::Tap => write_tap(v, w),
            Format::Summary => write_summary(v, w),
            Format::Html => write_html(v, w),
        }
    }

    /// The name accepted by [`Format::from_str`].
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Junit => "junit",
            Format::Tap => "tap",
            Format::Summary => "summary",
            Format::Html => "html",
        }
    }

    /// The HTTP `Content-Type` of a download in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Junit => "application/xml; charset=utf-8",
            Format::Tap | Format::Summary => "text/plain; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Junit => "xml",
            Format::Tap => "tap",
            Format::Summary => "txt",
            Format::Html => "html",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = ReportError;

    /// Accepts the names of [`Format::name`], case-insensitively, plus the aliases
    /// `xml` (JUnit), `text` and `txt` (summary).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "junit" | "xml" => Ok(Format::Junit),
            "tap" => Ok(Format::Tap),
            "summary" | "text" | "txt" => Ok(Format::Summary),
            "html" => Ok(Format::Html),
            _ => Err(ReportError::UnknownFormat(s.to_string())),
        }
    }
}
