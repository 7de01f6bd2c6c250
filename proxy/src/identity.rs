//! The identity source: where this workload's SVID and trust bundles come from, and the one
//! place everything derived from them is published.
//!
//! ```text
//!  identity.svid + identity.bundles (files.rs) ── watch / SIGHUP ──▶ IdentityStore::check
//!  identity.workload_api (workload_api.rs) ── FetchX509SVID stream ──▶ IdentityStore::update
//!      │ Identity (the same SVID and bundle checks for both)
//!      ▼
//!  IdentitySnapshot::build (snapshot.rs): server config, token verifier, minter, route clients
//!      │ one atomic swap (or, when the Workload API withdraws the SVID, none at all)
//!      ▼
//!  IdentityStore::snapshot() ── accept (per connection), admit (per request), /identity
//! ```
//!
//! An update is built whole off the request path and published with one swap; readers see the
//! old snapshot or the new one, never a mix. A bad update keeps the last good snapshot and is
//! reported (WARN line, metric, [`IdentityStore::last_reload`], `/identity`). A rotation
//! applies to new handshakes and new tokens; connections already established keep what they
//! proved. When the Workload API withdraws the SVID (or sends an expired one) nothing is
//! published: new handshakes and requests fail closed and `/ready` is 503 until an SVID comes
//! back. hopgate never falls back to an older identity.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use hopgate_config::FileIdentity;

use crate::telemetry::metrics::{IdentitySourceLabel, ProxyMetrics, ReloadResult, UpdateResult};
use crate::tls::Identity;
use crate::watch::{self, PathWatch, Spec, WatchError};

mod files;
mod snapshot;
pub(crate) mod workload_api;

use files::{IdentityFiles, file_targets};
pub use snapshot::{Derived, IdentityError, IdentitySnapshot};
pub use workload_api::WorkloadApiTask;

/// The live identity snapshot, swapped whole on every update.
pub struct IdentityStore {
    source: Source,
    derived: Derived,
    metrics: Arc<ProxyMetrics>,
    // INVARIANT: `None` only for a Workload API source whose SVID was withdrawn or expired.
    published: ArcSwapOption<IdentitySnapshot>,
    /// Counts the snapshots published: a peer chain verified under an older one is verified
    /// again (open streams, and new requests on connections made before it).
    generation: AtomicU64,
    last_reload: ArcSwap<ReloadStatus>,
    // INVARIANT: held for the whole of a reload, so two reloads (watcher, SIGHUP) cannot
    // publish out of order. Holds the digest of the bytes the last attempt read, for `check`.
    reloading: Mutex<[u8; 32]>,
}

/// Where the identity comes from.
#[derive(Debug)]
enum Source {
    Files(IdentityFiles),
    WorkloadApi { socket: String },
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
    /// The files (or the Workload API's update) were refused; the previous identity stays in
    /// use.
    Failed {
        /// Why, naming the file (or the part of the response) at fault.
        error: String,
    },
    /// The Workload API withdrew the SVID or sent an expired one: no identity is in use.
    Withdrawn {
        /// What the Workload API said.
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
        Ok(Self::with(
            Source::Files(files),
            published,
            derived,
            metrics,
            digest,
        ))
    }

    /// A store whose first snapshot came from the Workload API at `socket`.
    fn from_workload_api(
        socket: String,
        first: IdentitySnapshot,
        derived: Derived,
        metrics: Arc<ProxyMetrics>,
    ) -> Arc<Self> {
        let source = Source::WorkloadApi { socket };
        Self::with(source, first, derived, metrics, [0; 32])
    }

    fn with(
        source: Source,
        first: IdentitySnapshot,
        derived: Derived,
        metrics: Arc<ProxyMetrics>,
        digest: [u8; 32],
    ) -> Arc<Self> {
        metrics.set_svid_expiry(first.identity().svid().not_after());
        let label = source.label();
        metrics.register_identity_source(label);
        metrics.record_identity_update(label, UpdateResult::Ok);
        Arc::new(Self {
            source,
            derived,
            metrics,
            published: ArcSwapOption::from_pointee(first),
            generation: AtomicU64::new(0),
            last_reload: ArcSwap::from_pointee(ReloadStatus::now(ReloadOutcome::Applied)),
            reloading: Mutex::new(digest),
        })
    }

    /// The snapshot in use now: load it once per connection or request and take every piece
    /// from it. `None` while the Workload API has withdrawn this workload's SVID: refuse then.
    pub fn snapshot(&self) -> Option<Arc<IdentitySnapshot>> {
        self.published.load_full()
    }

