//! [`Minter`]: makes the hop token for one next hop, signed with this workload's SVID key.
//!
//! The key is parsed and the JOSE header (with `x5c`) encoded once per SVID; a rotation makes a
//! new `Minter` (and so a fresh minted-token cache: tokens bound to the old certificate are not
//! reused). Per token: claims → JSON → base64url → one signature.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hopgate_config::SpiffeId;
use hopgate_policy::TokenFacts;
use serde_json::{Map, Value, json};

use crate::tls::Svid;
use crate::token::cache::Bounded;
use crate::token::claims::{self, Claims, Cnf};
use crate::token::jws::{HopHeader, MAX_X5C, Signer};
use crate::token::origin::OriginClaims;
use crate::token::verify::VerifiedClaims;
use crate::token::{TokenError, sha256, unix_secs};

/// How many minted tokens a [`Minter`] keeps for reuse.
const CACHE_CAPACITY: usize = 1024;

/// Minted tokens by what they were minted from, while more than half their lifetime is left.
pub(crate) type MintedCache = Bounded<MintKey, MintedToken>;

/// What makes a minted token reusable: the same transaction (the same parent, or the same
/// origin credential, transaction context and trace), destination, scope and lifetime asked
/// for (two routes to one destination may ask for different ones).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MintKey {
    /// SHA-256 of the parent token, or of the origin credential, `tctx` and trace id.
    pub(crate) context: [u8; 32],
    pub(crate) aud: String,
    pub(crate) scope: String,
    /// The lifetime asked for, in seconds.
    pub(crate) ttl: u64,
}

/// Mints hop tokens as one workload.
pub struct Minter {
    id: SpiffeId,
    signer: Signer,
    /// The encoded JOSE header, the same on every token of this SVID.
    header: String,
    /// SHA-256 having taken `header` and its `.`: where both the signing input's digest and
    /// the token's hash start, so the header (most of a token, with its `x5c`) is hashed once.
    header_hashed: digest::Context,
    cnf: String,
    not_after: u64,
    ttl: Duration,
    cache: MintedCache,
}

/// What a token is minted from.
#[derive(Debug)]
pub struct MintRequest<'a> {
    /// The next hop's SPIFFE ID (the route's `identity`).
    pub aud: &'a SpiffeId,
    /// The token the local app relayed, verified by [`crate::token::TokenVerifier::verify_relay`].
    pub parent: Option<&'a VerifiedClaims>,
    /// The end user's verified origin token, when there is no parent.
    pub origin: Option<&'a OriginClaims>,
    /// The most the next hop may be granted (the route's `scopes`).
    pub route_scopes: &'a [String],
    /// The transaction context, set at the origin only: ignored when relaying (the parent's is
    /// copied unchanged).
    pub tctx: Option<Map<String, Value>>,
    /// The W3C trace id of the `traceparent` the local app sent, if any. At the origin it says
    /// which requests are one transaction: those of one trace with the same origin credential
    /// and `tctx` share a `txn`; a request without one starts a transaction of its own. Ignored
    /// when relaying (the parent names the transaction).
    pub trace: Option<[u8; 16]>,
}

/// A freshly minted (or reused) token.
#[derive(Clone)]
pub struct MintedToken {
    compact: String,
    claims: Claims,
    hash: [u8; 32],
    reused: bool,
    /// Whether the token may be reused: it belongs to a transaction a later request can join.
    reusable: bool,
}

// === impl Minter ===

