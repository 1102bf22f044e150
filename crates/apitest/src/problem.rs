//! [`Problem`]: one thing wrong with an input file (a suite, a collection, an
//! environment), located by a path inside the document and, when known, by line
//! and column in the text.
//!
//! Loaders return every problem they find at once rather than stopping at the
//! first, so that one edit-and-retry cycle fixes a whole file.

use std::fmt;

/// One problem in an input document.
///
/// Its [`Display`](fmt::Display) form is `line:column: path: message` (parts that
/// are unknown are left out); the caller prefixes the file name, which gives the
/// `file:line:column: …` form that editors and terminals turn into links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the document, e.g. `$.item[2].request.url`; empty for the
    /// document as a whole (a syntax error, an empty file).
    pub path: String,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based.
    pub column: Option<usize>,
    pub message: String,
}

impl Problem {
    /// A problem at `path`, not yet located in the text.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// The same problem, located at `line:column`.
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// The `file:line:column: path: message` form.
    pub fn with_file(&self, file: &str) -> String {
        match self.line {
            Some(_) => format!("{file}:{self}"),
            None => format!("{file}: {self}"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{line}:{column}: ")?,
            (Some(line), None) => write!(f, "{line}: ")?,
            _ => {}
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

/// Renders problems one per line, each prefixed with `file`.
pub fn render(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.with_file(file))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_leaves_out_what_is_unknown() {
        let p = Problem::new("$.item[0]", "no request").at(3, 5);
        assert_eq!(p.to_string(), "3:5: $.item[0]: no request");
        assert_eq!(p.with_file("c.json"), "c.json:3:5: $.item[0]: no request");
        assert_eq!(Problem::new("", "empty").to_string(), "empty");
        assert_eq!(Problem::new("$.a", "bad").to_string(), "$.a: bad");
        assert_eq!(
            Problem::new("$.a", "bad").with_file("e.json"),
            "e.json: $.a: bad"
        );
    }
}
