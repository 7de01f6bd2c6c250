//! `PeerIdentity`: the proof that a connection's client presented a verified SVID.
//!
//! It is made only here, from a finished inbound handshake whose client certificate
//! [`crate::tls::SpiffeClientVerifier`] accepted; nothing else can construct one, so code that
//! takes a `&PeerIdentity` knows the check ran (STYLE habit 5).

use std::fmt;
use std::fmt::Write as _;
use std::time::SystemTime;

use hopgate_config::SpiffeId;
use sha2::{Digest, Sha256};

use crate::tls::svid_profile::{self, Usage};

/// The verified SPIFFE ID of an inbound connection's client, and a hash of its certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    id: SpiffeId,
    cert_sha256: [u8; 32],
    not_after: SystemTime,
}

// === impl PeerIdentity ===

impl PeerIdentity {
    /// Reads the client's verified leaf off a finished handshake and re-parses its one URI SAN.
    ///
    /// `None` when the handshake is not finished or no client certificate was verified: a
    /// connection accepted with [`crate::tls::inbound_server_config`] always has one, so `None`
    /// means the connection must be dropped.
    pub(crate) fn from_server_connection(conn: &rustls::ServerConnection) -> Option<Self> {
        if conn.is_handshaking() {
            return None;
        }
        let leaf = conn.peer_certificates()?.first()?;
        // The verifier already ran every check; this re-parse only extracts the ID, through the
        // same code so the ID here is byte for byte the one that was verified.
        let facts = svid_profile::check_leaf(leaf, Usage::ClientAuth).ok()?;
        Some(Self {
            id: facts.id,
            cert_sha256: Sha256::digest(leaf).into(),
            not_after: facts.not_after,
        })
    }

    /// The leaf's notAfter: the connection's authority ends there.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The peer's SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// SHA-256 of the peer's leaf certificate DER (the `Hash=` of XFCC, `cnf.x5t#S256` of tokens).
    pub fn cert_sha256(&self) -> &[u8; 32] {
        &self.cert_sha256
    }

    /// [`Self::cert_sha256`] as lowercase hex.
    pub fn cert_sha256_hex(&self) -> String {
        self.cert_sha256
            .iter()
            .fold(String::with_capacity(64), |mut out, byte| {
                // Writing to a String cannot fail.
                let _ = write!(out, "{byte:02x}");
                out
            })
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("id", &self.id)
            .field("cert_sha256", &self.cert_sha256_hex())
            .finish()
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id, f)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tls::test_support::{TestCa, handshake, identity, identity_under};
    use crate::tls::{inbound_server_config, outbound_client_config};

    #[test]
    fn a_verified_client_yields_its_id_and_certificate_hash() {
        let ca = TestCa::new("example.org");
        let (server, _dir1) = identity_under(&ca, "spiffe://example.org/ns/s/sa/server");
        let (client, _dir2) = identity_under(&ca, "spiffe://example.org/ns/c/sa/client");
        let server_cfg =
            inbound_server_config(&server, &[server.svid().id().trust_domain()]).unwrap();
        let client_cfg = outbound_client_config(&client, server.svid().id().clone()).unwrap();
        let (_, conn) = handshake(client_cfg, Arc::clone(&server_cfg)).unwrap();
        let peer = PeerIdentity::from_server_connection(&conn).unwrap();
        assert_eq!(peer.id(), client.svid().id());
        let expected: [u8; 32] = Sha256::digest(client.svid().leaf().unwrap()).into();
        assert_eq!(peer.cert_sha256(), &expected);
        assert_eq!(peer.cert_sha256_hex().len(), 64);
        assert!(
            peer.cert_sha256_hex()
                .chars()
                .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
        );
    }

    #[test]
    fn a_connection_still_handshaking_has_no_peer_identity() {
        let (server, _dir) = identity("spiffe://example.org/ns/s/sa/server");
        let cfg = inbound_server_config(&server, &[server.svid().id().trust_domain()]).unwrap();
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        assert!(PeerIdentity::from_server_connection(&conn).is_none());
    }
}
