//! [`OriginVerifier`]: end-user tokens (`Authorization: Bearer`) from the configured origin
//! issuers (`token.origin.issuers`), verified against each issuer's JWKS file (RFC 7517).
//!
//! Keys: EC P-256 (`ES256`) and RSA of 2048 bits or more (`RS256`, or `PS256` when the JWK says
//! so); each key is used with exactly one algorithm (RFC 8725 §3.1). Keys of other types or
//! curves, or marked `"use": "enc"`, are skipped; a file left without a usable key is an error.
//! Tokens: compact JWS through the same strict parser as hop tokens; header parameters `alg`,
//! `kid`, `typ` only (never `jku`, `x5u`, `jwk`, `x5c`, `crit`); `alg` in {RS256, ES256, PS256};
//! `typ` anything but `hop+jwt` (a hop token is not an origin token, RFC 8725 §3.12); `iss` a
//! configured issuer; `aud` that issuer's audience (a string, or an array containing it, RFC
//! 7519 §4.1.3); `exp` required, `nbf` and `iat` optional, with leeway; `sub` required.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hopgate_config::OriginIssuer;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::token::claims::MAX_TIME;
use crate::token::jws::{self, Alg, JwkKey, TYP};
use crate::token::{RejectReason, TokenError, sha256, unix_secs};

/// Verifies origin tokens of the configured issuers.
pub struct OriginVerifier {
    issuers: Vec<Issuer>,
    leeway: Duration,
}

/// What a verified origin token contributes to the first hop token.
#[derive(Clone)]
pub struct OriginClaims {
    issuer: String,
    sub: String,
    scope: Vec<String>,
    exp: u64,
    hash: [u8; 32],
}

struct Issuer {
    issuer: String,
    audience: String,
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    alg: Alg,
    key: JwkKey,
}

#[derive(Deserialize)]
struct Payload {
    iss: String,
    sub: String,
    aud: Audience,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

// === impl OriginVerifier ===

impl OriginVerifier {
    /// Reads every issuer's JWKS file.
    ///
    /// # Errors
    /// [`TokenError::JwksRead`] for a file that cannot be read, [`TokenError::Jwks`] for one that
    /// is not a JWKS, holds a malformed EC or RSA key, an RSA key under 2048 bits, a repeated
    /// `kid`, or no usable key.
    pub fn load(issuers: &[OriginIssuer], leeway: Duration) -> Result<Self, TokenError> {
        Self::from_files(
            issuers
                .iter()
                .map(|i| (i.issuer(), i.jwks_file(), i.audience())),
            leeway,
        )
    }

    /// [`Self::load`] from `(issuer, jwks file, audience)` triples.
    pub(crate) fn from_files<'a>(
        issuers: impl Iterator<Item = (&'a str, &'a Path, &'a str)>,
        leeway: Duration,
    ) -> Result<Self, TokenError> {
        let issuers = issuers
            .map(|(issuer, path, audience)| {
                let bytes = std::fs::read(path).map_err(|source| TokenError::JwksRead {
                    path: path.to_owned(),
                    source,
                })?;
                Ok(Issuer {
                    issuer: issuer.to_owned(),
                    audience: audience.to_owned(),
                    keys: parse_jwks(&bytes).map_err(|message| TokenError::Jwks {
                        path: path.to_owned(),
                        message,
                    })?,
                })
            })
            .collect::<Result<_, TokenError>>()?;
        Ok(Self { issuers, leeway })
    }

    /// Whether no issuer is configured (every origin token is then refused).
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Verifies the value of an `Authorization` header: `Bearer` (any case), spaces, a token.
    ///
    /// # Errors
    /// [`RejectReason::Malformed`] for another scheme; else as [`Self::verify`].
    pub fn verify_authorization(
        &self,
        header: &str,
        now: SystemTime,
    ) -> Result<OriginClaims, RejectReason> {
        let (scheme, token) = header.split_once(' ').ok_or(RejectReason::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(RejectReason::Malformed);
        }
        self.verify(token.trim_start_matches(' '), now)
    }

