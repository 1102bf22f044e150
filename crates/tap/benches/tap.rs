//! The figures: parsing a 1,000,000-line TAP stream, and comparing
//! two reports of 100,000 tests each (compare with `prove` on the same
//! stream: `bench/tap.sh`).
//!
//! cargo bench -p testbed-tap

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use testbed_report::compare::{compare, Thresholds};
use testbed_report::{Case, Outcome, Report, Suite};
use testbed_tap::Parser;

fn million_lines() -> String {
    let mut text = String::with_capacity(30_000_000);
    text.push_str("TAP version 13\n1..1000000\n");
    for i in 1..=1_000_000u32 {
        if i % 1000 == 0 {
            text.push_str(&format!("not ok {i} - case {i} # TODO later\n"));
        } else {
            text.push_str(&format!("ok {i} - case {i}\n"));
        }
    }
    text
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

fn benches(c: &mut Criterion) {
    let text = million_lines();
    let mut g = c.benchmark_group("tap");
    g.sample_size(10);
    g.bench_function("parse 1,000,000 lines", |b| {
        b.iter(|| {
            let mut parser = Parser::new();
            for chunk in text.as_bytes().chunks(64 * 1024) {
                parser.push(chunk);
            }
            parser.finish()
        })
    });
    let (a, bb) = (big_report("a", 1), big_report("b", 2));
    g.bench_function("compare 2 x 100,000 tests", |b| {
        b.iter(|| compare(&a, &bb, Thresholds::default()))
    });
    g.finish();
}

criterion_group!(tap, benches);
criterion_main!(tap);
