//! `PolicyStore`: the current snapshot, swapped atomically; the last good one stays on failure.
//!
//! A reload builds and fully validates a new [`PolicySnapshot`] off the request path, then swaps
//! it in with one atomic store. Readers holding the old `Arc` finish with it; nobody ever sees a
//! half-loaded folder. A broken file or a schema violation keeps the last good snapshot (CED-07)
//! and records the error for `/policy`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::{PolicyError, PolicySnapshot};

mod watcher;

pub use watcher::PolicyWatcher;

/// Called after every reload attempt with whether it succeeded.
pub type ReloadHook = Box<dyn Fn(bool) + Send + Sync>;

/// The live policy snapshot of one folder, and how its last reload went.
pub struct PolicyStore {
    dir: PathBuf,
    default_action: String,
    current: ArcSwap<PolicySnapshot>,
    status: Mutex<PolicyReloadStatus>,
    hook: Mutex<Option<Arc<ReloadHook>>>,
    // Serialises reloads, so a slow one cannot swap an older folder over a newer one.
    reloading: Mutex<()>,
}

/// How the last load or reload went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyReloadStatus {
    at: SystemTime,
    error: Option<String>,
}

// === impl PolicyStore ===

impl PolicyStore {
    /// Loads `dir` once; see [`PolicySnapshot::load`].
    ///
    /// # Errors
    /// Whatever [`PolicySnapshot::load`] returns: the first load has no last good snapshot.
    pub fn load(dir: &Path, default_action: &str) -> Result<Arc<Self>, PolicyError> {
        let snapshot = PolicySnapshot::load(dir, default_action)?;
        let status = PolicyReloadStatus {
            at: snapshot.loaded_at(),
            error: None,
        };
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            default_action: default_action.to_owned(),
            current: ArcSwap::from_pointee(snapshot),
            status: Mutex::new(status),
            hook: Mutex::new(None),
            reloading: Mutex::new(()),
        }))
    }

    /// The snapshot to authorize with. Cheap; hold it for one request.
    pub fn current(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    /// Re-reads the folder: builds and validates a new snapshot, then swaps it in. On error the
    /// last good snapshot stays. Either way the status is recorded and the hook called.
    ///
    /// # Errors
    /// Whatever [`PolicySnapshot::load`] returns.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let result = {
            let _serial = lock(&self.reloading);
            let result = PolicySnapshot::load(&self.dir, &self.default_action);
            let status = match &result {
                Ok(snapshot) => PolicyReloadStatus {
                    at: snapshot.loaded_at(),
                    error: None,
                },
                Err(e) => PolicyReloadStatus {
                    at: SystemTime::now(),
                    error: Some(e.to_string()),
                },
            };
            *lock(&self.status) = status;
            result.map(|snapshot| self.current.store(Arc::new(snapshot)))
        };
        // Cloned out so the hook runs without holding our lock.
        let hook = lock(&self.hook).clone();
        if let Some(hook) = hook {
            hook(result.is_ok());
        }
        result
    }

    /// How the last load or reload went.
    pub fn last_reload(&self) -> PolicyReloadStatus {
        lock(&self.status).clone()
    }

    /// Sets the function called after every reload attempt (the proxy counts
    /// `hopgate_policy_reloads_total{result}` with it). Replaces any earlier hook.
    pub fn set_reload_hook(&self, hook: ReloadHook) {
        *lock(&self.hook) = Some(Arc::new(hook));
    }

    /// Watches the folder (non-recursively) and reloads ~100 ms after the last change, on a
    /// thread of its own. Dropping the returned guard stops it.
    ///
    /// # Errors
    /// [`PolicyError::Watch`] when the watcher cannot start (no inotify instance left, the folder
    /// is gone).
    pub fn spawn_watcher(self: &Arc<Self>) -> Result<PolicyWatcher, PolicyError> {
        PolicyWatcher::spawn(Arc::downgrade(self), &self.dir)
    }

    /// The folder this store loads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyStore")
            .field("dir", &self.dir)
            .field("current", &self.current.load())
            .field("last_reload", &self.last_reload())
            .finish_non_exhaustive()
    }
}

// === impl PolicyReloadStatus ===

impl PolicyReloadStatus {
    /// When the attempt finished.
    pub fn at(&self) -> SystemTime {
        self.at
    }

    /// Why it failed; `None` when it succeeded.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data; the data is
/// still whole, so carry on rather than spread the panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
