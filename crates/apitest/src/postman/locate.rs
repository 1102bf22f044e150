//! Maps a JSON path (`$.item[0].request.url`) to the line and column where that
//! value starts in the text.
//!
//! serde_json forgets positions once a document is parsed, and validating a
//! `Value` is what lets every problem be reported at once; so the positions come
//! from a second, purely lexical pass over text that serde_json already accepted.

use std::collections::HashMap;

use crate::problem::Problem;

/// The path of key `key` inside the object at `parent`.
pub(crate) fn key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        format!("{parent}.{key}")
    } else {
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("\"{key}\""));
        format!("{parent}[{quoted}]")
    }
}

/// The path of element `index` inside the array at `parent`.
pub(crate) fn index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Where each value of a JSON text starts, by path.
pub(crate) struct Locator {
    spots: HashMap<String, (usize, usize)>,
}

impl Locator {
    pub(crate) fn new(text: &str) -> Self {
        let mut scan = Scan {
            b: text.as_bytes(),
            i: 0,
            line: 1,
            col: 1,
            spots: HashMap::new(),
        };
        // A malformed text only loses positions, never the problems themselves.
        let _ = scan.value("$".to_string());
        Locator { spots: scan.spots }
    }

    /// The position of `path`, or of its nearest ancestor present in the text
    /// (a missing field is reported where its object starts).
    pub(crate) fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(spot) = self.spots.get(p) {
                return Some(*spot);
            }
            p = parent(p)?;
        }
    }

    /// Fills in the line and column of every problem that has a path.
    pub(crate) fn locate(&self, problems: &mut [Problem]) {
        for p in problems.iter_mut().filter(|p| p.line.is_none()) {
            if let Some((line, col)) = self.find(&p.path) {
                p.line = Some(line);
                p.column = Some(col);
            }
        }
    }
}

fn parent(path: &str) -> Option<&str> {
    if path == "$" || path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        // A quoted key may itself contain `[`; search for the bracket that opens
        // the last segment, which is followed by a digit or a quote.
        let bytes = path.as_bytes();
        let mut i = path.len() - 1;
        while i > 0 {
            i -= 1;
            if bytes[i] == b'['
                && bytes
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'"')
            {
                return Some(&path[..i]);
            }
        }
        None
    } else {
        path.rfind('.').map(|i| &path[..i])
    }
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
    col: usize,
    spots: HashMap<String, (usize, usize)>,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.i += 1;
            if c == b'\n' {
                self.line += 1;
                self.col = 1;
            } else if c & 0xC0 != 0x80 {
                // Columns count characters, not UTF-8 continuation bytes.
                self.col += 1;
            }
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.bump();
        }
    }

    fn value(&mut self, path: String) -> Option<()> {
        self.ws();
        self.spots.insert(path.clone(), (self.line, self.col));
        match self.peek()? {
            b'{' => {
                self.bump();
                self.ws();
                if self.peek()? == b'}' {
                    self.bump();
                    return Some(());
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    if self.peek()? != b':' {
                        return None;
                    }
                    self.bump();
                    self.value(key(&path, &k))?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.bump(),
                        b'}' => {
                            self.bump();
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.bump();
                self.ws();
                if self.peek()? == b']' {
                    self.bump();
                    return Some(());
                }
                let mut n = 0;
                loop {
                    self.value(index(&path, n))?;
                    n += 1;
                    self.ws();
                    match self.peek()? {
                        b',' => self.bump(),
                        b']' => {
                            self.bump();
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                while self.peek().is_some_and(|c| {
                    !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                }) {
                    self.bump();
                }
                Some(())
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i;
        self.bump();
        loop {
            match self.peek()? {
                b'\\' => {
                    self.bump();
                    self.bump();
                }
                b'"' => {
                    self.bump();
                    break;
                }
                _ => self.bump(),
            }
        }
        let raw = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        serde_json::from_str(raw).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_and_falls_back_to_ancestors() {
        let text = "{\n  \"item\": [\n    {\"name\": \"é\", \"request\": {}},\n    {\"a b\": [1, 2]}\n  ]\n}";
        let l = Locator::new(text);
        assert_eq!(l.find("$"), Some((1, 1)));
        assert_eq!(l.find("$.item"), Some((2, 11)));
        assert_eq!(l.find("$.item[0].name"), Some((3, 14)));
        assert_eq!(l.find("$.item[0].request"), Some((3, 30)));
        assert_eq!(l.find("$.item[0].request.url"), Some((3, 30)));
        assert_eq!(l.find("$.item[1][\"a b\"][1]"), Some((4, 17)));
        assert_eq!(key("$", "a b"), "$[\"a b\"]");
        assert_eq!(key("$", "ok_1"), "$.ok_1");
    }
}
