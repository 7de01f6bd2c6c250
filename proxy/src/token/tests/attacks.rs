//! The JWS attack cases of docs/security.md, "JWS and JWT": algorithm confusion, header
//! injection, format confusion, JSON ambiguity and signature encoding (JWT-01..11, 16, 21, 23,
//! 24, 29, 32..36, 41..45, 48, 49).

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::{Mesh, request, spiffe};
use crate::token::test_support::{
    AGENT, CRM, TestCa, claims_for, forge, forge_raw, header_for, now, present, signature_of,
    with_signature,
};
use crate::token::{RejectReason, TokenVerifier};

/// The P-256 group order n.
const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

struct Fixture {
    mesh: Mesh,
    verifier: TokenVerifier,
    header: Value,
    claims: Value,
}

impl Fixture {
    fn new() -> Self {
        let mesh = Mesh::new();
        Self {
            verifier: mesh.verifier(CRM),
            header: header_for(&mesh.agent),
            claims: claims_for(&mesh.agent, CRM, now()),
            mesh,
        }
    }

    fn valid(&self) -> String {
        forge(&self.mesh.agent, &self.header, &self.claims)
    }

    fn check(&self, token: &str) -> Option<RejectReason> {
        present(&self.verifier, token, &self.mesh.agent, now()).err()
    }

    /// [`Self::check`] for a token that does not arrive on its minter's own connection (a
    /// relay, or a tool verifying it): there the signature is what authenticates the token,
    /// and every signature rule applies. On the minter's connection the connection does
    /// (CHA-01), which the channel tests cover.
    fn check_off_channel(&self, token: &str) -> Option<RejectReason> {
        self.verifier.verify_relay(token, now()).err()
    }

    /// A token whose header is `header` (signed with the agent's key).
    fn with_header(&self, header: &Value) -> Option<RejectReason> {
        self.check(&forge(&self.mesh.agent, header, &self.claims))
    }

    fn header_edit(&self, edit: impl FnOnce(&mut Value)) -> Option<RejectReason> {
        let mut header = self.header.clone();
        edit(&mut header);
        self.with_header(&header)
    }

    /// Raw header and payload JSON text, signed with the agent's key.
    fn raw(&self, header: &str, payload: &str) -> Option<RejectReason> {
        self.check(&forge_raw(
            &self.mesh.agent,
            header.as_bytes(),
            payload.as_bytes(),
        ))
    }

    fn header_text(&self) -> String {
        self.header.to_string()
    }

    fn payload_text(&self) -> String {
        self.claims.to_string()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn alg_none_with_an_empty_signature_is_refused_in_every_spelling_jwt_01_jwt_02() {
    let fx = Fixture::new();
    for alg in ["none", "None", "NONE", "nOnE", "", "es256", "ES256 "] {
        let mut header = fx.header.clone();
        header["alg"] = json!(alg);
        let token = format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(fx.payload_text().as_bytes())
        );
        assert_eq!(fx.check(&token), Some(RejectReason::Alg), "{alg:?}");
    }
    assert_eq!(
        fx.header_edit(|h| h["alg"] = json!(null)),
        Some(RejectReason::Alg)
    );
    let missing = fx.header_edit(|h| {
        h.as_object_mut().unwrap().remove("alg");
    });
    assert_eq!(missing, Some(RejectReason::Alg));
}

#[test]
fn a_valid_token_with_its_signature_removed_is_refused_jwt_03() {
    let fx = Fixture::new();
    let token = fx.valid();
    let stripped = format!("{}.", token.rsplit_once('.').unwrap().0);
    assert_eq!(
        fx.check_off_channel(&stripped),
        Some(RejectReason::Signature)
    );
}

#[test]
fn anything_but_three_parts_is_malformed_jwt_04_jwt_23() {
    let fx = Fixture::new();
    let token = fx.valid();
    let (h, rest) = token.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    for bad in [
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}.{s}"),
        format!("{token}."),
        format!(".{p}.{s}"),
        format!("{h}..{s}"),
        format!("{h}.{p}.{s}.{s}.{s}"),
        String::new(),
        ".".to_owned(),
        "..".to_owned(),
    ] {
        assert_eq!(fx.check(&bad), Some(RejectReason::Malformed), "{bad}");
    }
}

