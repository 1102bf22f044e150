//! Iteration data files (newman's `--iteration-data`): a JSON array of objects
//! or a CSV file whose header row names the variables; one iteration per row.

use std::path::Path;

use serde_json::Value;

use super::locate;
use super::vars::Vars;
use crate::problem::Problem;

/// How a data file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    Json,
    Csv,
}

impl DataFormat {
    /// By extension; otherwise by the first character, since a CSV header
    /// cannot sensibly start with `[` or `{` while a JSON data file must.
    pub fn of(path: &Path, text: &str) -> DataFormat {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => DataFormat::Csv,
            Some("json") => DataFormat::Json,
            _ if text
                .trim_start_matches('\u{feff}')
                .trim_start()
                .starts_with(['[', '{']) =>
            {
                DataFormat::Json
            }
            _ => DataFormat::Csv,
        }
    }
}

/// The rows of a data file, each the variables of one iteration. Every
/// problem is returned at once, located in the text where possible.
pub fn load_data(text: &str, format: DataFormat) -> Result<Vec<Vars>, Vec<Problem>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rows = match format {
        DataFormat::Json => json_rows(text)?,
        DataFormat::Csv => csv_rows(text)?,
    };
    // Newman quietly runs once without data here; an empty file is far more
    // likely a mistake than a wish, so it is said rather than half-run.
    if rows.is_empty() {
        return Err(vec![Problem::new(
            "",
            "no rows: a data file gives one iteration per row",
        )]);
    }
    Ok(rows)
}

fn json_rows(text: &str) -> Result<Vec<Vars>, Vec<Problem>> {
    let doc: Value = serde_json::from_str(text).map_err(|e| vec![super::syntax_problem(&e)])?;
    let Value::Array(items) = &doc else {
        let mut problems = vec![Problem::new(
            "$",
            format!(
                "expected an array of objects (one per iteration), found {}",
                super::collection::kind(&doc)
            ),
        )];
        locate::Locator::new(text).locate(&mut problems);
        return Err(problems);
    };
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Object(o) => rows.push(o.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            other => problems.push(Problem::new(
                locate::index("$", i),
                format!(
                    "expected an object (one iteration's variables), found {}",
                    super::collection::kind(other)
                ),
            )),
        }
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        locate::Locator::new(text).locate(&mut problems);
        Err(problems)
    }
}

fn csv_rows(text: &str) -> Result<Vec<Vars>, Vec<Problem>> {
    // Flexible so that the reader keeps going past a ragged row: every one is
    // reported, with its line, instead of only the first.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let at = |p: Option<&csv::Position>, problem: Problem| match p {
        Some(p) => problem.at(usize::try_from(p.line()).unwrap_or(usize::MAX), 1),
        None => problem,
    };
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(vec![at(
                e.position(),
                Problem::new("", format!("invalid CSV: {e}")),
            )])
        }
    };
    let mut problems = Vec::new();
    for (i, name) in headers.iter().enumerate() {
        if name.trim().is_empty() {
            problems
                .push(Problem::new("", format!("header column {} has no name", i + 1)).at(1, 1));
        }
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(at(
                    e.position(),
                    Problem::new("", format!("invalid CSV: {e}")),
                ));
                continue;
            }
        };
        if record.len() != headers.len() {
            problems.push(at(
                record.position(),
                Problem::new(
                    "",
                    format!(
                        "this row has {} field(s), the header row has {}",
                        record.len(),
                        headers.len()
                    ),
                ),
            ));
            continue;
        }
        // CSV has no types: every value is a string, as in newman.
        rows.push(
            headers
                .iter()
                .zip(record.iter())
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect(),
        );
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_csv_rows() {
        let rows = load_data(r#"[{"id": 1, "name": "a"}, {"id": 2}]"#, DataFormat::Json).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].get("id"), Some(&Value::from(1)));
        assert_eq!(rows[1].get_str("id").as_deref(), Some("2"));
        let rows = load_data("\u{feff}id,name\n1,\"a, b\"\n2,c\n", DataFormat::Csv).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].get_str("name").as_deref(), Some("a, b"));
        assert_eq!(rows[1].get("id"), Some(&Value::from("2")));
    }

    #[test]
    fn problems_are_located() {
        let e = load_data("[\n {\"a\": 1},\n 5,\n \"x\"\n]", DataFormat::Json).unwrap_err();
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "3:2: $[1]: expected an object (one iteration's variables), found a number",
                "4:2: $[2]: expected an object (one iteration's variables), found a string",
            ]
        );
        let e = load_data("{\"a\": 1}", DataFormat::Json).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "1:1: $: expected an array of objects (one per iteration), found an object"
        );
        let e = load_data("[{\"a\": 1},", DataFormat::Json).unwrap_err();
        assert_eq!(e[0].line, Some(1));
        let e = load_data("a,b\n1,2\n3\n4,5,6\n", DataFormat::Csv).unwrap_err();
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "3:1: this row has 1 field(s), the header row has 2",
                "4:1: this row has 3 field(s), the header row has 2",
            ]
        );
        assert!(load_data("a,b\n", DataFormat::Csv).is_err());
        assert!(load_data("[]", DataFormat::Json).is_err());
    }

    #[test]
    fn format_from_name_or_text() {
        assert_eq!(DataFormat::of(Path::new("d.CSV"), "["), DataFormat::Csv);
        assert_eq!(DataFormat::of(Path::new("d.json"), "a,b"), DataFormat::Json);
        assert_eq!(
            DataFormat::of(Path::new("d.txt"), " [{}]"),
            DataFormat::Json
        );
        assert_eq!(DataFormat::of(Path::new("d"), "a,b"), DataFormat::Csv);
    }
}
