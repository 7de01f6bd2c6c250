//! [`TokenVerifier`]: the receiver's rules for hop tokens, and the only place a
//! [`VerifiedClaims`] is made (STYLE habit 5). The order of the checks is in the module docs of
//! [`crate::token`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hopgate_config::{SpiffeId, TokenConfig};
use hopgate_policy::TokenFacts;
use rustls_pki_types::UnixTime;
use serde_json::{Map, Value};

use crate::tls::{PeerIdentity, SpiffeClientVerifier};
use crate::token::cache::Bounded;
use crate::token::claims::{self, Claims};
use crate::token::jws::{self, HopHeader, LeafKey};
use crate::token::known_header::{KnownHeader, KnownHeaders};
use crate::token::{RejectReason, from_unix_secs, sha256, unix_secs};

/// How many verified tokens a [`TokenVerifier`] remembers by default. A hit serves a token
/// sent again (a transaction's reused token); with a transaction per request every token is new
/// and the cache only holds memory, some 1.5 KiB an entry, so it stays small.
const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// How many validated `x5c` chains a [`TokenVerifier`] remembers by default (one per minting
/// peer SVID is enough).
const DEFAULT_CHAIN_CACHE_CAPACITY: usize = 1024;

/// The longest a validated chain is trusted without validating it again, in seconds.
const CHAIN_CACHE_SECS: u64 = 300;

/// The limits a hop token must keep (`token.max_ttl`, `token.leeway`, `token.max_depth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest `exp - iat` accepted (plus `leeway`): `token.max_ttl` (by default
    /// `token.ttl`), so that routes elsewhere may mint longer-lived tokens for long streams.
    pub ttl: Duration,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// The most actors an `act` chain may hold.
    pub max_depth: usize,
}

/// Verified tokens by hash of the compact form, until they expire.
pub(crate) type VerifiedCache = Bounded<[u8; 32], VerifiedClaims>;

/// Verifies hop tokens addressed to one workload.
pub struct TokenVerifier {
    own: SpiffeId,
    chains: Arc<SpiffeClientVerifier>,
    limits: Limits,
    cache: VerifiedCache,
    /// Validated `x5c` chains by the hash of their entries: every token of one minter carries
    /// the same chain, so a new token from a known peer costs one signature check, not two.
    chain_cache: Bounded<[u8; 32], Arc<Signer>>,
    /// Header segments already parsed, so the `x5c` every token of a minter repeats is decoded
    /// and hashed once (see `known_header.rs`).
    headers: KnownHeaders,
}

/// The claims of a hop token that passed every check: proof that verification ran. Only this
/// file can make one; cloning is cheap.
#[derive(Clone)]
pub struct VerifiedClaims {
    inner: Arc<Verified>,
}

/// What a validated `x5c` chain establishes.
struct Signer {
    id: SpiffeId,
    key: LeafKey,
    /// The earliest notAfter in the chain.
    not_after: u64,
}

struct Verified {
    claims: Claims,
    actors: Vec<String>,
    hash: [u8; 32],
    /// The earliest notAfter in the `x5c` chain.
    chain_not_after: u64,
    /// Whether the signature was checked, or the token was authenticated by its minter's own
    /// connection instead: such a token is accepted only bound to that same certificate.
    signature_checked: bool,
}

// === impl Limits ===

impl From<&TokenConfig> for Limits {
    fn from(config: &TokenConfig) -> Self {
        Self {
            ttl: config.max_ttl(),
            leeway: config.leeway(),
            max_depth: config.max_depth(),
        }
    }
}

// === impl TokenVerifier ===

impl TokenVerifier {
    /// A verifier for tokens addressed to `own`, judging each `x5c` chain with `chains` (built
    /// for the trust domains this workload accepts peers from).
    pub fn new(own: SpiffeId, chains: Arc<SpiffeClientVerifier>, limits: Limits) -> Self {
        Self {
            own,
            chains,
            limits,
            cache: VerifiedCache::new(DEFAULT_CACHE_CAPACITY),
            chain_cache: Bounded::new(DEFAULT_CHAIN_CACHE_CAPACITY),
            headers: KnownHeaders::default(),
        }
    }

