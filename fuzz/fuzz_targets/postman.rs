//! Postman collections (JSON): shape checks and problem location.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = testbed_apitest::postman::collection::load(text);
    }
});
