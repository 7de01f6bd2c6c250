//! Waiting, bounded, for something to become true: the one poll loop of the tests.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked.
const EVERY: Duration = Duration::from_millis(10);

/// Checks `check` until it yields `Some`, for at most `within`, and returns what it yielded;
/// past `within`, fails the test saying `what` did not happen. `what` is rendered only then,
/// so it may describe the state it finds (`format_args!`, or a type whose `Display` reads it).
pub(crate) async fn eventually<T, Fut>(
    within: Duration,
    what: impl Display,
    mut check: impl FnMut() -> Fut,
) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        tokio::time::sleep(EVERY).await;
    }
}
