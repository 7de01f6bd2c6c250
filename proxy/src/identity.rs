//! The identity source: where this workload's SVID and trust bundles come from, and the one
//! place everything derived from them is published.
//!
//! ```text
//!  identity.svid + identity.bundles (files.rs) ── watch / SIGHUP ──▶ IdentityStore::check
//!      │ Identity::load                                               │
//!      ▼                                                              ▼
//!  IdentitySnapshot::build (snapshot.rs): server config, token verifier, minter, route clients
//!      │ one atomic swap
//!      ▼
//!  IdentityStore::snapshot() ── accept (per connection), admit (per request), /identity
//! ```
//!
//! An update is built whole off the request path and published with one swap; readers see the
//! old snapshot or the new one, never a mix. A bad update keeps the last good snapshot and is
//! reported (WARN line, metric, [`IdentityStore::last_reload`], `/identity`). A rotation
//! applies to new handshakes and new tokens; connections already established keep what they
//! proved.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hopgate_config::FileIdentity;

use crate::telemetry::metrics::{ProxyMetrics, ReloadResult};
use crate::tls::Identity;
use crate::watch::{self, PathWatch, Spec, WatchError};

mod files;
mod snapshot;

use files::{IdentityFiles, file_targets};
pub use snapshot::{Derived, IdentityError, IdentitySnapshot};

/// The live identity snapshot, swapped whole on every update.
pub struct IdentityStore {
    files: IdentityFiles,
    derived: Derived,
    metrics: Arc<ProxyMetrics>,
    published: ArcSwap<IdentitySnapshot>,
    last_reload: ArcSwap<ReloadStatus>,
    // INVARIANT: held for the whole of a reload, so two reloads (watcher, SIGHUP) cannot
    // publish out of order. Holds the digest of the bytes the last attempt read, for `check`.
    reloading: Mutex<[u8; 32]>,
}

/// When the identity was last (re)loaded and how that went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadStatus {
    at: SystemTime,
    outcome: ReloadOutcome,
}

/// How a (re)load went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files were valid and are in use.
    Applied,
    /// The files were refused; the previous identity stays in use.
    Failed {
        /// Why, naming the file at fault.
        error: String,
    },
}

// === impl IdentityStore ===

