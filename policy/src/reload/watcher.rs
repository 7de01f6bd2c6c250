//! `PolicyWatcher`: reload a policy folder when it changes.
//!
//! notify watches the folder itself, not the files: Kubernetes updates a mounted ConfigMap by
//! swapping a `..data` link, and editors replace files by rename; both show up as events in the
//! folder. Bursts (an editor's write + rename + chmod, `kubectl apply` touching several files)
//! are debounced: the reload runs once the folder has been quiet for [`DEBOUNCE`], or at the
//! latest [`MAX_DELAY`] after the first change.

use std::path::Path;
use std::sync::Weak;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::PolicyStore;
use crate::PolicyError;

/// How long the folder must be quiet before a reload.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The longest a change waits for the folder to go quiet before it is loaded anyway.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Keeps a folder watch and its reload thread alive; dropping it stops both.
pub struct PolicyWatcher {
    // INVARIANT: `watcher` is dropped before `thread` is joined: dropping it closes the channel,
    // which is what ends the thread.
    watcher: Option<RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

type Events = Receiver<notify::Result<Event>>;

// === impl PolicyWatcher ===

impl PolicyWatcher {
    pub(super) fn spawn(store: Weak<PolicyStore>, dir: &Path) -> Result<Self, PolicyError> {
        let watch_error = |source| PolicyError::Watch {
            path: dir.to_owned(),
            source,
        };
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx).map_err(watch_error)?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(watch_error)?;
        let thread = thread::Builder::new()
            .name("hopgate-policy-watch".to_owned())
            .spawn(move || run(&store, &rx))
            .map_err(|e| PolicyError::io(dir, e))?;
        Ok(Self {
            watcher: Some(watcher),
            thread: Some(thread),
        })
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        drop(self.watcher.take());
        if let Some(thread) = self.thread.take() {
            // A reload in progress finishes first; it is bounded by the folder's size.
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatcher")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

fn run(store: &Weak<PolicyStore>, events: &Events) {
    while let Ok(event) = events.recv() {
        if !is_change(&event) {
            continue;
        }
        // Wait for the folder to go quiet, but never longer than MAX_DELAY: a folder that keeps
        // changing must not hold back a revocation indefinitely.
        let deadline = Instant::now() + MAX_DELAY;
        loop {
            let wait = DEBOUNCE.min(deadline.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                break;
            }
            match events.recv_timeout(wait) {
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let Some(store) = store.upgrade() else {
            return;
        };
        // The outcome is recorded in the store's status and reported through its hook.
        let _ = store.reload();
    }
}

/// Reads (our own reload opens every file) are not changes. A lost-events notice (inotify's
/// queue overflowed) or a watch error may hide a change, so it counts as one.
fn is_change(event: &notify::Result<Event>) -> bool {
    match event {
        Ok(event) if event.need_rescan() => true,
        Ok(event) => match event.kind {
            EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => {
                true
            }
            EventKind::Access(_) | EventKind::Other => false,
        },
        Err(_) => true,
    }
}
