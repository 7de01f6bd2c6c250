//! The credential swap on the outbound side (SECURITY-SENSITIVE): whatever authority the local
//! app presents is verified, then replaced by a hop token for exactly one destination.
//!
//! ```text
//!  hop-token from the app ──RelayCache (accepted inbound)──▶ parent ─┐
//!  Authorization: Bearer ──OriginVerifier (JWKS file)──▶ origin ─┼─▶ Minter::mint(aud = route)
//!  neither ─────────────────────────────────────────────▶ self ───┘        │
//!                                                    hop-token: <child>  ◀─┘  Authorization: removed
//! ```
//!
//! Rules (docs/tokens.md, "Relaying: what the app must do"; ACT-14, HDR-07 in docs/security.md):
//!
//! - A relayed `hop-token` must be one this sidecar's inbound side accepted (by hash) from its
//!   minter, and not expired; any other is a 401 (`relay`, `expired`), however well it is
//!   signed, and never dropped in favour of a fresh chain (CHA-04, CHA-05).
//! - Without a parent, an `Authorization: Bearer` token is an origin credential when origin
//!   issuers are configured: it must verify, or the call is a 401. Without issuers there is no
//!   one to verify it against, so the chain starts as this workload.
//! - `Authorization` never leaves: only the minted token crosses the hop. Neither does any
//!   `hop-token` the app sent: the child replaces it.
//! - The transaction context (`tctx`) is set at the origin from the `intent-*` headers (prefix
//!   stripped, `action` excepted) and copied unchanged by every later hop.
//! - One `txn` per transaction: an origin request joins a transaction only with the same trace
//!   id (of the app's `traceparent`), origin credential and `tctx`; without a `traceparent` it
//!   starts one of its own. A relay is in its parent's transaction, whatever the trace.

use std::sync::Arc;
use std::time::SystemTime;

use hopgate_config::{Route, TokenConfig};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::http::{RequestError, headers};
use crate::identity::IdentitySnapshot;
use crate::telemetry::metrics::ProxyMetrics;
use crate::token::{MintRequest, MintedToken, OriginVerifier, RelayCache};

/// A hop token minted for one request, with the identity snapshot it was minted with.
pub(crate) struct Delegation {
    pub(crate) token: MintedToken,
    /// The token as a header value, made once.
    value: HeaderValue,
    /// The snapshot whose SVID minted it.
    pub(crate) identity: Arc<IdentitySnapshot>,
}

/// Swaps the local app's credential for a hop token on the outbound side.
#[derive(Debug)]
pub struct Delegator {
    header: HeaderName,
    origin: OriginVerifier,
    relay: Arc<RelayCache>,
    metrics: Arc<ProxyMetrics>,
}

// === impl Delegator ===

impl Delegator {
    /// A delegator minting into `token.header`, verifying origin tokens with `origin` and
    /// relaying only the parents in `relay` (those the inbound side accepted). The minter
    /// comes with each identity snapshot.
    pub fn new(
        config: &TokenConfig,
        origin: OriginVerifier,
        relay: Arc<RelayCache>,
        metrics: Arc<ProxyMetrics>,
    ) -> Self {
        Self {
            header: config.header().clone(),
            origin,
            relay,
            metrics,
        }
    }

    /// Verifies the app's credential in `headers` and mints a hop token for `route`, living
    /// its `token_ttl`, with `identity`, the snapshot in use, whose SVID the token's `cnf`
    /// names: only a connection made with that snapshot may carry it. `intent` is the request's
    /// intent headers (the `tctx` of a new transaction); `trace` the trace id of the app's
    /// `traceparent`, which says whether an origin request joins a transaction or starts one.
    /// The head is not changed:
    /// [`Delegator::swap`] puts the token in once the egress decision allowed it.
    ///
    /// # Errors
    /// [`RequestError::Unauthenticated`] with the reason code when a relayed hop token or an
    /// origin token fails verification, or a credential header appears twice;
    /// [`RequestError::Internal`] when no token can be minted (the SVID expires now).
    pub(crate) fn delegate(
        &self,
        headers: &HeaderMap,
        intent: &[(&str, &str)],
        route: &Route,
        identity: Arc<IdentitySnapshot>,
        trace: Option<[u8; 16]>,
    ) -> Result<Delegation, RequestError> {
        let now = SystemTime::now();
        // The snapshot was built for an outbound side, so it has a minter.
        let minter = identity
            .minter()
            .ok_or(RequestError::Internal("hop token minter"))?;
        let parent = match self.single(headers, &self.header)? {
            Some(compact) => Some(
                self.relay
                    .parent(compact, now)
                    .map_err(|reason| self.reject(reason.as_str()))?,
            ),
            None => None,
        };
        let origin = match (&parent, self.single(headers, &AUTHORIZATION)?) {
            (None, Some(value)) if is_bearer(value) && !self.origin.is_empty() => Some(
                self.origin
                    .verify_authorization(value, now)
                    .map_err(|reason| self.reject(reason.as_str()))?,
            ),
            _ => None,
        };
        let tctx = match parent {
            None => transaction_context(intent),
            Some(_) => None,
        };
        let request = MintRequest {
            aud: route.identity(),
            parent: parent.as_ref(),
            origin: origin.as_ref(),
            route_scopes: route.scopes(),
            tctx,
            trace,
        };
        let token = minter
            .mint_with_ttl(request, route.token_ttl())
            .map_err(|err| {
                tracing::warn!(route.identity = %route.identity(), error = %err, "cannot mint a hop token");
                RequestError::Internal("hop token could not be minted")
            })?;
        if !token.is_reused() {
            self.metrics.record_token_minted();
        }
        let mut value = HeaderValue::from_str(token.compact())
            .map_err(|_| RequestError::Internal("hop token is not a header value"))?;
        // A token no later request will carry gains nothing from HPACK's table, and, at some
        // 2 KiB of a 4 KiB table, entering it would push out the headers that do repeat, on
        // this side and at the next hop. A reusable one is indexed: its next sending is a byte.
        value.set_sensitive(!token.is_reusable());
        Ok(Delegation {
            token,
            value,
            identity,
        })
    }

