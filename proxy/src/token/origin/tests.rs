use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::PublicKeyComponents;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RSA_PSS_SHA256,
    RsaEncoding, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

use super::*;
use crate::token::test_support::{now, secs};

const ISS: &str = "https://idp.example";
const AUD: &str = "agents";

struct Idp {
    ec_pkcs8: Vec<u8>,
    ec: EcdsaKeyPair,
    rsa: RsaKeyPair,
    dir: tempfile::TempDir,
}

impl Idp {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let rsa_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        Self {
            ec: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &ec_pkcs8).unwrap(),
            ec_pkcs8,
            rsa: RsaKeyPair::from_pkcs8(&rsa_key.serialize_der()).unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn ec_jwk(&self, kid: &str) -> Value {
        let point = self.ec.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        })
    }

    fn rsa_jwk(&self, kid: &str, alg: Option<&str>) -> Value {
        let components = PublicKeyComponents::<Vec<u8>>::from(self.rsa.public_key());
        let mut jwk = json!({
            "kty": "RSA", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&components.n), "e": URL_SAFE_NO_PAD.encode(&components.e),
        });
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    fn write(&self, jwks: &Value) -> PathBuf {
        let path = self.dir.path().join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        path
    }

    fn verifier(&self, keys: Vec<Value>) -> OriginVerifier {
        let path = self.write(&json!({ "keys": keys }));
        OriginVerifier::from_files(
            [(ISS, path.as_path(), AUD)].into_iter(),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    fn sign(&self, alg: &str, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = match alg {
            "ES256" => self
                .ec
                .sign(&rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            _ => {
                let padding: &'static dyn RsaEncoding = if alg == "PS256" {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                let mut sig = vec![0; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(padding, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn claims() -> Value {
    let now = secs(now());
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now + 300, "iat": now, "scope": "read_ticket generate"})
}

fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "typ": "JWT", "kid": kid})
}

#[test]
fn an_es256_origin_token_signed_by_an_independent_library_verifies() {
    let idp = Idp::new();
    let verifier = idp.verifier(vec![idp.ec_jwk("ec1")]);
    let header = jsonwebtoken::Header {
        kid: Some("ec1".to_owned()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256)
    };
    let key = jsonwebtoken::EncodingKey::from_ec_der(&idp.ec_pkcs8);
    let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
    let origin = verifier.verify(&token, now()).unwrap();
    assert_eq!(origin.sub(), "alice");
    assert_eq!(origin.issuer(), ISS);
    assert_eq!(origin.scopes(), ["read_ticket", "generate"]);
    assert_eq!(origin.hash(), &sha256(token.as_bytes()));
    assert!(!format!("{origin:?}").contains(&token));
}

#[test]
fn rs256_and_ps256_tokens_verify_with_keys_of_their_one_algorithm() {
    let idp = Idp::new();
    let verifier = idp.verifier(vec![idp.rsa_jwk("rs", None), idp.ec_jwk("ec")]);
    let token = idp.sign("RS256", &header("RS256", "rs"), &claims());
    assert_eq!(verifier.verify(&token, now()).unwrap().sub(), "alice");
    let ps = idp.sign("PS256", &header("PS256", "rs"), &claims());
    assert_eq!(
        verifier.verify(&ps, now()).err(),
        Some(RejectReason::Alg),
        "RS256 key"
    );
    let verifier = idp.verifier(vec![idp.rsa_jwk("ps", Some("PS256"))]);
    let ps = idp.sign("PS256", &header("PS256", "ps"), &claims());
    assert_eq!(verifier.verify(&ps, now()).unwrap().sub(), "alice");
}

#[test]
fn none_hmac_and_unlisted_algorithms_are_refused_jwt_01_jwt_05() {
    let idp = Idp::new();
    let verifier = idp.verifier(vec![idp.ec_jwk("ec")]);
    let good = idp.sign("ES256", &header("ES256", "ec"), &claims());
    let (_, rest) = good.split_once('.').unwrap();
    for alg in ["none", "HS256", "ES384", "EdDSA", "es256"] {
        let h = URL_SAFE_NO_PAD.encode(header(alg, "ec").to_string());
        let token = format!("{h}.{rest}");
        assert_eq!(
            verifier.verify(&token, now()).err(),
            Some(RejectReason::Alg),
            "{alg}"
        );
    }
}

