//! Watching identity files for changes, debounced.
//!
//! The parent folders are watched, not the files: Kubernetes projects secrets as symlinks into
//! a `..data` link that it swaps atomically, which a watch on the file itself never sees, and an
//! editor's "write a temp file, rename it over" would likewise replace the watched inode.
//! Events are filtered to our file names and `..`-prefixed names (the Kubernetes links); reads
//! (including our own) are ignored. A burst of events becomes one call after a quiet period.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::tls::TlsError;

/// How long the folders must be quiet before the change is acted on.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Keeps a folder watch alive; dropping it stops the watch and its thread.
pub struct WatcherGuard {
    // INVARIANT: `Some` until `drop`, which takes both out.
    watcher: Option<RecommendedWatcher>,
    stop: mpsc::Sender<Signal>,
    thread: Option<JoinHandle<()>>,
}

enum Signal {
    Changed,
    Stop,
}

// === impl WatcherGuard ===

impl WatcherGuard {
    /// Watches the parent folder of each of `files` (non-recursively) and calls `on_change` on
    /// a dedicated thread once the folders have been quiet for ~250 ms after a relevant event.
    pub(crate) fn spawn(
        files: &[PathBuf],
        on_change: impl Fn() + Send + 'static,
    ) -> Result<Self, TlsError> {
        let names: HashSet<OsString> = files
            .iter()
            .filter_map(|f| f.file_name().map(ToOwned::to_owned))
            .collect();
        let folders: BTreeSet<PathBuf> = files.iter().map(|f| parent(f)).collect();
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            let relevant = match event {
                Ok(event) => is_relevant(&event, &names),
                Err(error) => {
                    tracing::warn!(%error, "identity file watch reported an error");
                    true
                }
            };
            if relevant {
                // The receiver is gone only while the guard is being dropped.
                let _ = events.send(Signal::Changed);
            }
        })
        .map_err(|source| TlsError::Watch {
            path: folders.first().cloned().unwrap_or_default(),
            source,
        })?;
        for folder in &folders {
            watcher
                .watch(folder, RecursiveMode::NonRecursive)
                .map_err(|source| TlsError::Watch {
                    path: folder.clone(),
                    source,
                })?;
        }
        let thread = std::thread::Builder::new()
            .name("hopgate-identity-watch".into())
            .spawn(move || debounce(&rx, &on_change))
            .map_err(|source| TlsError::Watch {
                path: folders.first().cloned().unwrap_or_default(),
                source: notify::Error::io(source),
            })?;
        Ok(Self {
            watcher: Some(watcher),
            stop: tx,
            thread: Some(thread),
        })
    }
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        drop(self.watcher.take());
        let _ = self.stop.send(Signal::Stop);
        if let Some(thread) = self.thread.take() {
            // The thread exits at the next message; at most a reload in progress finishes.
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for WatcherGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatcherGuard").finish_non_exhaustive()
    }
}

/// The longest a change waits for the files to go quiet before it is loaded anyway, so files
/// that keep changing cannot hold a rotation back.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Waits for a change, then for a quiet period (at most [`MAX_DELAY`]), then calls
/// `on_change`; until stopped.
fn debounce(rx: &mpsc::Receiver<Signal>, on_change: &dyn Fn()) {
    while let Ok(Signal::Changed) = rx.recv() {
        let deadline = Instant::now() + MAX_DELAY;
        loop {
            let wait = DEBOUNCE.min(deadline.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                break;
            }
            match rx.recv_timeout(wait) {
                Ok(Signal::Changed) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        on_change();
    }
}

fn is_relevant(event: &Event, names: &HashSet<OsString>) -> bool {
    let kind = match event.kind {
        // Opening or reading a file changes nothing; a close after writing does.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    kind && (event.need_rescan()
        || event.paths.is_empty()
        || event.paths.iter().any(|path| {
            path.file_name().is_some_and(|name| {
                names.contains(name) || name.to_string_lossy().starts_with("..")
            })
        }))
}

fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;

    fn wait_for(count: &AtomicUsize, at_least: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if count.load(Ordering::SeqCst) >= at_least {
                return true;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
        false
    }

    /// Waits `d` (`park_timeout` may wake early, so it loops until the deadline).
    fn pause(d: Duration) {
        let deadline = Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            std::thread::park_timeout(left);
        }
    }

    #[test]
    fn a_burst_of_writes_to_a_watched_file_becomes_one_call() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svid.pem");
        std::fs::write(&file, "a").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let _guard = WatcherGuard::spawn(std::slice::from_ref(&file), move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        for i in 0..5 {
            std::fs::write(&file, format!("{i}")).unwrap();
        }
        assert!(wait_for(&calls, 1));
        pause(DEBOUNCE * 3);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_kubernetes_style_data_link_swap_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svid.pem");
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let _guard = WatcherGuard::spawn(&[file], move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::fs::create_dir(dir.path().join("..2030_01_01")).unwrap();
        std::os::unix::fs::symlink("..2030_01_01", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert!(wait_for(&calls, 1));
    }

    #[test]
    fn other_files_in_the_folder_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let _guard = WatcherGuard::spawn(&[dir.path().join("svid.pem")], move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
        pause(DEBOUNCE * 3);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn dropping_the_guard_stops_the_calls() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svid.pem");
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let guard = WatcherGuard::spawn(std::slice::from_ref(&file), move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        drop(guard);
        std::fs::write(&file, "after").unwrap();
        pause(DEBOUNCE * 3);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
