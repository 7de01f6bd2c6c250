use std::path::Path;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;

const AGENT: &str = "spiffe://demo.local/ns/agents/sa/support-agent";
const OTHER: &str = "spiffe://demo.local/ns/agents/sa/other";

/// 2026-12-31T00:00:00Z.
fn end_of_2026() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_675_200)
}

fn parse(text: &str) -> Revocations {
    Revocations::parse(text, Path::new("revocations.yaml")).unwrap()
}

/// Every problem, as displayed: one a line, each naming the file.
fn problems(text: &str) -> Vec<String> {
    let err = Revocations::parse(text, Path::new("revocations.yaml")).unwrap_err();
    assert_eq!(err.path(), Path::new("revocations.yaml"));
    let shown = err.to_string();
    let lines: Vec<String> = shown.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), err.errors().len());
    lines
}

fn one(text: &str) -> String {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

fn facts() -> RevocationFacts<'static> {
    RevocationFacts::default()
}

#[test]
fn a_valid_list_parses_every_key_kind_in_file_order() {
    let revocations = parse(&format!(
        "- txn: Zk9hY2VudHJhbHRyYW5zYWN0   # a transaction id\n  reason: incident 4711\n\
         - peer: {AGENT}\n  reason: compromised workload\n  until: 2026-12-31T00:00:00Z\n\
         - sub: alice\n  reason: offboarding\n\
         - jti: 3f2a-77\n  reason: leaked token\n\
         - actor: {OTHER}\n  reason: rogue orchestrator\n"
    ));
    assert_eq!(revocations.len(), 5);
    assert!(!revocations.is_empty());
    let entries: Vec<&Revocation> = revocations.entries().collect();
    let keys: Vec<RevocationKey> = entries.iter().map(|e| e.key()).collect();
    assert_eq!(entries[0].value(), "Zk9hY2VudHJhbHRyYW5zYWN0");
    assert_eq!(entries[0].reason(), "incident 4711");
    assert_eq!(entries[0].until(), None);
    assert_eq!(entries[1].value(), AGENT);
    assert_eq!(entries[1].until(), Some(end_of_2026()));
    let names: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    assert_eq!(names, ["txn", "peer", "sub", "jti", "actor"]);
    assert_eq!(RevocationKey::Actor.to_string(), "actor");
    let debug = format!("{revocations:?}");
    assert!(debug.contains("entries: 5"), "{debug}");
}

#[test]
fn an_empty_list_is_valid_and_matches_nothing() {
    for text in ["[]", "[]\n", "# none at the moment\n[]\n"] {
        let revocations = parse(text);
        assert!(revocations.is_empty());
        assert_eq!(revocations.len(), 0);
        let actors = [AGENT.to_owned()];
        let facts = RevocationFacts {
            txn: Some("t"),
            peer: Some(AGENT),
            actors: &actors,
            ..facts()
        };
        assert!(revocations.matching(&facts, SystemTime::now()).is_none());
    }
    assert!(Revocations::empty().is_empty());
}

#[test]
fn an_empty_file_is_an_error_never_an_empty_list_rvk_05() {
    for text in [
        "",
        "\n",
        "   \n\t\n",
        "# all lifted\n",
        "---\n# nothing\n",
        "\u{feff}",
    ] {
        assert_eq!(
            one(text),
            "revocations.yaml: empty; write `[]` for no revocations",
            "{text:?}"
        );
    }
}

#[test]
fn a_document_that_is_not_a_list_is_an_error_rvk_05() {
    assert_eq!(
        one("txn: abc\nreason: x\n"),
        "revocations.yaml: expected a list, found a map"
    );
    assert_eq!(
        one("revoked\n"),
        "revocations.yaml: expected a list, found the string `revoked`"
    );
    assert_eq!(
        one("{}\n"),
        "revocations.yaml: expected a list, found a map"
    );
}

#[test]
fn a_yaml_syntax_error_names_the_file_with_line_and_column() {
    let found = one("- txn: [a\n  reason: x\n");
    assert!(
        found.starts_with("revocations.yaml: invalid yaml: "),
        "{found}"
    );
    assert!(found.contains("line"), "{found}");
}

