//! Relay chains (ACT-05, ACT-06, ACT-07, ACT-08, ACT-12; docs/tokens.md, "Relaying: what the
//! app must do").

use std::time::Duration;

use serde_json::json;

use super::{Mesh, alice, ids, request, scopes, spiffe, tctx};
use crate::token::test_support::{
    AGENT, CRM, INFERENCE, claims_for, forge, header_for, now, present, secs,
};
use crate::token::{MintRequest, Minter, RejectReason, VerifiedClaims};

const DB: &str = "spiffe://example.org/ns/tools/sa/db";

/// One hop: `minter` relays `parent` (already verified by the minter's outbound side) to `aud`
/// with `route`; the receiver verifies it bound to `presenter`.
fn hop(
    mesh: &Mesh,
    minter: &Minter,
    presenter: &crate::tls::Svid,
    parent: Option<&VerifiedClaims>,
    aud: &str,
    route: &[&str],
) -> (String, VerifiedClaims) {
    let aud_id = spiffe(aud);
    let route = scopes(route);
    let mut req = request(&aud_id, &route);
    req.parent = parent;
    req.tctx = Some(tctx("ignored when relaying"));
    if parent.is_none() {
        req.tctx = Some(tctx("support"));
    }
    let token = minter.mint_at(req, now()).unwrap();
    let verified = present(&mesh.verifier(aud), token.compact(), presenter, now()).unwrap();
    (token.compact().to_owned(), verified)
}

#[test]
fn a_chain_from_an_origin_workload_keeps_sub_txn_tctx_and_appends_actors_act_05_act_06() {
    let mesh = Mesh::new();
    let db = mesh.ca.svid(DB);
    let (agent, inference, crm) = (
        Mesh::minter(&mesh.agent),
        Mesh::minter(&mesh.inference),
        Mesh::minter(&mesh.crm),
    );
    let (t1, v1) = hop(
        &mesh,
        &agent,
        &mesh.agent,
        None,
        INFERENCE,
        &["read", "write"],
    );
    // The app behind inference relays t1; inference's outbound side verifies it (no binding).
    let p1 = mesh.verifier(INFERENCE).verify_relay(&t1, now()).unwrap();
    let (t2, v2) = hop(
        &mesh,
        &inference,
        &mesh.inference,
        Some(&p1),
        CRM,
        &["read", "write"],
    );
    let p2 = mesh.verifier(CRM).verify_relay(&t2, now()).unwrap();
    let (_, v3) = hop(&mesh, &crm, &mesh.crm, Some(&p2), DB, &["read"]);

    for v in [&v1, &v2, &v3] {
        assert_eq!(v.sub(), AGENT, "sub is kept");
        assert_eq!(v.txn(), v1.txn(), "txn is kept");
        assert_eq!(
            v.tctx(),
            Some(&tctx("support")),
            "tctx is set at the origin and kept"
        );
    }
    assert_eq!(v1.actors(), Vec::<String>::new().as_slice());
    assert_eq!(v2.actors(), ids(&[INFERENCE]));
    assert_eq!(v3.actors(), ids(&[CRM, INFERENCE]));
    assert_eq!(
        v3.act().unwrap()["act"],
        *v2.act().unwrap(),
        "ACT-06: nested verbatim"
    );
    assert_eq!(v3.iss(), CRM);
    assert_eq!(v3.aud(), DB);
    assert_eq!(v2.prv(), Some(p1.hash_b64().as_str()));
    assert_eq!(v3.prv(), Some(p2.hash_b64().as_str()));
    assert_eq!(v3.scopes().collect::<Vec<_>>(), ["read"]);
    assert!(v3.claims().exp() <= v2.claims().exp() && v2.claims().exp() <= v1.claims().exp());
    assert_ne!(v3.jti(), v2.jti());
    assert_eq!(db.id().as_str(), v3.aud());
}

#[test]
fn the_design_example_alice_through_agent_and_inference_yields_actors_inference_then_agent() {
    let mesh = Mesh::new();
    let origin = alice(&["generate", "read_ticket"], secs(now()) + 3600);
    let aud = spiffe(INFERENCE);
    let route = scopes(&["generate", "read_ticket"]);
    let mut req = request(&aud, &route);
    req.origin = Some(&origin);
    let t1 = Mesh::minter(&mesh.agent).mint_at(req, now()).unwrap();
    let p1 = mesh
        .verifier(INFERENCE)
        .verify_relay(t1.compact(), now())
        .unwrap();
    let (_, at_crm) = hop(
        &mesh,
        &Mesh::minter(&mesh.inference),
        &mesh.inference,
        Some(&p1),
        CRM,
        &["read_ticket", "write_ticket"],
    );
    assert_eq!(at_crm.sub(), "alice");
    assert_eq!(
        at_crm.act().unwrap(),
        &json!({"sub": INFERENCE, "act": {"sub": AGENT}})
    );
    let facts = at_crm.facts();
    assert_eq!(facts.actors, ids(&[INFERENCE, AGENT]));
    assert_eq!(facts.depth(), 2);
    assert_eq!(facts.origin(), Some(AGENT));
    assert_eq!(
        facts.scope,
        ["read_ticket"],
        "demo step 4: write_ticket cannot be added"
    );
}

