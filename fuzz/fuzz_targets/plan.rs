//! Plans as posted to `/api/plans` (see checks.rs).
#![no_main]

#[allow(dead_code)]
mod checks {
    include!("checks.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::plan(data));
