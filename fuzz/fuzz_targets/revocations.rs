//! Fuzzes the `revocations.yaml` parser (RVK-05 in docs/security.md), read from the policy
//! folder on every reload: it must never panic, whatever the text. A refusal lists at least one
//! problem and at most a hundred (plus the count of the rest), each naming the file; a list it
//! accepts holds at most `MAX_REVOCATIONS` entries, and every entry matches a hop offering its
//! own value while the entry is active (an entry read but not enforced would be a silent hole).
//!
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run revocations

#![no_main]

use std::path::Path;
use std::time::{Duration, SystemTime};

use hopgate_config::{MAX_REVOCATIONS, RevocationFacts, RevocationKey, Revocations};
use libfuzzer_sys::fuzz_target;

const PATH: &str = "/etc/hopgate/policies/revocations.yaml";

fuzz_target!(|text: &str| {
    let revocations = match Revocations::parse(text, Path::new(PATH)) {
        Ok(revocations) => revocations,
        Err(err) => {
            assert!(!err.errors().is_empty(), "a refused file names a problem");
            assert!(err.errors().len() <= 101, "{} problems", err.errors().len());
            assert!(err.to_string().starts_with(PATH));
            return;
        }
    };
    assert!(revocations.len() <= MAX_REVOCATIONS);
    assert_eq!(revocations.is_empty(), revocations.len() == 0);
    assert_eq!(revocations.entries().count(), revocations.len());
    for entry in revocations.entries().take(32) {
        // An instant the entry is active at: before its `until`, if it has one.
        let now = match entry.until() {
            Some(until) => match until.checked_sub(Duration::from_nanos(1)) {
                Some(now) => now,
                None => continue,
            },
            None => SystemTime::UNIX_EPOCH,
        };
        assert!(entry.is_active(now));
        let actors = [entry.value().to_owned()];
        let value = Some(entry.value());
        let facts = match entry.key() {
            RevocationKey::Txn => RevocationFacts {
                txn: value,
                ..Default::default()
            },
            RevocationKey::Jti => RevocationFacts {
                jti: value,
                ..Default::default()
            },
            RevocationKey::Sub => RevocationFacts {
                sub: value,
                ..Default::default()
            },
            RevocationKey::Peer => RevocationFacts {
                peer: value,
                ..Default::default()
            },
            RevocationKey::Actor => RevocationFacts {
                actors: &actors,
                ..Default::default()
            },
        };
        let hit = revocations
            .matching(&facts, now)
            .unwrap_or_else(|| panic!("entry {entry:?} does not match its own value"));
        assert_eq!((hit.key(), hit.value()), (entry.key(), entry.value()));
    }
});