#[test]
fn hmac_keyed_with_our_public_key_or_a_common_secret_is_refused_jwt_05_jwt_06() {
    let fx = Fixture::new();
    let leaf = fx.mesh.agent.leaf().unwrap().to_vec();
    let spki = {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
        cert.public_key().raw.to_vec()
    };
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&spki)
    );
    let mut header = fx.header.clone();
    header["alg"] = json!("HS256");
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(fx.payload_text().as_bytes())
    );
    for secret in [&leaf[..], &spki, pem.as_bytes(), b"", b"secret", b"hopgate"] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, input.as_bytes());
        let token = format!("{input}.{}", b64(tag.as_ref()));
        assert_eq!(fx.check(&token), Some(RejectReason::Alg));
    }
    // The same forgery made by an independent library.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            typ: Some("hop+jwt".to_owned()),
            x5c: header["x5c"]
                .as_array()
                .map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &fx.claims,
        &jsonwebtoken::EncodingKey::from_secret(&spki),
    )
    .unwrap();
    assert_eq!(fx.check(&forged), Some(RejectReason::Alg));
}

#[test]
fn an_alg_other_than_the_leaf_keys_is_refused_jwt_07() {
    let fx = Fixture::new();
    for alg in [
        "ES384", "ES512", "RS256", "PS256", "PS384", "EdDSA", "Ed25519", "ES256K", "HS512",
    ] {
        assert_eq!(
            fx.header_edit(|h| h["alg"] = json!(alg)),
            Some(RejectReason::Alg),
            "{alg}"
        );
    }
}

#[test]
fn es256_with_a_leaf_key_of_another_type_is_refused_jwt_08() {
    let ca = TestCa::new("example.org");
    let verifier = super::verifier(CRM, &[&ca]);
    for alg in [
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_RSA_SHA256,
    ] {
        let svid = ca.svid_with(AGENT, alg, |_| {});
        let mut header = header_for(&svid);
        header["alg"] = json!("ES256");
        let token = forge(&svid, &header, &claims_for(&svid, CRM, now()));
        let got = present(&verifier, &token, &svid, now()).err();
        assert_eq!(got, Some(RejectReason::Alg));
    }
}

#[test]
fn key_locating_and_unknown_header_parameters_are_refused_never_honoured_jwt_09_to_11_jwt_21_jwt_49()
 {
    let fx = Fixture::new();
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"});
    let cases = [
        ("jwk", jwk),
        ("jku", json!("http://127.0.0.1/jwks.json")),
        ("x5u", json!("http://169.254.169.254/latest/meta-data")),
        ("kid", json!("../../../../dev/null")),
        ("kid", json!("/dev/null")),
        ("kid", json!("x' UNION SELECT '1';--")),
        ("kid", json!("|sleep 10")),
        ("kid", json!("")),
        ("crit", json!(["b64"])),
        ("crit", json!(["exp"])),
        ("crit", json!([])),
        ("b64", json!(false)),
        ("cty", json!("JWT")),
        ("zip", json!("DEF")),
        ("x5t", json!("AAAA")),
        ("x5t#S256", json!("AAAA")),
        ("enc", json!("A128GCM")),
        ("custom", json!(1)),
    ];
    for (name, value) in cases {
        let got = fx.header_edit(|h| h[name] = value.clone());
        assert_eq!(got, Some(RejectReason::Malformed), "{name}: {value}");
    }
    // The verifier holds no HTTP client, file or database handle: nothing could be fetched.
    let both = fx.header_edit(|h| {
        h["crit"] = json!(["b64"]);
        h["b64"] = json!(false);
    });
    assert_eq!(both, Some(RejectReason::Malformed));
}

#[test]
fn a_jws_signed_by_a_key_other_than_the_x5c_leafs_is_refused_jwt_16() {
    let fx = Fixture::new();
    let token = forge(&fx.mesh.inference, &fx.header, &fx.claims);
    assert_eq!(fx.check_off_channel(&token), Some(RejectReason::Signature));
}

#[test]
fn the_json_serialization_and_non_token_characters_are_malformed_jwt_24_jwt_35() {
    let fx = Fixture::new();
    let token = fx.valid();
    let (h, rest) = token.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let json = json!({"payload": p, "protected": h, "signature": s}).to_string();
    let mut cases = vec![
        json,
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}.{s}=="),
        format!("{h}.{p}.{s}\n"),
        format!(" {token}"),
        format!("{h}.{p}?.{s}"),
        format!("{h}.{p} .{s}"),
        token.replace('-', "+"),
        token.replace('_', "/"),
    ];
    cases.retain(|c| *c != token);
    for bad in cases {
        assert_eq!(fx.check(&bad), Some(RejectReason::Malformed), "{bad}");
    }
}

#[test]
fn non_canonical_base64url_trailing_bits_are_malformed_jwt_36() {
    let fx = Fixture::new();
    let token = fx.valid();
    // A 64-byte signature encodes to 86 characters: the last one carries 4 unused bits.
    let last = token.chars().last().unwrap();
    let bumped = char::from(u8::try_from(u32::from(last)).unwrap() + 1);
    let bad = format!("{}{bumped}", &token[..token.len() - 1]);
    assert_eq!(fx.check(&bad), Some(RejectReason::Malformed));
}

