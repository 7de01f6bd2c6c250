//! How long the sweep takes that decides every open request again after a policy reload: at
//! 1,000 and 10,000 open requests, each on a path of its own from one of 100 callers, so every
//! decision is made afresh (none is the memo's). Nothing is cut: the figure is the cost of
//! looking, which new requests share the runtime with (the sweep yields every 256 requests).

#![allow(
    clippy::unwrap_used,
    reason = "bench setup: a failure means a broken bench, not a runtime path"
)]

use std::fs;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hopgate_proxy::test_util::streams::OpenRequests;

const SCHEMA: &str = include_str!("../examples/policies/schema.cedarschema");

/// Policies an open request is decided on: a permit on the path and the token's scope, and a
/// forbid that has to be evaluated for every request too.
const POLICIES: &str = r#"
@id("read-items")
permit (principal in Hop::TrustDomain::"example.org", action == Hop::Action::"call", resource)
when { context.http.path like "/v1/items/*" && context.token.present && context.token has scope && context.token.scope.contains("read") };
@id("no-deep-chains")
forbid (principal, action, resource) when { context.token has depth && context.token.depth > 4 };
"#;

fn sweep(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    fs::write(dir.path().join("policies.cedar"), POLICIES).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("redecide_after_reload");
    group.sample_size(20);
    for n in [1_000, 10_000] {
        let mut open = OpenRequests::new(dir.path(), n, 100);
        open.reload();
        assert_eq!(
            rt.block_on(open.sweep()),
            n,
            "the policies permit every open request"
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            // The reload (a Cedar parse) is not timed: only the sweep after it.
            b.iter_custom(|iters| {
                let mut swept = Duration::ZERO;
                for _ in 0..iters {
                    open.reload();
                    let start = Instant::now();
                    assert_eq!(rt.block_on(open.sweep()), n);
                    swept += start.elapsed();
                }
                swept
            });
        });
    }
    group.finish();
}

criterion_group!(benches, sweep);
criterion_main!(benches);