#[test]
fn issuer_audience_and_time_are_checked_with_leeway() {
    let idp = Idp::new();
    let verifier = idp.verifier(vec![idp.ec_jwk("ec")]);
    let now_s = secs(now());
    let check = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims();
        edit(&mut c);
        verifier
            .verify(&idp.sign("ES256", &header("ES256", "ec"), &c), now())
            .err()
    };
    assert_eq!(
        check(&|c| c["iss"] = json!("https://evil.example")),
        Some(RejectReason::Issuer)
    );
    assert_eq!(
        check(&|c| c["aud"] = json!("other")),
        Some(RejectReason::Audience)
    );
    assert_eq!(check(&|c| c["aud"] = json!(["other", AUD])), None);
    assert_eq!(
        check(&|c| c["aud"] = json!(["other"])),
        Some(RejectReason::Audience)
    );
    assert_eq!(
        check(&|c| c["exp"] = json!(now_s - 6)),
        Some(RejectReason::Expired)
    );
    assert_eq!(check(&|c| c["exp"] = json!(now_s - 5)), None);
    assert_eq!(
        check(&|c| c["nbf"] = json!(now_s + 6)),
        Some(RejectReason::NotYetValid)
    );
    assert_eq!(
        check(&|c| c["iat"] = json!(now_s + 6)),
        Some(RejectReason::NotYetValid)
    );
    let missing = |name: &'static str| {
        move |c: &mut Value| {
            c.as_object_mut().unwrap().remove(name);
        }
    };
    for name in ["exp", "sub", "aud", "iss"] {
        assert_eq!(
            check(&missing(name)),
            Some(RejectReason::Malformed),
            "{name}"
        );
    }
    assert_eq!(
        check(&|c| c["sub"] = json!("")),
        Some(RejectReason::Malformed)
    );
    // An end user named like a workload would pass for a workload-started chain.
    for sub in [
        "spiffe://example.org/ns/agents/sa/agent",
        "SPIFFE://example.org/x",
    ] {
        assert_eq!(
            check(&|c| c["sub"] = json!(sub)),
            Some(RejectReason::Malformed),
            "{sub}"
        );
    }
    assert_eq!(
        check(&|c| c["exp"] = json!("1")),
        Some(RejectReason::Malformed)
    );
}

#[test]
fn the_key_is_chosen_by_kid_only_among_the_issuers_own_keys() {
    let idp = Idp::new();
    let one = idp.verifier(vec![idp.ec_jwk("ec")]);
    let no_kid = idp.sign("ES256", &json!({"alg": "ES256"}), &claims());
    assert!(one.verify(&no_kid, now()).is_ok(), "the only key");
    let unknown = idp.sign("ES256", &header("ES256", "other"), &claims());
    assert_eq!(
        one.verify(&unknown, now()).err(),
        Some(RejectReason::Signature)
    );
    let two = idp.verifier(vec![idp.ec_jwk("ec"), idp.rsa_jwk("rs", None)]);
    assert_eq!(
        two.verify(&no_kid, now()).err(),
        Some(RejectReason::Signature),
        "ambiguous"
    );
    let wrong_key = idp.sign("ES256", &header("ES256", "ec"), &claims());
    let other = Idp::new();
    let other = other.verifier(vec![other.ec_jwk("ec")]);
    assert_eq!(
        other.verify(&wrong_key, now()).err(),
        Some(RejectReason::Signature)
    );
}

