//! The vocabulary every other Testbed crate speaks: agents and their plugins,
//! tasks, users, the agent wire protocol and the store key layout.
//!
//! Nothing here does I/O, so the model can be used by the server, the agent,
//! the CLI and tests alike without pulling in a runtime.

pub mod agent;
pub mod keys;
pub mod plan;
pub mod protocol;
pub mod run;
pub mod schema;
pub mod task;
pub mod template;
pub mod user;
pub mod yaml;

/// Current time as an RFC 3339 timestamp in UTC, the format of every time
/// field Testbed stores or returns.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// 1-based line and column (in characters) of byte offset `at` in `text`,
/// as config errors print them. An offset past the end or inside a
/// character counts from the character boundary before it.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = (0..=at.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A certificate's SHA-256 digest as printed by the server beside the join
/// token (upper-case hex pairs joined by `:`, as openssl prints it) and
/// accepted by agents as `--server-fingerprint`.
pub fn format_fingerprint(sha256: &[u8]) -> String {
    sha256
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // `é` is two bytes: the `=` after it is the fourth character.
        assert_eq!(line_col(text, 10), (2, 4));
        // Inside `é` counts from its start; past the end from the end.
        assert_eq!(line_col(text, 8), (2, 2));
        assert_eq!(line_col(text, 999), (3, 1));
    }
}
