//! jsonwebtoken as an independent interop oracle: what we mint, it verifies; what it signs with
//! our header, we verify.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;
use x509_parser::prelude::FromDer;

use super::{Mesh, request, scopes, spiffe};
use crate::token::test_support::{AGENT, CRM, TestCa, claims_for, now, present};

/// The raw public key of `der`'s SubjectPublicKeyInfo (point, PKCS#1 or 32 bytes).
fn public_key(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    cert.public_key().subject_public_key.data.to_vec()
}

#[test]
fn jsonwebtoken_verifies_what_we_mint_with_every_key_type() {
    let ca = TestCa::new("example.org");
    for (alg, oracle) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
        (&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384),
        (&rcgen::PKCS_ED25519, Algorithm::EdDSA),
        (&rcgen::PKCS_RSA_SHA256, Algorithm::PS256),
    ] {
        let svid = ca.svid_with(AGENT, alg, |_| {});
        let route = scopes(&["read"]);
        let token = Mesh::minter(&svid)
            .mint_at(request(&spiffe(CRM), &route), now())
            .unwrap();
        let point = public_key(svid.leaf().unwrap());
        let key = match oracle {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_der(&point),
            Algorithm::EdDSA => DecodingKey::from_ed_der(&point),
            _ => DecodingKey::from_rsa_der(&point),
        };
        let mut validation = Validation::new(oracle);
        validation.set_audience(&[CRM]);
        validation.set_issuer(&[AGENT]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Value>(token.compact(), &key, &validation)
            .unwrap_or_else(|e| panic!("{oracle:?}: {e}"));
        assert_eq!(data.header.typ.as_deref(), Some("hop+jwt"));
        assert_eq!(data.header.alg, oracle);
        let x5c = data.header.x5c.unwrap();
        assert_eq!(
            STANDARD.decode(&x5c[0]).unwrap(),
            svid.leaf().unwrap().to_vec()
        );
        assert_eq!(data.claims["sub"], AGENT);
        assert_eq!(data.claims["scope"], "read");
        assert_eq!(data.claims["jti"], token.claims().jti());
    }
}

#[test]
fn we_verify_an_es256_token_jsonwebtoken_signs_with_our_header_and_claims() {
    let mesh = Mesh::new();
    let header = Header {
        typ: Some("hop+jwt".to_owned()),
        x5c: Some(
            mesh.agent
                .chain()
                .iter()
                .map(|c| STANDARD.encode(c))
                .collect(),
        ),
        ..Header::new(Algorithm::ES256)
    };
    let claims = claims_for(&mesh.agent, CRM, now());
    let key = EncodingKey::from_ec_der(mesh.agent.private_key().secret_pkcs8_der());
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let verified = present(&mesh.verifier(CRM), &token, &mesh.agent, now()).unwrap();
    assert_eq!(verified.iss(), AGENT);
    assert_eq!(
        verified.scopes().collect::<HashSet<_>>(),
        HashSet::from(["read"])
    );
}
