//! Parameter types and checks that several plugins share: arguments given
//! as shell words or as an argv, environment variables, seconds, and the
//! `/bin/sh -c` form of a command (only where the agent allows it).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

use crate::process::CommandSpec;

use super::{PluginError, TaskContext};

/// Environment variables, checked for what `execve` cannot take.
pub fn checked_env(
    field: &str,
    env: BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, PluginError> {
    env.into_iter()
        .map(|(key, value)| {
            let name = format!("{field}/{key}");
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(PluginError::invalid(
                    name,
                    "is not a valid environment variable name",
                ));
            }
            if value.contains('\0') {
                return Err(PluginError::invalid(name, "must not contain NUL"));
            }
            Ok((key, value))
        })
        .collect()
}

/// A number of seconds above 0.
pub fn seconds(field: &str, secs: Option<f64>) -> Result<Option<Duration>, PluginError> {
    let Some(secs) = secs else { return Ok(None) };
    if secs.is_nan() || secs <= 0.0 {
        return Err(PluginError::invalid(
            field,
            "must be a number of seconds above 0",
        ));
    }
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| PluginError::invalid(field, "is too large"))
}

/// Arguments as given: a string to split, or a ready argv.
#[derive(Debug, Clone)]
pub enum Args {
    Words(String),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Args, E> {
                Ok(Args::Words(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut list = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    list.push(item);
                }
                Ok(Args::List(list))
            }
        }
        d.deserialize_any(ArgsVisitor)
    }
}

impl JsonSchema for Args {
    fn schema_name() -> Cow<'static, str> {
        "Args".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "array"], "items": {"type": "string"}})
    }
}

/// `/bin/sh -c "command args"`, if this agent allows shell mode.
pub fn shell_command(
    command: &str,
    args: Option<&Args>,
    ctx: &TaskContext,
) -> Result<CommandSpec, PluginError> {
    if !ctx.settings.allow_shell {
        return Err(PluginError::Refused(
            "shell mode (\"shell\": true) is disabled on this agent; enable allow_shell in its \
             configuration, or pass the command as an argv"
                .to_string(),
        ));
    }
    let mut script = command.to_string();
    match args {
        Some(Args::Words(words)) if !words.is_empty() => {
            script.push(' ');
            script.push_str(words);
        }
        // An argv keeps its meaning in shell mode: every element is one word.
        Some(Args::List(list)) if !list.is_empty() => {
            script.push(' ');
            script.push_str(&shell_words::join(list));
        }
        _ => {}
    }
    Ok(CommandSpec::new("/bin/sh").arg("-c").arg(script))
}
