//! Accepting an inbound connection: the TLS handshake under its timeout, the peer's verified
//! SPIFFE ID, and what every request on the connection shares; then HTTP, through the hop
//! runner.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::{InboundSide, client_cert};
use crate::connection::ConnectionServer;
use crate::hop;
use crate::identity::IdentitySnapshot;
use crate::listener::{Accepted, HeadWatch};
use crate::shutdown;
use crate::streams::{OpenParties, PeerChain};
use crate::tls::HandshakeFailureReason;
use crate::tls::{PeerIdentity, classify_handshake_error};

/// A verified connection's facts, shared by its requests.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) identity: PeerIdentity,
    pub(super) xfcc: http::HeaderValue,
    /// The peer's socket address, for the audit record.
    pub(super) remote: SocketAddr,
    /// Its IP, formatted once, for the spans' `client.address`.
    pub(super) client_ip: Box<str>,
    /// Both ends' SPIFFE IDs (this workload's as of the handshake) and the chain the peer
    /// presented, leaf first, verified under identity generation `verified_under` (or a later
    /// one): verified again when the bundles change. Its open requests are kept with it.
    pub(super) open: Arc<OpenParties>,
    pub(super) verified_under: AtomicU64,
}

// === impl Peer ===

impl Peer {
    /// This workload, as of the handshake.
    pub(super) fn own(&self) -> &hopgate_config::SpiffeId {
        &self.open.own
    }

    /// Whether the connection's peer still passes: its leaf has not expired, and its chain
    /// verifies under the identity of `generation` (`snapshot`), which is checked once per
    /// identity update rather than per request. A connection made before a bundle change does
    /// not outlive the trust it was made under.
    pub(super) fn still_trusted(&self, generation: u64, snapshot: &IdentitySnapshot) -> bool {
        let Some(chain) = &self.open.peer_chain else {
            return false;
        };
        if SystemTime::now() >= chain.not_after {
            return false;
        }
        if self.verified_under.load(Ordering::Acquire) >= generation {
            return true;
        }
        let Some((leaf, intermediates)) = chain.certs.split_first() else {
            return false;
        };
        let verified = snapshot
            .peer_verifier()
            .verify_svid(leaf, intermediates, UnixTime::now())
            .is_ok_and(|id| id == *self.identity.id());
        if verified {
            self.verified_under.fetch_max(generation, Ordering::AcqRel);
        }
        verified
    }

    /// What an open request on the connection is kept with, and the identity generation its
    /// chain was last verified under.
    pub(super) fn open_parties(&self) -> (Arc<OpenParties>, u64) {
        (
            Arc::clone(&self.open),
            self.verified_under.load(Ordering::Acquire),
        )
    }
}

/// One accepted TCP connection on its way through the handshake to HTTP.
pub(super) struct Connection {
    pub(super) side: Arc<InboundSide>,
    pub(super) server: ConnectionServer,
    pub(super) handshake_timeout: Duration,
}

// === impl Connection ===

impl Connection {
    pub(super) async fn serve(self, accepted: Accepted, drain: shutdown::Watch) {
        let Accepted {
            stream,
            remote,
            permit,
            head,
        } = accepted;
        // A connection still without a request head may be told to give its place at the cap
        // (DOS-04); once it has sent one, `evicted` never completes.
        tokio::select! {
            () = self.serve_io(stream, remote, drain, head.clone()) => {}
            () = head.evicted() => {
                tracing::debug!(client.addr = %remote, "connection closed at the cap: no request head yet");
            }
        }
        drop(permit);
    }

    /// The handshake and HTTP over any byte stream: a TCP socket, or an in-memory pipe in the
    /// stack tests.
    pub(super) async fn serve_io<IO>(
        self,
        stream: IO,
        remote: SocketAddr,
        drain: shutdown::Watch,
        head: HeadWatch,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // `header_read` runs from here to the first request head, the handshake included.
        let accepted = tokio::time::Instant::now();
        let metrics = &self.side.shared.telemetry.metrics;
        // The config is taken per connection, so a rotated SVID or bundle applies to the next
        // handshake while established connections keep the one they proved themselves with.
        // Both ends of the connection are named from that one snapshot.
        let generation = self.side.identity.generation();
        let Some(snapshot) = self.side.identity.snapshot() else {
            // The Workload API withdrew this workload's SVID: there is nothing to present, and
            // no fallback. Refused before the handshake.
            metrics.record_handshake_failure(HandshakeFailureReason::NoIdentity);
            tracing::info!(client.addr = %remote, reason = "no_identity", "tls handshake refused: this sidecar has no SVID");
            return;
        };
        let acceptor = TlsAcceptor::from(snapshot.server_config());
        let tls = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                let reason = classify_handshake_error(&err);
                metrics.record_handshake_failure(reason);
                tracing::info!(client.addr = %remote, reason = reason.as_str(), error = %err, "tls handshake failed");
                return;
            }
            Err(_) => {
                metrics.record_handshake_failure(HandshakeFailureReason::Timeout);
                tracing::info!(client.addr = %remote, reason = "timeout", "tls handshake failed");
                return;
            }
        };
        let certs: Arc<[CertificateDer<'static>]> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        let Some(peer) = PeerIdentity::from_server_connection(tls.get_ref().1) else {
            // The verifier admitted the chain, so this cannot happen; refuse rather than guess.
            metrics.record_handshake_failure(HandshakeFailureReason::InvalidSvid);
            tracing::warn!(client.addr = %remote, "verified connection has no SPIFFE ID");
            return;
        };
        tracing::debug!(client.addr = %remote, peer.id = %peer.id(), "connection accepted");
        // What every request on this connection shares is worked out once: the identities on
        // both ends (as of the handshake) and the identity header the app will receive.
        let own = snapshot.id().clone();
        drop(snapshot);
        let Some(xfcc) = client_cert::client_cert_value(&own, &peer) else {
            tracing::warn!(client.addr = %remote, "peer identity does not fit a header");
            return;
        };
        let open = Arc::new(OpenParties {
            peer: Some(peer.id().clone()),
            own,
            dest: None,
            peer_chain: Some(PeerChain {
                certs,
                not_after: peer.not_after(),
            }),
        });
        let peer = Arc::new(Peer {
            identity: peer,
            xfcc,
            remote,
            client_ip: crate::telemetry::trace::client_ip(remote),
            open,
            verified_under: AtomicU64::new(generation),
        });
        let side = self.side;
        let service = hyper::service::service_fn(move |req| {
            let side = Arc::clone(&side);
            let peer = Arc::clone(&peer);
            async move { Ok::<_, Infallible>(hop::serve(&*side, &*peer, req).await) }
        });
        self.server.serve(tls, service, drain, accepted, head).await;
    }
}
