//! The one parser of compact JWS (RFC 7515 §3.1) in hopgate, and the one place that signs and
//! verifies JWS signatures.
//!
//! [`split`] applies the format rules every token shares (size cap, character set, three parts,
//! canonical base64url, strict JSON); [`HopHeader::parse`] the `hop+jwt` header profile;
//! [`LeafKey`] reads the signer's key off the `x5c` leaf; [`verify_signature`] and [`Signer`]
//! do the crypto with aws-lc-rs. Nothing here trusts a claim.

use std::fmt;

use aws_lc_rs::signature::{
    self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

use crate::token::claims::{self, Claims};
use crate::token::{RejectReason, TokenError};

/// The largest compact token accepted, in bytes; checked before anything is decoded (DOS-11).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The most certificates an `x5c` header may hold; checked before any is parsed (DOS-11).
pub const MAX_X5C: usize = 5;

/// The `typ` of a hop token.
pub const TYP: &str = "hop+jwt";

/// A JWS algorithm hopgate signs or verifies with. Names are matched exactly, case-sensitively
/// (RFC 8725bis: no `noNE` bypass).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA P-256 SHA-256, raw R‖S (64 bytes).
    Es256,
    /// ECDSA P-384 SHA-384, raw R‖S (96 bytes).
    Es384,
    /// RSASSA-PSS SHA-256.
    Ps256,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 SHA-256: origin tokens only, never a hop token.
    Rs256,
}

/// The three parts of a compact JWS, decoded but not trusted.
pub(crate) struct CompactJws<'a> {
    /// The JOSE header, a JSON object without repeated members.
    pub(crate) header: Map<String, Value>,
    /// The payload, a JSON value without repeated members.
    pub(crate) payload: Value,
    /// `BASE64URL(header) '.' BASE64URL(payload)`, as received (never re-serialised: JWT-48).
    pub(crate) signing_input: &'a [u8],
    /// The signature bytes.
    pub(crate) signature: Vec<u8>,
}

/// A hop token decoded by [`inspect`]: well formed, **nothing verified**. For display and
/// diagnostics (`hopgate token inspect`) only; it cannot become a
/// [`crate::token::VerifiedClaims`].
#[derive(Debug)]
pub struct UnverifiedToken {
    alg: Alg,
    x5c: Vec<CertificateDer<'static>>,
    claims: Claims,
}

/// A checked `hop+jwt` header.
#[derive(Debug)]
pub(crate) struct HopHeader {
    pub(crate) alg: Alg,
    /// `x5c`, leaf first; never empty and at most [`MAX_X5C`] long.
    pub(crate) x5c: Vec<CertificateDer<'static>>,
}

/// The kinds of signing key hopgate knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    P256,
    P384,
    Rsa,
    Ed25519,
}

/// The public key of an `x5c` leaf, and that leaf's notAfter.
#[derive(Debug)]
pub(crate) struct LeafKey {
    pub(crate) kind: KeyKind,
    /// What aws-lc-rs expects: the SEC1 point, the PKCS#1 `RSAPublicKey`, or the 32 raw bytes.
    pub(crate) public: Vec<u8>,
    pub(crate) not_after: u64,
}

/// A public key from a JWKS, for origin tokens.
#[derive(Clone, Debug)]
pub(crate) enum JwkKey {
    /// An uncompressed P-256 point.
    P256(Vec<u8>),
    /// RSA modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

// === impl Alg ===

impl Alg {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Ps256 => "PS256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    /// The algorithm named exactly `name`, if hopgate knows it.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "ES384" => Some(Self::Es384),
            "PS256" => Some(Self::Ps256),
            "EdDSA" => Some(Self::EdDsa),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    /// Whether a hop token may use this algorithm.
    fn is_hop(self) -> bool {
        !matches!(self, Self::Rs256)
    }

    /// The one key type this algorithm is used with ("each key MUST be used with exactly one
    /// algorithm", RFC 8725 §3.1).
    fn key_kind(self) -> KeyKind {
        match self {
            Self::Es256 => KeyKind::P256,
            Self::Es384 => KeyKind::P384,
            Self::Ps256 | Self::Rs256 => KeyKind::Rsa,
            Self::EdDsa => KeyKind::Ed25519,
        }
    }

    fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Self::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
            Self::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::EdDsa => &signature::ED25519,
            Self::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }

