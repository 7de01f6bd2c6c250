//! The inbound SVID matrix: real TLS handshakes over loopback against the production inbound
//! config, one test per rule. Each reject case names its rule in docs/security.md (an `SVID-S..`
//! row of "SPIFFE IDs", or a step of "Inbound: the SVID on the handshake"), with the X509-SVID
//! section where one applies, and asserts the handshake failure reason the server counts.
//!
//! Trust domains: `example.org` (ours, allowed), `other.org` (federated: own bundle, allowed),
//! `blocked.org` (has a bundle but is not allowed), `evil.org` (no bundle at all).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure here is a broken test"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hopgate_config::TrustDomain;
use hopgate_proxy::tls::HandshakeFailureReason;
use hopgate_proxy::tls::{Identity, classify_handshake_error, inbound_server_config};
use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::support::pki::{Ca, Leaf};

const ID: &str = "spiffe://example.org/ns/a/sa/b";
/// The name the test client dials; the server's SVID carries it as a DNS SAN so a stock webpki
/// client can check the server (these tests are about the client certificate).
const SERVER_NAME: &str = "hopgate.test";

/// The server side of every case: one SVID, four CAs, the production inbound config.
struct Fixture {
    example: Ca,
    other: Ca,
    blocked: Ca,
    evil: Ca,
    server: Arc<ServerConfig>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (example, other, blocked, evil) = (
            Ca::new("example.org"),
            Ca::new("other.org"),
            Ca::new("blocked.org"),
            Ca::new("evil.org"),
        );
        let (cert, key) = example
            .leaf("spiffe://example.org/ns/server/sa/api")
            .dns(SERVER_NAME)
            .build()
            .write(dir.path());
        let bundles: BTreeMap<_, _> = [&example, &other, &blocked]
            .into_iter()
            .map(|ca| {
                (
                    TrustDomain::parse(ca.trust_domain()).unwrap(),
                    ca.write_bundle(dir.path()),
                )
            })
            .collect();
        let identity = Identity::load(&cert, &key, &bundles).unwrap();
        let allowed = ["example.org", "other.org"].map(|td| TrustDomain::parse(td).unwrap());
        let server = inbound_server_config(&identity, &allowed).unwrap();
        Self {
            example,
            other,
            blocked,
            evil,
            server,
            _dir: dir,
        }
    }

    /// Handshakes with `leaf` as the client certificate (or none) over loopback, TLS 1.3 and 1.2
    /// offered; the server's verdict, as the listener would count it.
    async fn handshake(&self, leaf: Option<&Leaf>) -> Result<(), HandshakeFailureReason> {
        self.handshake_with(leaf, &[&rustls::version::TLS13, &rustls::version::TLS12])
            .await
    }

    async fn handshake_with(
        &self,
        leaf: Option<&Leaf>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Result<(), HandshakeFailureReason> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::clone(&self.server));
        let expected_cert = leaf.map(|l| l.cert_der.clone());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            match acceptor.accept(tcp).await {
                Ok(tls) => {
                    // What the server verified is exactly what the client presented.
                    let presented = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first().cloned());
                    assert_eq!(presented, expected_cert);
                    Ok(())
                }
                Err(err) => Err(classify_handshake_error(&err)),
            }
        });
        let connector = TlsConnector::from(Arc::new(self.client_config(leaf, versions)));
        let tcp = TcpStream::connect(addr).await.unwrap();
        // In TLS 1.3 the client finishes before the server has judged its certificate, so the
        // client's result says nothing; keep the stream open until the server has decided.
        let client = connector
            .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
            .await;
        let verdict = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
        drop(client);
        verdict
    }

    fn client_config(
        &self,
        leaf: Option<&Leaf>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.example.root_der()).unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let Some(leaf) = leaf else {
            return builder.with_no_client_auth();
        };
        let key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(leaf.key_der.clone_key()))
            .unwrap();
        // `CertifiedKey::new` presents the chain exactly as built, broken or not.
        let chain: Vec<CertificateDer<'static>> = leaf.chain_der.clone();
        builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(CertifiedKey::new(
            chain, key,
        ))))
    }

    async fn accepts(&self, leaf: &Leaf) {
        assert_eq!(self.handshake(Some(leaf)).await, Ok(()));
    }

    async fn rejects(&self, leaf: &Leaf, reason: HandshakeFailureReason) {
        assert_eq!(self.handshake(Some(leaf)).await, Err(reason));
    }

    /// A leaf for `uri` issued by `example.org`'s CA.
    async fn rejects_id(&self, uri: &str) {
        let leaf = self.example.leaf(uri).build();
        assert_eq!(
            self.handshake(Some(&leaf)).await,
            Err(HandshakeFailureReason::InvalidSvid),
            "{uri}"
        );
    }
}

