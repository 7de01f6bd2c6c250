//! One test (or more) per reason code of docs/tokens.md ("Receiver checks and reason codes"),
//! on otherwise valid tokens: typ, audience, expired, not_yet_valid, lifetime, actor, depth,
//! binding, chain, too_large.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::{Mesh, request, spiffe};
use crate::test_util::pki::Ca;
use crate::token::test_support::{
    AGENT, CRM, INFERENCE, TestCa, claims_for, forge, forge_with_key, header_for,
    header_with_chain, leaf_hash, now, present, secs, verifier_with, with_signature,
};
use crate::token::{RejectReason, VerifiedClaims, sha256};

/// A token the agent mints for crm at `at`, edited, forged with the agent's key, presented by
/// the agent and verified at `at`.
fn verdict_at(
    at: SystemTime,
    edit: impl FnOnce(&mut Value, &mut Value),
) -> Result<VerifiedClaims, RejectReason> {
    let mesh = Mesh::new();
    let mut header = header_for(&mesh.agent);
    let mut claims = claims_for(&mesh.agent, CRM, at);
    edit(&mut header, &mut claims);
    let token = forge(&mesh.agent, &header, &claims);
    present(&mesh.verifier(CRM), &token, &mesh.agent, at)
}

fn reason_at(at: SystemTime, edit: impl FnOnce(&mut Value, &mut Value)) -> Option<RejectReason> {
    verdict_at(at, edit).err()
}

fn reason(edit: impl FnOnce(&mut Value, &mut Value)) -> Option<RejectReason> {
    reason_at(now(), edit)
}

#[test]
fn the_unedited_forged_token_is_accepted() {
    verdict_at(now(), |_, _| {}).unwrap();
}

#[test]
fn a_typ_other_than_hop_jwt_is_refused_jwt_22_txn_09() {
    for typ in [
        Value::Null,
        json!("JWT"),
        json!("at+jwt"),
        json!("txntoken+jwt"),
        json!("wit+jwt"),
        json!("HOP+JWT"),
        json!("application/hop+jwt"),
        json!(["hop+jwt"]),
    ] {
        let missing = typ.is_null();
        let got = reason(|h, _| {
            if missing {
                h.as_object_mut().unwrap().remove("typ");
            } else {
                h["typ"] = typ.clone();
            }
        });
        assert_eq!(got, Some(RejectReason::Typ), "{typ}");
    }
}

#[test]
fn an_audience_other_than_ours_exactly_is_refused_jwt_30_jwt_31() {
    for aud in [
        INFERENCE,
        "spiffe://example.org/ns/tools/sa/crm/",
        "spiffe://EXAMPLE.org/ns/tools/sa/crm",
        "spiffe://example.org/ns/tools/sa/%63rm",
    ] {
        assert_eq!(
            reason(|_, c| c["aud"] = json!(aud)),
            Some(RejectReason::Audience),
            "{aud}"
        );
    }
    let malformed = [json!([CRM, INFERENCE]), json!([CRM]), Value::Null];
    for aud in malformed {
        assert_eq!(
            reason(|_, c| c["aud"] = aud.clone()),
            Some(RejectReason::Malformed),
            "{aud}"
        );
    }
    let missing = reason(|_, c| {
        c.as_object_mut().unwrap().remove("aud");
    });
    assert_eq!(missing, Some(RejectReason::Malformed));
}

/// Sets `exp`, `iat` = `nbf` = `exp - 60`.
fn expiring_at(claims: &mut Value, exp: u64) {
    claims["exp"] = json!(exp);
    claims["iat"] = json!(exp - 60);
    claims["nbf"] = json!(exp - 60);
}

#[test]
fn expiry_is_checked_with_the_leeway_boundary_pair_jwt_25() {
    let at = now();
    let now = secs(at);
    assert_eq!(
        reason_at(at, |_, c| expiring_at(c, now - 6)),
        Some(RejectReason::Expired)
    );
    assert_eq!(reason_at(at, |_, c| expiring_at(c, now - 4)), None);
    assert_eq!(
        reason_at(at, |_, c| expiring_at(c, now - 5)),
        None,
        "exactly the leeway"
    );
}

