//! Test reports: `/api/reports`. A report's summary is its record
//! ([`ReportRecord`]); its body is a [`testbed_report`] report.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use testbed_core::run::ReportRecord;

/// One case of a report, where it is: its suite's display name and its
/// 1-based position in the suite.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CaseRow {
    pub suite: String,
    pub number: usize,
    #[serde(flatten)]
    pub case: testbed_report::Case,
}