    /// How many snapshots were published after the first. Read it before the snapshot: a
    /// chain verified under the snapshot then counts as verified under this generation or a
    /// later one, never an earlier one.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// `files` or `workload_api`.
    pub fn source(&self) -> &'static str {
        self.source.label().as_str()
    }

    /// The Workload API's address, for that source.
    pub fn socket(&self) -> Option<&str> {
        match &self.source {
            Source::Files(_) => None,
            Source::WorkloadApi { socket } => Some(socket),
        }
    }

    /// Re-reads every file; on success publishes the new snapshot, on failure keeps the last
    /// good one, logs a warning and counts the failure.
    ///
    /// # Errors
    /// The [`IdentityError`] that made the new files unusable (the store is unchanged).
    /// For the Workload API source there is nothing to re-read: its updates are pushed.
    ///
    /// # Errors
    /// The [`IdentityError`] that made the new files unusable (the store is unchanged).
    pub fn reload(&self) -> Result<(), IdentityError> {
        let Source::Files(files) = &self.source else {
            return Ok(());
        };
        let mut seen = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *seen = files.digest();
        self.publish(build(files, &self.derived))
    }

    /// Publishes a Workload API update: its identity, or why it cannot be used.
    fn update(&self, update: Result<Identity, IdentityError>) {
        let _serial = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let built = update.and_then(|identity| IdentitySnapshot::build(identity, &self.derived));
        let _ = self.publish(built);
    }

    /// Publishes `built`, or keeps the last good snapshot and reports why not; the caller
    /// holds `reloading`. An expired SVID from the Workload API withdraws the identity.
    fn publish(&self, built: Result<IdentitySnapshot, IdentityError>) -> Result<(), IdentityError> {
        let source = self.source.label();
        match built {
            Ok(published) => {
                let svid = published.identity().svid();
                let not_after = crate::time::rfc3339(svid.not_after());
                tracing::info!(identity.source = source.as_str(), svid.id = %svid.id(), svid.not_after = %not_after, "identity reloaded");
                self.metrics.set_svid_expiry(svid.not_after());
                self.count(ReloadResult::Ok, UpdateResult::Ok);
                self.published.store(Some(Arc::new(published)));
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.last_reload
                    .store(Arc::new(ReloadStatus::now(ReloadOutcome::Applied)));
                Ok(())
            }
            Err(error) if error.is_expired() && source == IdentitySourceLabel::WorkloadApi => {
                self.withdraw(&error.to_string());
                Err(error)
            }
            Err(error) => {
                tracing::warn!(identity.source = source.as_str(), %error, "identity reload failed; keeping the last good identity");
                self.count(ReloadResult::Error, UpdateResult::Error);
                self.last_reload
                    .store(Arc::new(ReloadStatus::now(ReloadOutcome::Failed {
                        error: error.to_string(),
                    })));
                Err(error)
            }
        }
    }

    /// No identity at all from now on, until the Workload API sends a usable SVID again: the
    /// SVID was withdrawn (`error` says how) or has expired.
    fn withdraw(&self, error: &str) {
        if self.published.load().is_none() {
            // Still withdrawn: the reopened stream said it again. Nothing changed to report.
            tracing::debug!(%error, "the identity is still withdrawn");
            return;
        }
        tracing::warn!(
            identity.source = self.source.label().as_str(),
            %error,
            "the identity was withdrawn; new connections are refused until an SVID comes back"
        );
        self.published.store(None);
        self.count(ReloadResult::Error, UpdateResult::Withdrawn);
        self.last_reload
            .store(Arc::new(ReloadStatus::now(ReloadOutcome::Withdrawn {
                error: error.to_owned(),
            })));
    }

    fn count(&self, reload: ReloadResult, update: UpdateResult) {
        if matches!(self.source, Source::Files(_)) {
            self.metrics.record_identity_reload(reload);
        }
        self.metrics
            .record_identity_update(self.source.label(), update);
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
        let Source::Files(files) = &self.source else {
            return Ok(false);
        };
        let mut seen = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let digest = files.digest();
        if *seen == digest {
            return Ok(false);
        }
        // Under the same lock as the comparison: the files are hashed once per check.
        *seen = digest;
        self.publish(build(files, &self.derived)).map(|()| true)
    }

    /// Watches the SVID and bundle files (see [`crate::watch`]) and calls
    /// [`check`](Self::check) ~250 ms after the last change. Dropping the guard stops watching.
    ///
    /// # Errors
    /// [`WatchError`] naming the folder that could not be watched.
    pub fn spawn_watcher(self: &Arc<Self>) -> Result<Option<PathWatch>, WatchError> {
        let Source::Files(files) = &self.source else {
            return Ok(None);
        };
        let files = files.paths();
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
        .map(Some)
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
            .field("source", &self.source)
            .field("derived", &self.derived)
            .field("snapshot", &self.snapshot())
            .field("last_reload", &self.last_reload())
            .finish_non_exhaustive()
    }
}

impl Source {
    fn label(&self) -> IdentitySourceLabel {
        match self {
            Self::Files(_) => IdentitySourceLabel::Files,
            Self::WorkloadApi { .. } => IdentitySourceLabel::WorkloadApi,
        }
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

    /// The error that refused the update or withdrew the identity, if any.
    pub fn error(&self) -> Option<&str> {
        match &self.outcome {
            ReloadOutcome::Applied => None,
            ReloadOutcome::Failed { error } | ReloadOutcome::Withdrawn { error } => Some(error),
        }
    }

    /// `ok`, `error` or `withdrawn`, as `/identity` and the metric say it.
    pub fn result(&self) -> &'static str {
        match &self.outcome {
            ReloadOutcome::Applied => UpdateResult::Ok.as_str(),
            ReloadOutcome::Failed { .. } => UpdateResult::Error.as_str(),
            ReloadOutcome::Withdrawn { .. } => UpdateResult::Withdrawn.as_str(),
        }
    }
}

#[cfg(test)]
mod tests;
