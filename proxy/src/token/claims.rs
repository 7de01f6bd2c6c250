//! The claim set of a hop token (docs/tokens.md, "Claims") and the `act` walker.
//!
//! Unknown claims are allowed (RFC 7519 §4), the known ones are strictly typed: strings are
//! strings (JWT-32), times are non-negative integers below year 10000 (JWT-29), `aud` is one
//! string (JWT-30), and a claim present as `null` is an error rather than absent.

use std::fmt;

use hopgate_policy::{ActError, TokenFacts, act_chain};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::token::RejectReason;

/// The largest time claim accepted: 9999-12-31T23:59:59Z, so no arithmetic on it can overflow.
pub(crate) const MAX_TIME: u64 = 253_402_300_799;

/// The claims of a hop token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub(crate) iss: String,
    pub(crate) aud: String,
    pub(crate) sub: String,
    pub(crate) iat: u64,
    pub(crate) nbf: u64,
    pub(crate) exp: u64,
    pub(crate) jti: String,
    pub(crate) txn: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) scope: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) act: Option<Value>,
    pub(crate) cnf: Cnf,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) tctx: Option<Map<String, Value>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) prv: Option<String>,
}

/// `cnf` (RFC 8705 §3.1): the minter's certificate thumbprint, nothing else (CNF-05).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cnf {
    #[serde(rename = "x5t#S256")]
    pub(crate) x5t_s256: String,
}

// === impl Claims ===

impl Claims {
    /// What Cedar sees of a token with these claims and `actors` (outermost first).
    pub(crate) fn facts(&self, actors: Vec<String>) -> TokenFacts {
        TokenFacts {
            sub: self.sub.clone(),
            iss: self.iss.clone(),
            txn: Some(self.txn.clone()),
            scope: self.scopes().map(str::to_owned).collect(),
            actors,
            tctx: self
                .tctx()
                .map(hopgate_policy::tctx_entries)
                .unwrap_or_default(),
        }
    }

    /// Reads the claims from a decoded payload.
    ///
    /// # Errors
    /// [`RejectReason::Malformed`] for a missing required claim, a claim of the wrong type, or a
    /// time past [`MAX_TIME`].
    pub(crate) fn from_json(payload: Value) -> Result<Self, RejectReason> {
        let claims: Self = serde_json::from_value(payload).map_err(|_| RejectReason::Malformed)?;
        if [claims.iat, claims.nbf, claims.exp]
            .iter()
            .any(|t| *t > MAX_TIME)
        {
            return Err(RejectReason::Malformed);
        }
        Ok(claims)
    }

    /// `iss`: the SPIFFE ID of the minting workload.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// `aud`: the SPIFFE ID of the receiving workload.
    pub fn aud(&self) -> &str {
        &self.aud
    }

    /// `sub`: the end user, or the origin workload's SPIFFE ID.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// `iat`, seconds since the Unix epoch.
    pub fn iat(&self) -> u64 {
        self.iat
    }

    /// `nbf`, seconds since the Unix epoch.
    pub fn nbf(&self) -> u64 {
        self.nbf
    }

    /// `exp`, seconds since the Unix epoch.
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// `jti`: 128 random bits, base64url.
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// `txn`: the transaction id, unchanged along the chain.
    pub fn txn(&self) -> &str {
        &self.txn
    }

    /// The `scope` entries, in order (empty when absent).
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
    }

    /// `act`, the RFC 8693 actor chain, as carried.
    pub fn act(&self) -> Option<&Value> {
        self.act.as_ref()
    }

    /// `cnf.x5t#S256`: base64url SHA-256 of the minter's leaf certificate.
    pub fn cnf_x5t_s256(&self) -> &str {
        &self.cnf.x5t_s256
    }

    /// `tctx`: the immutable transaction context set at the origin.
    pub fn tctx(&self) -> Option<&Map<String, Value>> {
        self.tctx.as_ref()
    }

    /// `prv`: base64url SHA-256 of the parent token (absent at the origin).
    pub fn prv(&self) -> Option<&str> {
        self.prv.as_deref()
    }
}

impl fmt::Debug for Claims {
    /// Everything but `tctx`'s content, which may hold user data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("iss", &self.iss)
            .field("aud", &self.aud)
            .field("sub", &self.sub)
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .field("jti", &self.jti)
            .field("txn", &self.txn)
            .field("scope", &self.scope)
            .field(
                "act",
                &self.act.as_ref().map(|a| actors(Some(a), usize::MAX)),
            )
            .field("tctx", &self.tctx.as_ref().map(|_| "<present>"))
            .field("prv", &self.prv)
            .finish_non_exhaustive()
    }
}