    /// The exact signature length, where the algorithm fixes one (RFC 7518 §3.4: raw R‖S).
    fn signature_len(self) -> Option<usize> {
        match self {
            Self::Es256 | Self::EdDsa => Some(64),
            Self::Es384 => Some(96),
            Self::Ps256 | Self::Rs256 => None,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits and decodes a compact JWS.
///
/// # Errors
/// [`RejectReason::TooLarge`] past [`MAX_TOKEN_LEN`]; [`RejectReason::Malformed`] for any
/// character outside `A–Z a–z 0–9 - _ .` (so no padding, `+`, `/`, whitespace or JSON
/// serialisation), a part count other than three (so JWE is refused), an empty header or payload,
/// non-canonical base64url, or JSON that is not UTF-8, has a repeated member, trailing data, or
/// (header) is not an object.
pub(crate) fn split(compact: &str) -> Result<CompactJws<'_>, RejectReason> {
    let (header, payload, sig) = segments(compact)?;
    let Value::Object(header_map) = strict_json(&b64url(header)?)? else {
        return Err(RejectReason::Malformed);
    };
    let (payload, signing_input, signature) = decode_rest(compact, header, payload, sig)?;
    Ok(CompactJws {
        header: header_map,
        payload,
        signing_input,
        signature,
    })
}

/// [`split`] for a token whose header segment is known to decode (see
/// `crate::token::known_header`): every check [`split`] makes on the rest, the header left
/// undecoded. Returns the payload, the signing input and the signature.
///
/// # Errors
/// As [`split`].
pub(crate) fn split_after_known_header(
    compact: &str,
) -> Result<(Value, &[u8], Vec<u8>), RejectReason> {
    let (header, payload, sig) = segments(compact)?;
    decode_rest(compact, header, payload, sig)
}

/// The three segments of a compact JWS, checked for size, alphabet and count.
fn segments(compact: &str) -> Result<(&str, &str, &str), RejectReason> {
    if compact.len() > MAX_TOKEN_LEN {
        return Err(RejectReason::TooLarge);
    }
    let legal = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    if !compact.bytes().all(legal) {
        return Err(RejectReason::Malformed);
    }
    let mut parts = compact.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RejectReason::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(RejectReason::Malformed);
    }
    Ok((header, payload, sig))
}

/// The payload (strict JSON), the signing input and the signature of a compact JWS.
fn decode_rest<'a>(
    compact: &'a str,
    header: &str,
    payload: &str,
    sig: &str,
) -> Result<(Value, &'a [u8], Vec<u8>), RejectReason> {
    let payload_json = strict_json(&b64url(payload)?)?;
    let signature = b64url(sig)?;
    let signing_input = compact
        .as_bytes()
        .get(..header.len() + 1 + payload.len())
        .ok_or(RejectReason::Malformed)?;
    Ok((payload_json, signing_input, signature))
}

/// Decodes a hop token without verifying anything: the format, header profile and claim types
/// are checked exactly as [`crate::token::TokenVerifier`] checks them, nothing else.
///
/// # Errors
/// [`RejectReason::TooLarge`], [`RejectReason::Malformed`], [`RejectReason::Typ`],
/// [`RejectReason::Alg`], [`RejectReason::Chain`] (missing `x5c`), [`RejectReason::Actor`] for
/// a malformed `act` (at most 64 actors are walked: [`RejectReason::Depth`] past that).
pub fn inspect(compact: &str) -> Result<UnverifiedToken, RejectReason> {
    let jws = split(compact)?;
    let header = HopHeader::parse(&jws.header)?;
    let claims = Claims::from_json(jws.payload)?;
    claims::actors(claims.act(), hopgate_policy::MAX_ACTORS)?;
    Ok(UnverifiedToken {
        alg: header.alg,
        x5c: header.x5c,
        claims,
    })
}

/// Canonical base64url without padding: trailing bits must be zero (JWT-36).
pub(crate) fn b64url(part: &str) -> Result<Vec<u8>, RejectReason> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| RejectReason::Malformed)
}

/// Parses JSON refusing a repeated member at any depth (RFC 7515 §4, RFC 7519 §4: we choose
/// reject), invalid UTF-8, lone surrogates and trailing data. serde_json's recursion limit (128)
/// bounds the depth (JWT-38, ACT-10).
pub(crate) fn strict_json(bytes: &[u8]) -> Result<Value, RejectReason> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue
        .deserialize(&mut de)
        .map_err(|_| RejectReason::Malformed)?;
    de.end().map_err(|_| RejectReason::Malformed)?;
    Ok(value)
}

// === impl UnverifiedToken ===

impl UnverifiedToken {
    /// The header's `alg`.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The header's `x5c`, leaf first, as carried.
    pub fn x5c(&self) -> &[CertificateDer<'static>] {
        &self.x5c
    }

    /// The claims, as carried: unverified.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
}

// === impl HopHeader ===

impl HopHeader {
    /// Applies the `hop+jwt` header profile (docs/tokens.md, "JOSE header").
    ///
    /// # Errors
    /// [`RejectReason::Malformed`] for any parameter besides `alg`, `typ`, `x5c`;
    /// [`RejectReason::Typ`] unless `typ` is exactly `hop+jwt`; [`RejectReason::Alg`] unless
    /// `alg` is exactly `ES256`, `ES384`, `PS256` or `EdDSA`; [`RejectReason::TooLarge`] for
    /// more than [`MAX_X5C`] certificates; [`RejectReason::Chain`] for a missing or empty `x5c`
    /// or an entry that is not standard, padded base64.
    pub(crate) fn parse(header: &Map<String, Value>) -> Result<Self, RejectReason> {
        if header
            .keys()
            .any(|k| !matches!(k.as_str(), "alg" | "typ" | "x5c"))
        {
            return Err(RejectReason::Malformed);
        }
        match header.get("typ") {
            Some(Value::String(typ)) if typ == TYP => {}
            _ => return Err(RejectReason::Typ),
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::from_name)
            .filter(|alg| alg.is_hop())
            .ok_or(RejectReason::Alg)?;
        let Some(Value::Array(entries)) = header.get("x5c") else {
            return Err(RejectReason::Chain);
        };
        if entries.len() > MAX_X5C {
            return Err(RejectReason::TooLarge);
        }
        if entries.is_empty() {
            return Err(RejectReason::Chain);
        }
        let x5c = entries
            .iter()
            .map(|entry| {
                let text = entry.as_str().ok_or(RejectReason::Chain)?;
                let der = STANDARD.decode(text).map_err(|_| RejectReason::Chain)?;
                Ok(CertificateDer::from(der))
            })
            .collect::<Result<Vec<_>, RejectReason>>()?;
        Ok(Self { alg, x5c })
    }

