//! How long the inbound SPIFFE verifier takes per client certificate (DOS-05 in
//! docs/security.md: rejecting a flood of handshakes must stay cheap). Measures
//! `SpiffeClientVerifier::verify_client_cert` for a leaf issued directly by the root and for one
//! issued via an intermediate, plus a rejected leaf (wrong trust domain) for comparison.

#![allow(
    clippy::unwrap_used,
    reason = "bench setup: a failure means a broken bench, not a runtime path"
)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hopgate_config::TrustDomain;
use hopgate_proxy::tls::{SpiffeClientVerifier, TrustBundles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};

const ID: &str = "spiffe://example.org/ns/bench/sa/client";

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn leaf(issuer: &Issuer<'_, KeyPair>, id: &str) -> CertificateDer<'static> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "bench leaf");
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let key = KeyPair::generate().unwrap();
    params.signed_by(&key, issuer).unwrap().der().clone()
}

fn spiffe_verify(c: &mut Criterion) {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("example.org root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let mid_key = KeyPair::generate().unwrap();
    let mid_params = ca_params("example.org intermediate");
    let mid = mid_params
        .signed_by(&mid_key, &root_issuer)
        .unwrap()
        .der()
        .clone();
    let mid_issuer = Issuer::new(mid_params, mid_key);

    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, root.pem()).unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    let bundles = TrustBundles::load(&BTreeMap::from([(td.clone(), bundle)])).unwrap();
    let verifier = SpiffeClientVerifier::new(&bundles, &[td]).unwrap();

    let direct = leaf(&root_issuer, ID);
    let via = leaf(&mid_issuer, ID);
    let foreign = leaf(&root_issuer, "spiffe://evil.org/ns/bench/sa/client");
    let via_chain = [mid];
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