/// The actors of an `act` chain, outermost (current) first, read by the one `act` walker
/// ([`hopgate_policy::act_chain`]).
///
/// # Errors
/// [`RejectReason::Actor`] when a level is not an object, or its `sub` is missing, not a string
/// or not a canonical SPIFFE ID (ACT-11); [`RejectReason::Depth`] past `max` actors (ACT-10),
/// found without walking further.
pub(crate) fn actors(act: Option<&Value>, max: usize) -> Result<Vec<String>, RejectReason> {
    act_chain(act, max).map_err(|err| match err {
        ActError::TooDeep(_) => RejectReason::Depth,
        ActError::NotObject(_) | ActError::NoSub(_) | ActError::NotWorkload(_) => {
            RejectReason::Actor
        }
    })
}

/// For `#[serde(default)]` claims: absent is `None`, present (even `null`) must parse as `T`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn base() -> Value {
        json!({
            "iss": "spiffe://example.org/a", "aud": "spiffe://example.org/b",
            "sub": "spiffe://example.org/a", "iat": 1000, "nbf": 1000, "exp": 1060,
            "jti": "j", "txn": "t", "cnf": { "x5t#S256": "h" },
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut claims = base();
        claims[key] = value;
        claims
    }

    #[test]
    fn well_typed_claims_parse_and_unknown_claims_are_allowed() {
        let claims = Claims::from_json(with("custom", json!({"x": 1}))).unwrap();
        assert_eq!(claims.iss(), "spiffe://example.org/a");
        assert_eq!(claims.scopes().count(), 0);
    }

    #[test]
    fn time_claims_must_be_non_negative_integers_in_range_jwt_29() {
        for bad in [
            json!("1060"),
            json!(1060.5),
            json!(-1),
            json!(1e30),
            json!(u64::MAX),
            json!(MAX_TIME + 1),
            Value::Null,
        ] {
            for claim in ["iat", "nbf", "exp"] {
                let result = Claims::from_json(with(claim, bad.clone()));
                assert_eq!(result.err(), Some(RejectReason::Malformed), "{claim}={bad}");
            }
        }
    }

    #[test]
    fn a_missing_exp_or_identity_claim_is_malformed_jwt_28() {
        for claim in [
            "exp", "iat", "nbf", "iss", "aud", "sub", "jti", "txn", "cnf",
        ] {
            let mut claims = base();
            claims.as_object_mut().unwrap().remove(claim);
            assert_eq!(
                Claims::from_json(claims).err(),
                Some(RejectReason::Malformed),
                "{claim}"
            );
        }
    }

    #[test]
    fn identity_claims_of_the_wrong_type_are_malformed_jwt_32_and_jwt_30() {
        for claim in ["aud", "iss", "sub", "jti", "txn"] {
            for bad in [json!(1), json!(["spiffe://example.org/b"]), Value::Null] {
                let result = Claims::from_json(with(claim, bad.clone()));
                assert_eq!(result.err(), Some(RejectReason::Malformed), "{claim}={bad}");
            }
        }
        for (claim, bad) in [
            ("scope", json!(["a"])),
            ("scope", Value::Null),
            ("tctx", json!("x")),
            ("tctx", Value::Null),
            ("prv", json!(1)),
        ] {
            let result = Claims::from_json(with(claim, bad.clone()));
            assert_eq!(result.err(), Some(RejectReason::Malformed), "{claim}={bad}");
        }
    }

    #[test]
    fn cnf_must_hold_exactly_one_thumbprint_cnf_05() {
        for bad in [
            json!({}),
            json!({"jkt": "x"}),
            json!({"x5t#S256": "h", "jkt": "x"}),
            json!({"x5t": "h"}),
            json!("h"),
        ] {
            let result = Claims::from_json(with("cnf", bad.clone()));
            assert_eq!(result.err(), Some(RejectReason::Malformed), "{bad}");
        }
    }

    #[test]
    fn the_act_walker_lists_actors_outermost_first() {
        let act = json!({"sub": "spiffe://td/c", "act": {"sub": "spiffe://td/b", "exp": 1, "act": {"sub": "spiffe://td/a"}}});
        assert_eq!(
            actors(Some(&act), 8).unwrap(),
            ["spiffe://td/c", "spiffe://td/b", "spiffe://td/a"]
        );
        assert_eq!(actors(None, 8).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn malformed_act_levels_are_rejected_act_11() {
        for bad in [
            json!([]),
            Value::Null,
            json!("spiffe://td/a"),
            json!({}),
            json!({"sub": 1}),
            json!({"sub": "alice"}),
            json!({"sub": "spiffe://TD/a"}),
            json!({"sub": "spiffe://td/a", "act": null}),
            json!({"sub": "spiffe://td/a", "act": []}),
        ] {
            assert_eq!(actors(Some(&bad), 8), Err(RejectReason::Actor), "{bad}");
        }
    }

    #[test]
    fn an_act_chain_past_the_limit_is_rejected_act_10() {
        let mut act = json!({"sub": "spiffe://td/a"});
        for _ in 0..9 {
            act = json!({"sub": "spiffe://td/a", "act": act});
        }
        assert_eq!(actors(Some(&act), 8), Err(RejectReason::Depth));
        assert_eq!(actors(Some(&act), 10).unwrap().len(), 10);
    }
}