#[test]
fn a_hop_token_typ_and_key_locating_headers_are_refused_jwt_09_jwt_10_tel() {
    let idp = Idp::new();
    let verifier = idp.verifier(vec![idp.ec_jwk("ec")]);
    for typ in ["hop+jwt", "HOP+JWT", "application/hop+jwt"] {
        let token = idp.sign("ES256", &json!({"alg": "ES256", "typ": typ}), &claims());
        assert_eq!(
            verifier.verify(&token, now()).err(),
            Some(RejectReason::Typ),
            "{typ}"
        );
    }
    for (name, value) in [
        ("jku", json!("http://127.0.0.1/")),
        ("x5u", json!("http://127.0.0.1/")),
        ("jwk", idp.ec_jwk("x")),
        ("x5c", json!(["AAAA"])),
        ("crit", json!(["exp"])),
    ] {
        let mut h = header("ES256", "ec");
        h[name] = value;
        let token = idp.sign("ES256", &h, &claims());
        assert_eq!(
            verifier.verify(&token, now()).err(),
            Some(RejectReason::Malformed),
            "{name}"
        );
    }
}

#[test]
fn the_authorization_header_must_use_the_bearer_scheme() {
    let idp = Idp::new();
    let verifier = idp.verifier(vec![idp.ec_jwk("ec")]);
    let token = idp.sign("ES256", &header("ES256", "ec"), &claims());
    for value in [
        format!("Bearer {token}"),
        format!("bearer  {token}"),
        format!("BEARER {token}"),
    ] {
        assert!(
            verifier.verify_authorization(&value, now()).is_ok(),
            "{value}"
        );
    }
    for value in [
        format!("Basic {token}"),
        token.clone(),
        format!("Bearer {token} "),
    ] {
        assert_eq!(
            verifier.verify_authorization(&value, now()).err(),
            Some(RejectReason::Malformed)
        );
    }
}

#[test]
fn a_jwks_file_without_usable_keys_or_with_bad_ones_is_an_error_naming_the_file() {
    let idp = Idp::new();
    let load = |jwks: Value| {
        let path = idp.write(&jwks);
        OriginVerifier::from_files([(ISS, path.as_path(), AUD)].into_iter(), Duration::ZERO)
            .err()
            .map(|e| e.to_string())
    };
    let mut short = idp.rsa_jwk("rs", None);
    short["n"] = json!(URL_SAFE_NO_PAD.encode([0xff; 128]));
    let mut bad_x = idp.ec_jwk("ec");
    bad_x["x"] = json!("AAAA");
    let mut enc = idp.ec_jwk("ec");
    enc["use"] = json!("enc");
    for (jwks, message) in [
        (json!([]), "not a JSON object"),
        (json!({"keys": {}}), "no `keys` array"),
        (json!({"keys": []}), "no usable signing key"),
        (json!({"keys": [enc]}), "no usable signing key"),
        (
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA"}]}),
            "no usable signing key",
        ),
        (json!({"keys": [short]}), "shorter than 2048 bits"),
        (json!({"keys": [bad_x]}), "32 bytes"),
        (
            json!({"keys": [idp.ec_jwk("a"), idp.ec_jwk("a")]}),
            "repeats kid `a`",
        ),
        (json!({"keys": [1]}), "`keys[0]` is not an object"),
    ] {
        let err = load(jwks.clone()).unwrap_or_else(|| panic!("{jwks} loaded"));
        assert!(err.contains(message) && err.contains("jwks.json"), "{err}");
    }
    let missing = OriginVerifier::from_files(
        [(ISS, idp.dir.path().join("missing.json").as_path(), AUD)].into_iter(),
        Duration::ZERO,
    );
    assert!(matches!(missing, Err(TokenError::JwksRead { .. })));
}