    /// The same verifier remembering at most `capacity` verified tokens (0: none). For tests and
    /// benches (the `test-util` feature).
    #[cfg(any(test, feature = "test-util"))]
    #[must_use]
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = VerifiedCache::new(capacity);
        self
    }

    /// The same verifier remembering at most `capacity` validated `x5c` chains (0: none), each
    /// for at most five minutes and never past a certificate's notAfter. A verifier belongs to
    /// one set of trust bundles: build a new one when they change. For tests and benches (the
    /// `test-util` feature).
    #[cfg(any(test, feature = "test-util"))]
    #[must_use]
    pub fn with_chain_cache_capacity(mut self, capacity: usize) -> Self {
        self.chain_cache = Bounded::new(capacity);
        self
    }

    /// Verifies a token received on the inbound side from the mTLS peer `peer`.
    ///
    /// # Errors
    /// The first failing check, in this order:
    /// [`RejectReason::TooLarge`] (over 16 KiB, or more than 5 `x5c` certificates),
    /// [`RejectReason::Malformed`] (format, base64url, JSON, header parameters, claim types),
    /// [`RejectReason::Typ`] (not `hop+jwt`), [`RejectReason::Alg`] (not allowed, or not the
    /// leaf key's), [`RejectReason::Chain`] (missing or undecodable `x5c`),
    /// [`RejectReason::Actor`] and [`RejectReason::Depth`] (the `act` chain's shape and length),
    /// [`RejectReason::Alg`] (the leaf key's type does not fit), [`RejectReason::Chain`] (not a
    /// valid SVID of its trust domain now), [`RejectReason::Signature`],
    /// [`RejectReason::Chain`] (the leaf's ID is not `iss`), [`RejectReason::Audience`] (`aud`
    /// is not us),
    /// [`RejectReason::Expired`], [`RejectReason::NotYetValid`] (`nbf` or `iat` ahead),
    /// [`RejectReason::Lifetime`] (`exp - iat` over `token.max_ttl`, not positive, or past the
    /// leaf's notAfter), [`RejectReason::Actor`] (outermost `act.sub` is not `iss`; without
    /// `act`, `sub` is not `iss`), [`RejectReason::Binding`] (`iss` is not `peer`, or
    /// `cnf.x5t#S256` is not the hash of `peer`'s certificate).
    pub fn verify_inbound(
        &self,
        compact: &str,
        peer: &PeerIdentity,
        now: SystemTime,
    ) -> Result<VerifiedClaims, RejectReason> {
        self.verify_bound(compact, peer.id(), peer.cert_sha256(), now)
    }

    /// [`Self::verify_inbound`] for a peer known by its SPIFFE ID and certificate hash, which
    /// must come from a verified connection (for benches and tools without a `PeerIdentity`).
    ///
    /// # Errors
    /// As [`Self::verify_inbound`].
    pub fn verify_bound(
        &self,
        compact: &str,
        peer_id: &SpiffeId,
        peer_cert_sha256: &[u8; 32],
        now: SystemTime,
    ) -> Result<VerifiedClaims, RejectReason> {
        let verified = self.verify_cached(compact, now, Some((peer_id, peer_cert_sha256)))?;
        let claims = &verified.inner.claims;
        // RFC 8705 §3 and ACT-02: the token must have been minted by the peer presenting it.
        if claims.iss != peer_id.as_str()
            || claims.cnf.x5t_s256 != URL_SAFE_NO_PAD.encode(peer_cert_sha256)
        {
            return Err(RejectReason::Binding);
        }
        Ok(verified)
    }

    /// Verifies a token with no mTLS peer to bind it to: everything [`Self::verify_inbound`]
    /// checks except the binding, the signature always. The outbound side does not relay
    /// with this ([`crate::token::RelayCache`] decides what it relays); tools and tests do.
    ///
    /// # Errors
    /// As [`Self::verify_inbound`], without [`RejectReason::Binding`].
    pub fn verify_relay(
        &self,
        compact: &str,
        now: SystemTime,
    ) -> Result<VerifiedClaims, RejectReason> {
        self.verify_cached(compact, now, None)
    }

    /// The peer-independent checks, from the cache when a verified token is there. `channel`
    /// is the mTLS peer the token arrived from (its SPIFFE ID and certificate hash): when the
    /// token's `x5c` leaf is that very certificate and its `iss` and `cnf` name it, the
    /// connection authenticates the token and its signature is not checked (CHA-01). A cached
    /// token accepted that way is returned only for that same certificate.
    fn verify_cached(
        &self,
        compact: &str,
        now: SystemTime,
        channel: Option<(&SpiffeId, &[u8; 32])>,
    ) -> Result<VerifiedClaims, RejectReason> {
        if compact.len() > jws::MAX_TOKEN_LEN {
            return Err(RejectReason::TooLarge);
        }
        let now_secs = unix_secs(now).ok_or(RejectReason::Expired)?;
        // A header segment parsed before: the token's hash continues from it.
        let segment = compact.split('.').next().unwrap_or_default();
        let known = (compact.as_bytes().get(segment.len()) == Some(&b'.'))
            .then(|| self.headers.get(segment))
            .flatten();
        let hash = match &known {
            Some(known) => known.hash_of(compact, segment.len()),
            None => sha256(compact.as_bytes()),
        };
        if let Some(hit) = self.cache.get(&hash, now_secs)
            && (hit.inner.signature_checked
                || channel.is_some_and(|c| minted_on(&hit.inner.claims, c)))
        {
            self.check_time(&hit.inner.claims, hit.inner.chain_not_after, now_secs)?;
            return Ok(hit);
        }
        let header = match known {
            Some(known) => Header::Known(known),
            None => Header::New(segment),
        };
        let verified = self.verify_uncached(compact, hash, header, now_secs, channel)?;
        let leeway = self.limits.leeway.as_secs();
        let until = verified
            .inner
            .claims
            .exp
            .saturating_add(leeway)
            .min(verified.inner.chain_not_after);
        self.cache.insert(hash, verified.clone(), until, now_secs);
        Ok(verified)
    }

    /// How many verified tokens are cached.
    #[cfg(test)]
    pub(crate) fn cached_len(&self) -> usize {
        self.cache.len()
    }

    /// How many header segments are kept parsed.
    #[cfg(test)]
    pub(crate) fn known_headers(&self) -> usize {
        self.headers.len()
    }

    /// How many validated chains are cached.
    #[cfg(test)]
    pub(crate) fn cached_chains(&self) -> usize {
        self.chain_cache.len()
    }

    /// The SPIFFE ID tokens must be addressed to.
    pub fn own_id(&self) -> &SpiffeId {
        &self.own
    }

    fn verify_uncached(
        &self,
        compact: &str,
        hash: [u8; 32],
        header: Header<'_>,
        now_secs: u64,
        channel: Option<(&SpiffeId, &[u8; 32])>,
    ) -> Result<VerifiedClaims, RejectReason> {
        let (known, payload, signing_input, signature) = match header {
            Header::Known(known) => {
                let (payload, signing_input, signature) = jws::split_after_known_header(compact)?;
                (known, payload, signing_input, signature)
            }
            Header::New(segment) => {
                let jws = jws::split(compact)?;
                let header = HopHeader::parse(&jws.header)?;
                let known = Arc::new(KnownHeader::new(segment, header));
                self.headers.insert(segment, Arc::clone(&known));
                (known, jws.payload, jws.signing_input, jws.signature)
            }
        };
        let header = &known.header;
        let claims = Claims::from_json(payload)?;
        // DOS-11: the chain's shape and length before any crypto.
        let actors = claims::actors(claims.act.as_ref(), self.limits.max_depth)?;
        let signer = self.signer(&known, now_secs)?;
        let leaf_sha256 = known.leaf_sha256;
        // Channel-authenticated acceptance (docs/tokens.md): on its minter's own connection, the
        // token's leaf is the certificate that connection proved the key of, so only that key's
        // holder can have written it. Byte equality is by SHA-256 of the DER.
        let on_its_minters_connection = channel
            .is_some_and(|(id, cert)| leaf_sha256 == *cert && minted_on(&claims, (id, cert)));
        if !on_its_minters_connection {
            jws::verify_signature(header.alg, &signer.key, signing_input, &signature)?;
        }
        // RFC 8725 §3.8: the key must belong to the issuer (JWT-15).
        if signer.id.as_str() != claims.iss {
            return Err(RejectReason::Chain);
        }
        let chain_not_after = signer.not_after;
        if claims.aud != self.own.as_str() {
            return Err(RejectReason::Audience);
        }
        self.check_time(&claims, chain_not_after, now_secs)?;
        self.check_lifetime(&claims, signer.key.not_after)?;
        check_actor(&claims, &actors)?;
        Ok(VerifiedClaims {
            inner: Arc::new(Verified {
                claims,
                actors,
                hash,
                chain_not_after,
                signature_checked: !on_its_minters_connection,
            }),
        })
    }

    /// The signer of a token: its `x5c` leaf key, checked against `alg` first (no chain crypto
    /// for a token whose algorithm cannot fit), then the chain judged by the SPIFFE verifier as
    /// an inbound handshake would be (docs/security.md, "Inbound: the SVID on the handshake",
    /// at now), or the remembered outcome of that.
    fn signer(&self, known: &KnownHeader, now: u64) -> Result<Arc<Signer>, RejectReason> {
        let header = &known.header;
        let key = known.chain_key;
        if let Some(signer) = self.chain_cache.get(&key, now) {
            jws::check_alg(header.alg, &signer.key)?;
            return Ok(signer);
        }
        let (leaf, intermediates) = header.x5c.split_first().ok_or(RejectReason::Chain)?;
        let leaf_key = LeafKey::parse(leaf).ok_or(RejectReason::Chain)?;
        jws::check_alg(header.alg, &leaf_key)?;
        let unix_now = UnixTime::since_unix_epoch(Duration::from_secs(now));
        let id = self
            .chains
            .verify_svid(leaf, intermediates, unix_now)
            .map_err(|_| RejectReason::Chain)?;
        let not_after = intermediates
            .iter()
            .filter_map(|der| LeafKey::parse(der).map(|k| k.not_after))
            .fold(leaf_key.not_after, u64::min);
        let signer = Arc::new(Signer {
            id,
            key: leaf_key,
            not_after,
        });
        let until = not_after.min(now.saturating_add(CHAIN_CACHE_SECS));
        self.chain_cache
            .insert(key, Arc::clone(&signer), until, now);
        Ok(signer)
    }

    /// `exp` and `nbf`/`iat` against now, with leeway (JWT-25..27); and the chain still valid.
    fn check_time(
        &self,
        claims: &Claims,
        chain_not_after: u64,
        now: u64,
    ) -> Result<(), RejectReason> {
        let leeway = self.limits.leeway.as_secs();
        if claims.exp.saturating_add(leeway) < now || chain_not_after < now {
            return Err(RejectReason::Expired);
        }
        if claims.nbf > now.saturating_add(leeway) || claims.iat > now.saturating_add(leeway) {
            return Err(RejectReason::NotYetValid);
        }
        Ok(())
    }

    /// `exp - iat` within `token.max_ttl` (JWT-27) and `exp` within the signer's notAfter
    /// (JWT-20).
    fn check_lifetime(&self, claims: &Claims, leaf_not_after: u64) -> Result<(), RejectReason> {
        let max = self
            .limits
            .ttl
            .as_secs()
            .saturating_add(self.limits.leeway.as_secs());
        if claims.exp <= claims.iat || claims.exp - claims.iat > max || claims.exp > leaf_not_after
        {
            return Err(RejectReason::Lifetime);
        }
        Ok(())
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("own", &self.own)
            .field("limits", &self.limits)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// Whether `claims` name the connection's peer as their minter: `iss` its SPIFFE ID, `cnf` its
/// certificate's hash.
fn minted_on(claims: &Claims, (id, cert): (&SpiffeId, &[u8; 32])) -> bool {
    claims.iss == id.as_str() && claims.cnf.x5t_s256 == URL_SAFE_NO_PAD.encode(cert)
}

/// RFC 8693 §4.1: the current actor is the issuer; without `act`, the issuer acts for itself.
fn check_actor(claims: &Claims, actors: &[String]) -> Result<(), RejectReason> {
    let ok = match actors.first() {
        Some(current) => *current == claims.iss,
        None => claims.sub == claims.iss,
    };
    if ok { Ok(()) } else { Err(RejectReason::Actor) }
}

/// A token's header segment: one parsed before, or one to parse (its text).
enum Header<'a> {
    Known(Arc<KnownHeader>),
    New(&'a str),
}

/// What the relay set keeps of an accepted token (some 20 bytes, where its claims take a
/// kilobyte): enough to read its claims again, from the same compact form, without checking it
/// again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Accepted {
    pub(crate) exp: u64,
    chain_not_after: u64,
    signature_checked: bool,
}

