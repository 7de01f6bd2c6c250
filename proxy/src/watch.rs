//! Watching configured paths: how hopgate notices that its identity files or its policy folder
//! changed on disk.
//!
//! Three layers, each covering what the one before can miss:
//!
//! 1. **Folder events.** notify (inotify) watches each folder non-recursively. That sees
//!    in-place writes, an editor's "write a temp file, rename it over", and Kubernetes' swap of
//!    the `..data` link inside a mounted folder, within milliseconds.
//! 2. **Re-resolving the configured paths**, every [`POLL`]. A watch follows the folder the path
//!    named *when it was set*: after a symlink on the path is re-pointed (`policies -> rel-v2`)
//!    or another folder is renamed over it, the watch would go on reporting the old one, which
//!    nobody writes any more. So every poll resolves each path again (device and inode of what
//!    it names now); when that is not the folder watched, the watch moves to the new folder and
//!    a change is reported.
//! 3. **A safety net**, every [`SAFETY_NET`]: a change is reported regardless. The consumer
//!    compares the files' contents with what it last loaded (`check`), so an event lost anyway
//!    (an overflowed inotify queue, a network filesystem) delays new content by at most that
//!    long, and costs one read of the files when nothing changed.
//!
//! Reports are debounced: `on_change` runs once the paths have been quiet for the debounce
//! period, or at the latest `max_delay` after the first change, so a folder that keeps changing
//! cannot hold a revocation back.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hopgate_policy::PolicyStore;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use thiserror::Error;

/// How often the configured paths are resolved again.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// How often a change is reported even without an event.
pub(crate) const SAFETY_NET: Duration = Duration::from_secs(10);

/// A watch could not start.
#[derive(Debug, Error)]
#[error("cannot watch `{}`: {source}", path.display())]
pub struct WatchError {
    path: PathBuf,
    #[source]
    source: notify::Error,
}

/// What to watch: recomputed at every poll, so paths that resolve through symlinks follow them.
pub(crate) struct Spec {
    /// For the thread's name and the log lines: `identity`, `policy`.
    pub(crate) what: &'static str,
    /// The folders to watch now, and the names in them whose events count.
    pub(crate) resolve: Box<dyn Fn() -> Targets + Send>,
    /// How long the paths must be quiet before `on_change` runs.
    pub(crate) debounce: Duration,
    /// The longest a change waits for quiet.
    pub(crate) max_delay: Duration,
    /// How often `on_change` runs without any event ([`SAFETY_NET`] outside tests).
    pub(crate) safety_net: Duration,
}

/// The folders to watch, and which events in them count.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    pub(crate) folders: BTreeSet<PathBuf>,
    /// Events naming one of these, or a `..`-prefixed name (Kubernetes' links), count. Empty:
    /// every event counts.
    pub(crate) names: HashSet<OsString>,
}

/// Keeps a watch and its thread alive; dropping it stops both.
pub struct PathWatch {
    stop: mpsc::Sender<Signal>,
    // INVARIANT: `Some` until `drop`.
    thread: Option<JoinHandle<()>>,
}

enum Signal {
    Event(notify::Result<Event>),
    Stop,
}

/// A folder being watched: what it resolved to when last looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Armed {
    /// Device and inode; `None` while the path names nothing.
    id: Option<(u64, u64)>,
    /// Whether notify accepted the watch.
    watching: bool,
}

// === impl PathWatch ===

impl PathWatch {
    /// Starts watching `spec`'s folders, calling `on_change` on a thread of its own.
    ///
    /// # Errors
    /// [`WatchError`] when notify cannot start or a folder that exists cannot be watched (for
    /// example, no inotify watch left): the sidecar would otherwise miss every rotation.
    pub(crate) fn spawn(
        spec: Spec,
        on_change: impl Fn() + Send + 'static,
    ) -> Result<Self, WatchError> {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let targets = (spec.resolve)();
        let first = targets.folders.first().cloned().unwrap_or_default();
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only while the guard is being dropped.
            let _ = events.send(Signal::Event(event));
        })
        .map_err(|source| WatchError {
            path: first.clone(),
            source,
        })?;
        let mut armed = BTreeMap::new();
        for folder in &targets.folders {
            let id = file_id(folder);
            if id.is_some() {
                watcher
                    .watch(folder, RecursiveMode::NonRecursive)
                    .map_err(|source| WatchError {
                        path: folder.clone(),
                        source,
                    })?;
            }
            let watching = id.is_some();
            armed.insert(folder.clone(), Armed { id, watching });
        }
        let thread = std::thread::Builder::new()
            .name(format!("hopgate-{}-watch", spec.what))
            .spawn(move || {
                let mut state = State {
                    watcher,
                    armed,
                    names: targets.names,
                    spec,
                };
                state.run(&rx, &on_change);
            })
            .map_err(|source| WatchError {
                path: first,
                source: notify::Error::io(source),
            })?;
        Ok(Self {
            stop: tx,
            thread: Some(thread),
        })
    }
}