#[test]
fn issuers_load_from_a_validated_config() {
    let idp = Idp::new();
    let dir = idp.dir.path();
    for file in ["svid.pem", "svid_key.pem", "bundle.pem"] {
        std::fs::write(dir.join(file), "placeholder").unwrap();
    }
    idp.write(&json!({ "keys": [idp.ec_jwk("ec")] }));
    let yaml = format!(
        "identity:\n  svid: {{ cert: svid.pem, key: svid_key.pem }}\n  bundles: {{ example.org: bundle.pem }}\noutbound:\n  listen: 127.0.0.1:15001\ntoken:\n  origin:\n    issuers:\n      - {{ issuer: '{ISS}', jwks_file: jwks.json, audience: {AUD} }}\n"
    );
    std::fs::write(dir.join("hopgate.yaml"), yaml).unwrap();
    let config = hopgate_config::load(&dir.join("hopgate.yaml")).unwrap();
    let verifier =
        OriginVerifier::load(config.token().origin_issuers(), config.token().leeway()).unwrap();
    assert!(!verifier.is_empty());
    let token = idp.sign("ES256", &header("ES256", "ec"), &claims());
    assert_eq!(verifier.verify(&token, now()).unwrap().sub(), "alice");
}

// === the `jwks` fuzz target's properties, as proptests ===

/// Compact JWS of `iss`, `aud`, `sub` and a far `exp` under each algorithm, with and without
/// `kid: k1`, each with a signature of its algorithm's size that no key made: whatever key a
/// JWKS holds, one of these meets its signature check.
static UNSIGNED: LazyLock<Vec<String>> = LazyLock::new(|| {
    let payload = URL_SAFE_NO_PAD.encode(
        json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": 4_102_444_800u64}).to_string(),
    );
    let mut tokens = Vec::new();
    for (alg, len) in [("ES256", 64), ("RS256", 256), ("PS256", 256)] {
        for header in [json!({"alg": alg, "kid": "k1"}), json!({"alg": alg})] {
            let header = URL_SAFE_NO_PAD.encode(header.to_string());
            let sig = URL_SAFE_NO_PAD.encode(vec![1u8; len]);
            tokens.push(format!("{header}.{payload}.{sig}"));
        }
    }
    tokens
});

/// Valid JWKS documents to perturb: one key of each kind named `k1`, and all three together.
static VALID_JWKS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let idp = Idp::new();
    vec![
        json!({"keys": [idp.ec_jwk("k1")]}),
        json!({"keys": [idp.rsa_jwk("k1", None)]}),
        json!({"keys": [idp.rsa_jwk("k1", Some("PS256"))]}),
        json!({"keys": [idp.ec_jwk("k1"), idp.rsa_jwk("k2", Some("RS256")), idp.rsa_jwk("k3", Some("PS256"))]}),
    ]
});

/// What the `jwks` fuzz target asserts of any file: it loads, with a key, and verifies no
/// token nobody signed; or it is refused as a JWKS problem, never as unreadable.
fn assert_loads_usably_or_is_refused_as_a_jwks(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, bytes).unwrap();
    let loaded = OriginVerifier::from_files(
        std::iter::once((ISS, Path::new(&path), AUD)),
        Duration::ZERO,
    );
    match loaded {
        Ok(verifier) => {
            prop_assert!(!verifier.is_empty(), "a loaded JWKS configures its issuer");
            for token in UNSIGNED.iter() {
                prop_assert!(
                    verifier.verify(token, SystemTime::UNIX_EPOCH).is_err(),
                    "a token nobody signed verified: {}",
                    token
                );
            }
        }
        Err(err @ TokenError::Jwks { .. }) => {
            let _ = err.to_string();
        }
        Err(other) => prop_assert!(false, "a readable JWKS file refused as: {}", other),
    }
    Ok(())
}

/// A JWK member's replacement: JSON of each type, the names the parser matches on, and
/// base64url of key-sized bytes (32 for a P-256 coordinate, about 256 for an RSA modulus).
fn member_value() -> impl Strategy<Value = Value> {
    let names = vec![
        "EC", "RSA", "OKP", "oct", "P-256", "P-384", "ES256", "RS256", "PS256", "HS256", "none",
        "sig", "enc", "k1", "k2", "", "AA", "AQAB", "====",
    ];
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(names).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![0..8usize, Just(31usize), Just(32), Just(33), 250..=260usize]
            .prop_flat_map(|n| prop::collection::vec(any::<u8>(), n))
            .prop_map(|bytes| Value::from(URL_SAFE_NO_PAD.encode(bytes))),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{}])),
    ]
}