    /// Verifies an origin token.
    ///
    /// # Errors
    /// [`RejectReason::TooLarge`] and [`RejectReason::Malformed`] as for hop tokens (format,
    /// JSON, a header parameter besides `alg`/`kid`/`typ`, claim types, a missing `sub` or
    /// `exp`); [`RejectReason::Typ`] for `hop+jwt`; [`RejectReason::Alg`] for an `alg` outside
    /// the allowlist or not the key's; [`RejectReason::Issuer`] for an unknown `iss`;
    /// [`RejectReason::Signature`] for an unknown `kid` (or none when the issuer has several
    /// keys) or a bad signature; [`RejectReason::Audience`], [`RejectReason::Expired`],
    /// [`RejectReason::NotYetValid`].
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<OriginClaims, RejectReason> {
        let jws = jws::split(token)?;
        let (alg, kid) = header(&jws.header)?;
        let payload: Payload =
            serde_json::from_value(jws.payload).map_err(|_| RejectReason::Malformed)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == payload.iss)
            .ok_or(RejectReason::Issuer)?;
        let key = issuer.key(kid)?;
        if key.alg != alg {
            return Err(RejectReason::Alg);
        }
        jws::verify_jwk_signature(alg, &key.key, jws.signing_input, &jws.signature)?;
        let audience_ok = match &payload.aud {
            Audience::One(aud) => *aud == issuer.audience,
            Audience::Many(auds) => auds.contains(&issuer.audience),
        };
        if !audience_ok {
            return Err(RejectReason::Audience);
        }
        self.check_time(&payload, now)?;
        // An end user named like a workload would make a workload-started chain of one:
        // `context.token.enduser` and `origin` tell the two apart by `sub` alone.
        if payload.sub.is_empty() || is_spiffe_like(&payload.sub) {
            return Err(RejectReason::Malformed);
        }
        Ok(OriginClaims {
            issuer: payload.iss,
            sub: payload.sub,
            scope: payload
                .scope
                .unwrap_or_default()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            exp: payload.exp,
            hash: sha256(token.as_bytes()),
        })
    }

    fn check_time(&self, payload: &Payload, now: SystemTime) -> Result<(), RejectReason> {
        let times = [Some(payload.exp), payload.nbf, payload.iat];
        if times.iter().flatten().any(|t| *t > MAX_TIME) {
            return Err(RejectReason::Malformed);
        }
        let now = unix_secs(now).ok_or(RejectReason::Expired)?;
        let leeway = self.leeway.as_secs();
        if payload.exp.saturating_add(leeway) < now {
            return Err(RejectReason::Expired);
        }
        let ahead = |t: Option<u64>| t.is_some_and(|t| t > now.saturating_add(leeway));
        if ahead(payload.nbf) || ahead(payload.iat) {
            return Err(RejectReason::NotYetValid);
        }
        Ok(())
    }
}

impl fmt::Debug for OriginVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginVerifier")
            .field(
                "issuers",
                &self
                    .issuers
                    .iter()
                    .map(|i| (&i.issuer, i.keys.len()))
                    .collect::<Vec<_>>(),
            )
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// The origin token header's `alg` and `kid`.
fn header(header: &Map<String, Value>) -> Result<(Alg, Option<&str>), RejectReason> {
    if header
        .keys()
        .any(|k| !matches!(k.as_str(), "alg" | "kid" | "typ"))
    {
        return Err(RejectReason::Malformed);
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ))
            if !typ.eq_ignore_ascii_case(TYP)
                && !typ.eq_ignore_ascii_case(&format!("application/{TYP}")) => {}
        Some(_) => return Err(RejectReason::Typ),
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .filter(|alg| matches!(alg, Alg::Rs256 | Alg::Es256 | Alg::Ps256))
        .ok_or(RejectReason::Alg)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(RejectReason::Malformed),
    };
    Ok((alg, kid))
}