#[test]
fn a_token_not_yet_valid_beyond_the_leeway_is_refused_jwt_26_jwt_27() {
    let at = now();
    let now = secs(at);
    assert_eq!(
        reason_at(at, |_, c| c["nbf"] = json!(now + 6)),
        Some(RejectReason::NotYetValid)
    );
    assert_eq!(reason_at(at, |_, c| c["nbf"] = json!(now + 5)), None);
    let iat_ahead = reason_at(at, |_, c| {
        c["iat"] = json!(now + 6);
        c["exp"] = json!(now + 60);
    });
    assert_eq!(iat_ahead, Some(RejectReason::NotYetValid));
}

#[test]
fn a_lifetime_over_the_ttl_or_not_positive_is_refused_jwt_27() {
    let at = now();
    let now = secs(at);
    assert_eq!(
        reason_at(at, |_, c| c["exp"] = json!(now + 66)),
        Some(RejectReason::Lifetime)
    );
    assert_eq!(
        reason_at(at, |_, c| c["exp"] = json!(now + 65)),
        None,
        "ttl + leeway"
    );
    let backwards = reason_at(at, |_, c| {
        c["iat"] = json!(now);
        c["exp"] = json!(now);
    });
    assert_eq!(backwards, Some(RejectReason::Lifetime));
}

#[test]
fn a_lifetime_between_ttl_and_max_ttl_is_accepted_only_where_max_ttl_allows_it_jwt_27() {
    // A receiver with `token.ttl: 60s, max_ttl: 10m` (a route's `token_ttl` for long streams)
    // accepts up to 10m + leeway; one on the defaults (max_ttl = ttl = 60s) refuses the same.
    let fx = crate::hop::test_support::Fixture::new(
        CRM,
        "outbound:\n  listen: 127.0.0.1:0\ntoken: { ttl: 60s, max_ttl: 10m }\n",
        None,
    );
    let (at, mesh) = (now(), Mesh::new());
    let streaming = verifier_with(CRM, &[&mesh.ca], fx.limits());
    let token = |lifetime: u64| {
        let mut claims = claims_for(&mesh.agent, CRM, at);
        claims["exp"] = json!(secs(at) + lifetime);
        forge(&mesh.agent, &header_for(&mesh.agent), &claims)
    };
    for lifetime in [300, 605] {
        let verdict = present(&streaming, &token(lifetime), &mesh.agent, at);
        assert_eq!(verdict.err(), None, "{lifetime}s");
        let verdict = present(&mesh.verifier(CRM), &token(lifetime), &mesh.agent, at);
        assert_eq!(verdict.err(), Some(RejectReason::Lifetime), "{lifetime}s");
    }
    let verdict = present(&streaming, &token(606), &mesh.agent, at);
    assert_eq!(
        verdict.err(),
        Some(RejectReason::Lifetime),
        "max_ttl + leeway + 1s"
    );
}

#[test]
fn the_outermost_actor_must_be_the_issuer_act_02() {
    let got = reason(|_, c| {
        c["sub"] = json!("alice");
        c["act"] = json!({"sub": INFERENCE, "act": {"sub": AGENT}});
    });
    assert_eq!(got, Some(RejectReason::Actor));
}

#[test]
fn without_act_the_subject_must_be_the_issuer_act_03_act_04() {
    assert_eq!(
        reason(|_, c| c["sub"] = json!("alice")),
        Some(RejectReason::Actor)
    );
    assert_eq!(
        reason(|_, c| c["sub"] = json!(INFERENCE)),
        Some(RejectReason::Actor)
    );
    assert_eq!(reason(|_, _| {}), None, "sub = iss, no act: a direct call");
}

#[test]
fn a_malformed_act_is_refused_act_11() {
    for act in [
        json!([]),
        Value::Null,
        json!("spiffe://example.org/a"),
        json!({"sub": 7}),
        json!({"sub": "not a spiffe id"}),
        json!({"sub": AGENT, "act": null}),
    ] {
        assert_eq!(
            reason(|_, c| c["act"] = act.clone()),
            Some(RejectReason::Actor),
            "{act}"
        );
    }
}

