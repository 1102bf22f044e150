//! Test plans: the YAML format (see `docs/plans.md`), its model, and the
//! static checks that run before anything is created.
//!
//! Every problem is reported at once, each with the path of the offending
//! node (`steps[2].depends_on[0]`) and, when the plan came from a file, its
//! line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::template::{self, Reference};

/// A test plan: parameters and a DAG of steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamSpec>,
    /// Environment bound to test-case steps unless a step names its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// A group this run reserves exclusively while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<String>,
    /// How long a step may wait for an eligible agent (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_timeout: Option<String>,
    /// Accept targets no registered agent matches yet, and let their steps
    /// wait (up to `pending_timeout`) for one to join. Without it such a
    /// plan is refused when submitted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_agents: bool,
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl ParamType {
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Integer => v.is_i64() || v.is_u64(),
            ParamType::Number => v.is_number(),
            ParamType::Boolean => v.is_boolean(),
            ParamType::Array => v.is_array(),
            ParamType::Object => v.is_object(),
        }
    }

    /// Converts a command-line `-p key=value` string to this type.
    pub fn parse(self, s: &str) -> Result<Value, String> {
        match self {
            ParamType::String => Ok(Value::String(s.to_string())),
            ParamType::Integer => s
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("`{s}` is not an integer")),
            ParamType::Number => s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("`{s}` is not a number")),
            ParamType::Boolean => match s {
                "true" | "yes" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!("`{s}` is not a boolean")),
            },
            ParamType::Array | ParamType::Object => {
                let v: Value = serde_json::from_str(s).map_err(|e| format!("`{s}`: {e}"))?;
                if self.accepts(&v) {
                    Ok(v)
                } else {
                    Err(format!("`{s}` is not a JSON {}", self.name()))
                }
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type", default = "string_type")]
    pub ty: ParamType,
    /// No default means the parameter is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn string_type() -> ParamType {
    ParamType::String
}

/// Where a step runs.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Target {
    /// A host, agent name, numeric id or uuid.
    Name(String),
    Spec(TargetSpec),
}

// By hand rather than `untagged`: a mistake inside a selector (an unknown
// key, `each: every`) keeps its own message and position instead of
// "did not match any variant".
impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Target;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an agent name, or a selector such as {labels: {arch: x86_64}}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Target, E> {
                Ok(Target::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Target, A::Error> {
                TargetSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Target::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

/// Exactly one selector, or `each:` around one to fan out over every
/// matching agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A name, numeric id or uuid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// One task on every live agent the inner selector matches; `each: all`
    /// (or `each: {}`) is every live agent that carries the plugin.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "each_selector"
    )]
    #[schema(schema_with = each_schema)]
    pub each: Option<Box<TargetSpec>>,
}

/// `each` as the API accepts it: the word `all`, a selector, or null (none).
fn each_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Ref, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["all"])),
        )
        .item(Ref::from_schema_name("TargetSpec"))
        .build();
    Schema::OneOf(one_of)
}

/// `each: all` is the empty selector: it matches every agent.
fn each_selector<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<TargetSpec>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Box<TargetSpec>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("`all` or a selector such as {labels: {arch: x86_64}}")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: serde::de::Error>(self, w: &str) -> Result<Self::Value, E> {
            if w == "all" {
                return Ok(Some(Box::default()));
            }
            Err(E::custom(format!(
                "`each: {w}`: write `each: all` for every agent, or a selector such as \
                 `each: {{labels: {{arch: x86_64}}}}`"
            )))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            TargetSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                .map(|s| Some(Box::new(s)))
        }
    }
    d.deserialize_any(V)
}

impl Target {
    /// The selector, and whether the step fans out over every match.
    pub fn selector(&self) -> (TargetSpec, bool) {
        match self {
            Target::Name(n) => (
                TargetSpec {
                    agent: Some(n.clone()),
                    ..Default::default()
                },
                false,
            ),
            Target::Spec(s) => match &s.each {
                Some(inner) => ((**inner).clone(), true),
                None => (s.clone(), false),
            },
        }
    }
}

