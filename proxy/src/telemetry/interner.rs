//! An interner for span attribute values: those seen recently on this thread are shared
//! instead of copied.
//!
//! Most of a request span's values repeat from one request to the next: the peer and
//! destination IDs, the path, the host, the action, the token's `sub`, `txn`, actors and `jti`
//! (hop tokens are reused until they near expiry), the determining policies. Each used to be a
//! fresh `String`, allocated when recorded and freed when the span was encoded: about 400
//! instructions a value, a dozen values a span. Here a value is looked up among the last ones
//! this thread saw, and a hit costs a hash, a comparison and a reference count.
//!
//! The table is direct-mapped and per thread: no lock, and a fixed bound on memory
//! ([`SLOTS`] values of at most [`MAX_LEN`] bytes a thread). A miss allocates as before and
//! takes the slot, so values that change on every request (or a caller varying them on purpose)
//! cost what they always did and nothing more is kept. Values are only ever used as span
//! attributes, and a hit needs the whole string to be equal, so a collision can only cost a
//! miss.

use std::cell::RefCell;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use foldhash::fast::FixedState;
use opentelemetry::StringValue;

/// Slots a thread keeps; a power of two.
const SLOTS: usize = 256;
/// Longer values are copied, not kept.
const MAX_LEN: usize = 256;

thread_local! {
    static RECENT: RefCell<[Option<Arc<str>>; SLOTS]> = const { RefCell::new([const { None }; SLOTS]) };
}

/// `value` as an attribute value: the one this thread kept, when it is the same string.
pub(super) fn intern(value: &str) -> StringValue {
    if value.len() > MAX_LEN {
        return StringValue::from(value.to_owned());
    }
    let slot = FixedState::with_seed(0).hash_one(value) as usize & (SLOTS - 1);
    let shared = RECENT.try_with(|recent| {
        let mut recent = recent.try_borrow_mut().ok()?;
        let kept = recent.get_mut(slot)?;
        match kept {
            Some(kept) if **kept == *value => Some(Arc::clone(kept)),
            _ => Some(Arc::clone(kept.insert(Arc::from(value)))),
        }
    });
    match shared {
        Ok(Some(shared)) => StringValue::from(shared),
        // The thread is exiting (or the table is in use further up the stack): a plain copy.
        _ => StringValue::from(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_LEN, SLOTS, intern as value};

    #[test]
    fn a_repeated_value_is_shared_and_still_reads_the_same() {
        let first = value("spiffe://example.org/ns/prod/sa/api");
        let second = value("spiffe://example.org/ns/prod/sa/api");
        assert_eq!(first.as_str(), "spiffe://example.org/ns/prod/sa/api");
        assert_eq!(second.as_str(), first.as_str());
        assert!(std::ptr::eq(first.as_str(), second.as_str()));
    }

    #[test]
    fn different_values_never_read_as_each_other() {
        // More values than slots: every slot is taken over at least once.
        let values: Vec<String> = (0..SLOTS * 4).map(|i| format!("/path/{i}")).collect();
        for round in 0..2 {
            for v in &values {
                assert_eq!(value(v).as_str(), v, "round {round}");
            }
        }
        assert_eq!(value("").as_str(), "");
    }

    #[test]
    fn a_long_value_is_copied_whole() {
        let long = "x".repeat(MAX_LEN + 1);
        let first = value(&long);
        assert_eq!(first.as_str(), long);
        assert!(!std::ptr::eq(first.as_str(), value(&long).as_str()));
    }
}
