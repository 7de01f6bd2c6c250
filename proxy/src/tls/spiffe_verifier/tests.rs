use std::collections::BTreeMap;

use rustls::Side;

use super::*;
use crate::tls::HandshakeFailureReason;
use crate::tls::test_support::{TestCa, TestLeaf, handshake, identity_under};
use crate::tls::{classify_tls_error, inbound_server_config, outbound_client_config};

const ID: &str = "spiffe://example.org/ns/a/sa/b";

fn td(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap()
}

/// Bundles for each `(trust domain, CA)` pair, written into `dir`.
fn bundles(dir: &std::path::Path, cas: &[(&str, &TestCa)]) -> TrustBundles {
    let files: BTreeMap<_, _> = cas
        .iter()
        .flat_map(|(name, ca)| ca.write_bundle(dir, name))
        .collect();
    TrustBundles::load(&files).unwrap()
}

fn verify(verifier: &SpiffeClientVerifier, leaf: &TestLeaf) -> Result<(), rustls::Error> {
    let (end_entity, intermediates) = leaf.chain.split_first().unwrap();
    verifier
        .verify_client_cert(end_entity, intermediates, UnixTime::now())
        .map(|_| ())
}

fn reason(result: Result<(), rustls::Error>) -> HandshakeFailureReason {
    classify_tls_error(&result.unwrap_err())
}

#[test]
fn a_leaf_direct_under_the_root_and_one_via_an_intermediate_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("example.org");
    let verifier = SpiffeClientVerifier::new(
        &bundles(dir.path(), &[("example.org", &ca)]),
        &[td("example.org")],
    )
    .unwrap();
    verify(&verifier, &ca.leaf(ID)).unwrap();
    verify(&verifier, &ca.intermediate("spiffe://example.org").leaf(ID)).unwrap();
    let leaf = ca.leaf(ID);
    let id = verifier
        .verify_svid(leaf.cert(), &[], UnixTime::now())
        .unwrap();
    assert_eq!(id.as_str(), ID);
    assert!(verifier.client_auth_mandatory() && verifier.offer_client_auth());
    assert!(verifier.root_hint_subjects().is_empty());
}

#[test]
fn the_bundle_is_picked_by_the_leafs_trust_domain_only() {
    // Step 4 (docs/security.md, "Inbound: the SVID on the handshake"): example.org's roots never
    // vouch for an other.org SVID, even one they signed.
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (TestCa::new("example.org"), TestCa::new("other.org"));
    let b = bundles(
        dir.path(),
        &[("example.org", &ours), ("other.org", &theirs)],
    );
    let verifier = SpiffeClientVerifier::new(&b, &[td("example.org"), td("other.org")]).unwrap();
    let crossed = ours.leaf("spiffe://other.org/ns/a/sa/b");
    assert_eq!(
        reason(verify(&verifier, &crossed)),
        HandshakeFailureReason::UntrustedChain
    );
    verify(&verifier, &theirs.leaf("spiffe://other.org/ns/a/sa/b")).unwrap();
}

#[test]
fn a_domain_with_a_bundle_that_is_not_allowed_is_rejected_before_path_validation() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (TestCa::new("example.org"), TestCa::new("other.org"));
    let b = bundles(
        dir.path(),
        &[("example.org", &ours), ("other.org", &theirs)],
    );
    let verifier = SpiffeClientVerifier::new(&b, &[td("example.org")]).unwrap();
    let err = verify(&verifier, &theirs.leaf("spiffe://other.org/ns/a/sa/b")).unwrap_err();
    assert_eq!(
        classify_tls_error(&err),
        HandshakeFailureReason::UntrustedDomain
    );
    assert!(err.to_string().contains("`other.org`"), "{err}");
}

#[test]
fn intermediates_on_the_path_must_follow_the_signing_certificate_rules() {
    // Step 6.
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("example.org");
    let verifier = SpiffeClientVerifier::new(
        &bundles(dir.path(), &[("example.org", &ca)]),
        &[td("example.org")],
    )
    .unwrap();
    for uri in ["spiffe://example.org/ca", "spiffe://other.org"] {
        let leaf = ca.intermediate(uri).leaf(ID);
        assert_eq!(
            reason(verify(&verifier, &leaf)),
            HandshakeFailureReason::UntrustedChain,
            "{uri}"
        );
    }
    let no_cert_sign = ca.intermediate_with("spiffe://example.org", |p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    });
    let err = verify(&verifier, &no_cert_sign.leaf(ID)).unwrap_err();
    assert!(err.to_string().contains("keyCertSign"), "{err}");
}

#[test]
fn an_expired_leaf_is_reported_with_the_standard_rustls_variant() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("example.org");
    let verifier = SpiffeClientVerifier::new(
        &bundles(dir.path(), &[("example.org", &ca)]),
        &[td("example.org")],
    )
    .unwrap();
    let leaf = ca.leaf_with(ID, |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let err = verify(&verifier, &leaf).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn a_verifier_needs_an_allowed_domain_and_a_bundle_for_each() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundles(dir.path(), &[("example.org", &TestCa::new("example.org"))]);
    assert!(matches!(
        SpiffeClientVerifier::new(&b, &[]),
        Err(TlsError::NoAllowedTrustDomains)
    ));
    let err = SpiffeClientVerifier::new(&b, &[td("example.org"), td("other.org")]).unwrap_err();
    assert!(
        matches!(&err, TlsError::MissingBundle(d) if d.as_str() == "other.org"),
        "{err:?}"
    );
    let err = SpiffeServerVerifier::new(&b, SpiffeId::parse("spiffe://other.org/x").unwrap());
    assert!(matches!(err, Err(TlsError::MissingBundle(_))));
}

#[test]
fn the_outbound_side_accepts_the_expected_server_id_without_any_dns_name_check() {
    let ca = TestCa::new("example.org");
    let (server, _d1) = identity_under(&ca, "spiffe://example.org/ns/s/sa/server");
    let (client, _d2) = identity_under(&ca, "spiffe://example.org/ns/c/sa/client");
    let server_cfg = inbound_server_config(&server, &[td("example.org")]).unwrap();
    // The test handshake names the server `hopgate.test`, which the SVID does not carry.
    let client_cfg = outbound_client_config(&client, server.svid().id().clone()).unwrap();
    let (client_conn, _) = handshake(client_cfg, server_cfg).unwrap();
    assert_eq!(client_conn.alpn_protocol(), Some(&b"h2"[..]));
}

#[test]
fn the_outbound_side_rejects_a_valid_server_svid_with_another_id() {
    let ca = TestCa::new("example.org");
    let (server, _d1) = identity_under(&ca, "spiffe://example.org/ns/s/sa/server");
    let (client, _d2) = identity_under(&ca, "spiffe://example.org/ns/c/sa/client");
    let server_cfg = inbound_server_config(&server, &[td("example.org")]).unwrap();
    let expected = SpiffeId::parse("spiffe://example.org/ns/s/sa/other").unwrap();
    let client_cfg = outbound_client_config(&client, expected).unwrap();
    let (side, err) = handshake(client_cfg, server_cfg).unwrap_err();
    assert_eq!(side, Side::Client);
    assert!(
        err.to_string()
            .contains("expected `spiffe://example.org/ns/s/sa/other`"),
        "{err}"
    );
    assert_eq!(
        classify_tls_error(&err),
        HandshakeFailureReason::InvalidSvid
    );
}
