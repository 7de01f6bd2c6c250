//! Channel-authenticated acceptance and the relay set (CHA-01..05; docs/tokens.md): a token on
//! its own minter's mTLS connection is authenticated by that connection, so its signature is
//! not checked, but every claim rule still is; anywhere else the signature decides; and the
//! outbound side relays only what the inbound side accepted.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::Mesh;
use crate::token::test_support::{
    CRM, INFERENCE, claims_for, forge, header_for, now, present, signature_of, with_signature,
};
use crate::token::{RejectReason, RelayCache};

/// `token` with the last byte of its signature flipped.
fn corrupted(token: &str) -> String {
    let mut sig = signature_of(token);
    if let Some(last) = sig.last_mut() {
        *last ^= 1;
    }
    with_signature(token, &sig)
}

#[test]
fn a_token_on_its_minters_connection_is_accepted_with_every_claim_rule_still_checked_cha_01() {
    let mesh = Mesh::new();
    let crm = mesh.verifier(CRM);
    let header = header_for(&mesh.agent);
    let valid = forge(&mesh.agent, &header, &claims_for(&mesh.agent, CRM, now()));
    present(&crm, &valid, &mesh.agent, now()).unwrap();
    // The shortcut skips the signature only: with a signature that would not verify, each
    // claim rule still refuses what it refuses.
    let cases = [
        ("aud", json!(INFERENCE), RejectReason::Audience),
        ("exp", json!(0), RejectReason::Expired),
        ("nbf", json!(u64::MAX / 4), RejectReason::Malformed),
        ("sub", json!("alice"), RejectReason::Actor),
    ];
    for (claim, value, expected) in cases {
        let mut claims = claims_for(&mesh.agent, CRM, now());
        claims[claim] = value;
        let token = corrupted(&forge(&mesh.agent, &header, &claims));
        assert_eq!(
            present(&crm, &token, &mesh.agent, now()).err(),
            Some(expected),
            "{claim}"
        );
    }
    let mut claims = claims_for(&mesh.agent, CRM, now());
    claims["exp"] = json!(claims["iat"].as_u64().unwrap() + 3600);
    let token = corrupted(&forge(&mesh.agent, &header, &claims));
    assert_eq!(
        present(&crm, &token, &mesh.agent, now()).err(),
        Some(RejectReason::Lifetime)
    );
}

#[test]
fn a_corrupted_signature_on_its_minters_connection_is_accepted_and_relayable_only_from_there_cha_02()
 {
    let mesh = Mesh::new();
    let inference = mesh.verifier(INFERENCE);
    let header = header_for(&mesh.agent);
    let token = corrupted(&forge(
        &mesh.agent,
        &header,
        &claims_for(&mesh.agent, INFERENCE, now()),
    ));
    // Inbound, from the agent's own connection: the connection authenticates it.
    let accepted = present(&inference, &token, &mesh.agent, now()).unwrap();
    // Anywhere else, the signature decides.
    assert_eq!(
        inference.verify_relay(&token, now()).err(),
        Some(RejectReason::Signature)
    );
    // And it is relayed only because the inbound side accepted exactly it.
    let relay = RelayCache::new(16, Duration::from_secs(5));
    assert_eq!(relay.parent(&token, now()).err(), Some(RejectReason::Relay));
    relay.accept(&accepted, now());
    assert_eq!(relay.parent(&token, now()).unwrap().hash(), accepted.hash());
    // Hostile input is refused before it is hashed.
    let huge = "a".repeat(crate::token::MAX_TOKEN_LEN + 1);
    assert_eq!(
        relay.parent(&huge, now()).err(),
        Some(RejectReason::TooLarge)
    );
    assert_eq!(relay.parent("", now()).err(), Some(RejectReason::Relay));
}

#[test]
fn a_token_whose_leaf_iss_or_cnf_is_not_the_peers_never_takes_the_shortcut_cha_03() {
    let mesh = Mesh::new();
    let crm = mesh.verifier(CRM);
    // x5c[0] one byte off the peer's certificate: not the connection's certificate, and not
    // a valid SVID either.
    let mut header = header_for(&mesh.agent);
    let mut leaf = mesh.agent.chain()[0].to_vec();
    let at = leaf.len() - 40;
    leaf[at] ^= 1;
    header["x5c"][0] = json!(STANDARD.encode(&leaf));
    let off_by_one = corrupted(&forge(
        &mesh.agent,
        &header,
        &claims_for(&mesh.agent, CRM, now()),
    ));
    assert_eq!(
        present(&crm, &off_by_one, &mesh.agent, now()).err(),
        Some(RejectReason::Chain)
    );
    // Minted by inference, presented by the agent: the shortcut needs the minter's own
    // connection, so the signature is checked, and the binding refuses it.
    let inference_token = forge(
        &mesh.inference,
        &header_for(&mesh.inference),
        &claims_for(&mesh.inference, CRM, now()),
    );
    assert_eq!(
        present(&crm, &corrupted(&inference_token), &mesh.agent, now()).err(),
        Some(RejectReason::Signature)
    );
    assert_eq!(
        present(&crm, &inference_token, &mesh.agent, now()).err(),
        Some(RejectReason::Binding)
    );
    // The agent's leaf, but `iss` and `cnf` naming inference: no shortcut either.
    let mut claims = claims_for(&mesh.agent, CRM, now());
    claims["iss"] = json!(INFERENCE);
    claims["sub"] = json!(INFERENCE);
    let lying = corrupted(&forge(&mesh.agent, &header_for(&mesh.agent), &claims));
    assert_eq!(
        present(&crm, &lying, &mesh.agent, now()).err(),
        Some(RejectReason::Signature)
    );
}

