//! The one way YAML from outside (plans, API suites, performance plans, TAP
//! diagnostics, expectation files) is parsed: bounded before it costs anything.
//!
//! YAML lets a small text describe a huge value: an anchor referenced many
//! times is copied at every reference ("billion laughs"), and `[[[[…` costs
//! the underlying libyaml parser time quadratic in its depth. So before
//! `serde_norway` builds any value, [`check`] walks the document's event
//! stream once (with `yaml-rust2`, whose event parser does not expand aliases
//! and stops at the first event over a limit) and counts what the value would
//! cost with every alias expanded. The walk is linear in the input: an anchored
//! node's expanded size is remembered when the node ends, so an alias costs one
//! table look-up, however much it stands for.
//!
//! The limits ([`Limits::DEFAULT`]):
//!
//! | limit | default | why |
//! |---|---|---|
//! | `max_bytes` | 4 MiB | bounds the parse itself |
//! | `max_depth` | 100 | nesting of sequences and mappings; libyaml is quadratic in it, serde recursive |
//! | `max_aliases` | 1,000 | references (`*name`) in one input |
//! | `max_nodes` | 100,000 | scalars, sequences and mappings, counted as if aliases were expanded |
//! | `max_scalar_bytes` | 16 MiB | bytes of scalars, counted as if aliases were expanded |
//!
//! [`Limits::LARGE`] is for documents a user points the CLI at on purpose (an
//! OpenAPI document of a large API), never for what reaches the server.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::Marker;

/// Bounds on one YAML input. Every parse of outside YAML goes through one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Size of the input text in bytes.
    pub max_bytes: usize,
    /// Sequences and mappings inside each other (the top-level collection is 1).
    pub max_depth: usize,
    /// Alias references (`*name`).
    pub max_aliases: usize,
    /// Nodes (scalars, sequences, mappings) with every alias expanded.
    pub max_nodes: u64,
    /// Bytes of scalar text with every alias expanded.
    pub max_scalar_bytes: u64,
}

impl Limits {
    /// The limits Testbed applies to every plan, suite and diagnostic block.
    pub const DEFAULT: Limits = Limits {
        max_bytes: 4 * 1024 * 1024,
        max_depth: 100,
        max_aliases: 1_000,
        max_nodes: 100_000,
        max_scalar_bytes: 16 * 1024 * 1024,
    };
}

impl Limits {
    /// For a document a user points the CLI at on purpose, such as a vendor's
    /// OpenAPI document (large APIs run to millions of nodes): still bounded,
    /// so a hostile URL cannot exhaust the machine.
    pub const LARGE: Limits = Limits {
        max_bytes: 64 * 1024 * 1024,
        max_depth: 100,
        max_aliases: 100_000,
        max_nodes: 20_000_000,
        max_scalar_bytes: 256 * 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Which limit an input broke, or why the walk could not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitKind {
    #[error("YAML input is {size} bytes, more than {limit} (limit)")]
    TooLarge { size: usize, limit: usize },
    #[error("YAML nests deeper than {limit} levels (limit)")]
    TooDeep { limit: usize },
    #[error("YAML has more than {limit} aliases (limit)")]
    TooManyAliases { limit: usize },
    #[error("YAML aliases expand to more than {limit} nodes (limit)")]
    TooManyNodes { limit: u64 },
    #[error("YAML aliases expand to more than {limit} bytes of text (limit)")]
    TooManyBytes { limit: u64 },
    #[error("YAML alias refers to a node that contains it")]
    RecursiveAlias,
    #[error("{0}")]
    Syntax(String),
}

/// A broken limit (or a syntax error found while checking), at a 1-based
/// line and column of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {kind}")]
pub struct LimitError {
    pub line: usize,
    pub column: usize,
    pub kind: LimitKind,
}

impl LimitError {
    fn at(m: &Marker, kind: LimitKind) -> LimitError {
        LimitError {
            line: m.line(),
            column: m.col() + 1,
            kind,
        }
    }
}

/// Why bounded YAML could not be turned into a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Yaml(#[from] serde_norway::Error),
}

impl Error {
    /// 1-based line and column, when known.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            Error::Limit(l) => Some((l.line, l.column)),
            Error::Yaml(e) => e.location().map(|l| (l.line(), l.column())),
        }
    }

    /// The message without the location.
    pub fn message(&self) -> String {
        match self {
            Error::Limit(l) => l.kind.to_string(),
            Error::Yaml(e) => e.to_string(),
        }
    }
}

struct Open {
    anchor: usize,
    nodes_before: u64,
    bytes_before: u64,
}

/// A tagged node (`!name value`) may become one more level holding the tag
/// as a key (serde_norway does so for untyped values): counted as a node
/// and its text.
fn tag_cost(tag: &Option<Tag>) -> (u64, u64) {
    match tag {
        Some(t) => (1, (t.handle.len() + t.suffix.len()) as u64),
        None => (0, 0),
    }
}