#[test]
fn repeated_members_anywhere_are_malformed_jwt_33() {
    let fx = Fixture::new();
    let payload = fx.payload_text();
    let header = fx.header_text();
    let dup_alg = header.replacen('{', "{\"alg\":\"none\",", 1);
    assert_eq!(fx.raw(&dup_alg, &payload), Some(RejectReason::Malformed));
    let dup_aud = payload.replacen('{', &format!("{{\"aud\":\"{}\",", spiffe(CRM)), 1);
    assert_eq!(fx.raw(&header, &dup_aud), Some(RejectReason::Malformed));
    let mut claims = fx.claims.clone();
    claims["sub"] = json!("alice");
    claims["act"] = json!({"sub": AGENT});
    let dup_act = claims.to_string().replace(
        &format!("{{\"sub\":\"{AGENT}\"}}"),
        &format!("{{\"sub\":\"{AGENT}\",\"sub\":\"{AGENT}\"}}"),
    );
    assert_ne!(dup_act, claims.to_string());
    assert_eq!(fx.raw(&header, &dup_act), Some(RejectReason::Malformed));
}

#[test]
fn non_utf8_utf16_bom_and_lone_surrogates_are_malformed_jwt_34() {
    let fx = Fixture::new();
    let header = fx.header_text();
    let payload = fx.payload_text();
    let agent = fx.mesh.agent.id().as_str().to_owned();
    let mut invalid = payload.clone().into_bytes();
    let at = payload.find("\"txn\":\"").unwrap() + 7;
    invalid.insert(at, 0xff);
    let cases: Vec<Vec<u8>> = vec![
        invalid,
        payload.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        [&[0xef, 0xbb, 0xbf][..], payload.as_bytes()].concat(),
        payload.replace(&agent, "\\ud800").into_bytes(),
    ];
    for bad in cases {
        let token = forge_raw(&fx.mesh.agent, header.as_bytes(), &bad);
        assert_eq!(fx.check(&token), Some(RejectReason::Malformed));
    }
}

#[test]
fn whitespace_inside_the_decoded_header_json_is_accepted_jwt_48() {
    let fx = Fixture::new();
    let header = serde_json::to_string_pretty(&fx.header).unwrap();
    assert!(header.contains('\n'));
    assert_eq!(fx.raw(&format!(" {header}\n"), &fx.payload_text()), None);
}

#[test]
fn claims_of_the_wrong_json_type_are_malformed_jwt_29_jwt_32() {
    let fx = Fixture::new();
    for (claim, value) in [
        ("exp", json!("9999999999")),
        ("iat", json!(1.5)),
        ("nbf", json!(-1)),
        ("exp", json!(1e30)),
        ("iss", json!(1)),
        ("sub", json!({"id": "x"})),
        ("jti", json!(null)),
        ("txn", json!(["t"])),
    ] {
        let mut claims = fx.claims.clone();
        claims[claim] = value.clone();
        let token = forge(&fx.mesh.agent, &fx.header, &claims);
        assert_eq!(
            fx.check(&token),
            Some(RejectReason::Malformed),
            "{claim}: {value}"
        );
    }
}

/// `(r, s)` of a raw P-256 signature.
fn halves(sig: &[u8]) -> ([u8; 32], [u8; 32]) {
    (sig[..32].try_into().unwrap(), sig[32..].try_into().unwrap())
}

/// a − b for 256-bit big-endian numbers, a ≥ b.
fn sub(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = u8::try_from(d).unwrap();
    }
    out
}

/// a + b for 256-bit big-endian numbers, with the carry as a leading byte when there is one.
fn add(a: &[u8; 32], b: &[u8; 32]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut carry = 0u16;
    for i in (0..32).rev() {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = u8::try_from(s & 0xff).unwrap();
        carry = s >> 8;
    }
    if carry > 0 {
        out.insert(0, 1);
    }
    out
}

fn der_integer(x: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = x.iter().copied().skip_while(|b| *b == 0).collect();
    let mut body = if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        vec![0]
    } else {
        Vec::new()
    };
    body.extend(trimmed);
    [vec![0x02, u8::try_from(body.len()).unwrap()], body].concat()
}