#[test]
fn revocations_refuse_an_entry_with_two_keys() {
    assert_eq!(
        one("- txn: a\n  sub: alice\n  reason: x\n"),
        "revocations.yaml: [0]: has `txn` and `sub`; an entry revokes by exactly one key"
    );
    assert_eq!(
        one(&format!(
            "- {{ txn: a, reason: x }}\n- {{ jti: b, peer: {AGENT}, actor: {AGENT}, reason: x }}\n"
        )),
        "revocations.yaml: [1]: has `jti`, `peer` and `actor`; an entry revokes by exactly one key"
    );
}

#[test]
fn revocations_refuse_an_entry_without_a_key() {
    assert_eq!(
        one("- reason: x\n"),
        "revocations.yaml: [0]: names nothing to revoke; expected one of `txn`, `jti`, `sub`, \
         `peer` or `actor`"
    );
}

#[test]
fn revocations_refuse_entries_that_are_not_maps() {
    assert_eq!(
        problems("- 7\n-\n- [a]\n"),
        [
            "revocations.yaml: [0]: expected a map, found the number `7`",
            "revocations.yaml: [2]: expected a map, found a list",
            "revocations.yaml: [1]: expected a map, found nothing",
        ]
    );
}

#[test]
fn revocations_refuse_unknown_keys_naming_the_entry() {
    assert_eq!(
        one("- { txn: a, reason: x }\n- { txn: b, reason: x, untill: 2026-01-01T00:00:00Z }\n"),
        "revocations.yaml: [1].untill: unknown key; expected one of `txn`, `jti`, `sub`, `peer`, \
         `actor`, `reason` or `until`"
    );
}

#[test]
fn a_key_of_the_wrong_type_is_reported_once() {
    assert_eq!(
        one("- txn: [a]\n  reason: x\n"),
        "revocations.yaml: [0].txn: expected a string, found a list"
    );
}

#[test]
fn revocations_require_a_reason_without_control_characters() {
    let long = "r".repeat(1025);
    assert_eq!(
        problems(&format!(
            "- txn: a\n- txn: b\n  reason: '  '\n- txn: c\n  reason: \"bell\\a\"\n\
             - txn: d\n  reason: {long}\n- txn: e\n  reason: {}\n",
            "r".repeat(1024)
        )),
        [
            "revocations.yaml: [0].reason: is required",
            "revocations.yaml: [1].reason: is empty",
            "revocations.yaml: [2].reason: holds `\\u{7}`; control characters are not allowed",
            "revocations.yaml: [3].reason: is 1025 bytes long; at most 1024 are allowed",
        ]
    );
}

#[test]
fn revocations_refuse_token_ids_that_are_empty_spaced_or_too_long() {
    let long = "a".repeat(257);
    assert_eq!(
        problems(&format!(
            "- {{ txn: '', reason: x }}\n- {{ jti: 'a b', reason: x }}\n\
             - {{ txn: {long}, reason: x }}\n- {{ jti: {}, reason: x }}\n",
            "a".repeat(256)
        )),
        [
            "revocations.yaml: [0].txn: is empty",
            "revocations.yaml: [1].jti: `a b` holds ` `; whitespace and control characters are \
             not allowed",
            "revocations.yaml: [2].txn: is 257 bytes long; at most 256 are allowed",
        ]
    );
}

#[test]
fn revocations_refuse_subjects_that_are_empty_or_too_long() {
    let long = "s".repeat(1025);
    assert_eq!(
        problems(&format!(
            "- {{ sub: '', reason: x }}\n- {{ sub: {long}, reason: x }}\n\
             - {{ sub: 'Alice Smith', reason: x }}\n"
        )),
        [
            "revocations.yaml: [0].sub: is empty",
            "revocations.yaml: [1].sub: is 1025 bytes long; at most 1024 are allowed",
        ]
    );
}

#[test]
fn revocations_refuse_peers_and_actors_that_are_not_canonical_workload_ids() {
    assert_eq!(
        problems(
            "- { peer: 'Spiffe://demo.local/a', reason: x }\n\
             - { actor: 'spiffe://demo.local/a/', reason: x }\n\
             - { peer: 'spiffe://demo.local', reason: x }\n"
        ),
        [
            "revocations.yaml: [0].peer: `Spiffe://demo.local/a` is not a SPIFFE ID: scheme \
             must be `spiffe://` (lowercase)",
            "revocations.yaml: [1].actor: `spiffe://demo.local/a/` is not a SPIFFE ID: path has \
             an empty segment or a trailing `/`",
            "revocations.yaml: [2].peer: `spiffe://demo.local` has no path; it names a trust \
             domain, never a workload",
        ]
    );
}

