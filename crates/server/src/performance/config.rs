//! What a performance plan's `config` means: the load profile it describes
//! (seed 001's fields, read by `testbed_load::SeedConfig`) and which agents
//! carry it. Every problem names its field under `/config/`, so the API
//! can refuse a plan with all of them at once.

use std::collections::BTreeMap;

use serde_json::Value;
use testbed_core::schema::FieldError;
use testbed_load::SeedConfig;

use crate::api::projects::field_error;

/// Which agents carry an execution.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSel {
    pub count: usize,
    pub group: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl AgentSel {
    /// The selector placement matches agents against.
    pub fn target(&self) -> testbed_core::plan::TargetSpec {
        testbed_core::plan::TargetSpec {
            group: self.group.clone(),
            labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
            ..Default::default()
        }
    }

    /// "in group `lab`", "with the requested labels" or nothing.
    pub fn describe(&self) -> String {
        match (&self.group, self.labels.is_empty()) {
            (Some(g), _) => format!(" in group `{g}`"),
            (None, false) => " with the requested labels".to_string(),
            _ => String::new(),
        }
    }
}

/// A plan's config, checked: the load profile and the agents to carry it,
/// or every problem found.
pub fn read(config: &Value) -> Result<(testbed_load::LoadProfile, AgentSel), Vec<FieldError>> {
    let mut errs = Vec::new();
    // `check_config` reports the `agents` field's problems already.
    let profile = check_config(config, &mut errs);
    let sel = agent_sel(config, &mut Vec::new());
    match profile {
        Some(p) if errs.is_empty() => Ok((p, sel)),
        _ => Err(errs),
    }
}

/// Which agents a plan's config asks for (`agents`: a count, or
/// `{count, group, labels}`); each problem pushed onto `errs` with its field.
pub fn agent_sel(config: &Value, errs: &mut Vec<FieldError>) -> AgentSel {
    let mut sel = AgentSel {
        count: 1,
        ..Default::default()
    };
    let bad_count = |errs: &mut Vec<FieldError>| {
        errs.push(field_error(
            "/config/agents",
            "count must be an integer from 1 to 1000",
        ))
    };
    let count = |v: &Value, errs: &mut Vec<FieldError>| match v.as_u64() {
        Some(n) if (1..=1000).contains(&n) => n as usize,
        _ => {
            bad_count(errs);
            1
        }
    };
    match config.get("agents") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Number(_)) => sel.count = count(v, errs),
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match k.as_str() {
                    "count" => sel.count = count(v, errs),
                    "group" => match v.as_str() {
                        Some(g) if !g.is_empty() => sel.group = Some(g.to_string()),
                        _ => errs.push(field_error("/config/agents/group", "must be a group name")),
                    },
                    "labels" => match serde_json::from_value::<BTreeMap<String, String>>(v.clone())
                    {
                        Ok(l) => sel.labels = l,
                        Err(_) => errs.push(field_error(
                            "/config/agents/labels",
                            "must be an object of string labels",
                        )),
                    },
                    other => errs.push(field_error(
                        &format!("/config/agents/{other}"),
                        "unknown field (expected count, group or labels)",
                    )),
                }
            }
        }
        Some(_) => errs.push(field_error(
            "/config/agents",
            "must be a number of agents or an object {count, group, labels}",
        )),
    }
    sel
}

/// Every problem with the config, each naming its field under `/config/`;
/// the load profile it describes when there is none.
pub fn check_config(
    config: &Value,
    errs: &mut Vec<FieldError>,
) -> Option<testbed_load::LoadProfile> {
    if !config.is_object() {
        errs.push(field_error("/config", "must be an object"));
        return None;
    }
    agent_sel(config, errs);
    let field = |f: &str| format!("/config/{}", f.replace('.', "/"));
    // The load engine names fields with dots; the API, as JSON pointers.
    let under_config = |errs: &mut Vec<FieldError>, e: testbed_load::ConfigError| {
        errs.extend(
            e.errors
                .iter()
                .map(|x| field_error(&field(&x.field), x.message.clone())),
        );
    };
    match SeedConfig::from_json(config) {
        Err(e) => {
            under_config(errs, e);
            None
        }
        Ok(cfg) => {
            let unknown: Vec<&String> = cfg.extra.keys().filter(|k| *k != "agents").collect();
            for k in unknown {
                errs.push(field_error(&field(k), "unknown field"));
            }
            match cfg.to_plan() {
                Ok(p) => Some(p),
                Err(e) => {
                    under_config(errs, e);
                    None
                }
            }
        }
    }
}
