//! Signed audit logs (`telemetry.audit.sign: true`): the audit records on stdout are sealed in
//! batches, each seal a line of its own, target `hopgate::audit.seal`, after its records.
//!
//! ```text
//!  record() ──line──▶ its SHA-256, before the stdout lock ──▶ Batch (under it: 32 bytes into the root)
//!  writer thread ──due?──▶ Batch::take ──▶ Chain::seal (seq, prev, sign with the current SVID)
//!                                           └─▶ the seal line, written after the batch's records
//! ```
//!
//! A seal says how many records came since the previous seal (`count`), the SHA-256 over the
//! SHA-256 of each of those lines as written, in order (`root`), the first [`DIGEST_LEN`] bytes
//! of each line's SHA-256 (`digests`, so a verifier can name the record that is missing,
//! altered, moved or added), the SHA-256 of the previous seal line (`prev`), the records lost to a full
//! buffer (`dropped`), and a signature by the SVID's key with the SVID's chain (`x5c`). The
//! signature covers [`signing_input`]. [`verify`] checks a log offline.
//!
//! The request path only hashes; the signature is made on the writer thread.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::digest::{Context, SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;

use crate::tls::Identity;
use crate::token::{Signer, sha256};

pub mod verify;

/// The `target` of an audit record line.
pub const RECORD_TARGET: &str = "hopgate::audit";

/// The `target` of a seal line.
pub const SEAL_TARGET: &str = "hopgate::audit.seal";

/// How long the first unsealed record waits for its seal, at most.
pub const SEAL_AFTER: Duration = Duration::from_secs(1);

/// How many unsealed records make a seal due at once.
pub const SEAL_EVERY: u64 = 1024;

/// The first line of every signing input: names the format, so a seal's signature can never be
/// taken for the signature of anything else the SVID's key signs.
pub const SIGNING_CONTEXT: &str = "hopgate-audit-seal-v1";

/// How many bytes of each record's SHA-256 `digests` keeps.
pub const DIGEST_LEN: usize = 8;

/// Where the writer takes the identity to sign with, at each seal: the current SVID, or `None`
/// while there is none (a withdrawn Workload API SVID).
pub type KeySource = Box<dyn Fn() -> Option<Arc<Identity>> + Send + Sync>;

/// The records appended since the last seal; kept under the stdout writer's lock.
pub(crate) struct Batch {
    count: u64,
    root: Context,
    digests: Vec<u8>,
    /// When the first record (or loss) of the batch happened.
    since: Option<Instant>,
    dropped: u64,
}

/// When the writer thread has a seal to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing is unsealed.
    Idle,
    /// At this instant.
    At(Instant),
    /// Now.
    Now,
}

/// A batch taken for sealing: what the seal line states about its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub(crate) count: u64,
    pub(crate) root: [u8; 32],
    pub(crate) digests: Vec<u8>,
    pub(crate) dropped: u64,
}

/// The fields a seal's signature covers, as they are written in the line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SealFields<'a> {
    pub(crate) seq: u64,
    pub(crate) count: u64,
    pub(crate) dropped: u64,
    pub(crate) prev: Option<&'a str>,
    pub(crate) root: &'a str,
    pub(crate) digests: &'a str,
    pub(crate) timestamp: &'a str,
    pub(crate) alg: &'a str,
}

/// The seal chain of this process: its sequence number, the previous seal line's hash, and the
/// signer of the current identity. Used by the writer thread only.
#[derive(Default)]
pub(crate) struct Chain {
    seq: u64,
    prev: Option<[u8; 32]>,
    source: Option<KeySource>,
    /// The identity last signed with and its parsed key (`None`: the key cannot sign).
    signer: Option<(Arc<Identity>, Option<Signer>)>,
}

/// A seal line (without its newline), and the WARN to log once it is written, if any.
#[derive(Debug)]
pub(crate) struct SealOutput {
    pub(crate) line: Vec<u8>,
    pub(crate) warning: Option<&'static str>,
}

/// The seal line's shape, field for field in the documented order.
#[derive(Serialize)]
struct Line<'a> {
    timestamp: &'a str,
    level: &'static str,
    target: &'static str,
    seq: u64,
    count: u64,
    dropped: u64,
    prev: Option<&'a str>,
    root: &'a str,
    digests: &'a str,
    alg: Option<&'a str>,
    sig: Option<&'a str>,
    x5c: &'a [String],
}

/// The bytes a seal's signature covers: the UTF-8 of
/// `hopgate-audit-seal-v1\n{seq}\n{count}\n{dropped}\n{prev or empty}\n{root}\n{digests}\n{timestamp}\n{alg}`.
pub(crate) fn signing_input(fields: &SealFields<'_>) -> String {
    let SealFields {
        seq,
        count,
        dropped,
        prev,
        root,
        digests,
        timestamp,
        alg,
    } = *fields;
    let prev = prev.unwrap_or("");
    format!(
        "{SIGNING_CONTEXT}\n{seq}\n{count}\n{dropped}\n{prev}\n{root}\n{digests}\n{timestamp}\n{alg}"
    )
}

/// The SHA-256 of one record line (without its newline): what the root takes of it. Computed by
/// the request, before the stdout lock, so the lock is held for 32 bytes of hashing a record.
pub(crate) fn line_digest(line: &[u8]) -> [u8; 32] {
    sha256(line)
}

