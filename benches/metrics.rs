//! What counting a request costs with its `code`, `peer` and `dest` labels: `count/labelled`
//! interns the two SPIFFE IDs (as a request's record does when it is made) and counts the
//! request into its series (as the record does when the response goes out), for a label set
//! already seen, which is every request but the first of its kind. `count/interned` is the
//! same count with the parties interned beforehand: the counter lookup and the histogram.
//! `scrape/1000_series` renders a registry holding a thousand request series, as `/metrics` does.

#![allow(
    clippy::unwrap_used,
    reason = "bench setup: a failure means a broken bench, not a runtime path"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hopgate_proxy::telemetry::metrics::{DecisionLabel, Direction, ProxyMetrics};

const PEER: &str = "spiffe://example.org/ns/agents/sa/support-agent";
const DEST: &str = "spiffe://example.org/ns/ml/sa/inference";

fn metrics(c: &mut Criterion) {
    let metrics = ProxyMetrics::new();
    let elapsed = Duration::from_micros(120);
    c.bench_function("count/labelled", |b| {
        b.iter(|| {
            let parties = metrics.parties(Some(black_box(PEER)), Some(black_box(DEST)));
            metrics.record_request(
                Direction::Inbound,
                DecisionLabel::Allow,
                black_box(200),
                parties,
                elapsed,
            );
        });
    });
    let unknown = metrics.parties(None, None);
    c.bench_function("count/interned", |b| {
        b.iter(|| {
            metrics.record_request(
                Direction::Outbound,
                DecisionLabel::Allow,
                black_box(200),
                unknown,
                elapsed,
            );
        });
    });
    let big = ProxyMetrics::new();
    for peer in 0..100 {
        let parties = big.parties(Some(&format!("{PEER}-{peer}")), Some(DEST));
        for code in [200, 201, 204, 400, 401, 403, 404, 500, 502, 503] {
            big.record_request(
                Direction::Inbound,
                DecisionLabel::Allow,
                code,
                parties,
                elapsed,
            );
        }
    }
    c.bench_function("scrape/1000_series", |b| {
        b.iter(|| big.encode().unwrap().len())
    });
}

criterion_group!(benches, metrics);
criterion_main!(benches);