// === impl Issuer ===

impl Issuer {
    /// The key `kid` names; without `kid`, the issuer's only key.
    fn key(&self, kid: Option<&str>) -> Result<&Key, RejectReason> {
        match (kid, self.keys.as_slice()) {
            (Some(kid), keys) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            (None, [only]) => Some(only),
            (None, _) => None,
        }
        .ok_or(RejectReason::Signature)
    }
}

/// The usable keys of a JWKS document; a message for the first problem.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let Ok(Value::Object(root)) = jws::strict_json(bytes) else {
        return Err("not a JSON object (or it repeats a member)".to_owned());
    };
    let Some(Value::Array(entries)) = root.get("keys") else {
        return Err("has no `keys` array".to_owned());
    };
    let mut keys: Vec<Key> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Value::Object(jwk) = entry else {
            return Err(format!("`keys[{i}]` is not an object"));
        };
        let Some(key) = parse_jwk(jwk).map_err(|m| format!("`keys[{i}]`: {m}"))? else {
            continue;
        };
        if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
            return Err(format!(
                "`keys[{i}]` repeats kid `{}`",
                key.kid.unwrap_or_default()
            ));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("holds no usable signing key (EC P-256 or RSA)".to_owned());
    }
    Ok(keys)
}

/// One JWK; `None` for a key of a kind hopgate skips.
fn parse_jwk(jwk: &Map<String, Value>) -> Result<Option<Key>, String> {
    let text = |name: &str| -> Result<Option<&str>, String> {
        match jwk.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("`{name}` is not a string")),
        }
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let value = text(name)?.ok_or_else(|| format!("`{name}` is missing"))?;
        jws::b64url(value).map_err(|_| format!("`{name}` is not base64url"))
    };
    if text("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let kid = text("kid")?.map(str::to_owned);
    let alg = text("alg")?;
    let (alg, key) = match (text("kty")?, text("crv")?, alg) {
        (Some("EC"), Some("P-256"), None | Some("ES256")) => {
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("`x` and `y` must be 32 bytes for P-256".to_owned());
            }
            (Alg::Es256, JwkKey::P256([&[4u8][..], &x, &y].concat()))
        }
        (Some("RSA"), _, None | Some("RS256") | Some("PS256")) => {
            let n = bytes("n")?;
            let n: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
            if n.len() < 256 {
                return Err("RSA modulus is shorter than 2048 bits".to_owned());
            }
            let alg = if alg == Some("PS256") {
                Alg::Ps256
            } else {
                Alg::Rs256
            };
            (alg, JwkKey::Rsa { n, e: bytes("e")? })
        }
        _ => return Ok(None),
    };
    Ok(Some(Key { kid, alg, key }))
}

// === impl OriginClaims ===

impl OriginClaims {
    /// The issuer that vouched for the user.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `sub`: the end user.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// The starting scope, split on spaces.
    pub fn scopes(&self) -> &[String] {
        &self.scope
    }

    /// `exp`, seconds since the Unix epoch.
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// SHA-256 of the origin token.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
}

#[cfg(test)]
impl OriginClaims {
    /// Claims as a verified origin token for `sub` would give them.
    pub(crate) fn for_test(sub: &str, scope: &[&str], exp: u64) -> Self {
        Self {
            issuer: "https://idp.example".to_owned(),
            sub: sub.to_owned(),
            scope: scope.iter().map(|s| (*s).to_owned()).collect(),
            exp,
            hash: sha256(sub.as_bytes()),
        }
    }
}

impl fmt::Debug for OriginClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginClaims")
            .field("issuer", &self.issuer)
            .field("sub", &self.sub)
            .field("scope", &self.scope)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// Whether an origin token's `sub` has the SPIFFE scheme, in any case.
fn is_spiffe_like(sub: &str) -> bool {
    sub.get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe:"))
}

#[cfg(test)]
mod tests;
