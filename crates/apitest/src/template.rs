//! `{{ … }}` templates in suites: variables, captures, iteration items,
//! environment variables, generators, filters, and expressions on them.
//!
//! ```text
//! {{ name }}  {{ item.key }}  {{ env.DOCKER_HOST | default("unix:///var/run/docker.sock") }}
//! {{ key | base64 }}  {{ prefix ~ 'a' | base64 }}  {{ $uuid }}  {{ $timestamp }}  {{ $random_int }}
//! {{ rev + 1 }}  {{ rev | int * 2 }}  {{ (a + b) % 7 }}  {{ count >= 3 and not done }}
//! ```
//!
//! A string that is exactly one template keeps the value's JSON type, so
//! `count: "{{ n }}"` stays a number; otherwise values are interpolated as
//! text. Templates are parsed when a suite loads, so a typo in a filter name or
//! an operator without its operand is a load error with a line and column, not
//! a failure halfway through a run.
//!
//! # Expressions
//!
//! Operators, loosest first: `or`; `and`; `not`; comparisons
//! `== != < <= > >=` (they do not chain); `| filter`; `~` (text join); `+ -`; `* / %`;
//! unary `-`. Parentheses group. A filter applies to everything before it
//! back to the nearest comparison, `and`/`or`/`not` or opening parenthesis,
//! and what follows it goes on with the filtered value: `prefix ~ 'a' |
//! base64` encodes the joined text (as suites have always written it) and
//! `rev | int + 1` adds one to the integer.
//!
//! Arithmetic is on 64-bit signed integers, checked (an overflow is an error,
//! never a wrap), or on floats when either side is one; `7 / 2` is `3`
//! (integer division truncates) and `7 / 2.0` is `3.5`. A string holding a
//! number counts as that number, because gRPC's JSON mapping writes 64-bit
//! integers as strings (`"revision": "5"`), so `rev + 1` works on a captured
//! revision. Any other string is an error naming it: text is joined with `~`
//! only, never with `+`. Comparisons and `and`/`or`/`not` give booleans;
//! `and`/`or`/`not` take booleans only, and `and`/`or` stop early.
//!
//! Names may contain `-` (`item.content-type`), so subtraction needs spaces:
//! `rev - 1`, not `rev-1`. Each expression is bounded (length and nesting),
//! so hostile input cannot exhaust the stack.

use std::cmp::Ordering;

