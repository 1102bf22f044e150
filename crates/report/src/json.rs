//! The canonical JSON form of a [`Report`]: what the server stores and serves, and
//! what every other format can be rebuilt from.

use crate::model::{Report, REPORT_KIND, REPORT_VERSION};
use crate::ReportError;

/// The report as pretty-printed JSON. Maps are ordered and absent optional fields are
/// left out, so equal reports give equal text.
pub fn to_json(report: &Report) -> String {
    match serde_json::to_string_pretty(report) {
        Ok(s) => s,
        // Cannot happen: every map key is a string and no Serialize impl is custom.
        // Should that change, a JSON error object beats a panic in a server.
        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
    }
}

/// Reads a report, checking that it is one (`kind`) of a version this build knows
/// (`v`). Syntax and shape errors name the line and column.
pub fn from_json(text: &str) -> Result<Report, ReportError> {
    let report: Report = serde_json::from_str(text).map_err(|e| {
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
    })?;
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