// === impl VerifiedClaims ===

impl VerifiedClaims {
    /// What the relay set keeps of this token.
    pub(crate) fn accepted(&self) -> Accepted {
        Accepted {
            exp: self.inner.claims.exp,
            chain_not_after: self.inner.chain_not_after,
            signature_checked: self.inner.signature_checked,
        }
    }

    /// The claims of `compact` read again, for a token the inbound side verified: the caller
    /// has matched `hash`, the SHA-256 of `compact`, to one it accepted, so `compact` is byte
    /// for byte the token that passed every check, and nothing is checked twice. Only the relay
    /// set calls this.
    ///
    /// # Errors
    /// [`RejectReason::Malformed`] if it no longer parses, which a verified token always does.
    pub(crate) fn reread(
        compact: &str,
        hash: [u8; 32],
        accepted: Accepted,
    ) -> Result<Self, RejectReason> {
        let jws = jws::split(compact)?;
        let claims = Claims::from_json(jws.payload)?;
        // Its depth was checked against `token.max_depth` when it was accepted.
        let actors = claims::actors(claims.act.as_ref(), usize::MAX)?;
        Ok(Self {
            inner: Arc::new(Verified {
                claims,
                actors,
                hash,
                chain_not_after: accepted.chain_not_after,
                signature_checked: accepted.signature_checked,
            }),
        })
    }

