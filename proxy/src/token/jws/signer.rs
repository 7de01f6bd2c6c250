//! The SVID's private key, for signing hop tokens and audit seals: parsed once, with the
//! algorithm its key type dictates.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    Ed25519KeyPair, RsaKeyPair,
};

use super::{Alg, KeyKind, LeafKey};
use crate::tls::Svid;
use crate::token::TokenError;

/// The SVID's private key, parsed once, with the algorithm its type dictates.
pub(crate) enum Signer {
    Ecdsa(EcdsaKeyPair, Alg),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

// === impl Signer ===

impl Signer {
    /// Parses the SVID's PKCS#8 key once, for the algorithm its leaf's key type dictates.
    ///
    /// # Errors
    /// [`TokenError::NoLeaf`], [`TokenError::UnsupportedKey`] for a leaf key hopgate cannot
    /// sign with, [`TokenError::KeyRejected`] when aws-lc-rs refuses the key.
    pub(crate) fn from_svid(svid: &Svid) -> Result<Self, TokenError> {
        let leaf = svid.leaf().ok_or(TokenError::NoLeaf)?;
        let key = LeafKey::parse(leaf).ok_or(TokenError::UnsupportedKey(
            "not a P-256, P-384, RSA or Ed25519 public key",
        ))?;
        let pkcs8 = svid.private_key().secret_pkcs8_der();
        let signer = match key.kind {
            KeyKind::P256 => Self::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(TokenError::KeyRejected)?,
                Alg::Es256,
            ),
            KeyKind::P384 => Self::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8)
                    .map_err(TokenError::KeyRejected)?,
                Alg::Es384,
            ),
            KeyKind::Rsa => {
                Self::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(TokenError::KeyRejected)?)
            }
            KeyKind::Ed25519 => {
                Self::Ed25519(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(TokenError::KeyRejected)?)
            }
        };
        Ok(signer)
    }

    /// The JWS algorithm of this key.
    pub(crate) fn alg(&self) -> Alg {
        match self {
            Self::Ecdsa(_, alg) => *alg,
            Self::Rsa(_) => Alg::Ps256,
            Self::Ed25519(_) => Alg::EdDsa,
        }
    }

    /// Signs `message`, whose SHA-256 is being computed in `hashed` (which has taken all of
    /// it): ES256 signs that digest, so a constant prefix (a token's header) is hashed once per
    /// minter rather than once per signature; the other algorithms sign `message`.
    ///
    /// # Errors
    /// As [`Self::sign`].
    pub(crate) fn sign_hashed(
        &self,
        hashed: &aws_lc_rs::digest::Context,
        message: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        match self {
            Self::Ecdsa(key, Alg::Es256) => key
                .sign_digest(&hashed.clone().finish())
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| TokenError::Signing),
            _ => self.sign(message),
        }
    }

    /// Signs `message`: raw R‖S for ECDSA, PSS with SHA-256 for RSA.
    ///
    /// # Errors
    /// [`TokenError::Signing`] when aws-lc-rs fails.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        let rng = SystemRandom::new();
        match self {
            Self::Ecdsa(key, _) => key
                .sign(&rng, message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| TokenError::Signing),
            Self::Rsa(key) => {
                let mut sig = vec![0; key.public_modulus_len()];
                key.sign(&signature::RSA_PSS_SHA256, &rng, message, &mut sig)
                    .map_err(|_| TokenError::Signing)?;
                Ok(sig)
            }
            Self::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
        }
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg())
            .field("key", &"<redacted>")
            .finish()
    }
}
