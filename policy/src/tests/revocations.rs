//! `revocations.yaml`: read, validated and watched with the policies, held in the snapshot; an
//! invalid file fails the folder and never reads as "nothing revoked" (RVK-05).

use std::fs;
use std::time::SystemTime;

use super::{AGENT, Folder, INFERENCE};
use crate::{PolicyError, PolicySnapshot, PolicyStore, RevocationFacts, RevocationKey};

const ALLOW: &str = r#"@id("allow") permit (principal, action, resource) when { principal in Hop::TrustDomain::"example.org" };"#;

const REVOCATIONS: &str = "\
- txn: Zk9hY2VudHJhbHRyYW5zYWN0   # a transaction id
  reason: incident 4711
- peer: spiffe://example.org/ns/agents/sa/agent
  reason: compromised workload
  until: 2999-12-31T00:00:00Z
- sub: alice
  reason: offboarding
";

fn folder_with(revocations: &str) -> Folder {
    let folder = Folder::with_policies(ALLOW);
    folder.write("revocations.yaml", revocations);
    folder
}

fn peer(id: &str) -> RevocationFacts<'_> {
    RevocationFacts {
        peer: Some(id),
        ..RevocationFacts::default()
    }
}

#[test]
fn a_folder_with_a_valid_revocations_file_holds_it_in_the_snapshot() {
    let snapshot = folder_with(REVOCATIONS).snapshot();
    let revocations = snapshot.revocations();
    assert_eq!(revocations.len(), 3);
    let keys: Vec<RevocationKey> = revocations.entries().map(|e| e.key()).collect();
    assert_eq!(
        keys,
        [RevocationKey::Txn, RevocationKey::Peer, RevocationKey::Sub]
    );
    let now = SystemTime::now();
    let hit = revocations.matching(&peer(AGENT), now).unwrap();
    assert_eq!(hit.reason(), "compromised workload");
    assert!(revocations.matching(&peer(INFERENCE), now).is_none());
    assert!(format!("{snapshot:?}").contains("revocations: 3"));
}

#[test]
fn a_folder_without_revocations_revokes_nothing() {
    let folder = Folder::with_policies(ALLOW);
    let snapshot = folder.snapshot();
    assert!(snapshot.revocations().is_empty());
    // Dot-files are skipped like everywhere in the folder.
    folder.write(".revocations.yaml.swp", "not yaml: [");
    assert!(folder.snapshot().revocations().is_empty());
    assert_eq!(folder.snapshot().digest(), snapshot.digest());
}

#[test]
fn an_empty_list_loads_and_revokes_nothing() {
    assert!(folder_with("[]\n").snapshot().revocations().is_empty());
}

#[test]
fn an_empty_revocations_file_fails_the_load_rvk_05() {
    let folder = folder_with("# everything lifted\n");
    let path = folder.path().join("revocations.yaml");
    assert_eq!(
        folder.load_error(),
        format!("{}: empty; write `[]` for no revocations", path.display())
    );
}

#[test]
fn every_revocations_problem_names_the_file_and_the_entry_next_to_the_policy_problems() {
    let folder = folder_with(
        "- { txn: a, reason: x }\n- { sub: b }\n- { peer: nope, reason: x, until: soon }\n",
    );
    folder.write("policies.cedar", "permit (principal, action, resource"); // unclosed
    let err = PolicySnapshot::load(folder.path(), "call").unwrap_err();
    let PolicyError::Invalid { problems } = &err else {
        panic!("{err}");
    };
    let file = folder.path().join("revocations.yaml");
    let shown: Vec<String> = problems
        .iter()
        .filter(|p| p.path() == file)
        .map(|p| p.message().to_owned())
        .collect();
    assert_eq!(
        shown,
        [
            "[1].reason: is required",
            "[2].peer: `nope` is not a SPIFFE ID: scheme must be `spiffe://` (lowercase)",
            "[2].until: `soon` is not an RFC 3339 time with an offset, such as \
             `2026-12-31T00:00:00Z`",
        ]
    );
    assert!(
        problems
            .iter()
            .any(|p| p.path().ends_with("policies.cedar")),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("{}: [1].reason: is required", file.display())),
        "{err}"
    );
}

#[test]
fn an_unreadable_revocations_file_fails_the_load_rvk_05() {
    let folder = Folder::with_policies(ALLOW);
    fs::create_dir(folder.path().join("revocations.yaml")).unwrap();
    let err = PolicySnapshot::load(folder.path(), "call").unwrap_err();
    assert!(matches!(err, PolicyError::Io { .. }), "{err}");
    assert!(err.to_string().contains("revocations.yaml"), "{err}");
}

#[test]
fn an_invalid_revocations_file_keeps_the_last_good_snapshot_and_its_revocations_rvk_05() {
    let folder = folder_with(REVOCATIONS);
    let store = PolicyStore::load(folder.path(), "call").unwrap();
    let good = store.current();
    assert_eq!(good.revocations().len(), 3);

    for broken in [
        "",
        "txn: a\nreason: x\n",
        "- { txn: a, reason: x, until: soon }\n",
    ] {
        folder.write("revocations.yaml", broken);
        let err = store.reload().unwrap_err().to_string();
        assert!(err.contains("revocations.yaml"), "{err}");
        let current = store.current();
        assert_eq!(current.digest(), good.digest());
        assert_eq!(current.revocations().len(), 3, "never an empty list");
        assert!(
            current
                .revocations()
                .matching(&peer(AGENT), SystemTime::now())
                .is_some()
        );
        assert_eq!(store.last_reload().error(), Some(err.as_str()));
    }
    // A policy change alongside a broken revocations file is refused too: the folder is one.
    folder.write(
        "policies.cedar",
        r#"@id("other") permit (principal, action, resource);"#,
    );
    assert!(store.check().is_err());
    assert_eq!(store.current().policy_ids(), ["allow"]);

    folder.write("revocations.yaml", "[]\n");
    assert!(store.check().unwrap());
    assert_eq!(store.current().policy_ids(), ["other"]);
    assert!(store.current().revocations().is_empty());
}

#[test]
fn changing_only_revocations_yaml_makes_check_reload() {
    let folder = Folder::with_policies(ALLOW);
    let store = PolicyStore::load(folder.path(), "call").unwrap();
    let first = store.current().digest().to_owned();
    assert!(!store.check().unwrap());

    folder.write("revocations.yaml", REVOCATIONS);
    assert!(store.check().unwrap());
    assert_eq!(store.current().revocations().len(), 3);
    let second = store.current().digest().to_owned();
    assert_ne!(second, first);
    assert!(!store.check().unwrap(), "unchanged: no second reload");

    folder.write("revocations.yaml", &REVOCATIONS.replace("alice", "bob"));
    assert!(store.check().unwrap());
    let sub = RevocationFacts {
        sub: Some("bob"),
        ..RevocationFacts::default()
    };
    let now = SystemTime::now();
    assert!(store.current().revocations().matching(&sub, now).is_some());

    // Removing the file lifts every revocation, and is a change like any other.
    fs::remove_file(folder.path().join("revocations.yaml")).unwrap();
    assert!(store.check().unwrap());
    assert!(store.current().revocations().is_empty());
    assert_eq!(store.current().digest(), first);
}
