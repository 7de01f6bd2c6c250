//! Graceful shutdown: stop accepting, let in-flight requests finish within a grace period.
//!
//! ```text
//!   SIGTERM ─▶ Trigger::drain ─▶ every Watch sees `signaled()`
//!                                  ├─ accept loops return (listeners close)
//!                                  └─ connections finish their in-flight requests, then close
//!              Trigger::drain waits until every Watch is dropped, or the grace period ends
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// The sending half: fires the signal and waits for the drain.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
    draining: Draining,
}

/// Tells whether a drain has begun, without holding the drain up (for `/ready`).
#[derive(Clone, Debug, Default)]
pub struct Draining(Arc<AtomicBool>);

/// The receiving half, held by every accept loop and connection until it has finished.
#[derive(Clone, Debug)]
pub struct Watch(watch::Receiver<bool>);

/// Creates a linked trigger and watch.
pub fn channel() -> (Trigger, Watch) {
    let (tx, rx) = watch::channel(false);
    let trigger = Trigger {
        tx,
        draining: Draining::default(),
    };
    (trigger, Watch(rx))
}

// === impl Trigger ===

impl Trigger {
    /// Signals every watch, then waits until all of them are dropped or `grace` has passed.
    /// Returns whether everything finished in time.
    pub async fn drain(self, grace: Duration) -> bool {
        self.draining.0.store(true, Ordering::Release);
        self.tx.send_replace(true);
        tokio::time::timeout(grace, self.tx.closed()).await.is_ok()
    }

    /// A flag that turns true when the drain begins.
    pub fn draining(&self) -> Draining {
        self.draining.clone()
    }
}

// === impl Draining ===

impl Draining {
    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

// === impl Watch ===

impl Watch {
    /// Resolves once shutdown has begun (at once if it already has).
    pub async fn signaled(&mut self) {
        // An error means the trigger was dropped without draining: treat that as shutdown too.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_every_watch_to_drop() {
        let (trigger, watch) = channel();
        let mut held = watch.clone();
        drop(watch);
        let task = tokio::spawn(async move {
            held.signaled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(held);
        });
        assert!(trigger.drain(Duration::from_secs(5)).await);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_the_grace_period() {
        let (trigger, watch) = channel();
        assert!(!trigger.drain(Duration::from_secs(1)).await);
        drop(watch);
    }
}
