//! One `txn` per transaction (CHA-06..09; docs/tokens.md, "One txn per transaction"): an origin
//! request joins a transaction only with the same trace id, origin credential and `tctx`; without
//! a trace it starts its own; a relay is in its parent's, whatever its trace says.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{Mesh, alice, request, spiffe, tctx};
use crate::token::origin::OriginClaims;
use crate::token::test_support::{CRM, INFERENCE, now, present, secs};
use crate::token::{MintRequest, MintedToken, Minter};

const TRACE_1: [u8; 16] = [1; 16];
const TRACE_2: [u8; 16] = [2; 16];

/// The agent's mint for crm at the origin: from `origin` (or as itself), with `purpose` as
/// `tctx`, in `trace`.
fn origin_mint(
    minter: &Minter,
    origin: Option<&OriginClaims>,
    purpose: &str,
    trace: Option<[u8; 16]>,
) -> MintedToken {
    let aud = spiffe(CRM);
    let req = MintRequest {
        origin,
        tctx: Some(tctx(purpose)),
        trace,
        ..request(&aud, &[])
    };
    minter.mint_at(req, now()).unwrap()
}

#[test]
fn two_requests_with_one_origin_credential_and_no_traceparent_are_two_transactions_cha_06() {
    let mesh = Mesh::new();
    let minter = Mesh::minter(&mesh.agent);
    let alice = alice(&[], secs(now()) + 3600);
    for origin in [Some(&alice), None] {
        let first = origin_mint(&minter, origin, "support", None);
        let second = origin_mint(&minter, origin, "support", None);
        assert_ne!(first.claims().txn(), second.claims().txn());
        assert_ne!(first.claims().jti(), second.claims().jti());
        assert!(!second.is_reused(), "a new transaction, a new signature");
        // No later request will carry it: the outbound side keeps it out of HPACK's table.
        assert!(!first.is_reusable() && !second.is_reusable());
    }
}

#[test]
fn two_calls_in_one_trace_with_one_credential_and_tctx_are_one_transaction_cha_07() {
    let mesh = Mesh::new();
    let minter = Mesh::minter(&mesh.agent);
    let alice = alice(&[], secs(now()) + 3600);
    for origin in [Some(&alice), None] {
        let first = origin_mint(&minter, origin, "support", Some(TRACE_1));
        let second = origin_mint(&minter, origin, "support", Some(TRACE_1));
        assert_eq!(first.claims().txn(), second.claims().txn());
        assert!(first.is_reusable() && second.is_reusable());
        assert!(
            second.is_reused(),
            "the token is reused within its transaction"
        );
    }
}

#[test]
fn one_trace_with_another_credential_tctx_or_trace_is_another_transaction_cha_08() {
    let mesh = Mesh::new();
    let minter = Mesh::minter(&mesh.agent);
    let exp = secs(now()) + 3600;
    let (alice, bob) = (alice(&[], exp), OriginClaims::for_test("bob", &[], exp));
    let base = origin_mint(&minter, Some(&alice), "support", Some(TRACE_1));
    let others = [
        origin_mint(&minter, Some(&bob), "support", Some(TRACE_1)),
        origin_mint(&minter, None, "support", Some(TRACE_1)),
        origin_mint(&minter, Some(&alice), "billing", Some(TRACE_1)),
        origin_mint(&minter, Some(&alice), "support", Some(TRACE_2)),
    ];
    for other in &others {
        assert_ne!(other.claims().txn(), base.claims().txn());
        assert_ne!(other.claims().jti(), base.claims().jti());
    }
    assert_eq!(others[0].claims().sub(), "bob");
}

#[test]
fn a_relay_keeps_its_parents_txn_whatever_the_apps_trace_says_cha_09() {
    let mesh = Mesh::new();
    let agent = Mesh::minter(&mesh.agent);
    let inference_id = spiffe(INFERENCE);
    let alice = alice(&["read"], secs(now()) + 3600);
    let scopes = vec!["read".to_owned()];
    let parent = agent
        .mint_at(
            MintRequest {
                origin: Some(&alice),
                trace: Some(TRACE_1),
                ..request(&inference_id, &scopes)
            },
            now(),
        )
        .unwrap();
    let verified = present(
        &mesh.verifier(INFERENCE),
        parent.compact(),
        &mesh.agent,
        now(),
    )
    .unwrap();
    let inference = Mesh::minter(&mesh.inference);
    let crm = spiffe(CRM);
    for trace in [None, Some(TRACE_1), Some(TRACE_2)] {
        let child = inference
            .mint_at(
                MintRequest {
                    parent: Some(&verified),
                    trace,
                    ..request(&crm, &scopes)
                },
                now(),
            )
            .unwrap();
        assert_eq!(child.claims().txn(), parent.claims().txn(), "{trace:?}");
    }
}

proptest! {
    /// Whatever the interleaving of requests, origins and traces, tokens of different
    /// transactions never share a `txn` or a `jti`, and those of one transaction share a `txn`.
    #[test]
    fn two_transactions_never_share_a_txn_or_a_jti(
        requests in prop::collection::vec((0..3usize, 0..2usize, prop::option::of(0..3u8)), 1..24)
    ) {
        let mesh = Mesh::new();
        let minter = Mesh::minter(&mesh.agent);
        let exp = secs(now()) + 3600;
        let origins = [
            Some(alice(&[], exp)),
            Some(OriginClaims::for_test("bob", &[], exp)),
            None,
        ];
        let purposes = ["support", "billing"];
        // A transaction: (origin, purpose, trace); a request without a trace is one of its own.
        let mut txn_of: BTreeMap<(usize, usize, u8), String> = BTreeMap::new();
        let mut seen_txn: BTreeMap<String, Option<(usize, usize, u8)>> = BTreeMap::new();
        let mut seen_jti: BTreeMap<String, Option<(usize, usize, u8)>> = BTreeMap::new();
        for (origin, purpose, trace) in requests {
            let token = origin_mint(
                &minter,
                origins[origin].as_ref(),
                purposes[purpose],
                trace.map(|t| [t; 16]),
            );
            let (txn, jti) = (token.claims().txn().to_owned(), token.claims().jti().to_owned());
            let key = trace.map(|t| (origin, purpose, t));
            if let Some(key) = key {
                let first = txn_of.entry(key).or_insert_with(|| txn.clone());
                prop_assert_eq!(&*first, &txn, "one transaction, one txn");
            }
            if let Some(owner) = seen_txn.get(&txn) {
                prop_assert!(key.is_some() && *owner == key, "txn shared across transactions");
            }
            if let Some(owner) = seen_jti.get(&jti) {
                prop_assert!(key.is_some() && *owner == key, "jti shared across transactions");
            }
            seen_txn.insert(txn, key);
            seen_jti.insert(jti, key);
        }
    }
}