#[test]
fn a_der_encoded_or_mis_sized_es256_signature_is_refused_jwt_41_jwt_42() {
    let fx = Fixture::new();
    let token = fx.valid();
    let sig = signature_of(&token);
    let (r, s) = halves(&sig);
    let seq = [der_integer(&r), der_integer(&s)].concat();
    let der = [vec![0x30, u8::try_from(seq.len()).unwrap()], seq].concat();
    for bad in [
        der,
        sig[..63].to_vec(),
        [&sig[..], &[0]].concat(),
        [&[0], &sig[..]].concat(),
        [&[0], &r[..], &[0], &s[..]].concat(),
    ] {
        assert_eq!(
            fx.check_off_channel(&with_signature(&token, &bad)),
            Some(RejectReason::Signature)
        );
    }
}

#[test]
fn out_of_range_r_and_s_are_refused_jwt_43_jwt_44() {
    let fx = Fixture::new();
    let token = fx.valid();
    let (r, s) = halves(&signature_of(&token));
    let zero = [0u8; 32];
    let mut one = [0u8; 32];
    one[31] = 1;
    let n_minus_1 = sub(&N, &one);
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for bad in [zero, one, n_minus_1, N] {
        cases.push([&bad[..], &s[..]].concat());
        cases.push([&r[..], &bad[..]].concat());
    }
    cases.push(vec![0; 64]);
    cases.push([add(&r, &N), s.to_vec()].concat());
    cases.push([r.to_vec(), add(&s, &N)].concat());
    for bad in cases {
        assert_eq!(
            fx.check_off_channel(&with_signature(&token, &bad)),
            Some(RejectReason::Signature)
        );
    }
}

#[test]
fn the_high_s_twin_verifies_too_and_the_cache_keys_each_token_by_its_own_hash_jwt_45() {
    let fx = Fixture::new();
    let token = fx.valid();
    let (r, s) = halves(&signature_of(&token));
    let twin = with_signature(&token, &[&r[..], &sub(&N, &s)[..]].concat());
    assert_ne!(twin, token);
    let first = present(&fx.verifier, &token, &fx.mesh.agent, now()).unwrap();
    let second = present(&fx.verifier, &twin, &fx.mesh.agent, now()).unwrap();
    assert_eq!(first.jti(), second.jti(), "the same claims");
    assert_ne!(
        first.hash(),
        second.hash(),
        "two cache entries, never one keyed on the signature"
    );
    assert_eq!(fx.verifier.cached_len(), 2);
}

#[test]
fn a_token_seen_before_is_served_from_the_cache_with_its_checks_re_run() {
    let fx = Fixture::new();
    let token = Mesh::minter(&fx.mesh.agent)
        .mint_at(request(&spiffe(CRM), &[]), now())
        .unwrap();
    let a = present(&fx.verifier, token.compact(), &fx.mesh.agent, now()).unwrap();
    let b = present(&fx.verifier, token.compact(), &fx.mesh.agent, now()).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_eq!(fx.verifier.cached_len(), 1);
    let late = now() + std::time::Duration::from_secs(120);
    assert_eq!(
        present(&fx.verifier, token.compact(), &fx.mesh.agent, late).err(),
        Some(RejectReason::Expired)
    );
}

#[test]
fn a_remembered_chain_still_has_every_new_tokens_alg_and_signature_checked_jwt_08_jwt_16() {
    let fx = Fixture::new();
    assert_eq!(fx.check_off_channel(&fx.valid()), None);
    assert_eq!(fx.verifier.cached_chains(), 1);
    let other_key = forge(&fx.mesh.inference, &fx.header, &fx.claims);
    assert_eq!(
        fx.check_off_channel(&other_key),
        Some(RejectReason::Signature)
    );
    assert_eq!(
        fx.header_edit(|h| h["alg"] = json!("ES384")),
        Some(RejectReason::Alg)
    );
    assert_eq!(
        fx.header_edit(|h| h["alg"] = json!("PS256")),
        Some(RejectReason::Alg)
    );
    assert_eq!(fx.verifier.cached_chains(), 1);
}

#[test]
fn a_remembered_chain_is_validated_again_once_its_leaf_expires_jwt_19() {
    let ca = TestCa::new("example.org");
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(20);
    let svid = ca.svid_with(AGENT, &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.not_after = not_after
    });
    let verifier = super::verifier(CRM, &[&ca]);
    let t0 = now();
    let mut claims = claims_for(&svid, CRM, t0);
    claims["exp"] = json!(crate::token::test_support::secs(svid.not_after()));
    let first = forge(&svid, &header_for(&svid), &claims);
    assert!(present(&verifier, &first, &svid, t0).is_ok());
    let later = t0 + std::time::Duration::from_secs(25);
    claims["jti"] = json!("another");
    let second = forge(&svid, &header_for(&svid), &claims);
    let got = present(&verifier, &second, &svid, later).err();
    assert_eq!(
        got,
        Some(RejectReason::Chain),
        "not served from the chain cache"
    );
}
