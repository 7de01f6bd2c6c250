//! Authentication of the hop token (SECURITY-SENSITIVE): the caller's `hop-token`, if any, must
//! verify against the mTLS peer of this very connection before anything else reads it.
//!
//! A token that fails any rule is a 401 with its stable reason code; a call without one is a
//! 401 `missing` when `inbound.require_token` is on. Only a verified token reaches the policy
//! (`context.token`) and the app (which may relay it): an unverifiable one is never passed on.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use hopgate_config::{SpiffeId, TokenConfig};
use http::{HeaderMap, HeaderName};

use crate::http::{RequestError, headers};
use crate::telemetry::metrics::{MISSING_TOKEN, ProxyMetrics};
use crate::tls::{IdentityStore, PeerIdentity, SpiffeClientVerifier};
use crate::token::{Limits, TokenVerifier, VerifiedClaims};

/// Verifies hop tokens on the inbound side.
#[derive(Debug)]
pub struct Authenticator {
    header: HeaderName,
    require: bool,
    limits: Limits,
    metrics: Arc<ProxyMetrics>,
    // The verifier belongs to one set of bundles (its chain cache must not outlive them): it is
    // rebuilt when the identity store publishes a new SVID verifier.
    current: ArcSwapOption<Current>,
}

#[derive(Debug)]
struct Current {
    chains: Arc<SpiffeClientVerifier>,
    verifier: TokenVerifier,
}

// === impl Authenticator ===

impl Authenticator {
    /// An authenticator for `token.header`, requiring a token when `require` is set.
    pub fn new(config: &TokenConfig, require: bool, metrics: Arc<ProxyMetrics>) -> Self {
        Self {
            header: config.header().clone(),
            require,
            limits: Limits::from(config),
            metrics,
            current: ArcSwapOption::empty(),
        }
    }

    /// Verifies the request's hop token against `peer`, the verified client of this connection.
    ///
    /// # Errors
    /// [`RequestError::Unauthenticated`] with the reason code: every code of
    /// [`crate::token::RejectReason`], `malformed` for several token headers or a non-text
    /// one, and `missing` when a token is required and absent.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: &PeerIdentity,
        identity: &IdentityStore,
    ) -> Result<Option<VerifiedClaims>, RequestError> {
        let compact =
            headers::single(headers, &self.header).map_err(|_| self.reject("malformed"))?;
        let Some(compact) = compact else {
            return if self.require {
                Err(self.reject(MISSING_TOKEN))
            } else {
                Ok(None)
            };
        };
        let current = self.current(identity);
        current
            .verifier
            .verify_inbound(compact, peer, SystemTime::now())
            .map(Some)
            .map_err(|reason| self.reject(reason.as_str()))
    }

    /// The token header's name.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    fn reject(&self, reason: &'static str) -> RequestError {
        self.metrics.record_token_rejection(reason);
        RequestError::Unauthenticated(reason)
    }

    /// The token verifier of the identity snapshot in use. Every reload publishes a new
    /// verifier, so the pointer tells whether the cached one is still current (one `Arc` load
    /// per request); on a miss the identity and its bundles are read together, so a reload
    /// between two reads cannot pair this workload's ID of one snapshot with the bundles of
    /// another.
    fn current(&self, identity: &IdentityStore) -> Arc<Current> {
        if let Some(current) = self.current.load_full()
            && Arc::ptr_eq(&current.chains, &identity.client_verifier())
        {
            return current;
        }
        // A reload happened: build the new verifier from one snapshot of both.
        let (svid, chains) = identity.current_with_verifier();
        let own: SpiffeId = svid.svid().id().clone();
        let verifier = TokenVerifier::new(own, Arc::clone(&chains), self.limits);
        let fresh = Arc::new(Current { chains, verifier });
        self.current.store(Some(Arc::clone(&fresh)));
        fresh
    }
}
