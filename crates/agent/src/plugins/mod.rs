//! Built-in plugins and the loader of exec plugins.

pub mod api;
pub mod build_server;
pub mod exec;
pub mod linux_system;
pub mod load;
pub mod noop;
pub mod tap;

use std::path::Path;
use std::sync::Arc;

use crate::plugin::DynPlugin;

/// Names of the plugins compiled into the agent.
pub const BUILTIN: &[&str] = &["linux_system", "build_server", "noop", "load", "tap", "api"];

/// The built-in plugin called `name`, if there is one.
pub fn builtin(name: &str) -> Option<DynPlugin> {
    match name {
        "linux_system" => Some(Arc::new(linux_system::LinuxSystem)),
        "build_server" => Some(Arc::new(build_server::BuildServer)),
        "noop" => Some(Arc::new(noop::Noop)),
        "load" => Some(Arc::new(load::Load)),
        "tap" => Some(Arc::new(tap::Tap)),
        "api" => Some(Arc::new(api::Api)),
        _ => None,
    }
}

/// Every exec plugin in `dir` (see `docs/plugins.md`). A missing directory
/// holds no plugins; an executable that fails to `describe` itself is an
/// error naming the file.
pub async fn load_exec_plugins(dir: &Path) -> Result<Vec<DynPlugin>, exec::ExecPluginError> {
    exec::load_dir(dir).await
}
