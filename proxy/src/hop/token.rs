//! The hop token of a hop, verified or minted, as the pipeline reads it.

use hopgate_policy::TokenFacts;

use crate::telemetry::audit::AuditToken;
use crate::token::{MintedToken, VerifiedClaims};

/// The hop token of a hop, whichever way it came.
#[derive(Clone, Copy)]
pub(crate) enum HopToken<'a> {
    /// Verified against the connection it arrived on.
    Verified(&'a VerifiedClaims),
    /// Minted for the next hop.
    Minted(&'a MintedToken),
}

// === impl HopToken ===

impl<'a> HopToken<'a> {
    pub(super) fn facts(self) -> TokenFacts {
        match self {
            Self::Verified(token) => token.facts(),
            Self::Minted(token) => token.facts(),
        }
    }

    pub(super) fn jti(self) -> &'a str {
        match self {
            Self::Verified(token) => token.jti(),
            Self::Minted(token) => token.claims().jti(),
        }
    }

    pub(super) fn prv(self) -> Option<&'a str> {
        match self {
            Self::Verified(token) => token.prv(),
            Self::Minted(token) => token.claims().prv(),
        }
    }

    pub(super) fn expires_at(&self) -> std::time::SystemTime {
        match self {
            Self::Verified(token) => token.expires_at(),
            Self::Minted(token) => crate::token::from_unix_secs(token.claims().exp()),
        }
    }

    /// What the audit record says of the token.
    pub(super) fn audit(&self) -> AuditToken<'_> {
        match self {
            Self::Verified(token) => AuditToken {
                txn: token.txn(),
                jti: token.jti(),
                hash: token.hash(),
                prv: token.prv(),
                sub: token.sub(),
                depth: token.actors().len(),
            },
            Self::Minted(token) => AuditToken {
                txn: token.claims().txn(),
                jti: token.claims().jti(),
                hash: token.hash(),
                prv: token.claims().prv(),
                sub: token.claims().sub(),
                depth: token.depth(),
            },
        }
    }
}