impl Minter {
    /// A minter signing with `svid`'s key, for tokens living at most `ttl` (`token.ttl`) unless
    /// a call asks for another ([`Self::mint_with_ttl`]), and never past the SVID's notAfter.
    ///
    /// # Errors
    /// [`TokenError::NoLeaf`], [`TokenError::ChainTooLong`] for a chain longer than an `x5c` may
    /// be, [`TokenError::UnsupportedKey`] and [`TokenError::KeyRejected`] for a key hopgate
    /// cannot sign with, [`TokenError::Serialize`].
    pub fn new(svid: &Svid, ttl: Duration) -> Result<Self, TokenError> {
        let leaf = svid.leaf().ok_or(TokenError::NoLeaf)?;
        if svid.chain().len() > MAX_X5C {
            return Err(TokenError::ChainTooLong(svid.chain().len()));
        }
        let signer = Signer::from_svid(svid)?;
        let header = HopHeader::encode(signer.alg(), svid.chain())?;
        let mut header_hashed = digest::Context::new(&digest::SHA256);
        header_hashed.update(header.as_bytes());
        header_hashed.update(b".");
        Ok(Self {
            id: svid.id().clone(),
            signer,
            header,
            header_hashed,
            cnf: URL_SAFE_NO_PAD.encode(sha256(leaf)),
            not_after: unix_secs(svid.not_after()).unwrap_or(0),
            ttl,
            cache: MintedCache::new(CACHE_CAPACITY),
        })
    }

    /// This workload's SPIFFE ID (`iss` of every token).
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// [`Self::mint_at`] now.
    ///
    /// # Errors
    /// As [`Self::mint_at`].
    pub fn mint(&self, request: MintRequest<'_>) -> Result<MintedToken, TokenError> {
        self.mint_at(request, SystemTime::now())
    }

    /// [`Self::mint_with_ttl_at`] now: the token for a route with a `token_ttl` of its own.
    ///
    /// # Errors
    /// As [`Self::mint_at`].
    pub fn mint_with_ttl(
        &self,
        request: MintRequest<'_>,
        ttl: Duration,
    ) -> Result<MintedToken, TokenError> {
        self.mint_with_ttl_at(request, ttl, SystemTime::now())
    }

    /// [`Self::mint_with_ttl_at`] with this minter's TTL (`token.ttl`).
    ///
    /// # Errors
    /// As [`Self::mint_with_ttl_at`].
    pub fn mint_at(
        &self,
        request: MintRequest<'_>,
        now: SystemTime,
    ) -> Result<MintedToken, TokenError> {
        self.mint_with_ttl_at(request, self.ttl, now)
    }

    /// Mints the token for `request.aud`, living `ttl` (docs/tokens.md, "Minting (outbound)"):
    ///
    /// - relaying a parent: `sub`, `txn`, `tctx` copied; `scope` = parent ∩ route;
    ///   `act` = `{sub: self, act: parent's act}` (or `{sub: self}` when the parent has none);
    ///   `prv` = the parent's hash; `exp` never past the parent's;
    /// - from an origin token: `sub` = the end user, `scope` = origin ∩ route, `act` =
    ///   `{sub: self}`, a new `txn`;
    /// - otherwise: `sub` = self, `scope` = the route's, no `act`, a new `txn`.
    ///
    /// `iat` = `nbf` = now, `exp` ≤ now + `ttl` and ≤ the SVID's notAfter. A token is reused
    /// only within its transaction (docs/tokens.md, "One txn per transaction"): minted from the
    /// same parent, or at the origin from the same origin credential (or none), `tctx` and
    /// trace, for the same destination, scope and `ttl`, while more than half its lifetime is
    /// left. An origin request without a trace is a transaction of its own: a new `txn` and
    /// `jti`, every time.
    ///
    /// # Errors
    /// [`TokenError::Clock`], [`TokenError::NoLifetime`] when the SVID or the parent expires
    /// now, [`TokenError::Random`], [`TokenError::Serialize`], [`TokenError::Signing`].
    pub fn mint_with_ttl_at(
        &self,
        request: MintRequest<'_>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<MintedToken, TokenError> {
        let now = unix_secs(now).ok_or(TokenError::Clock)?;
        let ttl = ttl.as_secs();
        let basis = self.basis(request)?;
        let key = basis.context.map(|context| MintKey {
            context,
            aud: basis.aud.clone(),
            scope: basis.scope.clone(),
            ttl,
        });
        if let Some(mut hit) = key.as_ref().and_then(|key| self.cache.get(key, now)) {
            hit.reused = true;
            return Ok(hit);
        }
        let exp = now
            .saturating_add(ttl)
            .min(self.not_after)
            .min(basis.parent_exp.unwrap_or(u64::MAX));
        if exp <= now {
            return Err(TokenError::NoLifetime(now));
        }
        let claims = Claims {
            iss: self.id.as_str().to_owned(),
            aud: basis.aud,
            sub: basis.sub,
            iat: now,
            nbf: now,
            exp,
            jti: random_id()?,
            txn: match basis.txn {
                Some(txn) => txn,
                None => random_id()?,
            },
            scope: Some(basis.scope),
            act: basis.act,
            cnf: Cnf {
                x5t_s256: self.cnf.clone(),
            },
            tctx: basis.tctx,
            prv: basis.prv,
        };
        let mut token = self.sign(claims)?;
        token.reusable = key.is_some();
        if let Some(key) = key {
            // Reusable while exp − t > (exp − iat) / 2, i.e. 2t < exp + iat: the last such whole
            // second is ⌊(exp + iat − 1) / 2⌋ (exp > iat = now here).
            let until = (exp + now - 1) / 2;
            self.cache.insert(key, token.clone(), until, now);
        }
        Ok(token)
    }

