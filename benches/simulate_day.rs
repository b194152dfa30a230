//! The day simulator's speed: a day of 10,000 calls over 50 agents (the example
//! plan's `general` queue, 1,000 calls an hour for 10 hours, 162 s mean handle time,
//! callers' patience 180 s), simulated with callbacks and without, as
//! `holdless simulate-day` runs it. The target is under 2 s for both days in a
//! release build on the 2-core machine (`cargo bench --bench simulate_day`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use holdless::routing::compile_toml;
use holdless::sim::day::scenario::{compare, Scenario};

fn ten_thousand_calls(c: &mut Criterion) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/plan.example.toml"
    ))
    .expect("example plan");
    let plan = Arc::new(compile_toml(&text, 1).expect("example plan compiles"));
    // 08:00 in New York on a Monday: the queue is open all 10 hours.
    let start: DateTime<Utc> = "2026-03-02T13:00:00Z".parse().expect("instant");
    let scenario = Scenario {
        queues: vec!["general".into()],
        hours: 10,
        calls_per_hour: vec![1000.0],
        aht_secs: Some(162.0),
        patience_secs: Some(180.0),
        agents: Some(50),
        ..Scenario::default()
    };
    let input = scenario.input(plan, start).expect("valid day");
    let mut g = c.benchmark_group("simulate_day");
    g.sample_size(10);
    g.bench_function("10000_calls_50_agents_with_and_without_callbacks", |b| {
        b.iter(|| compare(&input, 1, 1).expect("simulates"))
    });
    g.finish();
}

criterion_group!(benches, ten_thousand_calls);
criterion_main!(benches);