#[test]
fn a_relay_of_a_token_the_inbound_side_never_accepted_is_refused_however_well_signed_cha_04() {
    let mesh = Mesh::new();
    let inference = mesh.verifier(INFERENCE);
    let token = forge(
        &mesh.agent,
        &header_for(&mesh.agent),
        &claims_for(&mesh.agent, INFERENCE, now()),
    );
    // A perfectly good token for inference, which reached its app some other way.
    inference.verify_relay(&token, now()).unwrap();
    let relay = RelayCache::new(16, Duration::from_secs(5));
    assert_eq!(relay.parent(&token, now()).err(), Some(RejectReason::Relay));
    // One accepted token does not vouch for another.
    let other = forge(
        &mesh.agent,
        &header_for(&mesh.agent),
        &claims_for(&mesh.agent, INFERENCE, now() + Duration::from_secs(1)),
    );
    relay.accept(
        &present(&inference, &other, &mesh.agent, now()).unwrap(),
        now(),
    );
    assert_eq!(relay.parent(&token, now()).err(), Some(RejectReason::Relay));
}

#[test]
fn a_relay_of_an_accepted_token_after_it_expired_is_refused_as_expired_cha_05() {
    let mesh = Mesh::new();
    let inference = mesh.verifier(INFERENCE);
    let token = forge(
        &mesh.agent,
        &header_for(&mesh.agent),
        &claims_for(&mesh.agent, INFERENCE, now()),
    );
    let accepted = present(&inference, &token, &mesh.agent, now()).unwrap();
    let relay = RelayCache::new(16, Duration::from_secs(5));
    relay.accept(&accepted, now());
    // exp = now + 60; the leeway is 5 s.
    relay
        .parent(&token, now() + Duration::from_secs(65))
        .unwrap();
    assert_eq!(
        relay.parent(&token, now() + Duration::from_secs(66)).err(),
        Some(RejectReason::Expired)
    );
}

#[test]
fn a_full_relay_set_drops_tokens_and_their_relays_fail_closed() {
    let mesh = Mesh::new();
    let inference = mesh.verifier(INFERENCE);
    let relay = RelayCache::new(2, Duration::from_secs(5));
    let tokens: Vec<String> = (0..4)
        .map(|i| {
            let token = forge(
                &mesh.agent,
                &header_for(&mesh.agent),
                &claims_for(&mesh.agent, INFERENCE, now() + Duration::from_secs(i)),
            );
            relay.accept(
                &present(&inference, &token, &mesh.agent, now()).unwrap(),
                now(),
            );
            token
        })
        .collect();
    let kept = tokens
        .iter()
        .filter(|t| relay.parent(t, now()).is_ok())
        .count();
    assert!(kept <= 2, "at most the capacity is kept: {kept}");
    let refused = tokens
        .iter()
        .filter(|t| relay.parent(t, now()).err() == Some(RejectReason::Relay))
        .count();
    assert_eq!(
        kept + refused,
        4,
        "an evicted token's relay is `relay`, never accepted"
    );
}

#[test]
fn a_relayed_parent_reads_back_the_claims_the_inbound_side_accepted_from_a_small_entry() {
    let mesh = Mesh::new();
    let inference = mesh.verifier(INFERENCE);
    let mut claims = claims_for(&mesh.agent, INFERENCE, now());
    claims["tctx"] = serde_json::json!({ "purpose": "support" });
    let token = forge(&mesh.agent, &header_for(&mesh.agent), &claims);
    let accepted = present(&inference, &token, &mesh.agent, now()).unwrap();
    let relay = RelayCache::new(16, Duration::from_secs(5));
    relay.accept(&accepted, now());
    let parent = relay.parent(&token, now()).unwrap();
    assert_eq!(parent.claims(), accepted.claims());
    assert_eq!(parent.actors(), accepted.actors());
    assert_eq!(parent.tctx(), accepted.tctx());
    // At one transaction per request the set holds tens of thousands of tokens: an entry keeps
    // their expiry and how they were authenticated, never the claims (some 1 KiB each).
    assert!(size_of::<crate::token::verify::Accepted>() <= 24);
}