#[test]
fn revocations_refuse_an_until_that_is_not_rfc_3339_with_an_offset() {
    let found = problems(
        "- { txn: a, reason: x, until: 2026-12-31 }\n\
         - { txn: b, reason: x, until: 2026-12-31T00:00:00 }\n\
         - { txn: c, reason: x, until: 2026-12-31x00:00:00Z }\n\
         - { txn: d, reason: x, until: tomorrow }\n\
         - { txn: e, reason: x, until: 1798675200 }\n\
         - { txn: f, reason: x, until: 2026-13-01T00:00:00Z }\n",
    );
    let expected: Vec<String> = [
        "[0]: `2026-12-31`",
        "[1]: `2026-12-31T00:00:00`",
        "[2]: `2026-12-31x00:00:00Z`",
        "[3]: `tomorrow`",
        "[4]: `1798675200`",
        "[5]: `2026-13-01T00:00:00Z`",
    ]
    .iter()
    .map(|s| {
        let (entry, value) = s.split_once(": ").unwrap();
        format!(
            "revocations.yaml: {entry}.until: {value} is not an RFC 3339 time with an offset, \
             such as `2026-12-31T00:00:00Z`"
        )
    })
    .collect();
    assert_eq!(found, expected);
}

#[test]
fn an_until_with_an_offset_is_the_same_instant_in_utc() {
    let revocations = parse(
        "- { txn: a, reason: x, until: '2026-12-31T02:00:00+02:00' }\n\
         - { txn: b, reason: x, until: 2026-12-30t19:00:00.5-05:00 }\n\
         - { txn: c, reason: x, until: 1969-12-31T23:59:59Z }\n",
    );
    let untils: Vec<Option<SystemTime>> = revocations.entries().map(Revocation::until).collect();
    assert_eq!(
        untils,
        [
            Some(end_of_2026()),
            Some(end_of_2026() + Duration::from_millis(500)),
            Some(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once_naming_the_file_and_the_entry() {
    assert_eq!(
        problems(
            "- { txn: a, reason: fine }\n- { txn: b }\n- { sub: c, reason: x }\n\
             - { peer: nope, reason: x, until: soon }\n"
        ),
        [
            "revocations.yaml: [1].reason: is required",
            "revocations.yaml: [3].peer: `nope` is not a SPIFFE ID: scheme must be `spiffe://` \
             (lowercase)",
            "revocations.yaml: [3].until: `soon` is not an RFC 3339 time with an offset, such as \
             `2026-12-31T00:00:00Z`",
        ]
    );
}

#[test]
fn reported_problems_stop_at_a_hundred_and_count_the_rest() {
    let text = "- { txn: a }\n".repeat(150);
    let found = problems(&text);
    assert_eq!(found.len(), 101);
    assert_eq!(found[99], "revocations.yaml: [99].reason: is required");
    assert_eq!(found[100], "revocations.yaml: and 50 more problems");
}

#[test]
fn more_entries_than_allowed_are_an_error_never_an_empty_list_rvk_05() {
    let found = one(&"- { sub: s, reason: r }\n".repeat(MAX_REVOCATIONS + 1));
    assert_eq!(
        found,
        "revocations.yaml: holds 20001 entries; at most 20000 are allowed"
    );
    // The most there may be, each with every field, fits the YAML reader's budget.
    let most =
        "- { actor: spiffe://example.org/ns/a/sa/b, reason: r, until: 2030-01-01T00:00:00Z }\n"
            .repeat(MAX_REVOCATIONS);
    let parsed = Revocations::parse(&most, Path::new("revocations.yaml")).unwrap();
    assert_eq!(parsed.len(), MAX_REVOCATIONS);
}

#[test]
fn an_entry_stops_matching_at_its_until() {
    let revocations = parse("- { sub: alice, reason: offboarding, until: 2026-12-31T00:00:00Z }\n");
    let alice = RevocationFacts {
        sub: Some("alice"),
        ..facts()
    };
    let before = end_of_2026() - Duration::from_nanos(1);
    assert!(revocations.matching(&alice, before).is_some());
    assert!(revocations.matching(&alice, end_of_2026()).is_none());
    assert!(
        revocations
            .matching(&alice, end_of_2026() + Duration::from_secs(1))
            .is_none()
    );
    assert_eq!(revocations.len(), 1, "an expired entry is still listed");
}

#[test]
fn each_key_kind_matches_only_its_own_fact() {
    let value = "spiffe://demo.local/ns/x/sa/y";
    let now = SystemTime::now();
    let actors = [value.to_owned()];
    let offers = [
        (
            RevocationKey::Txn,
            RevocationFacts {
                txn: Some(value),
                ..facts()
            },
        ),
        (
            RevocationKey::Jti,
            RevocationFacts {
                jti: Some(value),
                ..facts()
            },
        ),
        (
            RevocationKey::Sub,
            RevocationFacts {
                sub: Some(value),
                ..facts()
            },
        ),
        (
            RevocationKey::Peer,
            RevocationFacts {
                peer: Some(value),
                ..facts()
            },
        ),
        (
            RevocationKey::Actor,
            RevocationFacts {
                actors: &actors,
                ..facts()
            },
        ),
    ];
    for key in RevocationKey::ALL {
        let revocations = parse(&format!("- {{ {key}: '{value}', reason: x }}\n"));
        for (offered, facts) in &offers {
            let hit = revocations.matching(facts, now);
            assert_eq!(hit.is_some(), *offered == key, "{key} offered as {offered}");
            if let Some(hit) = hit {
                assert_eq!((hit.key(), hit.value()), (key, value));
            }
        }
        let other = RevocationFacts {
            txn: Some("other"),
            jti: Some("other"),
            sub: Some("other"),
            peer: Some(OTHER),
            ..facts()
        };
        assert!(revocations.matching(&other, now).is_none());
    }
}

#[test]
fn an_actor_matches_any_member_of_the_delegation_chain() {
    let revocations = parse(&format!("- {{ actor: {AGENT}, reason: rogue }}\n"));
    let now = SystemTime::now();
    let chain = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
    for ids in [
        chain(&[AGENT]),
        chain(&[OTHER, AGENT]),
        chain(&[OTHER, "spiffe://demo.local/c", AGENT]),
    ] {
        let facts = RevocationFacts {
            actors: &ids,
            ..facts()
        };
        assert_eq!(
            revocations.matching(&facts, now).map(Revocation::reason),
            Some("rogue")
        );
    }
    let clean = chain(&[OTHER, "spiffe://demo.local/c"]);
    let facts = RevocationFacts {
        actors: &clean,
        peer: Some(AGENT),
        ..facts()
    };
    assert!(
        revocations.matching(&facts, now).is_none(),
        "the peer is not an actor"
    );
}

#[test]
fn the_first_active_entry_in_file_order_wins() {
    let revocations = parse(&format!(
        "- {{ sub: alice, reason: expired, until: 2000-01-01T00:00:00Z }}\n\
         - {{ peer: {AGENT}, reason: workload }}\n\
         - {{ sub: alice, reason: subject }}\n\
         - {{ txn: t1, reason: transaction }}\n"
    ));
    let facts = RevocationFacts {
        txn: Some("t1"),
        sub: Some("alice"),
        peer: Some(AGENT),
        ..facts()
    };
    let now = SystemTime::now();
    assert_eq!(
        revocations.matching(&facts, now).map(Revocation::reason),
        Some("workload")
    );
    let facts = RevocationFacts {
        peer: None,
        ..facts
    };
    assert_eq!(
        revocations.matching(&facts, now).map(Revocation::reason),
        Some("subject")
    );
    assert!(
        revocations
            .entries()
            .next()
            .is_some_and(|e| !e.is_active(now))
    );
}

proptest! {
    #[test]
    fn parse_never_panics_on_any_input(text in any::<String>()) {
        let _ = Revocations::parse(&text, Path::new("revocations.yaml"));
    }

    #[test]
    fn parse_never_panics_on_near_valid_entries(
        text in "(- \\{ ?(txn|jti|sub|peer|actor|reason|until|x): ?[a-zA-Z0-9:/._+ -]{0,30}(, ?(reason|until|sub): ?[a-zA-Z0-9:/._+ -]{0,25})?\\}\n){0,5}",
    ) {
        if let Ok(revocations) = Revocations::parse(&text, Path::new("revocations.yaml")) {
            let actors: Vec<String> = revocations.entries().map(|e| e.value().to_owned()).collect();
            for entry in revocations.entries() {
                let facts = RevocationFacts {
                    txn: Some(entry.value()),
                    jti: Some(entry.value()),
                    sub: Some(entry.value()),
                    peer: Some(entry.value()),
                    actors: &actors,
                };
                let _ = revocations.matching(&facts, SystemTime::UNIX_EPOCH);
            }
        }
    }
}