    fn basis(&self, request: MintRequest<'_>) -> Result<Basis, TokenError> {
        let own = self.id.as_str();
        let aud = request.aud.as_str().to_owned();
        if let Some(parent) = request.parent {
            let act = match parent.act() {
                Some(prior) => json!({ "sub": own, "act": prior }),
                None => json!({ "sub": own }),
            };
            return Ok(Basis {
                aud,
                sub: parent.sub().to_owned(),
                txn: Some(parent.txn().to_owned()),
                scope: narrow(parent.scopes(), request.route_scopes),
                act: Some(act),
                tctx: parent.tctx().cloned(),
                prv: Some(parent.hash_b64()),
                parent_exp: Some(parent.claims().exp()),
                context: Some(*parent.hash()),
            });
        }
        if let Some(origin) = request.origin {
            let context = transaction_key(origin.hash(), &request.tctx, request.trace)?;
            return Ok(Basis {
                aud,
                sub: origin.sub().to_owned(),
                txn: None,
                scope: narrow(
                    origin.scopes().iter().map(String::as_str),
                    request.route_scopes,
                ),
                // RFC 8693: act is absent only when the subject acts for itself.
                act: (origin.sub() != own).then(|| json!({ "sub": own })),
                tctx: request.tctx,
                prv: None,
                // The chain never outlives the credential that started it.
                parent_exp: Some(origin.exp()),
                context,
            });
        }
        // The workload acting for itself: a transaction like the others, keyed on its `tctx`
        // and trace.
        let context = transaction_key(b"self", &request.tctx, request.trace)?;
        Ok(Basis {
            aud,
            sub: own.to_owned(),
            txn: None,
            scope: narrow(
                request.route_scopes.iter().map(String::as_str),
                request.route_scopes,
            ),
            act: None,
            tctx: request.tctx,
            prv: None,
            parent_exp: None,
            context,
        })
    }

    fn sign(&self, claims: Claims) -> Result<MintedToken, TokenError> {
        let payload = serde_json::to_vec(&claims).map_err(TokenError::Serialize)?;
        let mut compact = String::with_capacity(self.header.len() + payload.len() * 2 + 400);
        compact.push_str(&self.header);
        compact.push('.');
        let payload_at = compact.len();
        URL_SAFE_NO_PAD.encode_string(payload, &mut compact);
        let mut hashed = self.header_hashed.clone();
        hashed.update(compact.as_bytes().get(payload_at..).unwrap_or_default());
        let signature = self.signer.sign_hashed(&hashed, compact.as_bytes())?;
        let signature_at = compact.len();
        compact.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut compact);
        // The token's hash continues from the signing input's.
        hashed.update(compact.as_bytes().get(signature_at..).unwrap_or_default());
        let hash = digest_bytes(hashed.finish());
        Ok(MintedToken {
            compact,
            claims,
            hash,
            reused: false,
            reusable: false,
        })
    }
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter")
            .field("id", &self.id)
            .field("signer", &self.signer)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The claims a token takes from its parent, origin token or this workload.