/// Walks the event stream of `text` and fails at the first event that breaks
/// a limit, before any value is built. Time and memory are linear in the input.
pub fn check(text: &str, limits: &Limits) -> Result<(), LimitError> {
    if text.len() > limits.max_bytes {
        return Err(LimitError {
            line: 1,
            column: 1,
            kind: LimitKind::TooLarge {
                size: text.len(),
                limit: limits.max_bytes,
            },
        });
    }
    let mut parser = Parser::new_from_str(text);
    let mut open: Vec<Open> = Vec::new();
    // Expanded (nodes, scalar bytes) of each finished anchored node.
    let mut anchored: HashMap<usize, (u64, u64)> = HashMap::new();
    let mut nodes: u64 = 0;
    let mut bytes: u64 = 0;
    let mut aliases: usize = 0;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| {
            // yaml-rust2's scanner stops flow nesting at 255 levels on its
            // own, before the parser hands us the events we count.
            let kind = if e.info().contains("recursion limit") {
                LimitKind::TooDeep {
                    limit: limits.max_depth,
                }
            } else {
                LimitKind::Syntax(e.info().to_string())
            };
            LimitError::at(e.marker(), kind)
        })?;
        match event {
            Event::StreamEnd => return Ok(()),
            Event::Scalar(value, _, anchor, tag) => {
                let (tn, tb) = tag_cost(&tag);
                let (n, b) = (1 + tn, value.len() as u64 + tb);
                nodes += n;
                bytes += b;
                if anchor != 0 {
                    anchored.insert(anchor, (n, b));
                }
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                open.push(Open {
                    anchor,
                    nodes_before: nodes,
                    bytes_before: bytes,
                });
                let (tn, tb) = tag_cost(&tag);
                nodes += 1 + tn;
                bytes += tb;
                if open.len() > limits.max_depth {
                    return Err(LimitError::at(
                        &mark,
                        LimitKind::TooDeep {
                            limit: limits.max_depth,
                        },
                    ));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(o) = open.pop() {
                    if o.anchor != 0 {
                        anchored.insert(o.anchor, (nodes - o.nodes_before, bytes - o.bytes_before));
                    }
                }
            }
            Event::Alias(id) => {
                aliases += 1;
                if aliases > limits.max_aliases {
                    return Err(LimitError::at(
                        &mark,
                        LimitKind::TooManyAliases {
                            limit: limits.max_aliases,
                        },
                    ));
                }
                // Not yet finished: the alias sits inside its own anchor.
                let Some(&(n, b)) = anchored.get(&id) else {
                    return Err(LimitError::at(&mark, LimitKind::RecursiveAlias));
                };
                nodes += n;
                bytes += b;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {}
        }
        if nodes > limits.max_nodes {
            return Err(LimitError::at(
                &mark,
                LimitKind::TooManyNodes {
                    limit: limits.max_nodes,
                },
            ));
        }
        if bytes > limits.max_scalar_bytes {
            return Err(LimitError::at(
                &mark,
                LimitKind::TooManyBytes {
                    limit: limits.max_scalar_bytes,
                },
            ));
        }
    }
}

/// Checks `text` against [`Limits::DEFAULT`], then deserializes it.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    from_str_with(text, &Limits::DEFAULT)
}