fn nested(depth: usize, innermost: &str) -> Value {
    let mut act = json!({ "sub": innermost });
    for _ in 1..depth {
        act = json!({ "sub": AGENT, "act": act });
    }
    act
}

#[test]
fn a_chain_deeper_than_max_depth_is_refused_before_crypto_act_10_dos_11() {
    assert_eq!(reason(|_, c| c["act"] = nested(8, INFERENCE)), None);
    assert_eq!(
        reason(|_, c| c["act"] = nested(9, INFERENCE)),
        Some(RejectReason::Depth)
    );
    // The depth check runs before the signature: a forged signature is never looked at.
    let mesh = Mesh::new();
    let mut claims = claims_for(&mesh.agent, CRM, now());
    claims["act"] = nested(9, INFERENCE);
    let token = with_signature(
        &forge(&mesh.agent, &header_for(&mesh.agent), &claims),
        &[0; 64],
    );
    let got = present(&mesh.verifier(CRM), &token, &mesh.agent, now()).err();
    assert_eq!(got, Some(RejectReason::Depth));
}

#[test]
fn an_act_nested_ten_thousand_deep_is_an_error_not_a_crash_act_10_jwt_38() {
    let mesh = Mesh::new();
    let claims = serde_json::to_vec(&claims_for(&mesh.agent, CRM, now())).unwrap();
    let deep = format!(
        "{}{}",
        "{\"act\":".repeat(10_000),
        "{}".to_owned() + &"}".repeat(10_000)
    );
    let mut payload = claims[..claims.len() - 1].to_vec();
    payload.extend_from_slice(b",\"act\":");
    payload.extend_from_slice(deep.as_bytes());
    payload.push(b'}');
    let header = serde_json::to_vec(&header_for(&mesh.agent)).unwrap();
    let token = crate::token::test_support::forge_raw(&mesh.agent, &header, &payload);
    let got = present(&mesh.verifier(CRM), &token, &mesh.agent, now()).err();
    assert!(
        matches!(got, Some(RejectReason::TooLarge | RejectReason::Malformed)),
        "{got:?}"
    );
    // Within the size cap, the JSON recursion limit answers.
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let token = crate::token::test_support::forge_raw(&mesh.agent, &header, deep.as_bytes());
    let got = present(&mesh.verifier(CRM), &token, &mesh.agent, now()).err();
    assert_eq!(got, Some(RejectReason::Malformed));
}

#[test]
fn a_token_replayed_by_another_workload_is_refused_act_02_demo_step_3() {
    let mesh = Mesh::new();
    let token = Mesh::minter(&mesh.inference)
        .mint_at(request(&spiffe(CRM), &[]), now())
        .unwrap();
    let crm = mesh.verifier(CRM);
    present(&crm, token.compact(), &mesh.inference, now()).unwrap();
    let replay = present(&crm, token.compact(), &mesh.agent, now());
    assert_eq!(
        replay.err(),
        Some(RejectReason::Binding),
        "checked again on a cache hit"
    );
}

#[test]
fn a_thumbprint_of_anything_but_the_presented_leaf_is_refused_cnf_02_cnf_03() {
    let mesh = Mesh::new();
    let root = TestCa::new("example.org");
    let via = root.intermediate();
    let agent = via.svid(AGENT);
    let chain: Vec<u8> = agent.chain().iter().flat_map(|c| c.to_vec()).collect();
    let leaf = leaf_hash(&agent);
    let hex: String = leaf.iter().map(|b| format!("{b:02x}")).collect();
    for cnf in [
        URL_SAFE_NO_PAD.encode(leaf_hash(&mesh.inference)),
        URL_SAFE_NO_PAD.encode(sha256(&agent.chain()[1])),
        URL_SAFE_NO_PAD.encode(sha256(&chain)),
        format!("{}=", URL_SAFE_NO_PAD.encode(leaf)),
        STANDARD.encode(leaf),
        hex,
        URL_SAFE_NO_PAD.encode(&leaf[..20]),
    ] {
        let mut claims = claims_for(&agent, CRM, now());
        claims["cnf"]["x5t#S256"] = json!(cnf);
        let token = forge(&agent, &header_for(&agent), &claims);
        let got = present(&super::verifier(CRM, &[&root]), &token, &agent, now()).err();
        assert_eq!(got, Some(RejectReason::Binding), "{cnf}");
    }
}

