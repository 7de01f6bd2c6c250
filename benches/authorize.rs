//! How long one policy decision takes: building the Cedar request (entities, typed context) and
//! evaluating it, at 10, 1,000 and 10,000 policies where each principal is named by at most 5 of
//! them, plus a few unscoped policies every hop evaluates. Target: p50 ≤ 10 µs at 10,000.
//! `unsliced/10000` hands Cedar every policy instead of the peer's slice, for comparison.
//! A snapshot memoizes its decisions, so `sliced` asks about a different path each time (more
//! paths than the memo holds: every decision is made afresh) and `memoized` repeats one hop.

#![allow(
    clippy::unwrap_used,
    reason = "bench setup: a failure means a broken bench, not a runtime path"
)]

use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hopgate_policy::{Direction, HopRequest, PolicySnapshot, SpiffeId, TokenFacts};
use tempfile::TempDir;

const SCHEMA: &str = include_str!("../examples/policies/schema.cedarschema");

/// Policies every hop evaluates, whoever the peer is.
const UNSCOPED: &str = r#"
@id("deny-deep-chains")
forbid (principal, action, resource) when { context.token has depth && context.token.depth > 4 };
@id("deny-foreign-trust-domains")
forbid (principal, action, resource) unless { principal in Hop::TrustDomain::"example.org" };
@id("support-may-generate")
permit (principal in Hop::TrustDomain::"example.org", action == Hop::Action::"generate", resource)
when { context.intent has purpose && context.intent.purpose == "support" };
"#;

fn principal(i: usize) -> String {
    format!("spiffe://example.org/ns/n{}/sa/s", i / 5)
}

/// A folder of `n` principal-scoped policies (five per principal) plus [`UNSCOPED`].
fn folder(n: usize) -> TempDir {
    let mut policies = String::from(UNSCOPED);
    for i in 0..n {
        let condition = match i % 5 {
            0 => r#"context.http.method == "GET""#,
            1 => r#"context.http.path like "/v1/*""#,
            2 => {
                r#"context.token.present && context.token has scope && context.token.scope.contains("read")"#
            }
            3 => r#"context.direction == "inbound""#,
            _ => r#"context.token has depth && context.token.depth < 3"#,
        };
        let effect = if i % 5 == 4 { "forbid" } else { "permit" };
        writeln!(
            policies,
            r#"@id("p{i}") {effect} (principal == Hop::Workload::"{}", action == Hop::Action::"call", resource) when {{ {condition} }};"#,
            principal(i)
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    fs::write(dir.path().join("policies.cedar"), policies).unwrap();
    dir
}

fn authorize(c: &mut Criterion) {
    let destination = SpiffeId::parse("spiffe://example.org/ns/ml/sa/inference").unwrap();
    let token = TokenFacts::from_claims(&serde_json::json!({
        "sub": "alice",
        "iss": "spiffe://example.org/ns/agents/sa/agent",
        "txn": "txn-1",
        "scope": "read write",
        "act": { "sub": "spiffe://example.org/ns/agents/sa/agent",
                 "act": { "sub": "spiffe://example.org/ns/web/sa/frontend" } },
    }))
    .unwrap();
    let intent = [("purpose", "support")];

    let mut group = c.benchmark_group("authorize");
    for n in [10, 1_000, 10_000] {
        // Loaded on a thread of its own, as the proxy does (reloads run on the watcher thread,
        // requests on runtime workers): the load's garbage stays out of the measuring thread's
        // allocator arena.
        let snapshot = std::thread::spawn(move || {
            let dir = folder(n);
            PolicySnapshot::load(dir.path(), "call").unwrap()
        })
        .join()
        .unwrap();
        // A principal from the middle of the set, named by five policies.
        let peer = SpiffeId::parse(&principal(n / 2)).unwrap();
        let req = HopRequest {
            path: "/v1/generate",
            host: "inference.ml",
            intent: &intent,
            token: Some(&token),
            ..HopRequest::new(&peer, &destination, Direction::Inbound)
        };
        // p0..p3 of the peer's five apply, p4 (a forbid with depth < 3) too: a deny by policy,
        // so every policy of the slice is evaluated.
        assert_eq!(snapshot.authorize(&req).policies().len(), 1);
        let paths: Vec<String> = (0..5_000).map(|i| format!("/v1/generate/{i}")).collect();
        // One cursor for every sample, so no sample starts over on paths the memo still holds.
        let mut paths = paths.iter().cycle();
        group.bench_with_input(BenchmarkId::new("sliced", n), &req, |b, req| {
            b.iter(|| {
                let path = paths.next().map_or("/", String::as_str);
                snapshot.authorize(black_box(&HopRequest { path, ..*req }))
            });
        });
        group.bench_with_input(BenchmarkId::new("memoized", n), &req, |b, req| {
            b.iter(|| snapshot.authorize(black_box(req)));
        });
        if n == 10_000 {
            group.bench_with_input(BenchmarkId::new("unsliced", n), &req, |b, req| {
                b.iter(|| snapshot.authorize_unsliced(black_box(req)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, authorize);
criterion_main!(benches);