    /// Swaps the app's credential for the delegation's token in `headers`: the broad
    /// credential stops here, and so does any `hop-token` the app sent (the child replaces it),
    /// under any spelling that folds into it (`hop_token`, CHA-04b).
    pub(crate) fn swap(&self, headers: &mut HeaderMap, delegation: &Delegation) {
        headers.remove(AUTHORIZATION);
        headers::strip_folded_spellings(headers, &[&self.header]);
        headers.insert(self.header.clone(), delegation.value.clone());
    }

    /// The one value of `name`; several, or one that is not text, is `malformed`.
    fn single<'h>(
        &self,
        headers: &'h HeaderMap,
        name: &HeaderName,
    ) -> Result<Option<&'h str>, RequestError> {
        headers::single(headers, name).map_err(|_| self.reject("malformed"))
    }

    fn reject(&self, reason: &'static str) -> RequestError {
        self.metrics.record_token_rejection(reason);
        RequestError::Unauthenticated(reason)
    }
}

/// `tctx` for a new transaction: the intent headers, prefix stripped, `action` excepted, as
/// the runner read them once for the policy's `context.intent` too (a repeated one was refused
/// there).
fn transaction_context(intent: &[(&str, &str)]) -> Option<Map<String, Value>> {
    let tctx: Map<String, Value> = intent
        .iter()
        .filter(|(key, _)| *key != "action" && !key.is_empty())
        .map(|(key, value)| ((*key).to_owned(), Value::String((*value).to_owned())))
        .collect();
    (!tctx.is_empty()).then_some(tctx)
}

/// Whether an `Authorization` value uses the `Bearer` scheme (any case, RFC 9110 §11.1).
fn is_bearer(value: &str) -> bool {
    value
        .split_once(' ')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::HeaderMap;

    use super::Delegator;
    use crate::hop::test_support::Fixture;
    use crate::identity::Derived;
    use crate::token::{OriginVerifier, RelayCache};

    const AGENT: &str = "spiffe://example.org/ns/agents/sa/agent";
    const INFERENCE: &str = "spiffe://example.org/ns/ml/sa/inference";

    #[test]
    fn a_routes_token_ttl_sets_the_lifetime_of_the_tokens_minted_for_it() {
        // Two routes to one destination: `live.ml` for long streams, `plain.ml` on `token.ttl`.
        let route = |host: &str, extra: &str| {
            format!(
                "    - {{ host: {host}, address: 127.0.0.1:9, identity: {INFERENCE}{extra} }}\n"
            )
        };
        let fx = Fixture::new(
            AGENT,
            &format!(
                "outbound:\n  listen: 127.0.0.1:0\n  routes:\n{}{}token: {{ ttl: 60s, max_ttl: 1h }}\n",
                route("live.ml", ", token_ttl: 10m"),
                route("plain.ml", ""),
            ),
            None,
        );
        let (token, routes) = (fx.config.token(), fx.config.outbound().unwrap().routes());
        let identity = fx.identity(Derived {
            allowed: fx.config.identity().trust_domains(),
            limits: fx.limits(),
            mint_ttl: Some(token.ttl()),
            routes: routes.iter().map(|r| r.identity().clone()).collect(),
        });
        let delegator = Delegator::new(
            token,
            OriginVerifier::load(token.origin_issuers(), token.leeway()).unwrap(),
            Arc::new(RelayCache::new(16, token.leeway())),
            Arc::clone(&fx.metrics),
        );
        // One transaction (one trace) for both: a token for one route is never reused for the
        // other, whose lifetime differs.
        let lifetime = |route| {
            let snapshot = identity.snapshot().unwrap();
            let minted = delegator
                .delegate(&HeaderMap::new(), &[], route, snapshot, Some([7; 16]))
                .unwrap();
            assert!(!minted.token.is_reused());
            let claims = minted.token.claims();
            claims.exp() - claims.iat()
        };
        assert_eq!(lifetime(&routes[0]), 600);
        assert_eq!(lifetime(&routes[1]), 60);
        // The receiver's limit is `token.max_ttl`.
        assert_eq!(fx.limits().ttl.as_secs(), 3600);
    }
}