#[test]
fn a_token_without_cnf_or_with_unknown_cnf_members_is_refused_cnf_05_cnf_06() {
    let missing = reason(|_, c| {
        c.as_object_mut().unwrap().remove("cnf");
    });
    assert_eq!(missing, Some(RejectReason::Malformed));
    assert_eq!(
        reason(|_, c| c["cnf"] = json!({"jkt": "x"})),
        Some(RejectReason::Malformed)
    );
}

#[test]
fn a_token_minted_before_an_svid_rotation_dies_with_the_old_certificate_cnf_07() {
    let mesh = Mesh::new();
    let token = Mesh::minter(&mesh.agent)
        .mint_at(request(&spiffe(CRM), &[]), now())
        .unwrap();
    let rotated = mesh.ca.svid(AGENT);
    let got = present(&mesh.verifier(CRM), token.compact(), &rotated, now()).err();
    assert_eq!(got, Some(RejectReason::Binding));
}

/// A token whose `x5c` and key come from `chain`/`key_pem`, claims for `iss`.
fn chain_verdict(
    chain: &[rustls_pki_types::CertificateDer<'_>],
    key_pem: &str,
) -> Option<RejectReason> {
    let ca = TestCa::new("example.org");
    let mut claims = claims_for(&ca.svid(AGENT), CRM, now());
    claims["cnf"]["x5t#S256"] = json!(URL_SAFE_NO_PAD.encode(sha256(&chain[0])));
    let token = forge_with_key(key_pem, &header_with_chain(chain), &claims);
    let verifier = super::verifier(CRM, &[&ca, &TestCa::new("other.org")]);
    verifier
        .verify_bound(token.as_str(), &spiffe(AGENT), &sha256(&chain[0]), now())
        .err()
}

#[test]
fn an_x5c_that_is_not_a_valid_svid_of_its_trust_domain_is_refused_jwt_12_to_14() {
    // JWT-12: a self-signed leaf with a valid SPIFFE ID.
    let leaf = Ca::new("example.org").leaf(AGENT).self_signed().build();
    let self_signed = chain_verdict(&leaf.chain_der, &leaf.key_pem);
    assert_eq!(self_signed, Some(RejectReason::Chain), "JWT-12");
    // JWT-13: an impostor root with the same name; and another trust domain's CA (cross-TD).
    for ca in [TestCa::new("example.org"), TestCa::new("other.org")] {
        let (chain, key) = ca.leaf(AGENT, &rcgen::PKCS_ECDSA_P256_SHA256, |_| {});
        assert_eq!(
            chain_verdict(&chain, &key),
            Some(RejectReason::Chain),
            "JWT-13"
        );
    }
    // JWT-14: leaves a peer verifier must reject (docs/security.md, "Inbound: the SVID on the
    // handshake").
    let ca = TestCa::new("example.org");
    let bad_leaves: [fn(&mut rcgen::CertificateParams); 3] = [
        |p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        |p| p.key_usages = vec![rcgen::KeyUsagePurpose::KeyEncipherment],
        |p| {
            p.subject_alt_names.push(rcgen::SanType::URI(
                "spiffe://example.org/x".try_into().unwrap(),
            ))
        },
    ];
    for edit in bad_leaves {
        let (chain, key) = ca.leaf(AGENT, &rcgen::PKCS_ECDSA_P256_SHA256, edit);
        let verifier = super::verifier(CRM, &[&ca]);
        let mut claims = claims_for(&ca.svid(AGENT), CRM, now());
        claims["cnf"]["x5t#S256"] = json!(URL_SAFE_NO_PAD.encode(sha256(&chain[0])));
        let token = forge_with_key(&key, &header_with_chain(&chain), &claims);
        let got = verifier.verify_bound(&token, &spiffe(AGENT), &sha256(&chain[0]), now());
        assert_eq!(got.err(), Some(RejectReason::Chain), "JWT-14");
    }
}

#[test]
fn an_x5c_leaf_whose_id_is_not_iss_is_refused_jwt_15() {
    let got = reason(|_, c| {
        c["iss"] = json!(INFERENCE);
        c["sub"] = json!(INFERENCE);
    });
    assert_eq!(got, Some(RejectReason::Chain));
}

#[test]
fn malformed_x5c_entries_are_refused_jwt_17() {
    let mesh = Mesh::new();
    let der = mesh.agent.leaf().unwrap().to_vec();
    let standard = STANDARD.encode(&der);
    let pem = format!("-----BEGIN CERTIFICATE-----\n{standard}\n-----END CERTIFICATE-----");
    let spaced = format!("{} {}", &standard[..10], &standard[10..]);
    let mut cases = vec![
        json!([pem]),
        json!([spaced]),
        json!([]),
        json!(standard),
        json!([1]),
        Value::Null,
    ];
    let url = URL_SAFE_NO_PAD.encode(&der);
    if url != standard {
        cases.push(json!([url]));
    }
    for x5c in cases {
        let got = reason(|h, _| h["x5c"] = x5c.clone());
        assert_eq!(got, Some(RejectReason::Chain), "{x5c}");
    }
}

#[test]
fn an_x5c_leaf_expired_now_is_refused_even_if_valid_at_iat_jwt_19() {
    let ca = TestCa::new("example.org");
    let ago = time::OffsetDateTime::now_utc() - time::Duration::seconds(100);
    let (chain, key) = ca.leaf(AGENT, &rcgen::PKCS_ECDSA_P256_SHA256, |p| p.not_after = ago);
    let mut claims = claims_for(&ca.svid(AGENT), CRM, now());
    claims["cnf"]["x5t#S256"] = json!(URL_SAFE_NO_PAD.encode(sha256(&chain[0])));
    expiring_at(&mut claims, secs(now()) - 110);
    let token = forge_with_key(&key, &header_with_chain(&chain), &claims);
    let verifier = super::verifier(CRM, &[&ca]);
    let got = verifier.verify_bound(&token, &spiffe(AGENT), &sha256(&chain[0]), now());
    assert_eq!(
        got.err(),
        Some(RejectReason::Chain),
        "the chain is judged at now"
    );
}

#[test]
fn an_oversized_token_is_refused_before_decoding_jwt_37_dos_11() {
    let mesh = Mesh::new();
    let verifier = mesh.verifier(CRM);
    let token = forge(
        &mesh.agent,
        &header_for(&mesh.agent),
        &claims_for(&mesh.agent, CRM, now()),
    );
    let padded = format!("{token}{}", "A".repeat(16 * 1024 - token.len() + 1));
    assert_eq!(
        verifier.verify_relay(&padded, now()).err(),
        Some(RejectReason::TooLarge)
    );
    let big_claim = reason(|_, c| c["pad"] = json!("x".repeat(16 * 1024)));
    assert_eq!(big_claim, Some(RejectReason::TooLarge));
    let at_cap = "A".repeat(16 * 1024);
    assert_eq!(
        verifier.verify_relay(&at_cap, now()).err(),
        Some(RejectReason::Malformed)
    );
}

#[test]
fn an_x5c_of_fifty_certificates_is_refused_before_crypto_jwt_18_dos_11() {
    let mesh = Mesh::new();
    let leaf = STANDARD.encode(mesh.agent.leaf().unwrap());
    let mut header = header_for(&mesh.agent);
    header["x5c"] = json!(vec![leaf; 6]);
    let claims = claims_for(&mesh.agent, CRM, now());
    let token = with_signature(&forge(&mesh.agent, &header, &claims), &[0; 64]);
    let got = present(&mesh.verifier(CRM), &token, &mesh.agent, now()).err();
    assert_eq!(got, Some(RejectReason::TooLarge), "6 certificates");
    // Fifty small entries fit in 16 KiB: still refused by count, before any parse or signature.
    header["x5c"] = json!(vec!["MA=="; 50]);
    let token = with_signature(&forge(&mesh.agent, &header, &claims), &[0; 64]);
    let got = present(&mesh.verifier(CRM), &token, &mesh.agent, now()).err();
    assert_eq!(got, Some(RejectReason::TooLarge), "50 certificates");
}
