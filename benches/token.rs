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

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use hopgate_config::{SpiffeId, TrustDomain};
use hopgate_proxy::tls::{SpiffeClientVerifier, Svid, TrustBundles};
use hopgate_proxy::token::{Limits, MintRequest, Minter, TokenVerifier};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

const AGENT: &str = "spiffe://example.org/ns/agents/sa/support-agent";
const INFERENCE: &str = "spiffe://example.org/ns/ml/sa/inference";

fn svid(dir: &Path, issuer: &Issuer<'_, KeyPair>, id: &str) -> Svid {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "bench");
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let (cert_path, key_path) = (dir.join("svid.pem"), dir.join("svid_key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Svid::load(&cert_path, &key_path).unwrap()
}

fn token(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name.push(DnType::CommonName, "root");
    root.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())];
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_key = KeyPair::generate().unwrap();
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root, root_key);
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, root_cert.pem()).unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    let bundles = TrustBundles::load(&BTreeMap::from([(td.clone(), bundle)])).unwrap();
    let chains = Arc::new(SpiffeClientVerifier::new(&bundles, &[td]).unwrap());

    let agent = svid(dir.path(), &issuer, AGENT);
    let minter = Minter::new(&agent, Duration::from_secs(60)).unwrap();
    let inference = SpiffeId::parse(INFERENCE).unwrap();
    let route = vec!["generate".to_owned(), "embed".to_owned()];
    let request = || MintRequest {
        aud: &inference,
        parent: None,
        origin: None,
        route_scopes: &route,
        tctx: None,
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
    group.bench_function("verify_new_token", |b| {
        b.iter(|| new_token.verify_bound(black_box(compact), agent.id(), &leaf_hash, now))
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