#[test]
fn scope_narrows_and_never_widens_again_even_when_a_later_route_allows_more_act_05() {
    let mesh = Mesh::new();
    let (_, v1) = hop(
        &mesh,
        &Mesh::minter(&mesh.agent),
        &mesh.agent,
        None,
        INFERENCE,
        &["read", "write"],
    );
    let parent = v1;
    let (_, v2) = hop(
        &mesh,
        &Mesh::minter(&mesh.inference),
        &mesh.inference,
        Some(&parent),
        CRM,
        &["read", "admin"],
    );
    assert_eq!(v2.scopes().collect::<Vec<_>>(), ["read"]);
    let (_, v3) = hop(
        &mesh,
        &Mesh::minter(&mesh.crm),
        &mesh.crm,
        Some(&v2),
        DB,
        &["read", "write", "admin"],
    );
    assert_eq!(v3.scopes().collect::<Vec<_>>(), ["read"]);
    let (_, v4) = hop(
        &mesh,
        &Mesh::minter(&mesh.crm),
        &mesh.crm,
        Some(&v2),
        DB,
        &["admin"],
    );
    assert_eq!(v4.scopes().count(), 0, "an empty intersection stays empty");
}

#[test]
fn a_relayed_token_never_outlives_its_parent_act_05() {
    let mesh = Mesh::new();
    let short = Minter::new(&mesh.agent, Duration::from_secs(10)).unwrap();
    let (_, parent) = hop(&mesh, &short, &mesh.agent, None, INFERENCE, &[]);
    let (_, child) = hop(
        &mesh,
        &Mesh::minter(&mesh.inference),
        &mesh.inference,
        Some(&parent),
        CRM,
        &[],
    );
    assert_eq!(child.claims().exp(), parent.claims().exp());
    assert!(child.claims().exp() - child.claims().iat() <= 10);
}

#[test]
fn a_chain_that_revisits_a_workload_is_accepted_and_bounded_by_depth_act_12() {
    let mesh = Mesh::new();
    let (_, v1) = hop(
        &mesh,
        &Mesh::minter(&mesh.agent),
        &mesh.agent,
        None,
        INFERENCE,
        &[],
    );
    let (_, v2) = hop(
        &mesh,
        &Mesh::minter(&mesh.inference),
        &mesh.inference,
        Some(&v1),
        AGENT,
        &[],
    );
    let (_, v3) = hop(
        &mesh,
        &Mesh::minter(&mesh.agent),
        &mesh.agent,
        Some(&v2),
        INFERENCE,
        &[],
    );
    assert_eq!(v3.actors(), ids(&[AGENT, INFERENCE]));
    assert_eq!(v3.sub(), AGENT);
}

#[test]
fn minted_tokens_are_reused_for_the_same_parent_destination_and_scope_while_over_half_their_life_is_left()
 {
    let mesh = Mesh::new();
    let (_, parent) = hop(
        &mesh,
        &Mesh::minter(&mesh.agent),
        &mesh.agent,
        None,
        INFERENCE,
        &["a", "b"],
    );
    let minter = Mesh::minter(&mesh.inference);
    let (crm, db) = (spiffe(CRM), spiffe(DB));
    let (route_a, route_ab) = (scopes(&["a"]), scopes(&["a", "b"]));
    let mint = |aud, route, at| {
        let req = MintRequest {
            parent: Some(&parent),
            ..request(aud, route)
        };
        minter.mint_at(req, at).unwrap()
    };
    let t0 = now();
    let first = mint(&crm, &route_a, t0);
    assert_eq!(mint(&crm, &route_a, t0).compact(), first.compact());
    assert_eq!(
        mint(&crm, &route_a, t0 + Duration::from_secs(29)).compact(),
        first.compact(),
        "31 s of 60 left"
    );
    assert_ne!(
        mint(&crm, &route_a, t0 + Duration::from_secs(30)).compact(),
        first.compact()
    );
    assert_ne!(
        mint(&db, &route_a, t0).compact(),
        first.compact(),
        "other destination"
    );
    assert_ne!(
        mint(&crm, &route_ab, t0).compact(),
        first.compact(),
        "other scope"
    );
}

#[test]
fn prior_actors_claims_are_ignored_for_validity_and_the_current_actor_is_the_peer_act_07_act_08() {
    let mesh = Mesh::new();
    let mut claims = claims_for(&mesh.inference, CRM, now());
    claims["sub"] = json!("alice");
    claims["act"] = json!({
        "sub": INFERENCE,
        "act": { "sub": "spiffe://example.org/admin", "exp": 1, "aud": "spiffe://evil.org/x" },
    });
    let token = forge(&mesh.inference, &header_for(&mesh.inference), &claims);
    let verified = present(&mesh.verifier(CRM), &token, &mesh.inference, now()).unwrap();
    assert_eq!(verified.actors()[0], mesh.inference.id().as_str());
    assert_eq!(verified.facts().actors[1], "spiffe://example.org/admin");
}

#[test]
fn verify_relay_needs_no_peer_but_still_checks_audience_and_expiry() {
    let mesh = Mesh::new();
    let token = Mesh::minter(&mesh.agent)
        .mint_at(request(&spiffe(INFERENCE), &[]), now())
        .unwrap();
    let inference = mesh.verifier(INFERENCE);
    inference.verify_relay(token.compact(), now()).unwrap();
    let crm = mesh.verifier(CRM);
    assert_eq!(
        crm.verify_relay(token.compact(), now()).err(),
        Some(RejectReason::Audience)
    );
    assert_eq!(
        inference
            .verify_relay(token.compact(), now() + Duration::from_secs(66))
            .err(),
        Some(RejectReason::Expired),
        "also on a cache hit"
    );
}
