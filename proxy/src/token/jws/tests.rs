use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn part(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

fn token(header: &str, payload: &str, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        part(header),
        part(payload),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

fn hop_header(extra: Value) -> Map<String, Value> {
    let mut header = json!({"alg": "ES256", "typ": "hop+jwt", "x5c": [STANDARD.encode(b"cert")]});
    for (k, v) in extra.as_object().unwrap() {
        header[k] = v.clone();
    }
    header.as_object().unwrap().clone()
}

#[test]
fn split_decodes_the_three_parts_and_keeps_the_signing_input_as_received() {
    let compact = token(r#"{ "alg" : "ES256" }"#, r#"{"a":1}"#, &[1, 2, 3]);
    let jws = split(&compact).unwrap();
    assert_eq!(jws.header["alg"], "ES256");
    assert_eq!(jws.payload, json!({"a": 1}));
    assert_eq!(jws.signature, [1, 2, 3]);
    let input = compact.rsplit_once('.').unwrap().0;
    assert_eq!(jws.signing_input, input.as_bytes());
}

#[test]
fn split_refuses_a_token_over_16_kib_before_decoding_jwt_37() {
    let compact = "!".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(split(&compact).err(), Some(RejectReason::TooLarge));
}

#[test]
fn split_refuses_a_header_that_is_not_an_object_and_trailing_json() {
    for header in ["[]", "1", "\"x\"", "{}{}", "{} x", ""] {
        let compact = token(header, "{}", &[1]);
        assert_eq!(
            split(&compact).err(),
            Some(RejectReason::Malformed),
            "{header}"
        );
    }
}

#[test]
fn strict_json_refuses_repeated_members_at_any_depth_jwt_33() {
    assert!(strict_json(br#"{"a":1,"b":{"c":1,"d":2}}"#).is_ok());
    for bad in [
        &br#"{"a":1,"a":1}"#[..],
        br#"{"a":{"c":1,"c":2}}"#,
        br#"[{"x":1,"x":1}]"#,
        br#"{"a":1,"\u0061":2}"#,
    ] {
        assert_eq!(strict_json(bad), Err(RejectReason::Malformed));
    }
}

#[test]
fn the_hop_header_profile_accepts_exactly_alg_typ_x5c() {
    let header = HopHeader::parse(&hop_header(json!({}))).unwrap();
    assert_eq!(header.alg, Alg::Es256);
    assert_eq!(header.x5c.len(), 1);
    for alg in ["ES256", "ES384", "PS256", "EdDSA"] {
        assert!(
            HopHeader::parse(&hop_header(json!({ "alg": alg }))).is_ok(),
            "{alg}"
        );
    }
    let rs256 = HopHeader::parse(&hop_header(json!({"alg": "RS256"})));
    assert_eq!(
        rs256.err(),
        Some(RejectReason::Alg),
        "RS256 is for origin tokens only"
    );
}

#[test]
fn an_x5c_entry_must_be_padded_standard_base64_jwt_17() {
    let der = [0xfb_u8, 0xff, 0xbf, 0x01];
    let standard = STANDARD.encode(der);
    assert!(standard.contains('+') || standard.contains('/'));
    for bad in [
        URL_SAFE_NO_PAD.encode(der),
        standard.trim_end_matches('=').to_owned(),
    ] {
        let got = HopHeader::parse(&hop_header(json!({ "x5c": [bad] })));
        assert_eq!(got.err(), Some(RejectReason::Chain));
    }
    assert!(HopHeader::parse(&hop_header(json!({ "x5c": [standard] }))).is_ok());
}

#[test]
fn the_x5c_count_is_checked_before_any_entry_is_decoded_dos_11() {
    let many = vec!["not base64!"; MAX_X5C + 1];
    let got = HopHeader::parse(&hop_header(json!({ "x5c": many })));
    assert_eq!(got.err(), Some(RejectReason::TooLarge));
}

#[test]
fn the_header_encoding_round_trips_through_the_parser() {
    let chain = [CertificateDer::from(vec![1, 2, 3])];
    let encoded = HopHeader::encode(Alg::EdDsa, &chain).unwrap();
    let compact = format!("{encoded}.e30.");
    let jws = split(&compact).unwrap();
    let header = HopHeader::parse(&jws.header).unwrap();
    assert_eq!(header.alg, Alg::EdDsa);
    assert_eq!(header.x5c, chain);
}

#[test]
fn alg_names_are_matched_exactly() {
    for name in ["ES256", "ES384", "PS256", "EdDSA", "RS256"] {
        assert_eq!(Alg::from_name(name).map(Alg::as_str), Some(name));
    }
    for name in [
        "es256", "none", "None", "HS256", "ES512", "Ed25519", " ES256", "EDDSA",
    ] {
        assert_eq!(Alg::from_name(name), None, "{name}");
    }
}

#[test]
fn a_leaf_key_of_an_unknown_type_or_garbage_der_is_not_a_leaf_key() {
    assert!(LeafKey::parse(b"not a certificate").is_none());
    assert!(LeafKey::parse(&[]).is_none());
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_strings(input in ".{0,600}") {
        if let Ok(jws) = split(&input) {
            let _ = HopHeader::parse(&jws.header);
        }
        let _ = inspect(&input);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let input = String::from_utf8_lossy(&bytes);
        if let Ok(jws) = split(&input) {
            let _ = HopHeader::parse(&jws.header);
        }
        let _ = strict_json(&bytes);
    }

    #[test]
    fn parse_never_panics_on_token_shaped_input(
        header in proptest::collection::vec(any::<u8>(), 0..200),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        sig in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let compact = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(&header),
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(&sig),
        );
        if let Ok(jws) = split(&compact) {
            let _ = HopHeader::parse(&jws.header);
            let _ = Claims::from_json(jws.payload);
        }
        let _ = inspect(&compact);
    }

    #[test]
    fn parse_never_panics_on_json_shaped_headers(
        alg in "[A-Za-z0-9]{0,8}", typ in ".{0,12}", n in 0usize..8, entry in ".{0,40}",
    ) {
        let header = json!({"alg": alg, "typ": typ, "x5c": vec![entry; n]}).to_string();
        let compact = token(&header, "{}", &[0; 64]);
        if let Ok(jws) = split(&compact) {
            let _ = HopHeader::parse(&jws.header);
        }
    }
}

#[test]
fn inspect_decodes_a_well_formed_token_without_verifying_it() {
    let claims = json!({
        "iss": "spiffe://td/a", "aud": "spiffe://td/b", "sub": "spiffe://td/a", "iat": 1,
        "nbf": 1, "exp": 2, "jti": "j", "txn": "t", "cnf": {"x5t#S256": "h"},
    });
    let header = json!({"alg": "ES256", "typ": "hop+jwt", "x5c": [STANDARD.encode(b"cert")]});
    let compact = token(&header.to_string(), &claims.to_string(), &[0; 64]);
    let token = inspect(&compact).unwrap();
    assert_eq!(token.alg(), Alg::Es256);
    assert_eq!(token.x5c()[0].as_ref(), b"cert");
    assert_eq!(token.claims().iss(), "spiffe://td/a");
    let bad = token_with_act(&header, claims, json!({"sub": "alice"}));
    assert_eq!(inspect(&bad).err(), Some(RejectReason::Actor));
}

fn token_with_act(header: &Value, mut claims: Value, act: Value) -> String {
    claims["act"] = act;
    token(&header.to_string(), &claims.to_string(), &[0; 64])
}