// === accepted ===

#[tokio::test]
async fn a_valid_svid_is_accepted() {
    let fx = Fixture::new();
    fx.accepts(&fx.example.leaf(ID).build()).await;
}

#[tokio::test]
async fn a_valid_svid_issued_via_an_intermediate_is_accepted() {
    let fx = Fixture::new();
    fx.accepts(&fx.example.intermediate().leaf(ID).build())
        .await;
}

#[tokio::test]
async fn an_svid_of_a_federated_trust_domain_is_accepted_against_its_own_bundle() {
    // Federation: other.org has its own bundle and is allowed.
    let fx = Fixture::new();
    fx.accepts(&fx.other.leaf("spiffe://other.org/ns/a/sa/b").build())
        .await;
}

#[tokio::test]
async fn a_valid_svid_is_accepted_over_tls12() {
    let fx = Fixture::new();
    let leaf = fx.example.leaf(ID).build();
    let verdict = fx
        .handshake_with(Some(&leaf), &[&rustls::version::TLS12])
        .await;
    assert_eq!(verdict, Ok(()));
}

#[tokio::test]
async fn an_svid_with_a_dns_san_besides_its_uri_san_and_no_eku_is_accepted() {
    // X509-SVID §2 (other SAN types MAY be present), §4.4 (EKU is a SHOULD).
    let fx = Fixture::new();
    fx.accepts(&fx.example.leaf(ID).dns("b.example.org").eku(&[]).build())
        .await;
}

// === rejected: no certificate, SAN and ID rules ===

#[tokio::test]
async fn a_client_without_a_certificate_is_rejected() {
    // docs/security.md, "Inbound: the SVID on the handshake": a client SVID is mandatory.
    let fx = Fixture::new();
    assert_eq!(
        fx.handshake(None).await,
        Err(HandshakeFailureReason::NoClientCert)
    );
}

#[tokio::test]
async fn an_svid_with_two_uri_sans_is_rejected() {
    // X509-SVID §2: more than one URI SAN MUST be rejected, whatever the second's scheme.
    let fx = Fixture::new();
    let leaf = fx
        .example
        .leaf(ID)
        .extra_uri("https://example.org/other")
        .build();
    fx.rejects(&leaf, HandshakeFailureReason::InvalidSvid).await;
}

#[tokio::test]
async fn a_non_spiffe_uri_san_is_rejected_svid_s07() {
    // SVID-S07: the scheme must be `spiffe`.
    Fixture::new()
        .rejects_id("https://example.org/ns/a/sa/b")
        .await;
}

#[tokio::test]
async fn a_certificate_without_a_uri_san_is_rejected() {
    // X509-SVID §2: exactly one URI SAN.
    let fx = Fixture::new();
    let leaf = fx.example.leaf(ID).no_uri().dns("a.example.org").build();
    fx.rejects(&leaf, HandshakeFailureReason::InvalidSvid).await;
}

#[tokio::test]
async fn a_root_id_without_a_path_is_rejected_svid_s01() {
    // SVID-S01: a valid ID, invalid as a leaf (X509-SVID §3.1, §5.2).
    Fixture::new().rejects_id("spiffe://example.org").await;
}

#[tokio::test]
async fn an_upper_case_scheme_is_rejected_not_normalised_svid_s08() {
    // SVID-S08 (PROFILE: reject).
    let fx = Fixture::new();
    fx.rejects_id("SPIFFE://example.org/ns/a/sa/b").await;
    fx.rejects_id("Spiffe://example.org/ns/a/sa/b").await;
}

#[tokio::test]
async fn an_upper_case_trust_domain_is_rejected_not_normalised_svid_s09() {
    // SVID-S09 (PROFILE: reject).
    Fixture::new()
        .rejects_id("spiffe://EXAMPLE.org/ns/a/sa/b")
        .await;
}

#[tokio::test]
async fn a_trailing_slash_is_rejected_svid_s11() {
    // SVID-S11.
    Fixture::new()
        .rejects_id("spiffe://example.org/ns/a/sa/b/")
        .await;
}

#[tokio::test]
async fn an_empty_path_segment_is_rejected_svid_s12() {
    // SVID-S12.
    Fixture::new()
        .rejects_id("spiffe://example.org/ns//sa/b")
        .await;
}

#[tokio::test]
async fn dot_segments_are_rejected_svid_s13() {
    // SVID-S13.
    let fx = Fixture::new();
    fx.rejects_id("spiffe://example.org/ns/../sa/b").await;
    fx.rejects_id("spiffe://example.org/./ns/a").await;
}

#[tokio::test]
async fn a_percent_encoded_trust_domain_is_rejected_svid_s14() {
    // SVID-S14.
    Fixture::new()
        .rejects_id("spiffe://%65xample.org/ns/a/sa/b")
        .await;
}

