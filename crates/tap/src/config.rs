//! The kit configuration (`kit.toml`): which platform the scripts test, the
//! named resources they may use, and labels describing the platform.
//!
//! ```toml
//! platform = "qemu:///system"
//!
//! [resources]
//! iscsi-server = "iscsi.example.com"
//! spare-disk = "/dev/sdb"
//!
//! [labels]
//! driver = "qemu"
//! os = "debian"
//! version = "12"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration or expectations file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad syntax or an unknown key, at a 1-based line and column.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// A parsed `kit.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KitConfig {
    /// The platform under test, e.g. a URI such as `test:///default`.
    #[serde(default)]
    pub platform: Option<String>,
    /// Named resources the scripts may need.
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
    /// What the platform is (driver, os, version…), matched by expectations.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where it was read from, handed to scripts as `TESTBED_TCK_CONFIG`.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

impl KitConfig {
    /// Reads and validates a kit configuration file.
    pub fn load(path: &Path) -> Result<KitConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg: KitConfig = parse_toml(path, &text)?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The environment handed to every script.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(p) = &self.platform {
            env.push(("TESTBED_TCK_PLATFORM".to_string(), p.clone()));
        }
        if let Some(p) = &self.path {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            env.push(("TESTBED_TCK_CONFIG".to_string(), abs.display().to_string()));
        }
        for (k, v) in &self.resources {
            env.push((format!("TESTBED_TCK_RESOURCE_{}", env_name(k)), v.clone()));
        }
        for (k, v) in &self.labels {
            env.push((format!("TESTBED_TCK_LABEL_{}", env_name(k)), v.clone()));
        }
        env
    }
}

/// `iscsi-server` → `ISCSI_SERVER`: anything but ASCII letters and digits
/// becomes `_`, because shells cannot name other variables.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Deserializes TOML, turning the error's byte span into line:column.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let (line, column) = testbed_core::line_col(text, offset);
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_builds_env() {
        let text = "platform = \"test:///default\"\n[resources]\niscsi-server = \"10.0.0.1\"\n[labels]\ndriver = \"test\"\n";
        let mut cfg: KitConfig = parse_toml(Path::new("kit.toml"), text).unwrap();
        cfg.path = Some(PathBuf::from("/k/kit.toml"));
        let env = cfg.env();
        assert!(env.contains(&("TESTBED_TCK_PLATFORM".into(), "test:///default".into())));
        assert!(env.contains(&(
            "TESTBED_TCK_RESOURCE_ISCSI_SERVER".into(),
            "10.0.0.1".into()
        )));
        assert!(env.contains(&("TESTBED_TCK_LABEL_DRIVER".into(), "test".into())));
        assert!(env.contains(&("TESTBED_TCK_CONFIG".into(), "/k/kit.toml".into())));
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let text = "platform = \"x\"\n\n[resourcez]\na = \"b\"\n";
        let err = parse_toml::<KitConfig>(Path::new("kit.toml"), text).unwrap_err();
        match err {
            ConfigError::Syntax { line, column, .. } => assert_eq!((line, column), (3, 2)),
            e => panic!("{e}"),
        }
        let err = parse_toml::<KitConfig>(Path::new("kit.toml"), "platform = \n").unwrap_err();
        assert!(err.to_string().starts_with("kit.toml:1:"), "{err}");
    }
}