    /// All claims.
    pub fn claims(&self) -> &Claims {
        &self.inner.claims
    }

    /// `iss`: the minting workload (= the mTLS peer, inbound).
    pub fn iss(&self) -> &str {
        &self.inner.claims.iss
    }

    /// `aud`: this workload.
    pub fn aud(&self) -> &str {
        &self.inner.claims.aud
    }

    /// `sub`: the end user, or the origin workload.
    pub fn sub(&self) -> &str {
        &self.inner.claims.sub
    }

    /// `jti`.
    pub fn jti(&self) -> &str {
        &self.inner.claims.jti
    }

    /// `txn`: the transaction id.
    pub fn txn(&self) -> &str {
        &self.inner.claims.txn
    }

    /// The `scope` entries, in order.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.inner.claims.scopes()
    }

    /// The actors, outermost (current) first.
    pub fn actors(&self) -> &[String] {
        &self.inner.actors
    }

    /// `act`, as carried (copied verbatim into a child token).
    pub fn act(&self) -> Option<&Value> {
        self.inner.claims.act.as_ref()
    }

    /// `tctx`.
    pub fn tctx(&self) -> Option<&Map<String, Value>> {
        self.inner.claims.tctx.as_ref()
    }

    /// `prv`.
    pub fn prv(&self) -> Option<&str> {
        self.inner.claims.prv.as_deref()
    }

    /// `exp`.
    pub fn expires_at(&self) -> SystemTime {
        from_unix_secs(self.inner.claims.exp)
    }

    /// SHA-256 of the compact token (the child's `prv`, cache keys, telemetry).
    pub fn hash(&self) -> &[u8; 32] {
        &self.inner.hash
    }

    /// [`Self::hash`] as base64url, the form `prv` carries.
    pub fn hash_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.inner.hash)
    }

    /// What Cedar sees of this token (`context.token`).
    pub fn facts(&self) -> TokenFacts {
        self.inner.claims.facts(self.inner.actors.clone())
    }
}

impl fmt::Debug for VerifiedClaims {
    /// The claims (never the compact token, which is not kept).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedClaims")
            .field("claims", &self.inner.claims)
            .field("hash", &self.hash_b64())
            .finish()
    }
}
