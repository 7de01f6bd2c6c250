//! [`IdentitySnapshot`]: one identity and everything the sidecar derives from it, built once
//! per update off the request path and published whole.
//!
//! ```text
//!  Identity (SVID + bundles) ─┬─▶ inbound ServerConfig            (accept: one per connection)
//!                             ├─▶ SpiffeClientVerifier (x5c) ─▶ TokenVerifier (inbound, relay)
//!                             ├─▶ Minter                        (outbound: the hop tokens)
//!                             └─▶ ClientConfig per route        (outbound: the mTLS origination)
//! ```
//!
//! Readers load one snapshot per connection or request and take every piece from it, so a
//! reload between two reads can never pair this workload's SVID of one update with the bundles
//! (or the token minter) of another.

use std::sync::Arc;
use std::time::Duration;

use hopgate_config::{SpiffeId, TrustDomain};
use rustls::{ClientConfig, ServerConfig};
use thiserror::Error;

use crate::tls::{
    Identity, SpiffeClientVerifier, TlsError, inbound_server_config, outbound_client_config,
};
use crate::token::{Limits, Minter, TokenError, TokenVerifier};

/// What the sidecar derives from every identity, fixed at startup by its configuration.
#[derive(Clone, Debug)]
pub struct Derived {
    /// The trust domains a peer may come from (`inbound.allowed_trust_domains`); empty for
    /// every trust domain the update carries a bundle for (the Workload API's default).
    pub allowed: Vec<TrustDomain>,
    /// The hop token rules (`token.*`).
    pub limits: Limits,
    /// With an outbound side: the hop tokens' lifetime (`token.ttl`); the SVID must then be
    /// able to sign them, or the update is refused.
    pub mint_ttl: Option<Duration>,
    /// Each outbound route's `identity`, in configuration order: one client config each.
    pub routes: Vec<SpiffeId>,
}

/// Why an identity update cannot be used; the last good snapshot stays.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// The SVID or a bundle is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The SVID's key cannot sign hop tokens, and the outbound side mints them.
    #[error("identity.svid: cannot sign hop tokens: {0}")]
    Minter(#[source] TokenError),
    /// The Workload API gave no usable identity (at startup, in time), or sent an update that
    /// cannot be read; the message names the socket and the problem.
    #[error("identity.workload_api: {0}")]
    WorkloadApi(String),
}

impl IdentityError {
    /// Whether the SVID itself has expired.
    pub(crate) fn is_expired(&self) -> bool {
        matches!(self, Self::Tls(TlsError::Expired { .. }))
    }
}

/// One identity and what is derived from it, immutable once built.
pub struct IdentitySnapshot {
    identity: Arc<Identity>,
    server_config: Arc<ServerConfig>,
    tokens: TokenVerifier,
    /// The handshake's SVID rules, for chains judged outside it (an open stream's peer).
    peers: Arc<SpiffeClientVerifier>,
    minter: Option<Minter>,
    clients: Vec<Arc<ClientConfig>>,
}

// === impl IdentitySnapshot ===

impl IdentitySnapshot {
    pub(super) fn build(identity: Identity, derived: &Derived) -> Result<Self, IdentityError> {
        let allowed = if derived.allowed.is_empty() {
            identity
                .bundles()
                .trust_domains()
                .into_iter()
                .cloned()
                .collect()
        } else {
            derived.allowed.clone()
        };
        let server_config = inbound_server_config(&identity, &allowed)?;
        // The same SVID rules as the handshake, for certificates outside it (a hop token's x5c).
        let chains = Arc::new(SpiffeClientVerifier::new(identity.bundles(), &allowed)?);
        let tokens = TokenVerifier::new(
            identity.svid().id().clone(),
            Arc::clone(&chains),
            derived.limits,
        );
        let minter = derived
            .mint_ttl
            .map(|ttl| Minter::new(identity.svid(), ttl))
            .transpose()
            .map_err(IdentityError::Minter)?;
        let clients = derived
            .routes
            .iter()
            .map(|expected| outbound_client_config(&identity, expected.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            identity: Arc::new(identity),
            server_config,
            tokens,
            peers: chains,
            minter,
            clients,
        })
    }

    /// The SVID and bundles.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The SVID and bundles, shared: the audit seals sign with the SVID of the snapshot
    /// current when each is written.
    pub(crate) fn shared_identity(&self) -> Arc<Identity> {
        Arc::clone(&self.identity)
    }

    /// This workload's SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        self.identity.svid().id()
    }

    /// The inbound server config: take it once per accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server_config)
    }

    /// The inbound handshake's SVID rules under this snapshot's bundles and trust domains.
    pub(crate) fn peer_verifier(&self) -> &SpiffeClientVerifier {
        &self.peers
    }

    /// The hop token verifier: this workload as audience, this snapshot's bundles for `x5c`.
    pub(crate) fn tokens(&self) -> &TokenVerifier {
        &self.tokens
    }

    /// The hop token minter; `None` without an outbound side.
    pub(crate) fn minter(&self) -> Option<&Minter> {
        self.minter.as_ref()
    }

    /// The client config of outbound route `route` (its index in `outbound.routes`).
    pub(crate) fn client(&self, route: usize) -> Option<&Arc<ClientConfig>> {
        self.clients.get(route)
    }
}

impl std::fmt::Debug for IdentitySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySnapshot")
            .field("identity", &self.identity)
            .field("mints", &self.minter.is_some())
            .field("routes", &self.clients.len())
            .finish_non_exhaustive()
    }
}
