//! `PolicyStore`: the current snapshot, swapped atomically; the last good one stays on failure.
//!
//! A reload builds and fully validates a new [`PolicySnapshot`] off the request path, then swaps
//! it in with one atomic store. Readers holding the old `Arc` finish with it; nobody ever sees a
//! half-loaded folder. A broken file or a schema violation keeps the last good snapshot (CED-07)
//! and records the error for `/policy`.
//!
//! [`PolicyStore::check`] is the cheap form the proxy's folder watch calls on every change and
//! on a timer: it reads the files and reloads only when they differ from what the last attempt
//! read, so a burst of events or the periodic safety net does not rebuild an unchanged set.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::source::Sources;
use crate::{PolicyError, PolicySnapshot};

/// Called after every reload attempt with its outcome.
pub type ReloadHook = Box<dyn Fn(&ReloadOutcome<'_>) + Send + Sync>;

/// How one reload attempt went, as the hook sees it.
#[derive(Debug)]
pub enum ReloadOutcome<'a> {
    /// The new snapshot is in use.
    Applied(&'a PolicySnapshot),
    /// The folder was refused; the last good snapshot stays in use.
    Failed(&'a PolicyError),
}

/// The live policy snapshot of one folder, and how its last reload went.
pub struct PolicyStore {
    dir: PathBuf,
    default_action: String,
    current: ArcSwap<PolicySnapshot>,
    status: Mutex<PolicyReloadStatus>,
    hook: Mutex<Option<Arc<ReloadHook>>>,
    // Serialises reloads, so a slow one cannot swap an older folder over a newer one. Holds
    // what the last attempt read, for `check`.
    reloading: Mutex<Seen>,
}

/// What a load attempt read: the digest of the files, or why they could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Digest(String),
    Unreadable(String),
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
        let seen = Seen::Digest(snapshot.digest().to_owned());
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            default_action: default_action.to_owned(),
            current: ArcSwap::from_pointee(snapshot),
            status: Mutex::new(status),
            hook: Mutex::new(None),
            reloading: Mutex::new(seen),
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
        let mut seen = lock(&self.reloading);
        let sources = Sources::read(&self.dir);
        self.apply(&mut seen, sources)
    }

    /// Reloads only if the folder's files differ from what the last load or reload read (or
    /// could not be read for another reason): the form for watchers and timers, which may fire
    /// without a change. Returns whether it reloaded.
    ///
    /// # Errors
    /// As [`PolicyStore::reload`], when it reloads.
    pub fn check(&self) -> Result<bool, PolicyError> {
        let mut seen = lock(&self.reloading);
        let sources = Sources::read(&self.dir);
        if *seen == Seen::of(&sources) {
            return Ok(false);
        }
        self.apply(&mut seen, sources).map(|()| true)
    }

    fn apply(
        &self,
        seen: &mut MutexGuard<'_, Seen>,
        sources: Result<Sources, PolicyError>,
    ) -> Result<(), PolicyError> {
        **seen = Seen::of(&sources);
        let result = sources.and_then(|sources| {
            PolicySnapshot::from_sources(&sources, &self.dir, &self.default_action)
        });
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
        let result = result.map(|snapshot| {
            let snapshot = Arc::new(snapshot);
            self.current.store(Arc::clone(&snapshot));
            snapshot
        });
        // Cloned out so the hook runs without holding the status lock; the reload lock stays
        // held, so hooks see outcomes in the order they happened.
        let hook = lock(&self.hook).clone();
        if let Some(hook) = hook {
            hook(&match &result {
                Ok(snapshot) => ReloadOutcome::Applied(snapshot),
                Err(error) => ReloadOutcome::Failed(error),
            });
        }
        result.map(|_| ())
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

// === impl Seen ===

impl Seen {
    fn of(sources: &Result<Sources, PolicyError>) -> Self {
        match sources {
            Ok(sources) => Self::Digest(sources.digest.clone()),
            Err(e) => Self::Unreadable(e.to_string()),
        }
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
