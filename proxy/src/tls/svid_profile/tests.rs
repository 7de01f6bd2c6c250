use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::Index;
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

// === the `svid_profile` fuzz target's properties, as proptests ===

/// What the `svid_profile` fuzz target asserts of any bytes: no check panics; an accepted leaf
/// names one canonical SPIFFE ID with a path; our own SVID's check accepts exactly what both
/// the client and the server check accept, with the same ID; and no certificate is both an
/// acceptable leaf and an acceptable signing certificate.
fn assert_the_profile_checks_agree(der: &[u8]) -> Result<(), TestCaseError> {
    let facts = |leaf: SvidLeaf| (leaf.id, leaf.not_before, leaf.not_after);
    let client = check_leaf(der, Usage::ClientAuth).map(facts);
    let server = check_leaf(der, Usage::ServerAuth).map(facts);
    let own = check_leaf(der, Usage::Both).map(facts);
    for (id, _, _) in [&client, &server, &own].into_iter().flatten() {
        prop_assert!(!id.is_root(), "a workload SVID names a path: {}", id);
        let reparsed = SpiffeId::parse(id.as_str());
        prop_assert_eq!(reparsed.as_ref(), Ok(id));
    }
    prop_assert_eq!(
        own.is_ok(),
        client.is_ok() && server.is_ok(),
        "own: {:?}, client: {:?}, server: {:?}",
        own,
        client,
        server
    );
    if let (Ok(own), Ok(client), Ok(server)) = (&own, &client, &server) {
        prop_assert!(own == client && own == server);
    }
    let leaf_ok = client.is_ok() || server.is_ok();
    let domain = match [&client, &server].into_iter().flatten().next() {
        Some((id, _, _)) => id.trust_domain(),
        None => TrustDomain::parse("example.org").unwrap(),
    };
    let signing = check_signing_cert(der, &domain);
    prop_assert!(
        !(leaf_ok && signing.is_ok()),
        "accepted both as a leaf and as a signing certificate"
    );
    let errors = [&client, &server, &own]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
        .chain(signing.as_ref().err());
    for err in errors {
        let _ = (err.to_string(), err.failure_reason());
    }
    Ok(())
}

/// Valid DER to perturb: leaves of several shapes, and signing certificates.
static VALID_DER: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    vec![
        leaf_der(|_| {}),
        leaf_der(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]),
        leaf_der(|p| {
            p.extended_key_usages.clear();
            p.subject_alt_names
                .push(SanType::DnsName("api.example.org".try_into().unwrap()));
        }),
        ca_der("spiffe://example.org", |_| {}),
        ca_der("https://ca.example.org/", |_| {}),
    ]
});

/// One change to a certificate's bytes.
#[derive(Clone, Debug)]
enum Edit {
    /// XORs one byte.
    Flip(Index, u8),
    /// Sets one byte (a tag or a length, as often as not).
    Set(Index, u8),
    /// Inserts bytes.
    Insert(Index, Vec<u8>),
    /// Removes up to this many bytes.
    Remove(Index, usize),
    /// Cuts the certificate short.
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), 1..=255u8).prop_map(|(at, bits)| Edit::Flip(at, bits)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        1 => (any::<Index>(), 1..8usize).prop_map(|(at, len)| Edit::Remove(at, len)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

/// A valid certificate with a few edits.
fn near_valid_der() -> impl Strategy<Value = Vec<u8>> {
    (0..VALID_DER.len(), prop::collection::vec(edit(), 1..4)).prop_map(|(which, edits)| {
        let mut der = VALID_DER[which].clone();
        for edit in edits {
            let len = der.len();
            if len == 0 {
                break;
            }
            match edit {
                Edit::Flip(at, bits) => der[at.index(len)] ^= bits,
                Edit::Set(at, byte) => der[at.index(len)] = byte,
                Edit::Insert(at, bytes) => {
                    let at = at.index(len + 1);
                    der.splice(at..at, bytes);
                }
                Edit::Remove(at, count) => {
                    let at = at.index(len);
                    der.drain(at..(at + count).min(len));
                }
                Edit::Truncate(at) => der.truncate(at.index(len)),
            }
        }
        der
    })
}

#[test]
fn the_valid_examples_pass_as_what_they_are() {
    // Else the near-valid proptest below would start from certificates the checks refuse.
    let td = TrustDomain::parse("example.org").unwrap();
    for (i, der) in VALID_DER.iter().enumerate() {
        let leaf = check_leaf(der, Usage::ClientAuth).is_ok();
        let signing = check_signing_cert(der, &td).is_ok();
        assert!(
            leaf != signing,
            "example {i}: leaf {leaf}, signing {signing}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_svid_profile_checks_never_panic_on_arbitrary_bytes(
        der in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        assert_the_profile_checks_agree(&der)?;
    }

    #[test]
    fn the_svid_profile_checks_never_panic_on_a_perturbed_valid_certificate(
        der in near_valid_der(),
    ) {
        assert_the_profile_checks_agree(&der)?;
    }
}
