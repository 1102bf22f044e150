//! Text clean-up shared by the renderers: test names and output come from arbitrary
//! programs (binary garbage, terminal colours) and must not break the formats they
//! are embedded in.

use std::borrow::Cow;

const ESC: char = '\u{1b}';

/// Whether `c` must be dropped: characters XML 1.0 forbids (C0 controls but tab,
/// newline and carriage return; U+FFFE, U+FFFF) plus DEL and the C1 controls, which
/// XML tolerates but which are invisible garbage in every format we write.
fn is_unwanted(c: char) -> bool {
    (c < ' ' && !matches!(c, '\t' | '\n' | '\r'))
        || ('\u{7f}'..='\u{9f}').contains(&c)
        || c == '\u{fffe}'
        || c == '\u{ffff}'
}

/// `s` without ANSI escape sequences and without [unwanted](is_unwanted) characters.
///
/// Escape sequences are removed whole rather than just their ESC byte, because a
/// coloured test log would otherwise be littered with `[31m`.
pub(crate) fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unwanted) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ESC {
            match chars.next() {
                // CSI: parameters and intermediates, then one final byte in @..~.
                Some('[') => {
                    for p in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&p) {
                            break;
                        }
                    }
                }
                // OSC (window titles, hyperlinks): up to BEL or ESC \.
                Some(']') => {
                    while let Some(p) = chars.next() {
                        if p == '\u{7}' {
                            break;
                        }
                        if p == ESC {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                // Any other escape is ESC plus one character.
                _ => {}
            }
        } else if !is_unwanted(c) {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`clean`] text on one line: each run of line breaks and tabs becomes one space,
/// ends trimmed. For line-oriented formats (TAP lines, one-line attributes).
pub(crate) fn one_line(s: &str) -> String {
    let cleaned = clean(s);
    let mut out = String::with_capacity(cleaned.len());
    let mut in_break = false;
    for c in cleaned.chars() {
        if matches!(c, '\n' | '\r' | '\t') {
            if !in_break {
                out.push(' ');
            }
            in_break = true;
        } else {
            out.push(c);
            in_break = false;
        }
    }
    out.trim().to_string()
}

/// The first non-empty line of `s`, trimmed.
pub(crate) fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Milliseconds as seconds with three decimals, e.g. `1.005`.
pub(crate) fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Text written in pieces to an [`io::Write`](std::io::Write), 64 KiB at a
/// time, so a renderer of a million cases never holds its whole output. The
/// first write error is kept and returned by [`Out::finish`].
pub(crate) struct Out<'a> {
    buf: String,
    w: &'a mut dyn std::io::Write,
    err: Option<std::io::Error>,
}

const OUT_CHUNK: usize = 64 * 1024;

impl<'a> Out<'a> {
    pub(crate) fn new(w: &'a mut dyn std::io::Write) -> Self {
        Out {
            buf: String::with_capacity(OUT_CHUNK + 1024),
            w,
            err: None,
        }
    }

    pub(crate) fn push_str(&mut self, s: &str) {
        self.buf.push_str(s);
        if self.buf.len() >= OUT_CHUNK {
            self.flush();
        }
    }

    pub(crate) fn push(&mut self, c: char) {
        self.buf.push(c);
        if self.buf.len() >= OUT_CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.err.is_none() {
            if let Err(e) = self.w.write_all(self.buf.as_bytes()) {
                self.err = Some(e);
            }
        }
        self.buf.clear();
    }

    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        self.flush();
        match self.err.take() {
            Some(e) => Err(e),
            None => self.w.flush(),
        }
    }
}

/// What `write` writes, as a string (renderers write UTF-8 only).
pub(crate) fn render_to_string(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> String {
    let mut bytes = Vec::new();
    // Writing to memory does not fail.
    let _ = write(&mut bytes);
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_controls_and_ansi() {
        assert_eq!(clean("plain\ttext\n"), "plain\ttext\n");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
        assert_eq!(clean("\u{1b}[1;31mred\u{1b}[0m"), "red");
        assert_eq!(clean("a\u{0}b\u{7}c\u{7f}d\u{85}e\u{ffff}"), "abcde");
        assert_eq!(clean("\u{1b}]0;title\u{7}x"), "x");
        assert_eq!(clean("\u{1b}]8;;u\u{1b}\\x"), "x");
        assert_eq!(clean("end\u{1b}"), "end");
    }

    #[test]
    fn one_line_and_secs() {
        assert_eq!(one_line("  a\nb\r\n\tc "), "a b c");
        assert_eq!(first_line("\n  first \nsecond"), "first");
        assert_eq!(secs(0), "0.000");
        assert_eq!(secs(1005), "1.005");
        assert_eq!(secs(61_234), "61.234");
    }
}