impl Drop for PathWatch {
    fn drop(&mut self) {
        let _ = self.stop.send(Signal::Stop);
        if let Some(thread) = self.thread.take() {
            // The thread exits at the next message; at most a reload in progress finishes.
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for PathWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathWatch").finish_non_exhaustive()
    }
}

// === impl State ===

/// The watch thread's state. It owns the notify watcher, so watches move on this thread only.
struct State {
    watcher: RecommendedWatcher,
    armed: BTreeMap<PathBuf, Armed>,
    names: HashSet<OsString>,
    spec: Spec,
}

impl State {
    fn run(&mut self, rx: &Receiver<Signal>, on_change: &dyn Fn()) {
        let now = Instant::now();
        let mut next_poll = now + POLL;
        let mut next_net = now + self.spec.safety_net;
        // When the first and the last unreported change happened.
        let mut pending: Option<(Instant, Instant)> = None;
        loop {
            let due = pending
                .map(|(first, last)| (last + self.spec.debounce).min(first + self.spec.max_delay));
            let wake = due.map_or(next_poll.min(next_net), |due| {
                due.min(next_poll).min(next_net)
            });
            let changed = match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(Signal::Event(event)) => self.is_relevant(&event),
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => false,
            };
            let now = Instant::now();
            let moved = now >= next_poll && {
                next_poll = now + POLL;
                self.rearm()
            };
            if changed || moved {
                pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
            }
            let due = pending
                .map(|(first, last)| (last + self.spec.debounce).min(first + self.spec.max_delay));
            if due.is_some_and(|due| now >= due) || now >= next_net {
                pending = None;
                next_net = now + self.spec.safety_net;
                on_change();
            }
        }
    }

    /// Resolves the configured paths again and moves the watches to what they name now.
    /// Returns whether anything moved (a change to report).
    fn rearm(&mut self) -> bool {
        let Targets { folders, names } = (self.spec.resolve)();
        self.names = names;
        let mut moved = false;
        let gone: Vec<PathBuf> = self
            .armed
            .keys()
            .filter(|path| !folders.contains(*path))
            .cloned()
            .collect();
        for path in gone {
            if self.armed.remove(&path).is_some_and(|a| a.watching) {
                let _ = self.watcher.unwatch(&path);
            }
            moved = true;
        }
        for folder in folders {
            let id = file_id(&folder);
            let before = self.armed.get(&folder).copied();
            if let Some(before) = before {
                if before.id == id && (before.watching || id.is_none()) {
                    continue;
                }
                if before.watching {
                    // notify may have dropped a watch whose folder went away; either way the
                    // old watch is of no use.
                    let _ = self.watcher.unwatch(&folder);
                }
            }
            // A retry of a watch that failed on the same folder is not a change.
            moved |= before.is_none_or(|b| b.id != id);
            let watching = id.is_some() && self.watch(&folder, before);
            self.armed.insert(folder, Armed { id, watching });
        }
        moved
    }

    fn watch(&mut self, folder: &Path, before: Option<Armed>) -> bool {
        match self.watcher.watch(folder, RecursiveMode::NonRecursive) {
            Ok(()) => true,
            Err(error) => {
                // Warned once per folder it resolves to, then retried quietly at every poll;
                // the safety net still catches changes meanwhile.
                if before.is_none_or(|b| b.watching || b.id != file_id(folder)) {
                    tracing::warn!(
                        watch = self.spec.what,
                        folder = %folder.display(),
                        %error,
                        "cannot watch a folder; changes in it are seen by the periodic check only",
                    );
                }
                false
            }
        }
    }

    fn is_relevant(&self, event: &notify::Result<Event>) -> bool {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(watch = self.spec.what, %error, "a file watch reported an error");
                return true;
            }
        };
        let kind = match event.kind {
            // Opening or reading a file changes nothing (our own reloads read every file); a
            // close after writing does.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        kind && (self.names.is_empty()
            || event.need_rescan()
            || event.paths.is_empty()
            || event.paths.iter().any(|path| {
                path.file_name().is_some_and(|name| {
                    self.names.contains(name) || name.to_string_lossy().starts_with("..")
                })
            }))
    }
}

/// Watches a policy folder (the path as configured, followed through symlinks and
/// replacements) and calls [`PolicyStore::check`] ~100 ms after the last change.
///
/// # Errors
/// As [`PathWatch::spawn`].
pub(crate) fn policy_folder(store: &Arc<PolicyStore>) -> Result<PathWatch, WatchError> {
    let dir = store.dir().to_owned();
    let spec = Spec {
        what: "policy",
        resolve: Box::new(move || Targets {
            folders: BTreeSet::from([dir.clone()]),
            // Any file in the folder may be a policy; `check` skips unchanged sets.
            names: HashSet::new(),
        }),
        debounce: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        safety_net: SAFETY_NET,
    };
    let store = Arc::clone(store);
    PathWatch::spawn(spec, move || {
        // The outcome is kept in the store's status and reported through its hook.
        let _ = store.check();
    })
}

/// The device and inode `path` names now, following symlinks; `None` if it names nothing.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The folder holding `file`, as written (`.` for a bare name).
pub(crate) fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests;
