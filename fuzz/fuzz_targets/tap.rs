//! TAP output of a test kit (with YAML diagnostics), fed in arbitrary chunks
//! as the harness reads it from a pipe.
#![no_main]
use libfuzzer_sys::fuzz_target;
use testbed_tap::{Parser, ScriptExit};

fuzz_target!(|data: &[u8]| {
    let whole = Parser::parse_str(&String::from_utf8_lossy(data));
    let _ = whole.is_ok();
    let mut p = Parser::new();
    // The first byte picks a chunk size, so chunk boundaries are fuzzed too.
    let (size, rest) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => (1, data),
    };
    for chunk in rest.chunks(size) {
        p.push(chunk);
    }
    let _ = p.finish().into_suite("fuzz", &ScriptExit::Code(1));
});