#[tokio::test]
async fn a_percent_encoded_path_is_rejected_svid_s15() {
    // SVID-S15.
    Fixture::new()
        .rejects_id("spiffe://example.org/ns/%61/sa/b")
        .await;
}

#[tokio::test]
async fn a_query_or_fragment_is_rejected_svid_s16() {
    // SVID-S16.
    let fx = Fixture::new();
    fx.rejects_id("spiffe://example.org/ns/a/sa/b?x=1").await;
    fx.rejects_id("spiffe://example.org/ns/a/sa/b#frag").await;
}

#[tokio::test]
async fn a_port_is_rejected_svid_s17() {
    // SVID-S17.
    Fixture::new()
        .rejects_id("spiffe://example.org:8443/ns/a/sa/b")
        .await;
}

#[tokio::test]
async fn userinfo_is_rejected_svid_s18() {
    // SVID-S18.
    Fixture::new()
        .rejects_id("spiffe://user:pw@example.org/ns/a/sa/b")
        .await;
}

#[tokio::test]
async fn characters_outside_the_spiffe_charset_are_rejected_svid_s20_s21() {
    // SVID-S20, SVID-S21.
    let fx = Fixture::new();
    fx.rejects_id("spiffe://example.org/ns/a$b").await;
    fx.rejects_id("spiffe://example.org/ns/~a").await;
}

// === rejected: certificate profile ===

#[tokio::test]
async fn a_leaf_that_is_a_ca_is_rejected() {
    // X509-SVID §4.1, step 3.
    let fx = Fixture::new();
    let leaf = fx
        .example
        .leaf(ID)
        .marked_ca()
        .key_usages(&[KeyUsagePurpose::DigitalSignature])
        .build();
    fx.rejects(&leaf, HandshakeFailureReason::InvalidSvid).await;
}