/// The first [`DIGEST_LEN`] bytes of a line's SHA-256: what `digests` lists of it.
pub(crate) fn short_digest(digest: &[u8; 32]) -> [u8; DIGEST_LEN] {
    digest.first_chunk().copied().unwrap_or_default()
}

// === impl Batch ===

impl Batch {
    pub(crate) fn new() -> Self {
        Self {
            count: 0,
            root: Context::new(&SHA256),
            digests: Vec::new(),
            since: None,
            dropped: 0,
        }
    }

    /// Adds one record line by its [`line_digest`]. Returns whether a seal is due now because
    /// the batch is full.
    pub(crate) fn add(&mut self, digest: &[u8; 32]) -> bool {
        self.root.update(digest);
        self.digests.extend_from_slice(&short_digest(digest));
        self.count = self.count.saturating_add(1);
        self.since.get_or_insert_with(Instant::now);
        self.count >= SEAL_EVERY
    }

    /// Counts one record lost to a full buffer.
    pub(crate) fn lost(&mut self) {
        self.dropped = self.dropped.saturating_add(1);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether nothing waits for a seal.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0 && self.dropped == 0
    }

    /// When this batch is to be sealed.
    pub(crate) fn due(&self, now: Instant) -> Due {
        let Some(since) = self.since.filter(|_| !self.is_empty()) else {
            return Due::Idle;
        };
        let at = since + SEAL_AFTER;
        if self.count >= SEAL_EVERY || now >= at {
            Due::Now
        } else {
            Due::At(at)
        }
    }

    /// Takes the batch for its seal and starts the next one.
    pub(crate) fn take(&mut self) -> Sealed {
        let done = std::mem::replace(self, Self::new());
        let mut root = [0; 32];
        let digest = done.root.finish();
        if let Some(bytes) = digest.as_ref().first_chunk::<32>() {
            root = *bytes;
        }
        Sealed {
            count: done.count,
            root,
            digests: done.digests,
            dropped: done.dropped,
        }
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("count", &self.count)
            .field("dropped", &self.dropped)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

// === impl Chain ===

impl Chain {
    /// Sign every later seal with what `source` returns at that time.
    pub(crate) fn set_source(&mut self, source: KeySource) {
        self.source = Some(source);
        self.signer = None;
    }

    /// The seal line for `sealed`, stamped `at`, next in this process's chain.
    pub(crate) fn seal(&mut self, sealed: &Sealed, at: SystemTime) -> SealOutput {
        let timestamp = crate::time::rfc3339(at);
        let prev = self.prev.map(|prev| URL_SAFE_NO_PAD.encode(prev));
        let root = URL_SAFE_NO_PAD.encode(sealed.root);
        let digests = URL_SAFE_NO_PAD.encode(&sealed.digests);
        let seq = self.seq;
        let identity = self.source.as_ref().and_then(|source| source());
        let mut warning = None;
        let mut signed: Option<(&'static str, String, Vec<String>)> = None;
        match identity {
            None => warning = Some("no SVID to sign the audit seal with: the seal is unsigned"),
            Some(identity) => match self.signer_for(identity) {
                None => {
                    warning =
                        Some("the SVID's key cannot sign the audit seal: the seal is unsigned");
                }
                Some((signer, chain)) => {
                    let alg = signer.alg().as_str();
                    let input = signing_input(&SealFields {
                        seq,
                        count: sealed.count,
                        dropped: sealed.dropped,
                        prev: prev.as_deref(),
                        root: &root,
                        digests: &digests,
                        timestamp: &timestamp,
                        alg,
                    });
                    match signer.sign(input.as_bytes()) {
                        Ok(sig) => signed = Some((alg, URL_SAFE_NO_PAD.encode(sig), chain)),
                        Err(_) => {
                            warning = Some("signing the audit seal failed: the seal is unsigned")
                        }
                    }
                }
            },
        }
        let (alg, sig, x5c) = match &signed {
            Some((alg, sig, x5c)) => (Some(*alg), Some(sig.as_str()), x5c.as_slice()),
            None => (None, None, [].as_slice()),
        };
        let line = Line {
            timestamp: &timestamp,
            level: "INFO",
            target: SEAL_TARGET,
            seq: self.seq,
            count: sealed.count,
            dropped: sealed.dropped,
            prev: prev.as_deref(),
            root: &root,
            digests: &digests,
            alg,
            sig,
            x5c,
        };
        // Plain fields into a Vec: serialising cannot fail.
        let line = serde_json::to_vec(&line).unwrap_or_default();
        self.prev = Some(sha256(&line));
        self.seq = self.seq.saturating_add(1);
        SealOutput { line, warning }
    }

    /// The signer and the `x5c` of `identity`, parsed once per identity.
    fn signer_for(&mut self, identity: Arc<Identity>) -> Option<(&Signer, Vec<String>)> {
        let current = self
            .signer
            .as_ref()
            .is_some_and(|(known, _)| Arc::ptr_eq(known, &identity));
        if !current {
            let signer = Signer::from_svid(identity.svid()).ok();
            self.signer = Some((identity, signer));
        }
        let (identity, signer) = self.signer.as_ref()?;
        let chain = identity
            .svid()
            .chain()
            .iter()
            .map(|der| STANDARD.encode(der))
            .collect();
        signer.as_ref().map(|signer| (signer, chain))
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("seq", &self.seq)
            .field("source", &self.source.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