struct Basis {
    aud: String,
    sub: String,
    /// The parent's transaction, or `None` for a new one (made only when a token is signed).
    txn: Option<String>,
    scope: String,
    act: Option<Value>,
    tctx: Option<Map<String, Value>>,
    prv: Option<String>,
    parent_exp: Option<u64>,
    /// What the minted-token cache keys on; `None`: never reuse.
    context: Option<[u8; 32]>,
}

/// A SHA-256 digest as its 32 bytes.
fn digest_bytes(digest: digest::Digest) -> [u8; 32] {
    let mut out = [0; 32];
    // INVARIANT: a SHA-256 digest is 32 bytes, so the lengths match.
    out.copy_from_slice(digest.as_ref());
    out
}

/// The key of an origin transaction: the credential that started it (`b"self"` for the
/// workload itself), its `tctx` and the trace it belongs to. Without a trace there is no key:
/// the request is a transaction of its own, and its token is never reused.
fn transaction_key(
    credential: &[u8],
    tctx: &Option<Map<String, Value>>,
    trace: Option<[u8; 16]>,
) -> Result<Option<[u8; 32]>, TokenError> {
    let Some(trace) = trace else {
        return Ok(None);
    };
    let tctx = serde_json::to_vec(tctx).map_err(TokenError::Serialize)?;
    // Length-prefixed parts: no two different (credential, tctx) pairs hash alike.
    let len = |part: &[u8]| u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes();
    let input = [
        len(credential).as_slice(),
        credential,
        &len(&tctx),
        &tctx,
        &trace,
    ]
    .concat();
    Ok(Some(sha256(&input)))
}

/// The entries of `granted` that `route` allows, in `granted`'s order, each once: a scope can
/// narrow along a chain, never widen (ACT-05; docs/tokens.md, "Minting (outbound)").
fn narrow<'a>(granted: impl Iterator<Item = &'a str>, route: &[String]) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for scope in granted {
        if route.iter().any(|r| r == scope) && !kept.contains(&scope) {
            kept.push(scope);
        }
    }
    kept.join(" ")
}

/// 128 random bits, base64url (`jti`, `txn`).
fn random_id() -> Result<String, TokenError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| TokenError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

// === impl MintedToken ===

impl MintedToken {
    /// The compact token, for the `hop-token` header. Never log it.
    pub fn compact(&self) -> &str {
        &self.compact
    }

    /// The claims it carries.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// SHA-256 of the compact token.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// What Cedar sees of this token (`context.token`), as the next hop will see it.
    pub fn facts(&self) -> TokenFacts {
        // A minted `act` is well formed by construction; its length is not capped here.
        let actors = claims::actors(self.claims.act.as_ref(), usize::MAX).unwrap_or_default();
        self.claims.facts(actors)
    }

    /// How many actors the token's `act` holds, counted without copying them.
    pub fn depth(&self) -> usize {
        let mut depth = 0;
        let mut act = self.claims.act.as_ref();
        while let Some(actor) = act {
            depth += 1;
            act = actor.get("act");
        }
        depth
    }

    /// Whether this token came from the reuse cache rather than a new signature.
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// Whether a later request may be sent with this same token: false for a transaction of
    /// one request (an app call without a `traceparent`).
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// [`Self::hash`] as base64url (what a child's `prv` will hold).
    pub fn hash_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.hash)
    }
}

impl fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedToken")
            .field("compact", &"<redacted>")
            .field("claims", &self.claims)
            .finish()
    }
}
