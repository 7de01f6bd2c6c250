//! The file source of an identity: `identity.svid` and `identity.bundles`, read whole on every
//! (re)load and hashed so a watch event that changed nothing reloads nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hopgate_config::TrustDomain;
use sha2::{Digest, Sha256};

use crate::watch::{self, Targets};

/// The files an identity is read from.
#[derive(Clone, Debug)]
pub(crate) struct IdentityFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) bundles: BTreeMap<TrustDomain, PathBuf>,
}

// === impl IdentityFiles ===

impl IdentityFiles {
    pub(super) fn paths(&self) -> Vec<PathBuf> {
        [&self.cert, &self.key]
            .into_iter()
            .chain(self.bundles.values())
            .cloned()
            .collect()
    }

    /// SHA-256 over every file's bytes (an unreadable file counts as its error), so `check`
    /// can tell whether anything changed without parsing.
    pub(super) fn digest(&self) -> [u8; 32] {
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

/// The folders holding `files`, both as written and where their symlinks lead (a file linked
/// from elsewhere is written there), and the file names in both.
pub(super) fn file_targets(files: &[PathBuf]) -> Targets {
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