/// One change to a JWKS document.
#[derive(Clone, Debug)]
enum Edit {
    /// Sets (or adds) a member of a key, or of the document when `key` is `None`.
    Set(Option<Index>, &'static str, Value),
    /// Removes a member of a key.
    Remove(Index, &'static str),
    /// Appends a copy of a key (a repeated `kid`).
    Repeat(Index),
    /// Replaces a key with a value that may not be an object.
    Replace(Index, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    let member = prop::sample::select(vec![
        "kty", "crv", "alg", "use", "kid", "x", "y", "n", "e", "keys", "d",
    ]);
    prop_oneof![
        4 => (any::<Option<Index>>(), member.clone(), member_value())
            .prop_map(|(key, name, value)| Edit::Set(key, name, value)),
        2 => (any::<Index>(), member).prop_map(|(key, name)| Edit::Remove(key, name)),
        1 => any::<Index>().prop_map(Edit::Repeat),
        1 => (any::<Index>(), member_value()).prop_map(|(key, value)| Edit::Replace(key, value)),
    ]
}

/// A valid JWKS document with some edits, serialised, then maybe cut short or with a few
/// bytes flipped.
fn near_valid_jwks() -> impl Strategy<Value = Vec<u8>> {
    (
        0..VALID_JWKS.len(),
        prop::collection::vec(edit(), 0..4),
        any::<Option<Index>>(),
        prop::collection::vec((any::<Index>(), 1..=255u8), 0..3),
    )
        .prop_map(|(which, edits, cut, flips)| {
            let mut jwks = VALID_JWKS[which].clone();
            for edit in edits {
                let Some(Value::Array(keys)) = jwks.get_mut("keys") else {
                    if let Edit::Set(None, name, value) = edit {
                        jwks[name] = value;
                    }
                    continue;
                };
                let Some(last) = keys.len().checked_sub(1) else {
                    continue;
                };
                let pick = |key: &Index| key.index(last + 1);
                match edit {
                    Edit::Set(None, name, value) => jwks[name] = value,
                    Edit::Set(Some(key), name, value) => {
                        if let Some(jwk) = keys[pick(&key)].as_object_mut() {
                            jwk.insert(name.to_owned(), value);
                        }
                    }
                    Edit::Remove(key, name) => {
                        if let Some(jwk) = keys[pick(&key)].as_object_mut() {
                            jwk.remove(name);
                        }
                    }
                    Edit::Repeat(key) => keys.push(keys[pick(&key)].clone()),
                    Edit::Replace(key, value) => keys[pick(&key)] = value,
                }
            }
            let mut bytes = jwks.to_string().into_bytes();
            if let Some(cut) = cut
                && cut.index(4) == 0
            {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            if !bytes.is_empty() {
                for (at, bits) in flips {
                    let at = at.index(bytes.len());
                    bytes[at] ^= bits;
                }
            }
            bytes
        })
}

#[test]
fn the_unsigned_tokens_reach_the_signature_check_of_each_valid_jwks() {
    // Else the proptests below would check less than they say.
    for jwks in VALID_JWKS.iter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        let verifier =
            OriginVerifier::from_files(std::iter::once((ISS, path.as_path(), AUD)), Duration::ZERO)
                .unwrap();
        let reasons: Vec<_> = UNSIGNED
            .iter()
            .map(|token| verifier.verify(token, SystemTime::UNIX_EPOCH).err())
            .collect();
        assert!(
            reasons.contains(&Some(RejectReason::Signature)),
            "{jwks}: {reasons:?}"
        );
        assert!(reasons.iter().all(Option::is_some), "{jwks}: {reasons:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_jwks_parser_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        assert_loads_usably_or_is_refused_as_a_jwks(&bytes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_jwks_parser_never_panics_on_a_perturbed_valid_jwks(bytes in near_valid_jwks()) {
        assert_loads_usably_or_is_refused_as_a_jwks(&bytes)?;
    }
}
