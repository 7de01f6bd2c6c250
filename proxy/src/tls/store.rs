//! `IdentityStore`: the live identity snapshot and inbound server config, reloaded from files.
//!
//! A reload reads every file and builds the new [`Identity`] and `ServerConfig` off the hot
//! path, then publishes both with one atomic swap; readers see the old pair or the new pair,
//! never a mix. A bad file keeps the last good pair in use and is reported (log, metric,
//! [`IdentityStore::last_reload`]). The acceptor takes [`IdentityStore::server_config`] per
//! accepted connection, so a rotation applies to new handshakes while connections already
//! established keep the config they were accepted with.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hopgate_config::{FileIdentity, TrustDomain};
use rustls::ServerConfig;

use crate::telemetry::metrics::{ProxyMetrics, ReloadResult};
use sha2::{Digest, Sha256};

use crate::tls::{Identity, SpiffeClientVerifier, TlsError, inbound_server_config};
use crate::watch::{self, PathWatch, Spec, Targets, WatchError};

/// The current identity and inbound TLS config, swapped whole on reload.
pub struct IdentityStore {
    files: IdentityFiles,
    allowed: Vec<TrustDomain>,
    metrics: Arc<ProxyMetrics>,
    published: ArcSwap<Published>,
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

/// The files an identity is read from.
#[derive(Clone, Debug)]
pub(crate) struct IdentityFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) bundles: BTreeMap<TrustDomain, PathBuf>,
}

/// What readers see: an identity and the server config built from it.
struct Published {
    identity: Arc<Identity>,
    server_config: Arc<ServerConfig>,
    /// The same SVID rules as the handshake, for certificates outside it (a hop token's x5c).
    client_verifier: Arc<SpiffeClientVerifier>,
}

// === impl IdentityStore ===

impl IdentityStore {
    /// Loads the identity files and builds the inbound config accepting the `allowed` domains.
    ///
    /// # Errors
    /// Any [`Identity::load`] or [`inbound_server_config`] error: at startup a bad file is fatal.
    pub fn load(
        files: &FileIdentity,
        allowed: Vec<TrustDomain>,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Arc<Self>, TlsError> {
        let files = IdentityFiles {
            cert: files.cert().to_owned(),
            key: files.key().to_owned(),
            bundles: files.bundles().clone(),
        };
        Self::from_files(files, allowed, metrics)
    }

    pub(crate) fn from_files(
        files: IdentityFiles,
        allowed: Vec<TrustDomain>,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Arc<Self>, TlsError> {
        // Read before the load: a write in between makes the next `check` reload once more.
        let digest = files.digest();
        let published = Published::build(&files, &allowed)?;
        metrics.set_svid_expiry(published.identity.svid().not_after());
        Ok(Arc::new(Self {
            files,
            allowed,
            metrics,
            published: ArcSwap::from_pointee(published),
            last_reload: ArcSwap::from_pointee(ReloadStatus::now(ReloadOutcome::Applied)),
            reloading: Mutex::new(digest),
        }))
    }

    /// The identity in use now.
    pub fn current(&self) -> Arc<Identity> {
        Arc::clone(&self.published.load().identity)
    }

    /// The inbound server config in use now; take it once per accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.published.load().server_config)
    }

    /// The SVID verifier of the current bundles and allowed trust domains: a hop token's x5c
    /// chain is judged by it. A new one after every bundle reload.
    pub fn client_verifier(&self) -> Arc<SpiffeClientVerifier> {
        Arc::clone(&self.published.load().client_verifier)
    }

    /// The identity in use now with the SVID verifier of the same snapshot, read together so a
    /// reload between two reads cannot pair one identity with another's bundles.
    pub fn current_with_verifier(&self) -> (Arc<Identity>, Arc<SpiffeClientVerifier>) {
        let published = self.published.load();
        (
            Arc::clone(&published.identity),
            Arc::clone(&published.client_verifier),
        )
    }

    /// Re-reads every file; on success publishes the new identity and server config together,
    /// on failure keeps the last good pair, logs a warning and counts the failure.
    ///
    /// # Errors
    /// The [`TlsError`] that made the new files unusable (the store is unchanged).
    pub fn reload(&self) -> Result<(), TlsError> {
        let mut seen = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *seen = self.files.digest();
        self.publish()
    }

    /// Builds and publishes the files' identity; the caller holds `reloading`.
    fn publish(&self) -> Result<(), TlsError> {
        match Published::build(&self.files, &self.allowed) {
            Ok(published) => {
                let svid = published.identity.svid();
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
    pub fn check(&self) -> Result<bool, TlsError> {
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

/// The folders holding `files`, both as written and where their symlinks lead (a file linked
/// from elsewhere is written there), and the file names in both.
fn file_targets(files: &[PathBuf]) -> Targets {
    let mut targets = Targets::default();
    for file in files {
        let resolved = std::fs::canonicalize(file).ok();
        for path in std::iter::once(file).chain(resolved.as_ref()) {
            targets.folders.insert(watch::parent(path));
            if let Some(name) = path.file_name() {
                targets.names.insert(name.to_owned());
            }
        }
    }
    targets
}

impl fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityStore")
            .field("files", &self.files)
            .field("allowed", &self.allowed)
            .field("identity", &self.current())
            .field("last_reload", &self.last_reload())
            .finish_non_exhaustive()
    }
}

// === impl IdentityFiles ===

impl IdentityFiles {
    fn paths(&self) -> Vec<PathBuf> {
        [&self.cert, &self.key]
            .into_iter()
            .chain(self.bundles.values())
            .cloned()
            .collect()
    }

    /// SHA-256 over every file's bytes (an unreadable file counts as its error), so `check`
    /// can tell whether anything changed without parsing.
    fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for path in self.paths() {
            hasher.update(path.as_os_str().as_encoded_bytes());
            match std::fs::read(&path) {
                Ok(bytes) => {
                    hasher.update([0]);
                    hasher.update((bytes.len() as u64).to_be_bytes());
                    hasher.update(&bytes);
                }
                Err(error) => {
                    hasher.update([1]);
                    hasher.update(error.to_string().as_bytes());
                }
            }
        }
        hasher.finalize().into()
    }
}

// === impl Published ===

impl Published {
    fn build(files: &IdentityFiles, allowed: &[TrustDomain]) -> Result<Self, TlsError> {
        let identity = Identity::load(&files.cert, &files.key, &files.bundles)?;
        let server_config = inbound_server_config(&identity, allowed)?;
        let client_verifier = Arc::new(SpiffeClientVerifier::new(identity.bundles(), allowed)?);
        Ok(Self {
            identity: Arc::new(identity),
            server_config,
            client_verifier,
        })
    }
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
