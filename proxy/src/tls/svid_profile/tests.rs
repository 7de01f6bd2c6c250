use rcgen::{CustomExtension, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};

use super::*;
use crate::tls::test_support::TestCa;

const ID: &str = "spiffe://example.org/ns/a/sa/b";

fn leaf_der(edit: impl FnOnce(&mut rcgen::CertificateParams)) -> Vec<u8> {
    TestCa::new("example.org")
        .leaf_with(ID, edit)
        .cert()
        .to_vec()
}

/// A SAN extension value holding one URI, DER-encoded by hand.
fn san_value(uri: &str) -> Vec<u8> {
    let mut name = vec![0x86, u8::try_from(uri.len()).unwrap()];
    name.extend_from_slice(uri.as_bytes());
    let mut seq = vec![0x30, u8::try_from(name.len()).unwrap()];
    seq.extend(name);
    seq
}

fn ca_der(uri: &str, edit: impl FnOnce(&mut rcgen::CertificateParams)) -> Vec<u8> {
    // The intermediate's own certificate is the first in its chain.
    let root = TestCa::new("example.org");
    let leaf = root.intermediate_with(uri, edit).leaf(ID);
    leaf.chain[1].to_vec()
}

#[test]
fn a_valid_leaf_yields_its_id_and_expiry() {
    let leaf = check_leaf(&leaf_der(|_| {}), Usage::Both).unwrap();
    assert_eq!(leaf.id.as_str(), ID);
    assert!(leaf.not_after > SystemTime::now());
}

#[test]
fn trailing_data_after_the_certificate_is_rejected() {
    // Step 1 (docs/security.md, "Inbound: the SVID on the handshake").
    let mut der = leaf_der(|_| {});
    der.push(0);
    assert!(matches!(
        check_leaf(&der, Usage::ClientAuth),
        Err(SvidError::TrailingData(1))
    ));
}

#[test]
fn a_repeated_extension_is_rejected() {
    // Step 1: a second SAN extension must not hide behind the first.
    let der = leaf_der(|p| {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            san_value(ID),
        ));
    });
    let err = check_leaf(&der, Usage::ClientAuth).unwrap_err();
    assert!(
        matches!(&err, SvidError::DuplicateExtension(oid) if oid == "2.5.29.17"),
        "{err:?}"
    );
}

#[test]
fn a_key_usage_that_does_not_parse_is_rejected() {
    // Step 1: fail closed on a malformed known extension.
    let der = leaf_der(|p| {
        p.key_usages.clear();
        let mut ku = CustomExtension::from_oid_content(&[2, 5, 29, 15], vec![0x04, 0x00]);
        ku.set_criticality(true);
        p.custom_extensions.push(ku);
    });
    let err = check_leaf(&der, Usage::ClientAuth).unwrap_err();
    assert!(matches!(err, SvidError::MalformedExtension(_)), "{err:?}");
}

#[test]
fn every_uri_san_counts_whatever_its_scheme() {
    // X509-SVID §2.
    let der = leaf_der(|p| {
        p.subject_alt_names
            .push(SanType::URI("https://example.org/".try_into().unwrap()));
    });
    assert!(matches!(
        check_leaf(&der, Usage::ClientAuth),
        Err(SvidError::UriSanCount(2))
    ));
}

#[test]
fn a_dns_san_next_to_the_uri_san_is_allowed() {
    // X509-SVID §2: other SAN types MAY be present.
    let der = leaf_der(|p| {
        p.subject_alt_names
            .push(SanType::DnsName("api.example.org".try_into().unwrap()));
    });
    assert!(check_leaf(&der, Usage::ClientAuth).is_ok());
}

#[test]
fn an_empty_subject_needs_a_critical_san() {
    // X509-SVID §3.1. rcgen marks the SAN critical exactly when the subject is empty, so
    // the SAN is added by hand, non-critical.
    let der = leaf_der(|p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.subject_alt_names.clear();
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            san_value(ID),
        ));
    });
    assert!(matches!(
        check_leaf(&der, Usage::ClientAuth),
        Err(SvidError::NonCriticalSan)
    ));
}

#[test]
fn our_own_svid_needs_both_client_and_server_auth_when_it_has_an_eku() {
    // X509-SVID §4.4.
    let der = leaf_der(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]);
    assert!(check_leaf(&der, Usage::ClientAuth).is_ok());
    assert!(matches!(
        check_leaf(&der, Usage::Both),
        Err(SvidError::ExtendedKeyUsage("serverAuth"))
    ));
    assert!(matches!(
        check_leaf(&der, Usage::ServerAuth),
        Err(SvidError::ExtendedKeyUsage("serverAuth"))
    ));
}

