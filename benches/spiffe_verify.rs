//! How long the inbound SPIFFE verifier takes per client certificate (DOS-05 in
//! docs/security.md: rejecting a flood of handshakes must stay cheap). Measures
//! `SpiffeClientVerifier::verify_client_cert` for a leaf issued directly by the root and for one
//! issued via an intermediate, plus a rejected leaf (wrong trust domain) for comparison.

#![allow(
    clippy::unwrap_used,
    reason = "bench setup: a failure means a broken bench, not a runtime path"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hopgate_config::TrustDomain;
use hopgate_proxy::test_util::pki::Ca;
use hopgate_proxy::tls::SpiffeClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::UnixTime;

const ID: &str = "spiffe://example.org/ns/bench/sa/client";

fn spiffe_verify(c: &mut Criterion) {
    let root = Ca::new("example.org");
    let mid = root.intermediate();
    let td = TrustDomain::parse("example.org").unwrap();
    let verifier = SpiffeClientVerifier::new(&Ca::bundles(&[&root]), &[td]).unwrap();

    let direct = root.leaf(ID).build().cert_der;
    let via_leaf = mid.leaf(ID).build();
    let via = via_leaf.cert_der.clone();
    let foreign = root
        .leaf("spiffe://evil.org/ns/bench/sa/client")
        .build()
        .cert_der;
    let via_chain = via_leaf.chain_der.get(1..).unwrap().to_vec();
    let now = UnixTime::now();
    assert!(verifier.verify_client_cert(&direct, &[], now).is_ok());
    assert!(verifier.verify_client_cert(&via, &via_chain, now).is_ok());
    assert!(verifier.verify_client_cert(&foreign, &[], now).is_err());

    let mut group = c.benchmark_group("spiffe_verify_client_cert");
    group.bench_function("leaf_under_root", |b| {
        b.iter(|| verifier.verify_client_cert(black_box(&direct), black_box(&[]), now))
    });
    group.bench_function("leaf_via_intermediate", |b| {
        b.iter(|| verifier.verify_client_cert(black_box(&via), black_box(&via_chain), now))
    });
    group.bench_function("rejected_foreign_trust_domain", |b| {
        b.iter(|| verifier.verify_client_cert(black_box(&foreign), black_box(&[]), now))
    });
    group.finish();
}

criterion_group!(benches, spiffe_verify);
criterion_main!(benches);
