//! A relay needs an inbound hop (SECURITY-SENSITIVE; CHA-02, CHA-04, CHA-05 in
//! docs/security.md): the outbound side relays a parent token only if this sidecar's inbound
//! side accepted exactly that token (by the SHA-256 of its compact form), on an mTLS connection
//! from its minter, and it has not expired.
//!
//! A token that reached the app by any other path (another header spelling, a log, a copy from
//! elsewhere) cannot start a hop in someone else's name, however well it is signed: it was never
//! accepted here, so its relay is a 401 `relay`. The set outlives identity snapshots (a token
//! accepted before a rotation may still be relayed after it), holds each token until it expires
//! (plus the leeway, plus a short grace so an expired one is told apart from one never seen),
//! and is bounded by `token.relay_cache`: an evicted token's relay fails closed.

use std::time::{Duration, SystemTime};

use crate::token::cache::Bounded;
use crate::token::jws::MAX_TOKEN_LEN;
use crate::token::verify::{Accepted, VerifiedClaims};
use crate::token::{RejectReason, sha256, unix_secs};

/// How long past its expiry an accepted token is kept, to answer `expired` rather than
/// `relay` for a parent the app relays a little too late.
const EXPIRED_GRACE_SECS: u64 = 60;

/// The hop tokens this sidecar's inbound side accepted, kept for relaying: by hash, with what it
/// takes to read their claims again (not the claims: at one transaction per request the set
/// holds tens of thousands of tokens, and their claims would take a kilobyte each).
#[derive(Debug)]
pub struct RelayCache {
    accepted: Bounded<[u8; 32], Accepted>,
    leeway: u64,
}

// === impl RelayCache ===

impl RelayCache {
    /// An empty set of at most `capacity` tokens; `leeway` is `token.leeway`.
    pub fn new(capacity: usize, leeway: Duration) -> Self {
        Self {
            accepted: Bounded::new(capacity),
            leeway: leeway.as_secs(),
        }
    }

    /// Remembers `token`, which the inbound side has just accepted from its minter.
    pub fn accept(&self, token: &VerifiedClaims, now: SystemTime) {
        let Some(now) = unix_secs(now) else { return };
        let accepted = token.accepted();
        let until = accepted
            .exp
            .saturating_add(self.leeway)
            .saturating_add(EXPIRED_GRACE_SECS);
        self.accepted.insert(*token.hash(), accepted, until, now);
    }

    /// The parent the local app relays as `compact`, if the inbound side accepted exactly it
    /// and it is still valid.
    ///
    /// # Errors
    /// [`RejectReason::TooLarge`] over 16 KiB; [`RejectReason::Relay`] for a token not accepted
    /// here (or evicted since); [`RejectReason::Expired`] for one whose `exp` (plus the leeway)
    /// has passed.
    pub fn parent(&self, compact: &str, now: SystemTime) -> Result<VerifiedClaims, RejectReason> {
        if compact.len() > MAX_TOKEN_LEN {
            return Err(RejectReason::TooLarge);
        }
        let now = unix_secs(now).ok_or(RejectReason::Expired)?;
        let hash = sha256(compact.as_bytes());
        let accepted = self.accepted.get(&hash, now).ok_or(RejectReason::Relay)?;
        if accepted.exp.saturating_add(self.leeway) < now {
            return Err(RejectReason::Expired);
        }
        VerifiedClaims::reread(compact, hash, accepted)
    }
}
