//! What a hop token costs per hop (docs/tokens.md), P-256 SVIDs issued directly by the
//! root as SPIRE does by default:
//!
//! - `mint_es256`: one token at the origin (target p50 ≤ 40 µs);
//! - `verify_new_token`: a token not seen before from a peer whose `x5c` chain was validated
//!   recently: parse, one signature, claims (target ≤ 100 µs; the usual case, every token of a
//!   minter carries the same chain);
//! - `verify_cold`: neither token nor chain seen before: parse, chain validation (one more
//!   signature, webpki, SVID rules), signature, claims;
//! - `verify_cached`: a token seen before: hash, lookup, binding and time checks (≤ 2 µs).

#![allow(
    clippy::unwrap_used,
    reason = "bench setup: a failure means a broken bench, not a runtime path"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use hopgate_config::{SpiffeId, TrustDomain};
use hopgate_proxy::test_util::pki::Ca;
use hopgate_proxy::tls::SpiffeClientVerifier;
use hopgate_proxy::token::{Limits, MintRequest, Minter, TokenVerifier};

const AGENT: &str = "spiffe://example.org/ns/agents/sa/support-agent";
const INFERENCE: &str = "spiffe://example.org/ns/ml/sa/inference";

fn token(c: &mut Criterion) {
    let ca = Ca::new("example.org");
    let bundles = Ca::bundles(&[&ca]);
    let td = TrustDomain::parse("example.org").unwrap();
    let chains = Arc::new(SpiffeClientVerifier::new(&bundles, &[td]).unwrap());

    let agent = ca
        .leaf(AGENT)
        .not_after(time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .build()
        .svid();
    let minter = Minter::new(&agent, Duration::from_secs(60)).unwrap();
    let inference = SpiffeId::parse(INFERENCE).unwrap();
    let route = vec!["generate".to_owned(), "embed".to_owned()];
    let request = || MintRequest {
        aud: &inference,
        parent: None,
        origin: None,
        route_scopes: &route,
        tctx: None,
        trace: None,
    };
    let limits = Limits {
        ttl: Duration::from_secs(60),
        leeway: Duration::from_secs(5),
        max_depth: 8,
    };
    let cached = TokenVerifier::new(inference.clone(), Arc::clone(&chains), limits);
    let new_token =
        TokenVerifier::new(inference.clone(), Arc::clone(&chains), limits).with_cache_capacity(0);
    let cold = TokenVerifier::new(inference.clone(), chains, limits)
        .with_cache_capacity(0)
        .with_chain_cache_capacity(0);
    let now = SystemTime::now();
    let minted = minter.mint_at(request(), now).unwrap();
    let compact = minted.compact();
    let leaf_hash: [u8; 32] =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, agent.leaf().unwrap())
            .as_ref()
            .try_into()
            .unwrap();
    for verifier in [&cached, &new_token, &cold] {
        verifier
            .verify_bound(compact, agent.id(), &leaf_hash, now)
            .unwrap();
    }

    let mut group = c.benchmark_group("hop_token");
    group.bench_function("mint_es256", |b| {
        b.iter(|| minter.mint_at(black_box(request()), now).unwrap())
    });
    // On its minter's connection: the connection authenticates it, the signature is skipped.
    group.bench_function("verify_new_token", |b| {
        b.iter(|| new_token.verify_bound(black_box(compact), agent.id(), &leaf_hash, now))
    });
    // With no connection to vouch for it: the signature is checked.
    group.bench_function("verify_new_token_off_channel", |b| {
        b.iter(|| new_token.verify_relay(black_box(compact), now))
    });
    group.bench_function("verify_cold", |b| {
        b.iter(|| cold.verify_bound(black_box(compact), agent.id(), &leaf_hash, now))
    });
    group.bench_function("verify_cached", |b| {
        b.iter(|| cached.verify_bound(black_box(compact), agent.id(), &leaf_hash, now))
    });
    group.finish();
}

criterion_group!(benches, token);
criterion_main!(benches);
