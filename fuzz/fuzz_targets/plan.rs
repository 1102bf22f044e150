//! Plans as posted to `/api/plans`: the bounded YAML loader, then the checks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = testbed_core::yaml::check(text, &testbed_core::yaml::Limits::DEFAULT);
        if let Err(mut problems) = testbed_core::plan::parse(text) {
            testbed_core::plan::locate(text, &mut problems);
        }
    }
});
