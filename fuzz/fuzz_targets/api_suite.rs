//! API test suites (YAML), as an agent receives them in a plan step.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // A directory that does not exist: relative side files are not read.
        let _ =
            testbed_apitest::suite::parse(text, std::path::Path::new("/nonexistent/suite.yaml"));
    }
});