#[test]
fn a_leaf_without_eku_is_allowed() {
    // X509-SVID §4.4: the leaf SHOULD carry one; it is not required.
    let der = leaf_der(|p| p.extended_key_usages.clear());
    assert!(check_leaf(&der, Usage::Both).is_ok());
}

#[test]
fn key_encipherment_and_key_agreement_are_allowed_on_a_leaf() {
    // X509-SVID §4.3: MAY set keyEncipherment/keyAgreement.
    let der = leaf_der(|p| {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
    });
    assert!(check_leaf(&der, Usage::ClientAuth).is_ok());
}

#[test]
fn a_signing_cert_with_the_root_id_of_the_leafs_domain_is_accepted() {
    let td = TrustDomain::parse("example.org").unwrap();
    assert!(check_signing_cert(&ca_der("spiffe://example.org", |_| {}), &td).is_ok());
    // A URI of another scheme is not a SPIFFE ID and is not constrained.
    assert!(check_signing_cert(&ca_der("https://ca.example.org/", |_| {}), &td).is_ok());
}

#[test]
fn a_signing_cert_with_a_path_or_another_domain_or_a_non_canonical_id_is_rejected() {
    // Step 6, X509-SVID §3.2.
    let td = TrustDomain::parse("example.org").unwrap();
    let err = check_signing_cert(&ca_der("spiffe://example.org/ca", |_| {}), &td).unwrap_err();
    assert!(matches!(err, SvidError::SigningCertPath(_)), "{err:?}");
    let err = check_signing_cert(&ca_der("spiffe://other.org", |_| {}), &td).unwrap_err();
    assert!(
        matches!(err, SvidError::SigningCertDomain { .. }),
        "{err:?}"
    );
    let err = check_signing_cert(&ca_der("SPIFFE://example.org", |_| {}), &td).unwrap_err();
    assert!(matches!(err, SvidError::SpiffeId { .. }), "{err:?}");
}

#[test]
fn a_signing_cert_without_key_cert_sign_is_rejected() {
    // Step 6, X509-SVID §4.3.
    let td = TrustDomain::parse("example.org").unwrap();
    let der = ca_der("spiffe://example.org", |p| {
        p.key_usages = vec![KeyUsagePurpose::CrlSign]
    });
    assert!(matches!(
        check_signing_cert(&der, &td),
        Err(SvidError::SigningCertKeyUsage)
    ));
    let der = ca_der("spiffe://example.org", |p| p.key_usages.clear());
    assert!(matches!(
        check_signing_cert(&der, &td),
        Err(SvidError::SigningCertKeyUsage)
    ));
}

#[test]
fn truncated_or_bit_flipped_certificates_are_rejected_without_panicking() {
    // STYLE habit 9: parsers must not panic on any input.
    let der = leaf_der(|_| {});
    for len in 0..der.len() {
        assert!(check_leaf(&der[..len], Usage::ClientAuth).is_err());
    }
    for i in 0..der.len() {
        for bit in [0x01, 0x80] {
            let mut flipped = der.clone();
            flipped[i] ^= bit;
            let _ = check_leaf(&flipped, Usage::ClientAuth);
            let _ = check_signing_cert(&flipped, &TrustDomain::parse("example.org").unwrap());
        }
    }
}

#[test]
fn each_error_counts_under_its_handshake_failure_reason() {
    let td = TrustDomain::parse("example.org").unwrap();
    assert_eq!(
        SvidError::UntrustedDomain(td).failure_reason(),
        HandshakeFailureReason::UntrustedDomain
    );
    assert_eq!(
        SvidError::Path(webpki::Error::EndEntityUsedAsCa).failure_reason(),
        HandshakeFailureReason::UntrustedChain
    );
    assert_eq!(
        SvidError::SigningCertPath(ID.into()).failure_reason(),
        HandshakeFailureReason::UntrustedChain
    );
    assert_eq!(
        SvidError::CaLeaf.failure_reason(),
        HandshakeFailureReason::InvalidSvid
    );
    assert_eq!(
        SvidError::UriSanCount(2).failure_reason(),
        HandshakeFailureReason::InvalidSvid
    );
}
