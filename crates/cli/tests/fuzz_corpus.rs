//! The fuzz targets (fuzz/fuzz_targets/checks.rs) replayed as a regular test
//! over their seeds and every input that once crashed one (fuzz/regressions/).
//! Cheap, so every test run repeats what the fuzzers proved; finding new
//! inputs is `scripts/fuzz`'s job (its growing corpus, fuzz/corpus/, is not
//! replayed here: it is local and unbounded).

#[allow(dead_code)]
mod checks {
    include!("../../../fuzz/fuzz_targets/checks.rs");
}

use std::path::Path;

#[test]
fn fuzz_seeds_and_regressions_replay_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for target in checks::TARGETS {
        let mut seeds = 0;
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| checks::run(target, &data));
                assert!(
                    outcome.is_ok(),
                    "fuzz target {target} fails on {}",
                    path.display()
                );
                seeds += usize::from(dir == "seeds");
                replayed += 1;
            }
        }
        assert!(seeds > 0, "no seeds for fuzz target {target}");
    }
    eprintln!("replayed {replayed} fuzz inputs");
}
