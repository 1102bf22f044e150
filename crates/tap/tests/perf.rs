//! Rough performance checks: a 1,000,000-line TAP stream and a comparison of two
//! 100,000-test reports. Times are printed (`--nocapture`); the bounds are
//! generous so that unoptimised CI builds pass.

use std::time::{Duration, Instant};

use chrono::Utc;
use testbed_report::{Case, Outcome, Report, Suite};
use testbed_tap::compare::{compare, Thresholds};
use testbed_tap::Parser;

#[test]
fn parse_a_million_lines() {
    let mut text = String::with_capacity(30_000_000);
    text.push_str("TAP version 13\n1..1000000\n");
    for i in 1..=1_000_000u32 {
        if i % 1000 == 0 {
            text.push_str(&format!("not ok {i} - case {i} # TODO later\n"));
        } else {
            text.push_str(&format!("ok {i} - case {i}\n"));
        }
    }
    let started = Instant::now();
    let mut parser = Parser::new();
    for chunk in text.as_bytes().chunks(64 * 1024) {
        parser.push(chunk);
    }
    let parsed = parser.finish();
    let took = started.elapsed();
    eprintln!("parsed 1,000,000 TAP lines in {took:?}");
    assert!(parsed.is_ok(), "{:?}", parsed.problems);
    assert_eq!(parsed.cases.len(), 1_000_000);
    assert!(took < Duration::from_secs(60));
}

fn big_report(id: &str, flip: u32) -> Report {
    let mut r = Report::new(id, "kit", Utc::now());
    for s in 0..100 {
        let mut suite = Suite::new(format!("dir/script-{s}.t"));
        for c in 0..1000u32 {
            let outcome = if c == flip {
                Outcome::Fail
            } else {
                Outcome::Pass
            };
            suite.cases.push(Case::new(format!("case {c}"), outcome));
        }
        r.suites.push(suite);
    }
    r
}

#[test]
fn compare_two_hundred_thousand_tests() {
    let a = big_report("a", 1);
    let b = big_report("b", 2);
    let started = Instant::now();
    let c = compare(&a, &b, Thresholds::default());
    let took = started.elapsed();
    eprintln!("compared 2 x 100,000 tests in {took:?}");
    assert_eq!(c.regressions.len(), 100);
    assert_eq!(c.fixes.len(), 100);
    assert!(took < Duration::from_secs(30));
}
