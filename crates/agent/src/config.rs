//! Agent configuration, from command-line flags or an `agent.toml` file.
//!
//! What seed 002 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-002-compute-nodes-and-test-cases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Server base URL, e.g. `http://127.0.0.1:8774`.
    pub server: String,
    /// The join token the server printed.
    pub token: String,
    /// PEM file of the CA certificate(s) that signed the server's
    /// certificate (`https://` servers; default: the public web roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the server's certificate, as the server
    /// prints it: exactly that certificate is trusted.
    #[serde(default)]
    pub server_fingerprint: Option<String>,
    /// Trust set by a program embedding the agent; wins over the two above.
    #[serde(skip)]
    pub tls: Option<crate::tls::ClientTls>,
    pub name: String,
    /// Address reported as seed 002's `host`; defaults to the machine's
    /// hostname.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Built-in plugins to carry (seed 002's `compute_plugin`).
    #[serde(default = "default_plugins")]
    pub plugins: Vec<String>,
    /// Directory of exec plugins; every executable in it is loaded.
    #[serde(default)]
    pub plugin_dir: Option<PathBuf>,
    /// Where the agent keeps its identity and in-flight task logs.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Tasks run at once.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Let `run_shell` use `/bin/sh -c` when a task asks for it.
    #[serde(default)]
    pub allow_shell: bool,
    /// When started as root, run tasks as this user.
    #[serde(default)]
    pub run_as: Option<String>,
    /// Serve the agent's Prometheus metrics at `/metrics` on this address
    /// (no auth: bind it where only the scraper reaches).
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// A simulated agent (benchmarks): heartbeats carry no system metrics,
    /// so a thousand of them in one process cost the server, not the host.
    #[serde(skip)]
    pub simulated: bool,
}

fn default_plugins() -> Vec<String> {
    vec!["linux_system".to_string()]
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("testbed-agent")
}

fn default_capacity() -> u32 {
    4
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl AgentConfig {
    pub fn new(server: &str, token: &str, name: &str) -> Self {
        AgentConfig {
            server: server.to_string(),
            token: token.to_string(),
            ca_file: None,
            server_fingerprint: None,
            tls: None,
            name: name.to_string(),
            host: None,
            labels: BTreeMap::new(),
            groups: Vec::new(),
            plugins: default_plugins(),
            plugin_dir: None,
            state_dir: default_state_dir(),
            capacity: default_capacity(),
            allow_shell: false,
            run_as: None,
            metrics_listen: None,
            simulated: false,
        }
    }

    /// Reads `agent.toml`; syntax and unknown keys are reported with
    /// line:column.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: AgentConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| testbed_core::line_col(text, s.start))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.server.starts_with("http://") || self.server.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "server: `{}` must start with http:// or https://",
                self.server
            )));
        }
        crate::tls::check(self).map_err(ConfigError::Invalid)?;
        if self.name.trim().is_empty() {
            return Err(ConfigError::Invalid("name: must not be empty".into()));
        }
        if self.capacity == 0 {
            return Err(ConfigError::Invalid("capacity: must be at least 1".into()));
        }
        Ok(())
    }
}

/// Parses `k=v,k2=v2` label lists from the command line.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("label `{part}` is not key=value"))?;
        if k.is_empty() {
            return Err(format!("label `{part}` has an empty key"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_config_file() {
        let cfg = AgentConfig::from_toml(
            "server = \"http://127.0.0.1:8774\"\ntoken = \"t\"\nname = \"a1\"\nlabels = { arch = \"x86_64\" }\nplugins = [\"linux_system\", \"build_server\"]\n",
            Path::new("agent.toml"),
        )
        .unwrap();
        assert_eq!(cfg.labels["arch"], "x86_64");
        assert_eq!(cfg.plugins.len(), 2);
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = AgentConfig::from_toml(
            "server = \"http://x\"\ntoken = \"t\"\nname = \"a\"\n  bogus = 1\n",
            Path::new("agent.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("agent.toml:4:3:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../../examples/agent.toml");
        let cfg = AgentConfig::from_toml(text, Path::new("examples/agent.toml")).unwrap();
        assert_eq!(cfg.name, "kvm-01");
        assert_eq!(cfg.groups, ["lab-a"]);
    }

    #[test]
    fn labels_parse() {
        let l = parse_labels("a=1, b=two").unwrap();
        assert_eq!(l["b"], "two");
        assert!(parse_labels("nokey").is_err());
    }
}
