//! A test identity provider: an ES256 key, its JWKS file, and end-user tokens signed by
//! jsonwebtoken (an implementation independent of hopgate's).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The issuer the tests configure.
pub(crate) const ISSUER: &str = "https://idp.example";
/// The audience origin tokens are issued for.
pub(crate) const AUDIENCE: &str = "agents";

pub(crate) struct Idp {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl Idp {
    pub(crate) fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        Self { pkcs8, public }
    }

    /// Writes `jwks.json` into `dir` and returns its path.
    pub(crate) fn write_jwks(&self, dir: &Path) -> PathBuf {
        let jwks = json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&self.public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&self.public[33..]),
        }]});
        let path = dir.join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        path
    }

    /// The `token.origin` section trusting this IdP, its JWKS at `jwks` (relative to the
    /// config's folder).
    pub(crate) fn token_yaml(jwks: &str) -> String {
        format!(
            "token:\n  origin:\n    issuers:\n      - {{ issuer: {ISSUER}, jwks_file: {jwks}, audience: {AUDIENCE} }}\n"
        )
    }

    /// A token for `sub` with `scope`, valid for an hour.
    pub(crate) fn token(&self, sub: &str, scope: &str) -> String {
        let now = now();
        self.sign(&json!({
            "iss": ISSUER, "sub": sub, "aud": AUDIENCE, "scope": scope,
            "iat": now, "exp": now + 3600,
        }))
    }

    /// A token with exactly `claims`.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let header = Header {
            kid: Some("k1".to_owned()),
            ..Header::new(Algorithm::ES256)
        };
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