impl TargetSpec {
    /// How many selectors are given (`each:` counts as one).
    pub fn selectors(&self) -> usize {
        [
            self.host.is_some(),
            self.agent.is_some(),
            self.group.is_some(),
            self.labels.is_some(),
            self.each.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }

    /// A human description for "pending: no agent matches …".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host={h}"));
        }
        if let Some(a) = &self.agent {
            parts.push(format!("agent={a}"));
        }
        if let Some(g) = &self.group {
            parts.push(format!("group={g}"));
        }
        if let Some(l) = &self.labels {
            parts.push(format!(
                "labels {}",
                l.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        if parts.is_empty() {
            "any agent".into()
        } else {
            parts.join(" ")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub params: Value,
    /// A stored test case to run instead of plugin/method/params.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testcase: Option<String>,
    /// Environment for a test-case step (else the plan's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// `30s`, `10m`, `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub continue_on_failure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// name → template over `result` (the task's result).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// Known broken: the reason (and issue link) why this step is expected
    /// to fail. Its failure is reported `xfail` and does not fail the run;
    /// if it passes it is reported `xpass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xfail: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl StepSpec {
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }
}

impl PlanSpec {
    pub fn pending_timeout(&self) -> Duration {
        self.pending_timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(300))
    }

    pub fn step(&self, id: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Step ids in an order where each comes after its dependencies.
    pub fn topological(&self) -> Vec<&str> {
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::new();
        while out.len() < self.steps.len() {
            let before = out.len();
            for s in &self.steps {
                if !done.contains(s.id.as_str())
                    && s.depends_on.iter().all(|d| done.contains(d.as_str()))
                {
                    done.insert(&s.id);
                    out.push(s.id.as_str());
                }
            }
            if out.len() == before {
                break; // a cycle; validation reports it
            }
        }
        out
    }

    /// Every step `id` transitively depends on.
    pub fn ancestors(&self, id: &str) -> BTreeSet<String> {
        // One index for the whole walk: a scan of the steps per visited
        // step made this quadratic in the plan's size.
        let by_id: BTreeMap<&str, &StepSpec> =
            self.steps.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut out = BTreeSet::new();
        let mut stack = vec![id.to_string()];
        while let Some(s) = stack.pop() {
            if let Some(step) = by_id.get(s.as_str()) {
                for d in &step.depends_on {
                    if out.insert(d.clone()) {
                        stack.push(d.clone());
                    }
                }
            }
        }
        out
    }

    /// Fills in defaults and checks given values; problems name the
    /// parameter.
    pub fn resolve_params(
        &self,
        given: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, Value>, Vec<Problem>> {
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        for k in given.keys() {
            if !self.parameters.contains_key(k) {
                problems.push(Problem::at(
                    format!("params.{k}"),
                    format!(
                        "unknown parameter `{k}` (the plan declares: {})",
                        names(self.parameters.keys())
                    ),
                ));
            }
        }
        for (name, spec) in &self.parameters {
            match given.get(name).or(spec.default.as_ref()) {
                Some(v) if spec.ty.accepts(v) => {
                    out.insert(name.clone(), v.clone());
                }
                Some(v) => {
                    // Values from the command line arrive as strings.
                    match v.as_str().map(|s| spec.ty.parse(s)) {
                        Some(Ok(converted)) => {
                            out.insert(name.clone(), converted);
                        }
                        _ => problems.push(Problem::at(
                            format!("params.{name}"),
                            format!("must be a {}, got {v}", spec.ty.name()),
                        )),
                    }
                }
                None => problems.push(Problem::at(
                    format!("params.{name}"),
                    "required parameter has no value".into(),
                )),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// One problem with a plan, at a path and (from a file) a line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `steps[1].depends_on[0]`
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn at(path: String, message: String) -> Problem {
        Problem {
            path,
            line: None,
            column: None,
            message,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column, self.path.is_empty()) {
            (Some(l), Some(c), true) => write!(f, "{l}:{c}: {}", self.message),
            (Some(l), Some(c), false) => write!(f, "{l}:{c}: {}: {}", self.path, self.message),
            (_, _, true) => write!(f, "{}", self.message),
            (_, _, false) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Parses a plan from YAML (or JSON, which is YAML) and checks it.
pub fn parse(text: &str) -> Result<PlanSpec, Vec<Problem>> {
    let spec: PlanSpec = crate::yaml::from_str(text).map_err(|e| vec![load_problem(&e)])?;
    let mut problems = check(&spec);
    if !problems.is_empty() {
        locate(text, &mut problems);
        return Err(problems);
    }
    Ok(spec)
}

/// A YAML (syntax or shape) error as a problem at serde's line and column,
/// with the field path serde put in front of the message split off.
pub fn yaml_problem(e: &serde_norway::Error) -> Problem {
    let loc = e.location();
    let msg = e.to_string();
    let msg = msg
        .rsplit_once(" at line ")
        .map(|(m, _)| m.to_string())
        .unwrap_or(msg);
    let (path, message) = match msg.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (p.to_string(), m.to_string()),
        _ => (String::new(), msg),
    };
    Problem {
        path,
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        message,
    }
}

/// A bounded-load error (a broken input limit, or YAML syntax or shape) as a
/// problem at its line and column.
pub fn load_problem(e: &crate::yaml::Error) -> Problem {
    match e {
        crate::yaml::Error::Yaml(e) => yaml_problem(e),
        crate::yaml::Error::Limit(l) => Problem {
            path: String::new(),
            line: Some(l.line),
            column: Some(l.column),
            message: l.kind.to_string(),
        },
    }
}

/// Fills in line and column of each problem from the YAML source.
pub fn locate(text: &str, problems: &mut [Problem]) {
    locate_with(text, problems, false);
}

/// Like [`locate`], but a path ending in a key points at where that key is
/// written rather than at its value: for problems with the key itself (an
/// unknown field or operator), whose value may be lines away or absent.
pub fn locate_keys(text: &str, problems: &mut [Problem]) {
    locate_with(text, problems, true);
}

fn locate_with(text: &str, problems: &mut [Problem], at_key: bool) {
    // marked-yaml builds the whole tree: only for text within the input limits.
    if crate::yaml::check(text, &crate::yaml::Limits::DEFAULT).is_err() {
        return;
    }
    let Ok(root) = marked_yaml::parse_yaml(0, text) else {
        return;
    };
    for p in problems.iter_mut() {
        if p.line.is_some() {
            continue;
        }
        let mut node = &root;
        let mut key_mark = None;
        let segs = split_path(&p.path);
        let last = segs.len().saturating_sub(1);
        for (i, seg) in segs.into_iter().enumerate() {
            let next = match seg {
                PathSeg::Key(k) => node.as_mapping().and_then(|m| {
                    if at_key && i == last {
                        key_mark = m
                            .keys()
                            .find(|key| key.as_str() == k)
                            .and_then(|key| key.span().start().copied());
                    }
                    m.get_node(&k)
                }),
                PathSeg::Index(i) => node.as_sequence().and_then(|s| s.get(i)),
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        if let Some(m) = key_mark.as_ref().or(node.span().start()) {
            p.line = Some(m.line());
            p.column = Some(m.column());
        }
    }
}

enum PathSeg {
    Key(String),
    Index(usize),
}

fn split_path(path: &str) -> Vec<PathSeg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(PathSeg::Key(name.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            if let Ok(i) = r[..end].parse() {
                out.push(PathSeg::Index(i));
            }
            rest = &r[end + 1..];
        }
    }
    out
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every static problem of a plan (no agent or store needed).
pub fn check(spec: &PlanSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut push = |path: String, message: String| out.push(Problem::at(path, message));
    if spec.name.trim().is_empty() {
        push("name".into(), "must not be empty".into());
    }
    if spec.steps.is_empty() {
        push("steps".into(), "a plan needs at least one step".into());
    }
    if let Some(t) = &spec.pending_timeout {
        if humantime::parse_duration(t).is_err() {
            push(
                "pending_timeout".into(),
                format!("`{t}` is not a duration like 30s or 5m"),
            );
        }
    }
    for (name, p) in &spec.parameters {
        if !valid_id(name) {
            push(
                format!("parameters.{name}"),
                "names are letters, digits, `_` and `-`".into(),
            );
        }
        if let Some(d) = &p.default {
            if !p.ty.accepts(d) {
                push(
                    format!("parameters.{name}.default"),
                    format!("must be a {} like the parameter", p.ty.name()),
                );
            }
        }
    }
    let ids: BTreeMap<&str, usize> = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut seen = BTreeSet::new();
    for (i, s) in spec.steps.iter().enumerate() {
        let at = |field: &str| format!("steps[{i}].{field}");
        if !valid_id(&s.id) {
            push(at("id"), "ids are 1–64 letters, digits, `_` and `-`".into());
        }
        if !seen.insert(s.id.as_str()) {
            push(at("id"), format!("duplicate step id `{}`", s.id));
        }
        match (&s.plugin, &s.method, &s.testcase) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            (Some(_), None, None) => push(at("plugin"), "a plugin step needs a `method`".into()),
            (None, Some(_), None) => push(at("method"), "a method needs its `plugin`".into()),
            (None, None, None) => push(
                at("id"),
                "a step needs `plugin` and `method`, or `testcase`".into(),
            ),
            _ => push(
                at("testcase"),
                "a step has either `testcase` or `plugin`/`method`, not both".into(),
            ),
        }
        if !s.params.is_object() {
            push(at("params"), "must be a mapping".into());
        }
        if let Some(t) = &s.timeout {
            if humantime::parse_duration(t).is_err() {
                push(
                    at("timeout"),
                    format!("`{t}` is not a duration like 30s or 5m"),
                );
            }
        }
        if let Some(Target::Spec(t)) = &s.target {
            let inner = t.each.as_deref();
            let n = t.selectors();
            // Inside `each:` no selector at all is `each: all`.
            if n != 1 || inner.is_some_and(|e| e.selectors() > 1 || e.each.is_some()) {
                push(
                    at("target"),
                    "give exactly one of host, agent, group, labels — or `each:` around one \
                     (`each: all` for every agent)"
                        .into(),
                );
            }
        }
        for (j, d) in s.depends_on.iter().enumerate() {
            if d == &s.id {
                push(
                    format!("steps[{i}].depends_on[{j}]"),
                    "a step cannot depend on itself".into(),
                );
            } else if !ids.contains_key(d.as_str()) {
                push(
                    format!("steps[{i}].depends_on[{j}]"),
                    format!(
                        "unknown step `{d}` (steps are: {})",
                        names(spec.steps.iter().map(|s| &s.id))
                    ),
                );
            }
        }
    }
    if let Some(cycle) = find_cycle(spec) {
        let first = ids.get(cycle[0].as_str()).copied().unwrap_or(0);
        out.push(Problem::at(
            format!("steps[{first}].depends_on"),
            format!("dependency cycle: {}", cycle.join(" → ")),
        ));
    }
    // Templates: every reference must resolve to something the run will have.
    for (i, s) in spec.steps.iter().enumerate() {
        // Only a reference to another step needs this step's ancestors:
        // worked out for every step, they made validating a 1,000-step chain
        // take about a second (cubic in its length), so on first need only.
        let mut ancestors: Option<BTreeSet<String>> = None;
        let no_ancestors = BTreeSet::new();
        let mut check_refs = |field: String,
                              refs: Result<Vec<Reference>, template::TemplateError>,
                              allow_result: bool| {
            let refs = match refs {
                Ok(r) => r,
                Err(e) => {
                    out.push(Problem::at(field, e.to_string()));
                    return;
                }
            };
            for r in refs {
                let ancestors = if r.keys().first() == Some(&"steps") {
                    &*ancestors.get_or_insert_with(|| spec.ancestors(&s.id))
                } else {
                    &no_ancestors
                };
                if let Some(m) = check_reference(spec, ancestors, &r, allow_result) {
                    out.push(Problem::at(field.clone(), m));
                }
            }
        };
        check_refs(
            format!("steps[{i}].params"),
            template::references_in(&s.params),
            false,
        );
        if let Some(w) = &s.when {
            check_refs(format!("steps[{i}].when"), template::references(w), false);
        }
        if let Some(Target::Name(n)) = &s.target {
            check_refs(format!("steps[{i}].target"), template::references(n), false);
        }
        for (name, t) in &s.outputs {
            check_refs(
                format!("steps[{i}].outputs.{name}"),
                template::references(t),
                true,
            );
        }
    }
    out
}

fn check_reference(
    spec: &PlanSpec,
    ancestors: &BTreeSet<String>,
    r: &Reference,
    allow_result: bool,
) -> Option<String> {
    let keys = r.keys();
    match keys.first().copied() {
        Some("params") => match keys.get(1) {
            Some(p) if spec.parameters.contains_key(*p) => None,
            Some(p) => Some(format!(
                "`{}` names parameter `{p}`, which the plan does not declare (it has: {})",
                r.text,
                names(spec.parameters.keys())
            )),
            None => Some(format!("`{}` must name a parameter", r.text)),
        },
        Some("env") | Some("agent") => None,
        Some("result") if allow_result => None,
        Some("steps") => {
            let Some(step) = keys.get(1) else {
                return Some(format!("`{}` must name a step", r.text));
            };
            let Some(target) = spec.step(step) else {
                return Some(format!("`{}` names unknown step `{step}`", r.text));
            };
            if !ancestors.contains(*step) {
                return Some(format!(
                    "`{}` uses step `{step}`, which this step does not depend on",
                    r.text
                ));
            }
            match keys.get(2).copied() {
                Some("outputs") => match keys.get(3) {
                    Some(o) if target.outputs.contains_key(*o) => None,
                    Some(o) => Some(format!(
                        "`{}`: step `{step}` has no output `{o}` (it has: {})",
                        r.text,
                        names(target.outputs.keys())
                    )),
                    None => Some(format!("`{}` must name an output", r.text)),
                },
                Some("status") | Some("exit_code") => None,
                other => Some(format!(
                    "`{}`: a step offers `outputs.NAME`, `status` and `exit_code`, not `{}`",
                    r.text,
                    other.unwrap_or("")
                )),
            }
        }
        other => Some(format!(
            "`{}`: references start with params, env, steps{} — not `{}`",
            r.text,
            if allow_result { " or result" } else { "" },
            other.unwrap_or("")
        )),
    }
}

/// A dependency cycle, as the list of step ids around it.
fn find_cycle(spec: &PlanSpec) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let idx: BTreeMap<&str, usize> = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut mark = vec![Mark::New; spec.steps.len()];
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        spec: &PlanSpec,
        idx: &BTreeMap<&str, usize>,
        mark: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        mark[i] = Mark::Active;
        stack.push(i);
        for d in &spec.steps[i].depends_on {
            let Some(&j) = idx.get(d.as_str()) else {
                continue;
            };
            if j == i {
                continue;
            }
            match mark[j] {
                Mark::Active => {
                    let pos = stack.iter().position(|&x| x == j).unwrap_or(0);
                    let mut cycle: Vec<String> = stack[pos..]
                        .iter()
                        .map(|&k| spec.steps[k].id.clone())
                        .collect();
                    cycle.push(spec.steps[j].id.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(j, spec, idx, mark, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        mark[i] = Mark::Done;
        None
    }
    for i in 0..spec.steps.len() {
        if mark[i] == Mark::New {
            if let Some(c) = visit(i, spec, &idx, &mut mark, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: build-and-test
parameters:
  repo: {type: string, default: /src/app}
  count: {type: integer, default: 2}
steps:
  - id: build
    plugin: build_server
    method: build
    params: {repo: "{{ params.repo }}", command: make}
    outputs:
      sha: "{{ result.commit }}"
  - id: test
    plugin: linux_system
    method: run_shell
    depends_on: [build]
    target: {each: {labels: {arch: x86_64}}}
    params: {command: ./run-tests, args: "--sha {{ steps.build.outputs.sha }} -n {{ params.count }}"}
    when: "{{ steps.build.status }} == passed"
    retries: 2
    timeout: 10m
"#;

    #[test]
    fn parses_a_good_plan() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.topological(), ["build", "test"]);
        let (sel, each) = p.steps[1].target.as_ref().unwrap().selector();
        assert!(each);
        assert_eq!(sel.labels.unwrap()["arch"], "x86_64");
        assert_eq!(p.steps[1].timeout(), Some(Duration::from_secs(600)));
    }

    #[test]
    fn unknown_field_has_line_and_column() {
        let errs = parse("name: x\nsteps:\n  - id: a\n    plugn: linux_system\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(4), "{errs:?}");
        assert!(errs[0].message.contains("plugn"), "{errs:?}");
    }

    #[test]
    fn reports_every_problem_with_location() {
        let text = "name: x\nsteps:\n  - id: a\n    plugin: p\n    method: m\n    depends_on: [c]\n  - id: b\n    plugin: p\n    method: m\n    depends_on: [b2]\n    params: {x: \"{{ params.nope }}\", y: \"{{ steps.a.outputs.o }}\"}\n  - id: c\n    plugin: p\n    method: m\n    depends_on: [a]\n";
        let errs = parse(text).unwrap_err();
        let text_errs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text_errs
                .iter()
                .any(|e| e.contains("unknown step `b2`") && e.starts_with("10:")),
            "{text_errs:#?}"
        );
        assert!(
            text_errs.iter().any(|e| e.contains("dependency cycle")),
            "{text_errs:#?}"
        );
        assert!(
            text_errs.iter().any(|e| e.contains("params.nope")),
            "{text_errs:#?}"
        );
        assert!(
            text_errs.iter().any(|e| e.contains("does not depend on")),
            "{text_errs:#?}"
        );
    }

    #[test]
    fn missing_output_is_named() {
        let text = "name: x\nsteps:\n  - id: a\n    plugin: p\n    method: m\n  - id: b\n    plugin: p\n    method: m\n    depends_on: [a]\n    params: {y: \"{{ steps.a.outputs.o }}\"}\n";
        let errs = parse(text).unwrap_err();
        assert!(errs[0].message.contains("has no output `o`"), "{errs:?}");
        assert_eq!(errs[0].line, Some(10));
    }

    #[test]
    fn params_resolve_with_types() {
        let p = parse(GOOD).unwrap();
        let mut given = BTreeMap::new();
        given.insert("count".to_string(), Value::String("5".into()));
        let r = p.resolve_params(&given).unwrap();
        assert_eq!(r["count"], Value::from(5));
        assert_eq!(r["repo"], Value::from("/src/app"));
        given.insert("count".to_string(), Value::String("five".into()));
        given.insert("bogus".to_string(), Value::from(1));
        let errs = p.resolve_params(&given).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn each_all_is_every_agent() {
        for each in ["all", "{}"] {
            let p = parse(&format!(
                "name: x\nsteps:\n  - id: a\n    plugin: p\n    method: m\n    target: {{each: {each}}}\n"
            ))
            .unwrap();
            let (sel, fan_out) = p.steps[0].target.as_ref().unwrap().selector();
            assert!(fan_out);
            assert_eq!(sel, TargetSpec::default(), "each: {each}");
            // A stored plan comes back the same.
            let again: PlanSpec =
                serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
            assert_eq!(again, p);
        }
        let errs = parse(
            "name: x\nsteps:\n  - id: a\n    plugin: p\n    method: m\n    target: {each: every}\n",
        )
        .unwrap_err();
        assert!(errs[0].message.contains("each: all"), "{errs:?}");
        let errs = parse("name: x\nsteps:\n  - id: a\n    plugin: p\n    method: m\n    target: {each: {lables: {a: b}}}\n").unwrap_err();
        assert!(errs[0].message.contains("lables"), "{errs:?}");
        assert_eq!(errs[0].line, Some(6), "{errs:?}");
        assert!(!parse(
            "name: x\nwait_for_agents: true\nsteps:\n  - id: a\n    plugin: p\n    method: m\n"
        )
        .unwrap()
        .steps
        .is_empty());
    }

    #[test]
    fn unknown_filter_is_located() {
        let errs = parse("name: x\nsteps:\n  - id: a\n    plugin: p\n    method: m\n    outputs: {t: \"{{ result.stdout_tail }}\"}\n  - id: b\n    plugin: p\n    method: m\n    depends_on: [a]\n    params: {args: \"--t {{ steps.a.outputs.t | strip }}\"}\n").unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "steps[1].params");
        assert_eq!(errs[0].line, Some(11), "{errs:?}");
        assert!(
            errs[0].to_string().contains("unknown filter `strip`"),
            "{errs:?}"
        );
    }

    #[test]
    fn bad_target_shape() {
        let errs = parse("name: x\nsteps:\n  - id: a\n    plugin: p\n    method: m\n    target: {group: g, host: h}\n").unwrap_err();
        assert_eq!(errs[0].path, "steps[0].target");
        assert_eq!(errs[0].line, Some(6));
    }
}
