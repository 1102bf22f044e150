//! Built-in plugins and the loader of exec plugins.
//!
//! A built-in plugin is one file in this directory plus one line in the
//! table below (`docs/plugins.md` walks through one).

pub mod exec;

use std::path::Path;

use crate::plugin::DynPlugin;

/// Declares a registration table: each line `module => Type,` makes
/// `module.rs` (beside the invoking file) a module and puts
/// `Type::default()` into the `BUILTIN` slice it defines. Exported so that a
/// program embedding the agent (or a test) can declare a table of its own
/// and hand it to [`crate::Agent::build_with`].
#[macro_export]
macro_rules! builtin_plugins {
    ($($module:ident => $plugin:ident,)*) => {
        $(pub mod $module;)*
        /// Every plugin of this table, as constructors.
        pub const BUILTIN: &[fn() -> $crate::plugin::DynPlugin] = &[$(
            || ::std::sync::Arc::new(<$module::$plugin as ::std::default::Default>::default()),
        )*];
    };
}

builtin_plugins! {
    linux_system => LinuxSystem,
    build_server => BuildServer,
    noop => Noop,
    load => Load,
    tap => Tap,
    api => Api,
}

/// The plugin of `table` called `name`, if there is one.
pub fn find(table: &[fn() -> DynPlugin], name: &str) -> Option<DynPlugin> {
    table
        .iter()
        .map(|make| make())
        .find(|p| p.spec().name == name)
}

/// The names of `table`'s plugins, in its order.
pub fn names(table: &[fn() -> DynPlugin]) -> Vec<String> {
    table.iter().map(|make| make().spec().name).collect()
}

/// The built-in plugin called `name`, if there is one.
pub fn builtin(name: &str) -> Option<DynPlugin> {
    find(BUILTIN, name)
}

/// Every exec plugin in `dir` (see `docs/plugins.md`). A missing directory
/// holds no plugins; an executable that fails to `describe` itself is an
/// error naming the file.
pub async fn load_exec_plugins(dir: &Path) -> Result<Vec<DynPlugin>, exec::ExecPluginError> {
    exec::load_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_plugin_is_found_by_its_name_and_its_schemas_are_valid() {
        let names = names(BUILTIN);
        assert_eq!(
            names,
            ["linux_system", "build_server", "noop", "load", "tap", "api"]
        );
        for name in &names {
            let p = builtin(name).expect(name);
            for m in p.spec().methods {
                testbed_core::schema::check_schema(&m.schema)
                    .unwrap_or_else(|e| panic!("{name}.{}: {e}", m.name));
            }
        }
        assert!(builtin("nope").is_none());
    }
}