    /// The header a [`Signer`] for `chain` puts on every token, serialised.
    pub(crate) fn encode(alg: Alg, chain: &[CertificateDer<'_>]) -> Result<String, TokenError> {
        let x5c: Vec<String> = chain.iter().map(|der| STANDARD.encode(der)).collect();
        let header = serde_json::json!({ "alg": alg.as_str(), "typ": TYP, "x5c": x5c });
        let json = serde_json::to_vec(&header).map_err(TokenError::Serialize)?;
        Ok(URL_SAFE_NO_PAD.encode(json))
    }
}

// === impl LeafKey ===

impl LeafKey {
    /// Reads the key and notAfter of a certificate; `None` for DER that does not parse or a key
    /// of a type hopgate does not sign with.
    pub(crate) fn parse(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let spki = cert.public_key();
        let oid = &spki.algorithm.algorithm;
        let kind = if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
            if curve == OID_EC_P256 {
                KeyKind::P256
            } else if curve == OID_NIST_EC_P384 {
                KeyKind::P384
            } else {
                return None;
            }
        } else if *oid == OID_PKCS1_RSAENCRYPTION {
            KeyKind::Rsa
        } else if *oid == OID_SIG_ED25519 {
            KeyKind::Ed25519
        } else {
            return None;
        };
        let not_after = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
        Some(Self {
            kind,
            public: spki.subject_public_key.data.to_vec(),
            not_after,
        })
    }
}

/// Whether a hop token may be signed with `alg` by `key`.
///
/// # Errors
/// [`RejectReason::Alg`] when `alg` is not the one `key`'s type is used with (JWT-07/08).
pub(crate) fn check_alg(alg: Alg, key: &LeafKey) -> Result<(), RejectReason> {
    if alg.key_kind() != key.kind || !alg.is_hop() {
        return Err(RejectReason::Alg);
    }
    Ok(())
}

/// Verifies a hop token's signature with its `x5c` leaf key.
///
/// # Errors
/// [`RejectReason::Alg`] as [`check_alg`]; [`RejectReason::Signature`] for a signature of the
/// wrong length (DER-encoded ECDSA: JWT-41, 42) or one that does not verify.
pub(crate) fn verify_signature(
    alg: Alg,
    key: &LeafKey,
    signing_input: &[u8],
    sig: &[u8],
) -> Result<(), RejectReason> {
    check_alg(alg, key)?;
    if alg.signature_len().is_some_and(|len| len != sig.len()) {
        return Err(RejectReason::Signature);
    }
    UnparsedPublicKey::new(alg.verification(), &key.public)
        .verify(signing_input, sig)
        .map_err(|_| RejectReason::Signature)
}

/// Verifies an origin token's signature with a JWKS key.
///
/// # Errors
/// [`RejectReason::Alg`] when `alg` is not one the key is used with; [`RejectReason::Signature`]
/// for a signature of the wrong length or one that does not verify.
pub(crate) fn verify_jwk_signature(
    alg: Alg,
    key: &JwkKey,
    signing_input: &[u8],
    sig: &[u8],
) -> Result<(), RejectReason> {
    if alg.signature_len().is_some_and(|len| len != sig.len()) {
        return Err(RejectReason::Signature);
    }
    let verified = match (alg, key) {
        (Alg::Es256, JwkKey::P256(point)) => {
            UnparsedPublicKey::new(alg.verification(), point).verify(signing_input, sig)
        }
        (Alg::Rs256, JwkKey::Rsa { n, e }) => RsaPublicKeyComponents { n, e }.verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            signing_input,
            sig,
        ),
        (Alg::Ps256, JwkKey::Rsa { n, e }) => RsaPublicKeyComponents { n, e }.verify(
            &signature::RSA_PSS_2048_8192_SHA256,
            signing_input,
            sig,
        ),
        _ => return Err(RejectReason::Alg),
    };
    verified.map_err(|_| RejectReason::Signature)
}

/// A `serde_json::Value` builder that refuses repeated object members.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without repeated members")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom("repeated member"));
            }
            let value = access.next_value_seed(Self)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

mod signer;
#[cfg(test)]
mod tests;

pub(crate) use signer::Signer;