impl IdentityStore {
    /// Loads the identity files and builds what `derived` asks for.
    ///
    /// # Errors
    /// [`IdentityError`]: at startup a bad file, or an SVID that cannot sign hop tokens for
    /// the outbound side, is fatal.
    pub fn load(
        files: &FileIdentity,
        derived: Derived,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Arc<Self>, IdentityError> {
        let files = IdentityFiles {
            cert: files.cert().to_owned(),
            key: files.key().to_owned(),
            bundles: files.bundles().clone(),
        };
        Self::from_files(files, derived, metrics)
    }

    pub(crate) fn from_files(
        files: IdentityFiles,
        derived: Derived,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Arc<Self>, IdentityError> {
        // Read before the load: a write in between makes the next `check` reload once more.
        let digest = files.digest();
        let published = build(&files, &derived)?;
        metrics.set_svid_expiry(published.identity().svid().not_after());
        Ok(Arc::new(Self {
            files,
            derived,
            metrics,
            published: ArcSwap::from_pointee(published),
            last_reload: ArcSwap::from_pointee(ReloadStatus::now(ReloadOutcome::Applied)),
            reloading: Mutex::new(digest),
        }))
    }

    /// The snapshot in use now: load it once per connection or request and take every piece
    /// from it.
    pub fn snapshot(&self) -> Arc<IdentitySnapshot> {
        self.published.load_full()
    }

    /// Re-reads every file; on success publishes the new snapshot, on failure keeps the last
    /// good one, logs a warning and counts the failure.
    ///
    /// # Errors
    /// The [`IdentityError`] that made the new files unusable (the store is unchanged).
    pub fn reload(&self) -> Result<(), IdentityError> {
        let mut seen = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *seen = self.files.digest();
        self.publish()
    }

    /// Builds and publishes the files' identity; the caller holds `reloading`.
    fn publish(&self) -> Result<(), IdentityError> {
        match build(&self.files, &self.derived) {
            Ok(published) => {
                let svid = published.identity().svid();
                let not_after = crate::time::rfc3339(svid.not_after());
                tracing::info!(svid.id = %svid.id(), svid.not_after = %not_after, "identity reloaded");
                self.metrics.set_svid_expiry(svid.not_after());
                self.metrics.record_identity_reload(ReloadResult::Ok);
                self.published.store(Arc::new(published));
                self.last_reload
                    .store(Arc::new(ReloadStatus::now(ReloadOutcome::Applied)));
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "identity reload failed; keeping the last good identity");
                self.metrics.record_identity_reload(ReloadResult::Error);
                self.last_reload
                    .store(Arc::new(ReloadStatus::now(ReloadOutcome::Failed {
                        error: error.to_string(),
                    })));
                Err(error)
            }
        }
    }

    /// The time and outcome of the last load or reload.
    pub fn last_reload(&self) -> ReloadStatus {
        ReloadStatus::clone(&self.last_reload.load())
    }

    /// Reloads only if the files' bytes differ from what the last load or reload read: the
    /// form for the file watch, whose events and timer may fire without a change. Returns
    /// whether it reloaded.
    ///
    /// # Errors
    /// As [`IdentityStore::reload`], when it reloads.
    pub fn check(&self) -> Result<bool, IdentityError> {
        let mut seen = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let digest = self.files.digest();
        if *seen == digest {
            return Ok(false);
        }
        // Under the same lock as the comparison: the files are hashed once per check.
        *seen = digest;
        self.publish().map(|()| true)
    }

    /// Watches the SVID and bundle files (see [`crate::watch`]) and calls
    /// [`check`](Self::check) ~250 ms after the last change. Dropping the guard stops watching.
    ///
    /// # Errors
    /// [`WatchError`] naming the folder that could not be watched.
    pub fn spawn_watcher(self: &Arc<Self>) -> Result<PathWatch, WatchError> {
        let files = self.files.paths();
        let spec = Spec {
            what: "identity",
            resolve: Box::new(move || file_targets(&files)),
            debounce: DEBOUNCE,
            max_delay: MAX_DELAY,
            safety_net: watch::SAFETY_NET,
        };
        let store = Arc::clone(self);
        PathWatch::spawn(spec, move || {
            // The outcome is logged, counted and kept in `last_reload` by `reload` itself.
            let _ = store.check();
        })
    }
}

/// How long the identity files must be quiet before they are reloaded: a writer replaces the
/// key and the certificate one after the other.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// The longest a rotation waits for the files to go quiet.
const MAX_DELAY: Duration = Duration::from_secs(2);

impl fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityStore")
            .field("files", &self.files)
            .field("derived", &self.derived)
            .field("snapshot", &self.snapshot())
            .field("last_reload", &self.last_reload())
            .finish_non_exhaustive()
    }
}

/// Reads the files and builds their snapshot.
fn build(files: &IdentityFiles, derived: &Derived) -> Result<IdentitySnapshot, IdentityError> {
    let identity = Identity::load(&files.cert, &files.key, &files.bundles)?;
    IdentitySnapshot::build(identity, derived)
}

// === impl ReloadStatus ===

impl ReloadStatus {
    fn now(outcome: ReloadOutcome) -> Self {
        Self {
            at: SystemTime::now(),
            outcome,
        }
    }

    /// When the load or reload ran.
    pub fn at(&self) -> SystemTime {
        self.at
    }

    /// How it went.
    pub fn outcome(&self) -> &ReloadOutcome {
        &self.outcome
    }

    /// The error that refused the files, if it failed.
    pub fn error(&self) -> Option<&str> {
        match &self.outcome {
            ReloadOutcome::Applied => None,
            ReloadOutcome::Failed { error } => Some(error),
        }
    }
}

#[cfg(test)]
mod tests;
