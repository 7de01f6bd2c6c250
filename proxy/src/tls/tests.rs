use std::sync::Arc;

use rustls::HandshakeKind;
use rustls::client::ClientSessionMemoryCache;
use rustls::client::Resumption;

use super::*;
use crate::tls::test_support::{TestCa, handshake, identity_under};

fn pair(ca: &TestCa) -> ((Identity, tempfile::TempDir), (Identity, tempfile::TempDir)) {
    (
        identity_under(ca, "spiffe://example.org/ns/s/sa/server"),
        identity_under(ca, "spiffe://example.org/ns/c/sa/client"),
    )
}

fn io_error(err: rustls::Error) -> io::Error {
    // What tokio-rustls hands back from a failed accept.
    io::Error::new(io::ErrorKind::InvalidData, err)
}

#[test]
fn inbound_offers_h2_then_http1_and_negotiates_h2_with_a_sidecar() {
    let ca = TestCa::new("example.org");
    let ((server, _d1), (client, _d2)) = pair(&ca);
    let config =
        inbound_server_config(&server, &[TrustDomain::parse("example.org").unwrap()]).unwrap();
    assert_eq!(
        config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let client_cfg = outbound_client_config(&client, server.svid().id().clone()).unwrap();
    assert_eq!(
        client_cfg.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let (_, conn) = handshake(client_cfg, config).unwrap();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
}

#[test]
fn inbound_never_resumes_a_session_so_every_connection_re_proves_its_certificate() {
    let ca = TestCa::new("example.org");
    let ((server, _d1), (client, _d2)) = pair(&ca);
    let config =
        inbound_server_config(&server, &[TrustDomain::parse("example.org").unwrap()]).unwrap();
    assert_eq!(config.send_tls13_tickets, 0);
    let mut client_cfg =
        (*outbound_client_config(&client, server.svid().id().clone()).unwrap()).clone();
    // A client that would gladly resume.
    client_cfg.resumption = Resumption::store(Arc::new(ClientSessionMemoryCache::new(8)));
    let client_cfg = Arc::new(client_cfg);
    for nth in ["first", "second", "third"] {
        let (_, conn) = handshake(Arc::clone(&client_cfg), Arc::clone(&config)).unwrap();
        assert_eq!(
            conn.handshake_kind(),
            Some(HandshakeKind::Full),
            "{nth} connection"
        );
    }
}

#[test]
fn both_verifiers_check_tls12_handshake_signatures_too() {
    let ca = TestCa::new("example.org");
    let ((server, _d1), (client, _d2)) = pair(&ca);
    let allowed = [TrustDomain::parse("example.org").unwrap()];
    // The production verifier and certificate, on a server that only speaks TLS 1.2.
    let verifier = SpiffeClientVerifier::new(server.bundles(), &allowed).unwrap();
    let tls12_server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            server.svid().certified_key(),
        )));
    let client_cfg = outbound_client_config(&client, server.svid().id().clone()).unwrap();
    let (_, conn) = handshake(client_cfg, Arc::new(tls12_server)).unwrap();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let peer = PeerIdentity::from_server_connection(&conn).unwrap();
    assert_eq!(peer.id(), client.svid().id());
}

#[test]
fn handshake_errors_are_classified_by_their_cause() {
    let cases = [
        (
            rustls::Error::NoCertificatesPresented,
            HandshakeFailureReason::NoClientCert,
        ),
        (
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                SvidError::UntrustedDomain(TrustDomain::parse("evil.org").unwrap()),
            )))),
            HandshakeFailureReason::UntrustedDomain,
        ),
        (
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                SvidError::UriSanCount(2),
            )))),
            HandshakeFailureReason::InvalidSvid,
        ),
        (
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            HandshakeFailureReason::UntrustedChain,
        ),
        (
            rustls::Error::InvalidCertificate(CertificateError::BadSignature),
            HandshakeFailureReason::UntrustedChain,
        ),
        (
            rustls::Error::InvalidCertificate(CertificateError::Expired),
            HandshakeFailureReason::Expired,
        ),
        (
            rustls::Error::InvalidCertificate(CertificateError::NotValidYet),
            HandshakeFailureReason::Expired,
        ),
        (
            rustls::Error::DecryptError,
            HandshakeFailureReason::Protocol,
        ),
    ];
    for (err, expected) in cases {
        let shown = format!("{err:?}");
        assert_eq!(
            classify_handshake_error(&io_error(err)),
            expected,
            "{shown}"
        );
    }
    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
    assert_eq!(
        classify_handshake_error(&eof),
        HandshakeFailureReason::Protocol
    );
    let timeout = io::Error::from(io::ErrorKind::TimedOut);
    assert_eq!(
        classify_handshake_error(&timeout),
        HandshakeFailureReason::Timeout
    );
}

#[test]
fn an_inbound_config_needs_an_allowed_trust_domain_with_a_bundle() {
    let ca = TestCa::new("example.org");
    let ((server, _d1), _) = pair(&ca);
    assert!(matches!(
        inbound_server_config(&server, &[]),
        Err(TlsError::NoAllowedTrustDomains)
    ));
    let other = TrustDomain::parse("other.org").unwrap();
    assert!(matches!(
        inbound_server_config(&server, &[other]),
        Err(TlsError::MissingBundle(_))
    ));
}
