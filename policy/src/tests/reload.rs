//! Reloading: swap on success, keep the last good snapshot on failure (CED-07), and `check`,
//! which reloads only what changed.

use std::sync::mpsc;

use super::{AGENT, Folder, Hop, INFERENCE, SCHEMA};
use crate::{PolicyStore, ReloadOutcome};

const ALLOW: &str = r#"@id("allow") permit (principal == Hop::Workload::"spiffe://example.org/ns/agents/sa/agent", action, resource);"#;
const DENY: &str = r#"@id("deny") forbid (principal == Hop::Workload::"spiffe://example.org/ns/agents/sa/agent", action, resource);"#;

fn store_with_hook(folder: &Folder) -> (std::sync::Arc<PolicyStore>, mpsc::Receiver<bool>) {
    let store = PolicyStore::load(folder.path(), "call").unwrap();
    let (tx, rx) = mpsc::channel();
    store.set_reload_hook(Box::new(move |result| {
        let _ = tx.send(matches!(result, ReloadOutcome::Applied(_)));
    }));
    (store, rx)
}

#[test]
fn a_good_reload_swaps_the_snapshot_and_records_success() {
    let folder = Folder::with_policies(ALLOW);
    let (store, hook) = store_with_hook(&folder);
    let before = store.current();
    assert!(Hop::new(AGENT, INFERENCE).decide(&before).is_allowed());

    folder.write("policies.cedar", DENY);
    store.reload().unwrap();
    assert_eq!(hook.try_recv(), Ok(true));
    let after = store.current();
    assert_eq!(
        Hop::new(AGENT, INFERENCE).decide(&after).policies(),
        ["deny"]
    );
    assert_ne!(after.digest(), before.digest());
    assert!(store.last_reload().ok());
    // A reader holding the old snapshot still decides with it.
    assert!(Hop::new(AGENT, INFERENCE).decide(&before).is_allowed());
}

#[test]
fn a_duplicate_id_keeps_the_last_good_snapshot_ced_07() {
    let folder = Folder::with_policies(ALLOW);
    let (store, hook) = store_with_hook(&folder);
    let digest = store.current().digest().to_owned();

    // Valid on its own, but `allow` is taken: the folder is refused as a whole.
    folder.write("zz.cedar", &DENY.replace("\"deny\"", "\"allow\""));
    let err = store.reload().unwrap_err();
    assert!(
        err.to_string()
            .contains("policy id `allow` is already used in"),
        "{err}"
    );
    assert_eq!(hook.try_recv(), Ok(false));
    assert_eq!(store.current().digest(), digest);
    assert!(
        Hop::new(AGENT, INFERENCE)
            .decide(&store.current())
            .is_allowed()
    );
}

#[test]
fn a_broken_policy_file_keeps_the_last_good_snapshot_ced_07() {
    let folder = Folder::with_policies(ALLOW);
    let (store, hook) = store_with_hook(&folder);
    let digest = store.current().digest().to_owned();

    folder.write("policies.cedar", "permit (principal, action, resource"); // unclosed
    let err = store.reload().unwrap_err().to_string();
    assert!(err.contains("policies.cedar"), "{err}");
    assert_eq!(hook.try_recv(), Ok(false));
    assert_eq!(store.current().digest(), digest);
    assert!(
        Hop::new(AGENT, INFERENCE)
            .decide(&store.current())
            .is_allowed()
    );
    let status = store.last_reload();
    assert!(!status.ok());
    assert_eq!(status.error(), Some(err.as_str()));

    folder.write("policies.cedar", ALLOW);
    store.reload().unwrap();
    assert!(store.last_reload().ok());
}

#[test]
fn a_schema_violation_keeps_the_last_good_snapshot_ced_07() {
    let folder = Folder::with_policies(ALLOW);
    let (store, hook) = store_with_hook(&folder);
    folder.write(
        "policies.cedar",
        r#"@id("bad") permit (principal, action, resource) when { principal.nickname == "x" };"#,
    );
    let err = store.reload().unwrap_err().to_string();
    assert!(err.contains("`bad`"), "{err}");
    assert_eq!(hook.try_recv(), Ok(false));
    assert_eq!(store.current().policy_ids(), ["allow"]);
    assert_eq!(store.last_reload().error(), Some(err.as_str()));

    // A schema change that breaks the existing policies is refused the same way.
    folder.write("policies.cedar", ALLOW);
    folder.write(
        "schema.cedarschema",
        &SCHEMA.replace("action call, ", "action "),
    );
    folder.write(
        "more.cedar",
        r#"@id("calls") permit (principal, action == Hop::Action::"call", resource);"#,
    );
    assert!(store.reload().is_err());
    assert_eq!(store.current().policy_ids(), ["allow"]);
}

#[test]
fn a_check_of_an_unchanged_folder_reloads_nothing() {
    let folder = Folder::with_policies(ALLOW);
    let (store, hook) = store_with_hook(&folder);
    let loaded = store.last_reload();

    assert!(!store.check().unwrap());
    assert!(hook.try_recv().is_err(), "no reload attempt is reported");
    assert_eq!(store.last_reload(), loaded);

    // Rewriting the same bytes is no change either.
    folder.write("policies.cedar", ALLOW);
    assert!(!store.check().unwrap());
}

#[test]
fn a_check_reloads_a_changed_folder_once() {
    let folder = Folder::with_policies(ALLOW);
    let (store, hook) = store_with_hook(&folder);
    let digest = store.current().digest().to_owned();

    folder.write("policies.cedar", DENY);
    assert!(store.check().unwrap());
    assert_eq!(hook.try_recv(), Ok(true));
    assert_eq!(store.current().policy_ids(), ["deny"]);
    assert_ne!(store.current().digest(), digest);
    assert!(!store.check().unwrap());
}

#[test]
fn a_check_reports_a_broken_folder_once_and_recovers_when_it_is_fixed() {
    let folder = Folder::with_policies(ALLOW);
    let (store, hook) = store_with_hook(&folder);

    folder.write("policies.cedar", "not cedar");
    assert!(store.check().is_err());
    assert_eq!(hook.try_recv(), Ok(false));
    // The same broken files are not re-reported on every check (CED-07: the last good stays).
    assert!(!store.check().unwrap());
    assert!(hook.try_recv().is_err());
    assert!(!store.last_reload().ok());
    assert_eq!(store.current().policy_ids(), ["allow"]);

    // Putting the old files back is a change from what was last read: the status clears.
    folder.write("policies.cedar", ALLOW);
    assert!(store.check().unwrap());
    assert!(store.last_reload().ok());
}
