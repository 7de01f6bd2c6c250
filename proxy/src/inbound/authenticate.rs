//! Authentication of the hop token (SECURITY-SENSITIVE): the caller's `hop-token`, if any, must
//! verify against the mTLS peer of this very connection before anything else reads it.
//!
//! A token that fails any rule is a 401 with its stable reason code; a call without one is a
//! 401 `missing` when `inbound.require_token` is on. Only a verified token reaches the policy
//! (`context.token`) and the app (which may relay it): an unverifiable one is never passed on.
//! Each accepted token goes into the [`RelayCache`], the only tokens the outbound side will
//! relay for the app.

use std::sync::Arc;
use std::time::SystemTime;

use hopgate_config::TokenConfig;
use http::{HeaderMap, HeaderName};

use crate::http::{RequestError, headers};
use crate::identity::IdentitySnapshot;
use crate::telemetry::metrics::ProxyMetrics;
use crate::tls::PeerIdentity;
use crate::token::{MISSING_TOKEN, RelayCache, VerifiedClaims};

/// Verifies hop tokens on the inbound side.
#[derive(Debug)]
pub struct Authenticator {
    header: HeaderName,
    require: bool,
    relay: Arc<RelayCache>,
    metrics: Arc<ProxyMetrics>,
}

// === impl Authenticator ===

impl Authenticator {
    /// An authenticator for `token.header`, requiring a token when `require` is set, and
    /// keeping the tokens it accepts in `relay`.
    pub fn new(
        config: &TokenConfig,
        require: bool,
        relay: Arc<RelayCache>,
        metrics: Arc<ProxyMetrics>,
    ) -> Self {
        Self {
            header: config.header().clone(),
            require,
            relay,
            metrics,
        }
    }

    /// Verifies the request's hop token against `peer`, the verified client of this connection,
    /// with the token verifier of `identity`, the snapshot this request reads (its bundles judge
    /// the token's `x5c`; its SVID is the audience).
    ///
    /// # Errors
    /// [`RequestError::Unauthenticated`] with the reason code: every code of
    /// [`crate::token::RejectReason`], `malformed` for several token headers or a non-text
    /// one, and `missing` when a token is required and absent.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: &PeerIdentity,
        identity: &IdentitySnapshot,
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
        let now = SystemTime::now();
        let verified = identity
            .tokens()
            .verify_inbound(compact, peer, now)
            .map_err(|reason| self.reject(reason.as_str()))?;
        self.relay.accept(&verified, now);
        Ok(Some(verified))
    }

    /// The token header's name.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    fn reject(&self, reason: &'static str) -> RequestError {
        self.metrics.record_token_rejection(reason);
        RequestError::Unauthenticated(reason)
    }
}
