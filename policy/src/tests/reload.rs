//! Reloading: swap on success, keep the last good snapshot on failure (CED-07), the watcher.

use std::sync::mpsc;
use std::time::Duration;

use super::{AGENT, Folder, Hop, INFERENCE, SCHEMA};
use crate::PolicyStore;

const ALLOW: &str = r#"@id("allow") permit (principal == Hop::Workload::"spiffe://example.org/ns/agents/sa/agent", action, resource);"#;
const DENY: &str = r#"@id("deny") forbid (principal == Hop::Workload::"spiffe://example.org/ns/agents/sa/agent", action, resource);"#;

fn store_with_hook(folder: &Folder) -> (std::sync::Arc<PolicyStore>, mpsc::Receiver<bool>) {
    let store = PolicyStore::load(folder.path(), "call").unwrap();
    let (tx, rx) = mpsc::channel();
    store.set_reload_hook(Box::new(move |ok| {
        let _ = tx.send(ok);
    }));
    (store, rx)
}

/// Waits for a reload with outcome `ok`; a burst of events may reload more than once.
fn wait_for(hook: &mpsc::Receiver<bool>, ok: bool) {
    loop {
        match hook.recv_timeout(Duration::from_secs(10)) {
            Ok(got) if got == ok => return,
            Ok(_) => {}
            Err(e) => panic!("no reload with ok={ok}: {e}"),
        }
    }
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
fn the_watcher_reloads_after_a_change_in_the_folder() {
    let folder = Folder::with_policies(ALLOW);
    let (store, hook) = store_with_hook(&folder);
    let watcher = store.spawn_watcher().unwrap();

    folder.write("policies.cedar", DENY);
    wait_for(&hook, true);
    assert_eq!(store.current().policy_ids(), ["deny"]);

    folder.write("policies.cedar", "not cedar");
    wait_for(&hook, false);
    assert_eq!(store.current().policy_ids(), ["deny"]);

    drop(watcher);
    while hook.try_recv().is_ok() {}
    folder.write("policies.cedar", ALLOW);
    assert!(
        hook.recv_timeout(Duration::from_millis(600)).is_err(),
        "a dropped watcher reloads nothing"
    );
    assert_eq!(store.current().policy_ids(), ["deny"]);
}
