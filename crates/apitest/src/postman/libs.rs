//! The libraries Postman's sandbox provides to scripts (`require('lodash')`,
//! the legacy `_`, `CryptoJS`, `tv4`, `cheerio`…): the real packages, at the
//! versions postman-sandbox pins, kept in `crates/apitest/vendor/` with their
//! licences (`vendor/update.sh` rebuilds them from the npm registry).
//!
//! A library costs only the scripts that use it: each is compiled to bytecode
//! the first time any script of the process asks for it, and loaded into a
//! script's own context when that script first touches it (`__lib(name)` from
//! the prelude), so scripts stay isolated from each other and the ones that
//! use no library load nothing.

use std::sync::OnceLock;

use rquickjs::{Context, Ctx, Module, Runtime, Value as JsValue, WriteOptions};

/// A vendored library: the name the prelude asks for and its source text, a
/// CommonJS or UMD script.
struct Lib {
    name: &'static str,
    source: &'static str,
}

const LIBS: &[Lib] = &[
    Lib {
        name: "lodash",
        source: include_str!("../../vendor/lodash/lodash.min.js"),
    },
    // The legacy global `_` is lodash 3, as in postman-sandbox; `require('lodash')` is 4.
    Lib {
        name: "lodash3",
        source: include_str!("../../vendor/lodash3/lodash3.min.js"),
    },
    Lib {
        name: "crypto-js",
        source: include_str!("../../vendor/crypto-js/crypto-js.min.js"),
    },
    Lib {
        name: "moment",
        source: include_str!("../../vendor/moment/moment.min.js"),
    },
    Lib {
        name: "tv4",
        source: include_str!("../../vendor/tv4/tv4.min.js"),
    },
    Lib {
        name: "ajv",
        source: include_str!("../../vendor/ajv/ajv.min.js"),
    },
    Lib {
        name: "chai",
        source: include_str!("../../vendor/chai/chai.min.js"),
    },
    Lib {
        name: "xml2js",
        source: include_str!("../../vendor/xml2js/xml2js.min.js"),
    },
    Lib {
        name: "cheerio",
        source: include_str!("../../vendor/cheerio/cheerio.min.js"),
    },
    Lib {
        name: "csv-parse/lib/sync",
        source: include_str!("../../vendor/csv-parse/csv-parse-sync.min.js"),
    },
    Lib {
        name: "uuid",
        source: include_str!("../../vendor/uuid/uuid.js"),
    },
];

/// The libraries' names, as the prelude may ask for them.
#[cfg(test)]
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    LIBS.iter().map(|l| l.name)
}

/// The library's text as an ES module whose default export is what the
/// script left in `module.exports`. `global` is there because some libraries
/// (lodash 3) find the global object only through it in strict code.
fn wrap(source: &str) -> String {
    format!(
        "var global = globalThis, module = {{ exports: {{}} }}, exports = module.exports;\n{source}\n;export default module.exports;\n"
    )
}

fn compile(lib: &Lib) -> Result<Vec<u8>, String> {
    let rt = Runtime::new().map_err(|e| e.to_string())?;
    let ctx = Context::full(&rt).map_err(|e| e.to_string())?;
    ctx.with(|ctx| {
        let module =
            match Module::declare(ctx.clone(), format!("lib:{}", lib.name), wrap(lib.source)) {
                Ok(m) => m,
                Err(rquickjs::Error::Exception) => {
                    let e = super::script::describe(&ctx, ctx.catch());
                    return Err(format!("{}: {}", e.name, e.message));
                }
                Err(e) => return Err(e.to_string()),
            };
        module
            .write(WriteOptions {
                strip_source: true,
                ..WriteOptions::default()
            })
            .map_err(|e| e.to_string())
    })
}

/// The library's bytecode, compiled on first use in this process.
fn bytecode(index: usize) -> Result<&'static [u8], String> {
    static CODE: [OnceLock<Result<Vec<u8>, String>>; LIBS.len()] =
        [const { OnceLock::new() }; LIBS.len()];
    CODE[index]
        .get_or_init(|| compile(&LIBS[index]))
        .as_deref()
        .map_err(|e| format!("library '{}' failed to compile: {e}", LIBS[index].name))
}

/// Loads library `name` into `ctx` and returns its exports; the prelude keeps
/// them, so this runs at most once per library per script.
pub(crate) fn load<'js>(ctx: Ctx<'js>, name: String) -> rquickjs::Result<JsValue<'js>> {
    let Some(index) = LIBS.iter().position(|l| l.name == name) else {
        return Err(rquickjs::Exception::throw_reference(
            &ctx,
            &format!("no library named '{name}' in this sandbox"),
        ));
    };
    let code = match bytecode(index) {
        Ok(c) => c,
        Err(e) => return Err(rquickjs::Exception::throw_internal(&ctx, &e)),
    };
    // SAFETY: the bytes were written by `Module::write` of this same statically
    // linked engine, in this process, and never left memory.
    let module = unsafe { Module::load(ctx.clone(), code) }?;
    let (module, done) = module.eval()?;
    // A library has no top-level await: its evaluation is settled here, and a
    // rejection carries what it threw.
    if let Some(Err(e)) = done.result::<JsValue>() {
        return Err(e);
    }
    module.get("default")
}