use base64::Engine;
use serde_json::{Map, Number, Value};
use testbed_core::template::{self as plan_template, Segment};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` in {0:?}")]
    Unclosed(String),
    #[error("bad template {0:?}: {1}")]
    Syntax(String, String),
    #[error("`{0}` is not defined{hint}", hint = undefined_hint(.0))]
    Undefined(String),
    #[error("filter `{0}`: {1}")]
    Filter(String, String),
    /// An operator met values it cannot work on, overflowed, or divided by
    /// zero: the expression as written, and why.
    #[error("`{{{{ {0} }}}}`: {1}")]
    Eval(String, String),
}

/// Names may hold `-`, so `rev-1` reads as one name; say how to subtract.
fn undefined_hint(name: &str) -> String {
    let last = name.rsplit(['.', ']']).next().unwrap_or(name);
    match last.split_once('-') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => format!(
            " (a name may contain `-`; to subtract, put spaces around it: `{} - {b}`)",
            &name[..name.len() - b.len() - 1]
        ),
        _ => String::new(),
    }
}

/// The variables a template sees: a JSON object whose keys are the top-level
/// names (`vars`, captures, `item`, `env`).
pub type Scope = Map<String, Value>;

/// The longest expression between `{{` and `}}`, in bytes.
pub const MAX_EXPR_LEN: usize = 1000;
/// The deepest an expression may nest (parentheses, operators, filters).
pub const MAX_DEPTH: usize = 48;

const GENERATORS: [&str; 4] = ["$uuid", "$timestamp", "$timestamp_ms", "$random_int"];
const FILTERS: [&str; 10] = [
    "base64",
    "base64_decode",
    "default",
    "json",
    "upper",
    "lower",
    "urlencode",
    "string",
    "int",
    "float",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Join,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    fn of(t: &Tok) -> Option<BinOp> {
        Some(match t {
            Tok::Word(w) if w == "or" => BinOp::Or,
            Tok::Word(w) if w == "and" => BinOp::And,
            Tok::Op(o) => match *o {
                "==" => BinOp::Eq,
                "!=" => BinOp::Ne,
                "<" => BinOp::Lt,
                "<=" => BinOp::Le,
                ">" => BinOp::Gt,
                ">=" => BinOp::Ge,
                "~" => BinOp::Join,
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                "%" => BinOp::Rem,
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Binding power: higher binds tighter.
    fn power(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => CMP,
            BinOp::Join => 6,
            BinOp::Add | BinOp::Sub => 7,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 8,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Join => "~",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

/// Comparisons; `not` parses its operand from here up.
const CMP: u8 = 4;
/// `| filter`: looser than `~` and arithmetic, tighter than comparisons.
const FILTER: u8 = 5;
/// Unary minus binds tightest.
const UNARY: u8 = 9;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A variable path, as written and parsed (the same paths as plans').
    Path(String, Vec<Segment>),
    Literal(Value),
    Generator(String),
    Neg(Box<Node>),
    Not(Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>),
    Filter(Box<Node>, String, Option<Value>),
}

/// One parsed `{{ … }}`: the tree and the text it came from, for messages.
#[derive(Debug, Clone, PartialEq)]
struct Expr {
    text: String,
    node: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A number, or a JSON list or object (`default([])`).
    Lit(Value),
    Str(String),
    /// A name or a path (`item.list[1].x`), or a keyword.
    Word(String),
    Generator(String),
    Op(&'static str),
}

impl Tok {
    fn show(&self) -> String {
        match self {
            Tok::Lit(v) => v.to_string(),
            Tok::Str(s) => format!("{s:?}"),
            Tok::Word(w) | Tok::Generator(w) => w.clone(),
            Tok::Op(o) => o.to_string(),
        }
    }
}

const OPS: [&str; 17] = [
    "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "~", "|", "(", ")", ",", "=",
];

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn tokens(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let Some(c) = rest.chars().next() else { break };
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        if c == '\'' {
            let end = rest[1..]
                .find('\'')
                .ok_or("a string opened with ' is not closed")?;
            out.push(Tok::Str(rest[1..1 + end].to_string()));
            i += end + 2;
            continue;
        }
        if c == '"' {
            // JSON escapes; find the closing quote not preceded by an escape.
            let mut escaped = false;
            let mut closed = None;
            for (k, ch) in rest.char_indices().skip(1) {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == '"' {
                    closed = Some(k);
                    break;
                }
            }
            let end = closed.ok_or("a string opened with \" is not closed")?;
            let s: String = serde_json::from_str(&rest[..=end])
                .map_err(|e| format!("bad string {}: {e}", &rest[..=end]))?;
            out.push(Tok::Str(s));
            i += end + 1;
            continue;
        }
        if c == '[' || c == '{' {
            // A JSON list or object: up to the bracket that closes it,
            // brackets inside strings aside.
            let mut depth = 0usize;
            let mut in_str = false;
            let mut escaped = false;
            let mut end = None;
            for (k, ch) in rest.char_indices() {
                match ch {
                    _ if escaped => escaped = false,
                    '\\' if in_str => escaped = true,
                    '"' => in_str = !in_str,
                    '[' | '{' if !in_str => depth += 1,
                    ']' | '}' if !in_str => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(k);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| format!("`{c}` is not closed"))?;
            let v: Value = serde_json::from_str(&rest[..=end])
                .map_err(|e| format!("bad JSON literal {}: {e}", &rest[..=end]))?;
            out.push(Tok::Lit(v));
            i += end + 1;
            continue;
        }
        if c.is_ascii_digit() {
            let mut j = 0;
            let mut float = false;
            while j < rest.len() {
                let d = b[i + j];
                let prev = if j > 0 { b[i + j - 1] } else { 0 };
                if d.is_ascii_digit()
                    || (d == b'.' && !float && b.get(i + j + 1).is_some_and(u8::is_ascii_digit))
                    || ((d == b'e' || d == b'E') && j > 0)
                    || ((d == b'+' || d == b'-') && (prev == b'e' || prev == b'E'))
                {
                    float |= matches!(d, b'.' | b'e' | b'E');
                    j += 1;
                } else {
                    break;
                }
            }
            let lit = &rest[..j];
            let v = if float {
                lit.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("bad number {lit}"))?
            } else {
                Value::from(lit.parse::<i64>().map_err(|_| {
                    format!("integer {lit} is out of range (64-bit signed integers)")
                })?)
            };
            if rest[j..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                return Err(format!("bad number {}", &rest[..j + 1]));
            }
            out.push(Tok::Lit(v));
            i += j;
            continue;
        }
        if c == '$' || c.is_ascii_alphabetic() || c == '_' {
            // A path: names joined by `.`, with `[n]` indices.
            let mut j = c.len_utf8();
            while let Some(d) = rest[j..].chars().next() {
                if name_char(d) || (d == '.' && rest[j + 1..].starts_with(name_char)) {
                    j += 1;
                } else if d == '[' {
                    let close = rest[j..].find(']').ok_or("`[` without `]`")?;
                    j += close + 1;
                } else {
                    break;
                }
            }
            let w = &rest[..j];
            if w.starts_with('$') {
                out.push(Tok::Generator(w.to_string()));
            } else {
                out.push(Tok::Word(w.to_string()));
            }
            i += j;
            continue;
        }
        match OPS.iter().find(|o| rest.starts_with(**o)) {
            Some(&"=") => return Err("`=` is not an operator: compare with `==`".into()),
            Some(o) => {
                out.push(Tok::Op(o));
                i += o.len();
            }
            None if c == '!' => return Err("`!` is not an operator: negate with `not`".into()),
            None => return Err(format!("unexpected character `{c}`")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// What came before the current token, for "after `+`" messages.
    fn after(&self) -> String {
        match self.pos.checked_sub(2).and_then(|p| self.toks.get(p)) {
            Some(t) => format!(" after `{}`", t.show()),
            None => String::new(),
        }
    }

    /// Parses operators binding at least `min`; returns the tree and its depth.
    fn expr(&mut self, min: u8, depth: usize) -> Result<(Node, usize), String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let (mut lhs, mut d) = match self.next() {
            None => return Err(format!("expected a value{} at the end", self.after())),
            Some(Tok::Lit(v)) => (Node::Literal(v), 1),
            Some(Tok::Str(s)) => (Node::Literal(Value::String(s)), 1),
            Some(Tok::Generator(g)) => {
                if !GENERATORS.contains(&g.as_str()) {
                    return Err(format!(
                        "unknown generator `{g}` (known: {})",
                        GENERATORS.join(", ")
                    ));
                }
                (Node::Generator(g), 1)
            }
            Some(Tok::Op("(")) => {
                let (e, d) = self.expr(0, depth + 1)?;
                match self.next() {
                    Some(Tok::Op(")")) => (e, d),
                    Some(t) => return Err(format!("expected `)`, found `{}`", t.show())),
                    None => return Err("`(` is not closed".into()),
                }
            }
            Some(Tok::Op("-")) => {
                let (e, d) = self.expr(UNARY, depth + 1)?;
                // A literal `-5` stays a literal.
                match e {
                    Node::Literal(Value::Number(n)) => {
                        let neg = match (n.as_i64(), n.as_f64()) {
                            (Some(i), _) => i.checked_neg().map(Value::from),
                            (None, Some(f)) => Number::from_f64(-f).map(Value::Number),
                            _ => None,
                        };
                        match neg {
                            Some(v) => (Node::Literal(v), d),
                            None => return Err(format!("-{n} is out of range")),
                        }
                    }
                    e => (Node::Neg(Box::new(e)), d + 1),
                }
            }
            Some(Tok::Word(w)) if w == "not" => {
                let (e, d) = self.expr(CMP, depth + 1)?;
                (Node::Not(Box::new(e)), d + 1)
            }
            Some(Tok::Word(w)) => match w.as_str() {
                "true" => (Node::Literal(Value::Bool(true)), 1),
                "false" => (Node::Literal(Value::Bool(false)), 1),
                "null" => (Node::Literal(Value::Null), 1),
                "and" | "or" => return Err(format!("`{w}` needs a value before it")),
                _ => match plan_template::parse_path(&w) {
                    Ok(p) => (Node::Path(w, p), 1),
                    Err(plan_template::TemplateError::BadPath(_, why)) => {
                        return Err(format!("{w}: {why}"))
                    }
                    Err(e) => return Err(e.to_string()),
                },
            },
            Some(t) => {
                return Err(format!(
                    "expected a value{}, found `{}`",
                    self.after(),
                    t.show()
                ))
            }
        };
        let mut compared = false;
        while let Some(t) = self.peek() {
            if *t == Tok::Op("|") {
                if FILTER < min {
                    break;
                }
                self.pos += 1;
                let (name, arg) = self.filter()?;
                lhs = Node::Filter(Box::new(lhs), name, arg);
                d += 1;
            } else if let Some(op) = BinOp::of(t) {
                let p = op.power();
                if p < min {
                    break;
                }
                self.pos += 1;
                if p == CMP {
                    if compared {
                        return Err(format!(
                            "comparisons do not chain: write `a < b and b < c`, not `a < b {} c`",
                            op.symbol()
                        ));
                    }
                    compared = true;
                }
                let (rhs, rd) = self.expr(p + 1, depth + 1)?;
                lhs = Node::Bin(op, Box::new(lhs), Box::new(rhs));
                d = d.max(rd) + 1;
            } else {
                break;
            }
            if d > MAX_DEPTH {
                return Err(format!("nested deeper than {MAX_DEPTH} levels"));
            }
        }
        Ok((lhs, d))
    }

    /// `name` or `name(literal)` after a `|`.
    fn filter(&mut self) -> Result<(String, Option<Value>), String> {
        let name = match self.next() {
            Some(Tok::Word(w)) => w,
            Some(t) => {
                return Err(format!(
                    "expected a filter name after `|`, found `{}`",
                    t.show()
                ))
            }
            None => return Err("expected a filter name after `|`".into()),
        };
        if !FILTERS.contains(&name.as_str()) {
            return Err(format!(
                "unknown filter `{name}` (known: {})",
                FILTERS.join(", ")
            ));
        }
        let mut arg = None;
        if self.peek() == Some(&Tok::Op("(")) {
            self.pos += 1;
            let negative = self.peek() == Some(&Tok::Op("-"));
            if negative {
                self.pos += 1;
            }
            let v = match self.next() {
                Some(Tok::Lit(Value::Number(n))) if negative => n
                    .as_i64()
                    .and_then(i64::checked_neg)
                    .map(Value::from)
                    .or_else(|| {
                        n.as_f64()
                            .and_then(|f| Number::from_f64(-f))
                            .map(Value::Number)
                    }),
                Some(Tok::Lit(v)) => Some(v),
                Some(Tok::Str(s)) if !negative => Some(Value::String(s)),
                Some(Tok::Word(w)) if !negative => match w.as_str() {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    "null" => Some(Value::Null),
                    _ => None,
                },
                _ => None,
            };
            let v = v.ok_or("filter argument must be a literal")?;
            if self.next() != Some(Tok::Op(")")) {
                return Err("filter argument without `)`".into());
            }
            arg = Some(v);
        }
        if name == "default" && arg.is_none() {
            return Err("`default` needs a value: default(\"x\")".into());
        }
        Ok((name, arg))
    }
}

fn parse_expr(text: &str) -> Result<Expr, TemplateError> {
    let trimmed = text.trim();
    let bad = |why: String| TemplateError::Syntax(clip(trimmed), why);
    if trimmed.len() > MAX_EXPR_LEN {
        return Err(bad(format!(
            "longer than {MAX_EXPR_LEN} characters; split it into variables"
        )));
    }
    let toks = tokens(trimmed).map_err(bad)?;
    if toks.is_empty() {
        return Err(bad("empty expression".into()));
    }
    let mut p = Parser { toks, pos: 0 };
    let (node, _) = p.expr(0, 0).map_err(bad)?;
    if let Some(t) = p.peek() {
        let why = match t {
            Tok::Op(")") => "`)` without `(`".to_string(),
            t => format!(
                "unexpected `{}`{} (an operator missing?)",
                t.show(),
                p.toks
                    .get(p.pos.wrapping_sub(1))
                    .map(|b| format!(" after `{}`", b.show()))
                    .unwrap_or_default()
            ),
        };
        return Err(bad(why));
    }
    Ok(Expr {
        text: trimmed.to_string(),
        node,
    })
}

fn clip(s: &str) -> String {
    crate::check::clip(s, 120)
}

/// Checks every template in `s` without evaluating it.
pub fn check(s: &str) -> Result<(), TemplateError> {
    pieces(s).map(|_| ())
}

/// Checks every string inside a JSON value; on the first bad one, its path
/// below `v` (`message.key`, `[2]`; empty for `v` itself) and the problem.
pub fn check_value(v: &Value) -> Result<(), (String, TemplateError)> {
    walk(v, &mut |s| check(s))
}

/// Calls `f` on every string of `v`, stopping at the first error, which
/// comes back with the string's path below `v`.
fn walk(
    v: &Value,
    f: &mut dyn FnMut(&str) -> Result<(), TemplateError>,
) -> Result<(), (String, TemplateError)> {
    match v {
        Value::String(s) => f(s).map_err(|e| (String::new(), e)),
        Value::Array(a) => a.iter().enumerate().try_for_each(|(i, x)| {
            walk(x, f).map_err(|(p, e)| (format!("[{i}]{}", dotted(&p)), e))
        }),
        Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| walk(x, f).map_err(|(p, e)| (format!("{k}{}", dotted(&p)), e))),
        _ => Ok(()),
    }
}

/// `rest` as the continuation of a path: `.key…` or `[i]…`.
fn dotted(rest: &str) -> String {
    if rest.is_empty() || rest.starts_with('[') {
        rest.to_string()
    } else {
        format!(".{rest}")
    }
}

enum Piece<'a> {
    Text(&'a str),
    Expr(Expr),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(clip(s)))?;
        let inner = &after[..end];
        out.push(Piece::Expr(parse_expr(inner)?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Looks a path up; the scope is an object, so the first segment is a key.
fn lookup<'a>(scope: &'a Scope, path: &[Segment]) -> Option<&'a Value> {
    match path.split_first()? {
        (Segment::Key(k), rest) => plan_template::lookup(scope.get(k)?, rest),
        (Segment::Index(_), _) => None,
    }
}

/// A value, or the name that had none (so `default` can still supply one).
enum Val {
    Def(Value),
    Undef(String),
}

/// Why evaluation stopped, before the expression's text is attached.
enum Fail {
    Undefined(String),
    Filter(String, String),
    Other(String),
}

fn defined(v: Val) -> Result<Value, Fail> {
    match v {
        Val::Def(v) => Ok(v),
        Val::Undef(name) => Err(Fail::Undefined(name)),
    }
}

fn eval_node(n: &Node, scope: &Scope) -> Result<Val, Fail> {
    Ok(match n {
        Node::Literal(v) => Val::Def(v.clone()),
        Node::Path(text, p) => match lookup(scope, p) {
            Some(v) => Val::Def(v.clone()),
            None => Val::Undef(text.clone()),
        },
        Node::Generator(g) => Val::Def(generate(g)),
        Node::Neg(e) => {
            let v = defined(eval_node(e, scope)?)?;
            Val::Def(arith(BinOp::Sub, &Value::from(0), &v).map_err(|_| {
                Fail::Other(match number(&v) {
                    Some(Ok(Num::I(i))) => {
                        format!("integer overflow: -({i}) does not fit in 64 bits")
                    }
                    _ => format!("cannot negate {}", describe(&v)),
                })
            })?)
        }
        Node::Not(e) => Val::Def(Value::Bool(!boolean(
            &defined(eval_node(e, scope)?)?,
            "not",
        )?)),
        Node::Bin(op @ (BinOp::And | BinOp::Or), a, b) => {
            let left = boolean(&defined(eval_node(a, scope)?)?, op.symbol())?;
            // `and`/`or` stop early: the right side is not evaluated.
            if left == (*op == BinOp::Or) {
                return Ok(Val::Def(Value::Bool(left)));
            }
            Val::Def(Value::Bool(boolean(
                &defined(eval_node(b, scope)?)?,
                op.symbol(),
            )?))
        }
        Node::Bin(op, a, b) => {
            let a = defined(eval_node(a, scope)?)?;
            let b = defined(eval_node(b, scope)?)?;
            Val::Def(binary(*op, &a, &b).map_err(Fail::Other)?)
        }
        Node::Filter(e, name, arg) => {
            let v = eval_node(e, scope)?;
            if name == "default" {
                return Ok(match v {
                    Val::Def(Value::Null) | Val::Undef(_) => {
                        Val::Def(arg.clone().unwrap_or(Value::Null))
                    }
                    v => v,
                });
            }
            match v {
                // Undefined passes through the other filters to a `default`.
                Val::Undef(n) => Val::Undef(n),
                Val::Def(v) => Val::Def(apply(name, v).map_err(|e| match e {
                    TemplateError::Filter(f, m) => Fail::Filter(f, m),
                    other => Fail::Other(other.to_string()),
                })?),
            }
        }
    })
}

fn eval(e: &Expr, scope: &Scope) -> Result<Value, TemplateError> {
    match eval_node(&e.node, scope).and_then(defined) {
        Ok(v) => Ok(v),
        Err(Fail::Undefined(name)) => Err(TemplateError::Undefined(name)),
        Err(Fail::Filter(f, m)) => Err(TemplateError::Filter(f, m)),
        Err(Fail::Other(m)) => Err(TemplateError::Eval(clip(&e.text), m)),
    }
}

#[derive(Debug, Clone, Copy)]
enum Num {
    I(i64),
    F(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
}

/// A value as a number: JSON numbers, and strings holding one (gRPC's
/// int64-as-string). `None` when it is not numeric at all; `Err` when it is
/// an integer beyond 64-bit signed.
fn number(v: &Value) -> Option<Result<Num, String>> {
    let out_of_range = |t: &str| format!("integer {t} is out of range (64-bit signed integers)");
    match v {
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Ok(Num::I(i)),
            (None, Some(_), _) => Err(out_of_range(&n.to_string())),
            (None, None, Some(f)) => Ok(Num::F(f)),
            _ => Err(format!("{n} is not a usable number")),
        }),
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix('-').unwrap_or(t);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return Some(t.parse::<i64>().map(Num::I).map_err(|_| out_of_range(t)));
            }
            // The JSON number grammar only: no `inf`, `NaN` or `0x10`.
            match serde_json::from_str::<Number>(t) {
                Ok(n) => n.as_f64().filter(|f| f.is_finite()).map(|f| Ok(Num::F(f))),
                Err(_) => None,
            }
        }
        _ => None,
    }
}

/// `string "a"`, `integer 3`, `null`… for messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("integer {n}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {:?}", crate::check::clip(s, 60)),
        Value::Array(_) => format!("list {}", crate::check::clip(&v.to_string(), 60)),
        Value::Object(_) => format!("object {}", crate::check::clip(&v.to_string(), 60)),
    }
}

fn to_value(n: Num) -> Result<Value, String> {
    match n {
        Num::I(i) => Ok(Value::from(i)),
        Num::F(f) => Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| "the result is not a finite number".to_string()),
    }
}

fn arith(op: BinOp, a: &Value, b: &Value) -> Result<Value, String> {
    let (x, y) = match (number(a), number(b)) {
        (Some(Ok(x)), Some(Ok(y))) => (x, y),
        (Some(Err(e)), _) | (_, Some(Err(e))) => return Err(e),
        _ => {
            let (a, b) = (describe(a), describe(b));
            let mut m = match op {
                BinOp::Add => format!("cannot add {a} to {b}"),
                BinOp::Sub => format!("cannot subtract {b} from {a}"),
                BinOp::Mul => format!("cannot multiply {a} by {b}"),
                BinOp::Div => format!("cannot divide {a} by {b}"),
                _ => format!("cannot take {a} modulo {b}"),
            };
            if op == BinOp::Add && (a.starts_with("string") || b.starts_with("string")) {
                m.push_str(" (join text with `~`)");
            }
            return Err(m);
        }
    };
    let sym = op.symbol();
    let r = match (x, y) {
        (Num::I(i), Num::I(j)) => {
            let r = match op {
                BinOp::Add => i.checked_add(j),
                BinOp::Sub => i.checked_sub(j),
                BinOp::Mul => i.checked_mul(j),
                BinOp::Div | BinOp::Rem if j == 0 => {
                    return Err(format!("division by zero: {i} {sym} {j}"))
                }
                BinOp::Div => i.checked_div(j),
                _ => i.checked_rem(j),
            };
            Num::I(r.ok_or_else(|| {
                format!("integer overflow: {i} {sym} {j} does not fit in 64 bits")
            })?)
        }
        (x, y) => {
            let (i, j) = (x.f(), y.f());
            if matches!(op, BinOp::Div | BinOp::Rem) && j == 0.0 {
                return Err(format!("division by zero: {i} {sym} {j}"));
            }
            Num::F(match op {
                BinOp::Add => i + j,
                BinOp::Sub => i - j,
                BinOp::Mul => i * j,
                BinOp::Div => i / j,
                _ => i % j,
            })
        }
    };
    to_value(r)
}

fn equal(a: &Value, b: &Value) -> bool {
    // Numbers by value, and a number equals a string holding it, as in
    // asserts; two strings compare as text.
    if a.is_number() || b.is_number() {
        if let (Some(Ok(x)), Some(Ok(y))) = (number(a), number(b)) {
            return match (x, y) {
                (Num::I(i), Num::I(j)) => i == j,
                (x, y) => x.f() == y.f(),
            };
        }
    }
    a == b
}

fn order(op: BinOp, a: &Value, b: &Value) -> Result<bool, String> {
    let ord = match (number(a), number(b)) {
        (Some(Ok(Num::I(i))), Some(Ok(Num::I(j)))) => Some(i.cmp(&j)),
        (Some(Ok(x)), Some(Ok(y))) => x.f().partial_cmp(&y.f()),
        (Some(Err(e)), _) | (_, Some(Err(e))) => return Err(e),
        _ => match (a, b) {
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            _ => None,
        },
    };
    let Some(ord) = ord else {
        return Err(format!(
            "cannot compare {} with {} (`{}` needs two numbers or two strings)",
            describe(a),
            describe(b),
            op.symbol()
        ));
    };
    Ok(match op {
        BinOp::Lt => ord == Ordering::Less,
        BinOp::Le => ord != Ordering::Greater,
        BinOp::Gt => ord == Ordering::Greater,
        _ => ord != Ordering::Less,
    })
}

fn binary(op: BinOp, a: &Value, b: &Value) -> Result<Value, String> {
    Ok(match op {
        BinOp::Join => Value::String(as_text(a) + &as_text(b)),
        BinOp::Eq => Value::Bool(equal(a, b)),
        BinOp::Ne => Value::Bool(!equal(a, b)),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => Value::Bool(order(op, a, b)?),
        BinOp::And | BinOp::Or => unreachable_logic(op)?,
        _ => arith(op, a, b)?,
    })
}

/// `and`/`or` are evaluated in `eval_node`, which stops early; reaching
/// here would be a bug, reported rather than panicking.
fn unreachable_logic(op: BinOp) -> Result<Value, String> {
    Err(format!("internal: `{}` evaluated eagerly", op.symbol()))
}

fn boolean(v: &Value, op: &str) -> Result<bool, Fail> {
    v.as_bool().ok_or_else(|| {
        Fail::Other(format!(
            "`{op}` takes true or false, got {} (compare it first, e.g. `x == 'yes'`)",
            describe(v)
        ))
    })
}

fn generate(g: &str) -> Value {
    let now = chrono::Utc::now();
    match g {
        "$uuid" => Value::String(uuid::Uuid::new_v4().to_string()),
        "$timestamp" => Value::from(now.timestamp()),
        "$timestamp_ms" => Value::from(now.timestamp_millis()),
        _ => Value::from(uuid::Uuid::new_v4().as_u128() as u32 % 1000),
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn apply(name: &str, v: Value) -> Result<Value, TemplateError> {
    let err = |m: String| TemplateError::Filter(name.to_string(), m);
    Ok(match name {
        "base64" => Value::String(base64::engine::general_purpose::STANDARD.encode(as_text(&v))),
        "base64_decode" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(as_text(&v).trim())
                .map_err(|e| err(e.to_string()))?;
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
        "json" => Value::String(v.to_string()),
        "upper" => Value::String(as_text(&v).to_uppercase()),
        "lower" => Value::String(as_text(&v).to_lowercase()),
        "urlencode" => {
            Value::String(url::form_urlencoded::byte_serialize(as_text(&v).as_bytes()).collect())
        }
        "string" => Value::String(as_text(&v)),
        "int" => match (&v, number(&v)) {
            (_, Some(Ok(Num::I(i)))) => Value::from(i),
            // A float is truncated toward zero, when the result fits.
            (Value::Number(_), Some(Ok(Num::F(f))))
                if f.is_finite() && f.trunc() >= i64::MIN as f64 && f.trunc() < i64::MAX as f64 =>
            {
                Value::from(f.trunc() as i64)
            }
            (_, Some(Err(e))) => return Err(err(e)),
            _ => return Err(err(format!("{} is not an integer", describe(&v)))),
        },
        "float" => match number(&v) {
            Some(Ok(n)) => to_value(Num::F(n.f())).map_err(err)?,
            Some(Err(e)) => return Err(err(e)),
            None => return Err(err(format!("{} is not a number", describe(&v)))),
        },
        _ => return Err(err("unknown filter".into())),
    })
}

/// Renders a string: a lone template keeps its value's type.
pub fn render_str(s: &str, scope: &Scope) -> Result<Value, TemplateError> {
    if !s.contains("{{") {
        return Ok(Value::String(s.to_string()));
    }
    let ps = pieces(s)?;
    if let [Piece::Expr(e)] = ps.as_slice() {
        return eval(e, scope);
    }
    let mut out = String::with_capacity(s.len());
    for p in &ps {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Expr(e) => out.push_str(&as_text(&eval(e, scope)?)),
        }
    }
    Ok(Value::String(out))
}

/// Renders a string to text (for URLs, names, header values).
pub fn render_text(s: &str, scope: &Scope) -> Result<String, TemplateError> {
    render_str(s, scope).map(|v| as_text(&v))
}

/// Renders every string in a JSON value (keys stay as written).
pub fn render_value(v: &Value, scope: &Scope) -> Result<Value, TemplateError> {
    render_value_at(v, scope).map_err(|(_, e)| e)
}

/// Like [`render_value`], and a failure says which string below `v` failed
/// (`message.key`, `[2]`; empty for `v` itself), so it can be located.
pub fn render_value_at(v: &Value, scope: &Scope) -> Result<Value, (String, TemplateError)> {
    Ok(match v {
        Value::String(s) => render_str(s, scope).map_err(|e| (String::new(), e))?,
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, x) in a.iter().enumerate() {
                out.push(
                    render_value_at(x, scope)
                        .map_err(|(p, e)| (format!("[{i}]{}", dotted(&p)), e))?,
                );
            }
            Value::Array(out)
        }
        Value::Object(o) => {
            let mut m = Map::with_capacity(o.len());
            for (k, x) in o {
                let v = render_value_at(x, scope)
                    .map_err(|(p, e)| (format!("{k}{}", dotted(&p)), e))?;
                m.insert(k.clone(), v);
            }
            Value::Object(m)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        json!({
            "n": 3, "key": "foo", "item": {"list": [1, {"x": "y"}]}, "env": {"HOME": "/root"},
            "rev": "41", "big": "9223372036854775807", "f": 1.5, "word": "a", "yes": true,
            "no": false, "content-type": "json", "huge": 18446744073709551615u64,
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    fn r(t: &str) -> Value {
        render_str(t, &scope()).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    fn fails(t: &str) -> String {
        match render_str(t, &scope()) {
            Ok(v) => panic!("{t} gave {v}"),
            Err(e) => e.to_string(),
        }
    }

    fn syntax(t: &str) -> String {
        match check(t) {
            Ok(()) => panic!("{t} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn lone_template_keeps_type_and_mixed_text_interpolates() {
        let s = scope();
        assert_eq!(render_str("{{ n }}", &s).unwrap(), json!(3));
        assert_eq!(render_str("n={{n}}!", &s).unwrap(), json!("n=3!"));
        assert_eq!(render_str("{{ item.list[1].x }}", &s).unwrap(), json!("y"));
        assert_eq!(render_str("{{ env.HOME }}", &s).unwrap(), json!("/root"));
    }

    #[test]
    fn filters_and_defaults() {
        let s = scope();
        assert_eq!(render_str("{{ key | base64 }}", &s).unwrap(), json!("Zm9v"));
        assert_eq!(
            render_str("{{ \"Zm9v\" | base64_decode | upper }}", &s).unwrap(),
            json!("FOO")
        );
        assert_eq!(
            render_str("{{ env.NOPE | default('x') }}", &s).unwrap(),
            json!("x")
        );
        assert_eq!(
            render_str("{{ env.NOPE | upper | default('x') }}", &s).unwrap(),
            json!("x")
        );
        assert_eq!(render_str("{{ '12' | int }}", &s).unwrap(), json!(12));
        assert_eq!(
            render_str("{{ key ~ '/' ~ n | base64 }}", &s).unwrap(),
            json!("Zm9vLzM=")
        );
        assert_eq!(
            render_str("{{ 'a b' | urlencode }}", &s).unwrap(),
            json!("a+b")
        );
        assert_eq!(r("{{ -5 }}"), json!(-5));
        assert_eq!(r("{{ x | default(-2) }}"), json!(-2));
        assert_eq!(r("{{ \"a\\\"b\" }}"), json!("a\"b"));
        assert_eq!(r("{{ x | default([]) }}"), json!([]));
        assert_eq!(
            r("{{ x | default({\"a\": [1, \"]\"]}) }}"),
            json!({"a": [1, "]"]})
        );
        assert_eq!(r("{{ [1, 2] | json }}"), json!("[1,2]"));
    }

    #[test]
    fn arithmetic_on_integers_is_checked() {
        assert_eq!(r("{{ n + 1 }}"), json!(4));
        assert_eq!(r("{{ rev + 1 }}"), json!(42), "int64-as-string counts");
        assert_eq!(r("{{ rev | int + 1 }}"), json!(42));
        assert_eq!(r("{{ rev | int * 2 - 1 }}"), json!(81));
        assert_eq!(r("{{ 1 + 2 * 3 }}"), json!(7));
        assert_eq!(r("{{ (1 + 2) * 3 }}"), json!(9));
        assert_eq!(r("{{ 7 / 2 }}"), json!(3));
        assert_eq!(r("{{ -7 / 2 }}"), json!(-3));
        assert_eq!(r("{{ 7 % 3 }}"), json!(1));
        assert_eq!(r("{{ 10 - 2 - 3 }}"), json!(5), "left to right");
        assert_eq!(r("{{ -n * 2 }}"), json!(-6));
        assert_eq!(r("{{ -(n) }}"), json!(-3));
        assert_eq!(r("rev={{ rev + 1 }}"), json!("rev=42"));
        assert_eq!(r("{{ big - 1 }}"), json!(9223372036854775806i64));
        let e = fails("{{ big + 1 }}");
        assert!(
            e.contains("integer overflow") && e.contains("big + 1"),
            "{e}"
        );
        let e = fails("{{ big * 2 }}");
        assert!(e.contains("integer overflow"), "{e}");
        let e = fails("{{ -9223372036854775807 - 2 }}");
        assert!(e.contains("integer overflow"), "{e}");
        let e = fails("{{ n / 0 }}");
        assert!(e.contains("division by zero"), "{e}");
        let e = fails("{{ n % 0 }}");
        assert!(e.contains("division by zero"), "{e}");
        let e = fails("{{ huge + 1 }}");
        assert!(e.contains("out of range"), "{e}");
        let e = syntax("{{ 99999999999999999999 }}");
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn arithmetic_on_floats() {
        assert_eq!(r("{{ f * 2 }}"), json!(3.0));
        assert_eq!(r("{{ 7 / 2.0 }}"), json!(3.5));
        assert_eq!(r("{{ n | float / 2 }}"), json!(1.5));
        assert_eq!(r("{{ '2.5' + 1 }}"), json!(3.5));
        assert_eq!(r("{{ f | int }}"), json!(1));
        assert_eq!(r("{{ 1e3 + 1 }}"), json!(1001.0));
        let e = fails("{{ f / 0 }}");
        assert!(e.contains("division by zero"), "{e}");
        let e = fails("{{ 1e308 * 10 }}");
        assert!(e.contains("not a finite number"), "{e}");
        let e = fails("{{ 'inf' + 1 }}");
        assert!(e.contains("cannot add string \"inf\""), "{e}");
    }

    #[test]
    fn type_errors_name_the_values() {
        let e = fails("{{ word + 1 }}");
        assert!(
            e.contains("cannot add string \"a\" to integer 1") && e.contains("join text with `~`"),
            "{e}"
        );
        assert!(e.starts_with("`{{ word + 1 }}`"), "{e}");
        let e = fails("{{ 'a' + 'b' }}");
        assert!(e.contains("cannot add string \"a\" to string \"b\""), "{e}");
        let e = fails("{{ n - yes }}");
        assert!(
            e.contains("cannot subtract boolean true from integer 3"),
            "{e}"
        );
        let e = fails("{{ item * 2 }}");
        assert!(e.contains("cannot multiply object"), "{e}");
        let e = fails("{{ -word }}");
        assert!(e.contains("cannot negate string \"a\""), "{e}");
        let e = fails("{{ word < 1 }}");
        assert!(
            e.contains("cannot compare string \"a\" with integer 1"),
            "{e}"
        );
        let e = fails("{{ n and yes }}");
        assert!(
            e.contains("`and` takes true or false, got integer 3"),
            "{e}"
        );
        let e = fails("{{ not word }}");
        assert!(e.contains("`not` takes true or false"), "{e}");
        let e = fails("{{ word | int }}");
        assert!(
            e.contains("filter `int`") && e.contains("not an integer"),
            "{e}"
        );
        let e = fails("{{ nope + 1 }}");
        assert_eq!(e, "`nope` is not defined");
        let e = fails("{{ rev-1 }}");
        assert!(e.contains("`rev - 1`"), "{e}");
    }

    #[test]
    fn comparisons_and_logic_give_booleans() {
        assert_eq!(r("{{ n == 3 }}"), json!(true));
        assert_eq!(r("{{ rev == 41 }}"), json!(true), "string holding a number");
        assert_eq!(r("{{ rev != '41' }}"), json!(false));
        assert_eq!(
            r("{{ '05' == '5' }}"),
            json!(false),
            "text compares as text"
        );
        assert_eq!(r("{{ rev > 9 }}"), json!(true), "numbers, not text");
        assert_eq!(r("{{ 'b' > 'a' }}"), json!(true));
        assert_eq!(r("{{ f <= 1.5 and n >= 3 }}"), json!(true));
        assert_eq!(r("{{ n < 3 or f > 1 }}"), json!(true));
        assert_eq!(r("{{ not yes }}"), json!(false));
        assert_eq!(r("{{ not n == 4 }}"), json!(true), "not binds looser");
        assert_eq!(r("{{ no and nope }}"), json!(false), "and stops early");
        assert_eq!(r("{{ yes or nope > 1 }}"), json!(true), "or stops early");
        assert_eq!(r("{{ n + 1 == rev | int - 37 }}"), json!(true));
        assert_eq!(r("{{ null == x | default(null) }}"), json!(true));
        assert_eq!(r("{{ key ~ n == 'foo3' }}"), json!(true));
        assert_eq!(r("{{ (n > 1) == true }}"), json!(true));
        assert_eq!(r("{{ content-type }}"), json!("json"), "names may hold -");
        assert_eq!(r("ok={{ n > 1 }}"), json!("ok=true"));
    }

    #[test]
    fn syntax_errors_say_what_is_wrong() {
        for (t, want) in [
            ("{{ key | frob }}", "unknown filter `frob`"),
            ("{{ $nope }}", "unknown generator"),
            ("{{ rev + }}", "expected a value after `+` at the end"),
            ("{{ * 2 }}", "expected a value, found `*`"),
            ("{{ (1 + 2 }}", "`(` is not closed"),
            ("{{ 1 + 2) }}", "`)` without `(`"),
            ("{{ a b }}", "unexpected `b` after `a`"),
            ("{{ a = 1 }}", "compare with `==`"),
            ("{{ !a }}", "negate with `not`"),
            ("{{ 1 < 2 < 3 }}", "comparisons do not chain"),
            ("{{ 'open }}", "not closed"),
            ("{{ a | default }}", "`default` needs a value"),
            ("{{ a | default(b) }}", "must be a literal"),
            ("{{ a..b }}", "unexpected character `.`"),
            ("{{ and }}", "`and` needs a value before it"),
            ("{{ a & b }}", "unexpected character `&`"),
            ("{{ 1x }}", "bad number 1x"),
            ("{{ }}", "empty expression"),
        ] {
            let e = syntax(t);
            assert!(e.contains(want), "{t}: {e}");
        }
        assert!(matches!(check("{{ key "), Err(TemplateError::Unclosed(_))));
    }

    #[test]
    fn hostile_expressions_are_bounded() {
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(200), ")".repeat(200));
        assert!(syntax(&deep).contains("nested deeper than"), "parentheses");
        let long = format!("{{{{ {} }}}}", vec!["1"; 400].join(" + "));
        assert!(syntax(&long).contains("longer than"), "length");
        let chain = format!("{{{{ {} }}}}", vec!["1"; 100].join("+"));
        assert!(
            syntax(&chain).contains("nested deeper than"),
            "a long chain"
        );
        let nots = format!("{{{{ {}true }}}}", "not ".repeat(200));
        assert!(syntax(&nots).contains("nested deeper than"), "prefixes");
        let minus = format!("{{{{ {}1 }}}}", "-".repeat(200));
        assert!(syntax(&minus).contains("nested deeper than"), "minus");
        // Within the bounds, a long chain works.
        let ok = format!("{{{{ {} }}}}", vec!["1"; 40].join(" + "));
        assert_eq!(r(&ok), json!(40));
    }

    #[test]
    fn bad_strings_are_found_at_their_path() {
        let v = json!({"a": {"b": ["ok", "{{ 1 + }}"]}});
        let (path, e) = check_value(&v).unwrap_err();
        assert_eq!(path, "a.b[1]");
        assert!(matches!(e, TemplateError::Syntax(..)));
        let (path, e) = render_value_at(&json!({"k": ["{{ word * 2 }}"]}), &scope()).unwrap_err();
        assert_eq!(path, "k[0]");
        assert!(e.to_string().contains("cannot multiply"), "{e}");
    }

    #[test]
    fn generators_produce_fresh_values() {
        let s = scope();
        let a = render_text("{{ $uuid }}", &s).unwrap();
        let b = render_text("{{ $uuid }}", &s).unwrap();
        assert_ne!(a, b);
        assert!(render_str("{{ $timestamp }}", &s).unwrap().is_i64());
        assert!(render_str("{{ $timestamp + 1 }}", &s).unwrap().is_i64());
    }
}