#[tokio::test]
async fn a_leaf_with_key_cert_sign_is_rejected() {
    // X509-SVID §4.3, step 3.
    let fx = Fixture::new();
    let usages = [
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    fx.rejects(
        &fx.example.leaf(ID).key_usages(&usages).build(),
        HandshakeFailureReason::InvalidSvid,
    )
    .await;
}

#[tokio::test]
async fn a_leaf_with_crl_sign_is_rejected() {
    // X509-SVID §4.3, step 3 (webpki alone accepts it).
    let fx = Fixture::new();
    let usages = [KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    fx.rejects(
        &fx.example.leaf(ID).key_usages(&usages).build(),
        HandshakeFailureReason::InvalidSvid,
    )
    .await;
}

#[tokio::test]
async fn a_leaf_without_digital_signature_is_rejected() {
    // X509-SVID §4.3, step 3 (webpki alone accepts it).
    let fx = Fixture::new();
    let leaf = fx
        .example
        .leaf(ID)
        .key_usages(&[KeyUsagePurpose::KeyEncipherment])
        .build();
    fx.rejects(&leaf, HandshakeFailureReason::InvalidSvid).await;
}

#[tokio::test]
async fn a_leaf_without_key_usage_is_rejected() {
    // X509-SVID §4.3: key usage MUST be present (go-spiffe's Verify accepts it).
    let fx = Fixture::new();
    fx.rejects(
        &fx.example.leaf(ID).no_key_usage().build(),
        HandshakeFailureReason::InvalidSvid,
    )
    .await;
}

#[tokio::test]
async fn a_leaf_with_a_non_critical_key_usage_is_rejected_profile() {
    // X509-SVID §4.3 "MUST be critical". PROFILE: other SVID verifiers accept it;
    // hopgate rejects it. This test records that choice.
    let fx = Fixture::new();
    let leaf = fx.example.leaf(ID).non_critical_key_usage().build();
    fx.rejects(&leaf, HandshakeFailureReason::InvalidSvid).await;
}

#[tokio::test]
async fn a_leaf_whose_eku_lacks_client_auth_is_rejected() {
    // X509-SVID §4.4, step 3: serverAuth only.
    let fx = Fixture::new();
    let leaf = fx
        .example
        .leaf(ID)
        .eku(&[ExtendedKeyUsagePurpose::ServerAuth])
        .build();
    fx.rejects(&leaf, HandshakeFailureReason::InvalidSvid).await;
}

#[tokio::test]
async fn a_leaf_with_trailing_data_is_rejected() {
    // Step 1: strict parse.
    let fx = Fixture::new();
    fx.rejects(
        &fx.example.leaf(ID).trailing_data().build(),
        HandshakeFailureReason::InvalidSvid,
    )
    .await;
}

#[tokio::test]
async fn a_leaf_with_a_repeated_san_extension_is_rejected() {
    // Step 1: a duplicate extension could hide a second identity.
    let fx = Fixture::new();
    let leaf = fx.example.leaf(ID).duplicate_san_extension().build();
    fx.rejects(&leaf, HandshakeFailureReason::InvalidSvid).await;
}

// === rejected: validity window ===

#[tokio::test]
async fn an_expired_leaf_is_rejected() {
    // Step 5 (time = now).
    let fx = Fixture::new();
    fx.rejects(
        &fx.example.leaf(ID).expired().build(),
        HandshakeFailureReason::Expired,
    )
    .await;
}

#[tokio::test]
async fn a_leaf_not_yet_valid_is_rejected() {
    // Step 5 (time = now).
    let fx = Fixture::new();
    fx.rejects(
        &fx.example.leaf(ID).not_yet_valid().build(),
        HandshakeFailureReason::Expired,
    )
    .await;
}

// === rejected: trust domain and bundle selection ===

#[tokio::test]
async fn a_foreign_trust_domain_without_a_bundle_is_rejected() {
    // Step 4: unknown trust domain, no fallback to other roots.
    let fx = Fixture::new();
    let leaf = fx.evil.leaf("spiffe://evil.org/ns/a/sa/b").build();
    fx.rejects(&leaf, HandshakeFailureReason::UntrustedDomain)
        .await;
}

#[tokio::test]
async fn a_trust_domain_with_a_bundle_that_is_not_allowed_is_rejected() {
    // Step 4, `inbound.allowed_trust_domains` (docs/configuration.md).
    let fx = Fixture::new();
    let leaf = fx.blocked.leaf("spiffe://blocked.org/ns/a/sa/b").build();
    fx.rejects(&leaf, HandshakeFailureReason::UntrustedDomain)
        .await;
}

#[tokio::test]
async fn an_svid_signed_by_the_other_federated_domains_ca_is_rejected() {
    // Federation, step 4: the bundle is picked by the SVID's trust domain, never another's.
    let fx = Fixture::new();
    let leaf = fx.example.leaf(ID).signed_by(&fx.other).build();
    fx.rejects(&leaf, HandshakeFailureReason::UntrustedChain)
        .await;
}

// === rejected: path validation ===

#[tokio::test]
async fn an_svid_from_an_untrusted_root_with_the_same_name_is_rejected() {
    // Step 5: same subject name as example.org's root, different key.
    let fx = Fixture::new();
    let impostor = Ca::new("example.org");
    fx.rejects(
        &impostor.leaf(ID).build(),
        HandshakeFailureReason::UntrustedChain,
    )
    .await;
}

#[tokio::test]
async fn a_self_signed_leaf_is_rejected() {
    // Step 5.
    let fx = Fixture::new();
    fx.rejects(
        &fx.example.leaf(ID).self_signed().build(),
        HandshakeFailureReason::UntrustedChain,
    )
    .await;
}

#[tokio::test]
async fn a_leaf_issued_by_a_certificate_that_is_not_a_ca_is_rejected() {
    // Step 5 (RFC 5280 §4.2.1.9 basic constraints), X509-SVID §4.1.
    let fx = Fixture::new();
    let not_ca = fx.example.intermediate_builder().not_ca().build();
    fx.rejects(
        &not_ca.leaf(ID).build(),
        HandshakeFailureReason::UntrustedChain,
    )
    .await;
}

#[tokio::test]
async fn a_leaf_presented_without_its_intermediate_is_rejected() {
    // Step 5: intermediates come only from the presented chain.
    let fx = Fixture::new();
    let leaf = fx
        .example
        .intermediate()
        .leaf(ID)
        .omit_intermediates()
        .build();
    fx.rejects(&leaf, HandshakeFailureReason::UntrustedChain)
        .await;
}

#[tokio::test]
async fn an_intermediate_whose_spiffe_id_has_a_path_is_rejected() {
    // X509-SVID §3.2, step 6.
    let fx = Fixture::new();
    let ca = fx
        .example
        .intermediate_builder()
        .uris(&["spiffe://example.org/ca"])
        .build();
    fx.rejects(&ca.leaf(ID).build(), HandshakeFailureReason::UntrustedChain)
        .await;
}

#[tokio::test]
async fn an_intermediate_with_the_id_of_another_trust_domain_is_rejected() {
    // Step 6 (PROFILE: X509-SVID §3.2 "SHOULD be in the leaf's trust domain" enforced).
    let fx = Fixture::new();
    let ca = fx
        .example
        .intermediate_builder()
        .uris(&["spiffe://other.org"])
        .build();
    fx.rejects(&ca.leaf(ID).build(), HandshakeFailureReason::UntrustedChain)
        .await;
}