/// Checks `text` against `limits`, then deserializes it.
pub fn from_str_with<T: DeserializeOwned>(text: &str, limits: &Limits) -> Result<T, Error> {
    check(text, limits)?;
    Ok(serde_norway::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            max_bytes: 1000,
            max_depth: 3,
            max_aliases: 2,
            max_nodes: 10,
            max_scalar_bytes: 20,
        }
    }

    fn kind(text: &str) -> Option<LimitKind> {
        check(text, &small()).err().map(|e| e.kind)
    }

    #[test]
    fn size_at_the_boundary() {
        let l = Limits {
            max_bytes: 8,
            ..Limits::DEFAULT
        };
        assert!(check("a: 12345", &l).is_ok());
        let e = check("a: 123456", &l).unwrap_err();
        assert_eq!(e.kind, LimitKind::TooLarge { size: 9, limit: 8 });
        assert_eq!(
            e.to_string(),
            "1:1: YAML input is 9 bytes, more than 8 (limit)"
        );
    }

    #[test]
    fn depth_at_the_boundary() {
        assert_eq!(kind("[[[1]]]"), None);
        assert_eq!(kind("[[[[1]]]]"), Some(LimitKind::TooDeep { limit: 3 }));
        assert_eq!(kind("a:\n  b:\n    - 1\n"), None);
        let e = check("a:\n  b:\n    - c: 1\n", &small()).unwrap_err();
        assert_eq!(e.kind, LimitKind::TooDeep { limit: 3 });
        assert_eq!(e.line, 3);
    }

    #[test]
    fn aliases_at_the_boundary() {
        assert_eq!(kind("a: &x 1\nb: *x\nc: *x\n"), None);
        let e = check("a: &x 1\nb: *x\nc: *x\nd: *x\n", &small()).unwrap_err();
        assert_eq!(e.kind, LimitKind::TooManyAliases { limit: 2 });
        assert_eq!((e.line, e.column), (4, 4));
    }

    #[test]
    fn expanded_nodes_at_the_boundary() {
        // outer 1 + anchored [1 + 2] + alias 3 + 3 more scalars = 10
        assert_eq!(kind("[&x [1, 2], *x, 3, 4, 5]"), None);
        let e = check("[&x [1, 2], *x, 3, 4, 5, 6]", &small()).unwrap_err();
        assert_eq!(e.kind, LimitKind::TooManyNodes { limit: 10 });
        assert_eq!((e.line, e.column), (1, 26));
        // Aliases inside an anchor count as expanded when that anchor is used.
        let l = Limits {
            max_nodes: 1_000,
            max_aliases: 100,
            ..Limits::DEFAULT
        };
        let nested = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n";
        let e = check(nested, &l).unwrap_err();
        assert_eq!(e.kind, LimitKind::TooManyNodes { limit: 1_000 });
        assert_eq!(e.line, 3);
    }

    #[test]
    fn expanded_bytes_at_the_boundary() {
        // 10 bytes of scalar text, then 10 more through the alias: 20.
        assert_eq!(kind("&x 0123456789: *x\n"), None);
        assert_eq!(
            kind("&x 0123456789: [*x, a]\n"),
            Some(LimitKind::TooManyBytes { limit: 20 })
        );
    }

    #[test]
    fn tags_count_as_a_node_and_their_text() {
        // outer 1 + 8 scalars + tag 1 = 10 nodes; `!` + `t` = 2 more bytes.
        assert_eq!(kind("[!t 1, 2, 3, 4, 5, 6, 7, 8]"), None);
        assert_eq!(
            kind("[!t 1, 2, 3, 4, 5, 6, 7, 8, 9]"),
            Some(LimitKind::TooManyNodes { limit: 10 })
        );
    }

    #[test]
    fn recursive_alias_is_refused() {
        assert_eq!(kind("&a [*a]"), Some(LimitKind::RecursiveAlias));
    }

    #[test]
    fn syntax_errors_are_located() {
        let e = check("a: [1, 2\nb: 3\n", &Limits::DEFAULT).unwrap_err();
        assert!(matches!(e.kind, LimitKind::Syntax(_)), "{e}");
        assert!(e.line >= 1);
    }

    #[test]
    fn alias_bomb_is_refused_quickly() {
        let mut text = String::from("a: &a [");
        text.push_str(&"x,".repeat(10_000));
        text.push_str("]\nb: [");
        text.push_str(&"*a,".repeat(50_000));
        text.push_str("]\n");
        let e = check(&text, &Limits::DEFAULT).unwrap_err();
        assert_eq!(e.kind, LimitKind::TooManyNodes { limit: 100_000 });
        // The ninth alias of the 10,002-node anchor crosses the limit.
        assert_eq!(
            e.to_string(),
            "2:29: YAML aliases expand to more than 100000 nodes (limit)"
        );
        let r: Result<serde_json::Value, _> = from_str(&text);
        assert!(matches!(r, Err(Error::Limit(_))));
    }

    #[test]
    fn deep_nesting_is_refused_at_the_limit() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = check(&text, &Limits::DEFAULT).unwrap_err();
        assert_eq!(e.kind, LimitKind::TooDeep { limit: 100 });
        assert_eq!(e.line, 1);
        let compact = format!("{}a\n", "- ".repeat(100_000));
        let e = check(&compact, &Limits::DEFAULT).unwrap_err();
        assert_eq!(e.kind, LimitKind::TooDeep { limit: 100 });
    }

    #[test]
    fn json_nesting_stays_bounded_by_serde_json() {
        // JSON from outside (request bodies, agent messages, reports) relies
        // on serde_json's recursion limit (128); the `unbounded_depth`
        // feature would lift it for the whole workspace.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let e = serde_json::from_str::<serde_json::Value>(&deep).unwrap_err();
        assert!(e.to_string().contains("recursion limit exceeded"), "{e}");
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(serde_json::from_str::<serde_json::Value>(&ok).is_ok());
    }

    #[test]
    fn ordinary_yaml_still_parses() {
        let v: serde_json::Value =
            from_str("base: &b {image: alpine, retries: 2}\nsteps:\n  - <<: *b\n    id: one\n")
                .unwrap();
        assert_eq!(v["base"]["retries"], 2);
    }
}
