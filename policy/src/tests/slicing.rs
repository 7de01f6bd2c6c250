//! Slicing (and leaving out context attributes no policy observes) gives the decisions of the
//! whole set with the whole context: same effect, reason, determining policies and errors, on
//! random policy sets and random hops.

use proptest::prelude::*;
use serde_json::json;

use super::{Folder, Hop};
use crate::PolicySnapshot;

const WORKLOADS: [&str; 5] = [
    "spiffe://a.org/w0",
    "spiffe://a.org/w1",
    "spiffe://a.org/w2",
    "spiffe://b.org/w3",
    "spiffe://b.org/w4",
];
/// Peers no policy or entity names, in a named and an unnamed trust domain.
const STRANGERS: [&str; 2] = ["spiffe://a.org/w8", "spiffe://c.org/w9"];

const PRINCIPALS: usize = 9;
const RESOURCES: usize = 3;
const ACTIONS: usize = 3;
const CONDITIONS: usize = 10;

fn principal(kind: usize, n: usize) -> String {
    let w = WORKLOADS[n % WORKLOADS.len()];
    let g = ["g0", "g1", "g2"][n % 3];
    let td = ["a.org", "b.org", "c.org"][n % 3];
    match kind % PRINCIPALS {
        0 => "principal".to_owned(),
        1 | 2 => format!(r#"principal == Hop::Workload::"{w}""#),
        3 => format!(r#"principal in Hop::TrustDomain::"{td}""#),
        4 => format!(r#"principal in Hop::Group::"{g}""#),
        5 => "principal is Hop::Workload".to_owned(),
        6 => format!(r#"principal is Hop::Workload in Hop::Group::"{g}""#),
        7 => format!(r#"principal in Hop::Workload::"{w}""#),
        _ => format!(r#"principal is Hop::Workload in Hop::TrustDomain::"{td}""#),
    }
}

fn resource(kind: usize, n: usize) -> String {
    match kind % RESOURCES {
        0 => "resource".to_owned(),
        1 => format!(
            r#"resource == Hop::Workload::"{}""#,
            WORKLOADS[n % WORKLOADS.len()]
        ),
        _ => r#"resource in Hop::TrustDomain::"a.org""#.to_owned(),
    }
}

fn action(kind: usize) -> &'static str {
    match kind % ACTIONS {
        0 => "action",
        1 => r#"action == Hop::Action::"call""#,
        _ => r#"action in [Hop::Action::"call", Hop::Action::"generate"]"#,
    }
}

fn condition(kind: usize) -> &'static str {
    match kind % CONDITIONS {
        0 => "",
        1 => r#"when { context.http.method == "GET" }"#,
        // Errs once the chain has an actor (CED-01 territory).
        2 => "when { context.token has depth && context.token.depth + 9223372036854775807 > 0 }",
        3 => r#"when { principal.path == "/w1" || principal in Hop::Group::"g1" }"#,
        4 => "unless { context.token.present }",
        5 => r#"when { resource.trust_domain == "b.org" }"#,
        // The context attributes a request carries depend on what the policies observe; these
        // observe it in the other ways (presence only, whole records, index syntax).
        6 => {
            r#"when { context.token has actors && context.token.actors.contains("spiffe://a.org/w0") }"#
        }
        7 => "when { context has token.origin }",
        8 => r#"when { context["token"] has sub && context["token"]["sub"] like "*w1" }"#,
        _ => r#"unless { context.intent has purpose }"#,
    }
}

/// entities.json: w0 in g0, w3 in g1, g1 in g2; the other workloads are unlisted.
fn folder(policies: &[(bool, usize, usize, usize, usize, usize)]) -> Folder {
    let text: String = policies
        .iter()
        .enumerate()
        .map(|(i, &(permit, p, r, a, c, n))| {
            let effect = if permit { "permit" } else { "forbid" };
            format!(
                "@id(\"p{i}\") {effect} ({}, {}, {}) {};\n",
                principal(p, n),
                action(a),
                resource(r, n),
                condition(c)
            )
        })
        .collect();
    let folder = Folder::with_policies(&text);
    let group = |id: &str, parents: &[&str]| {
        json!({ "uid": { "type": "Hop::Group", "id": id }, "attrs": {},
                "parents": parents.iter().map(|p| json!({ "type": "Hop::Group", "id": p })).collect::<Vec<_>>() })
    };
    let member = |id: &str, group: &str| {
        json!({ "uid": { "type": "Hop::Workload", "id": id }, "attrs": {},
                "parents": [{ "type": "Hop::Group", "id": group }] })
    };
    let entities = json!([
        member(WORKLOADS[0], "g0"),
        member(WORKLOADS[3], "g1"),
        group("g0", &[]),
        group("g1", &["g2"]),
        group("g2", &[]),
    ]);
    folder.write("entities.json", &entities.to_string());
    folder
}

fn hop(peer: usize, dest: usize, generate: bool, post: bool, depth: Option<usize>) -> Hop {
    let peers: Vec<&str> = WORKLOADS.iter().chain(&STRANGERS).copied().collect();
    let peer = peers[peer % peers.len()];
    let mut hop = Hop::new(peer, WORKLOADS[dest % WORKLOADS.len()]);
    if generate {
        hop = hop.action("generate");
    }
    if post {
        hop = hop.method("POST");
    }
    if generate ^ post {
        hop = hop.intent("purpose", "support");
    }
    if let Some(depth) = depth {
        let sub = if depth == 1 { "alice" } else { peer };
        let mut claims = json!({ "sub": sub, "iss": peer });
        if depth > 0 {
            claims["act"] = json!({ "sub": peer });
        }
        hop = hop.token(claims);
    }
    hop
}

/// The sliced path, evaluated and then memoized (the second call), against the reference.
fn assert_same(snapshot: &PolicySnapshot, hop: &Hop) {
    let unsliced = hop.with(|req| snapshot.authorize_unsliced(req));
    for sliced in [hop.decide(snapshot), hop.decide(snapshot)] {
        assert_eq!(sliced.effect(), unsliced.effect(), "{hop:?}");
        assert_eq!(sliced.reason(), unsliced.reason(), "{hop:?}");
        assert_eq!(sliced.policies(), unsliced.policies(), "{hop:?}");
        assert_eq!(sliced.errors(), unsliced.errors(), "{hop:?}");
    }
}

#[test]
fn every_scope_kind_alone_decides_as_the_whole_set() {
    for p in 0..PRINCIPALS {
        for n in 0..WORKLOADS.len() {
            let policies: Vec<_> = (0..CONDITIONS)
                .map(|c| (c % 2 == 0, p, c % RESOURCES, c % ACTIONS, c, n))
                .collect();
            let snapshot = folder(&policies).snapshot();
            for peer in 0..WORKLOADS.len() + STRANGERS.len() {
                for depth in [None, Some(0), Some(1)] {
                    assert_same(&snapshot, &hop(peer, n + 1, peer % 2 == 0, false, depth));
                }
            }
        }
    }
}

fn policy() -> impl Strategy<Value = (bool, usize, usize, usize, usize, usize)> {
    (
        any::<bool>(),
        0..PRINCIPALS,
        0..RESOURCES,
        0..ACTIONS,
        0..CONDITIONS,
        0..WORKLOADS.len(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sliced_decisions_equal_unsliced_decisions(
        policies in prop::collection::vec(policy(), 0..24),
        hops in prop::collection::vec(
            (0usize..7, 0usize..5, any::<bool>(), any::<bool>(), prop::option::of(0usize..2)),
            1..16,
        ),
    ) {
        let snapshot = folder(&policies).snapshot();
        for (peer, dest, generate, post, depth) in hops {
            assert_same(&snapshot, &hop(peer, dest, generate, post, depth));
        }
    }
}
