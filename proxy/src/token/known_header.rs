//! Known JOSE headers (SECURITY-SENSITIVE: part of token verification).
//!
//! Every token one minter signs with one SVID carries the same header segment, and that segment
//! is most of the token: its `x5c` chain. With a transaction per request the receiver meets a
//! new token each time, and decoding the header, its certificates, and hashing them for the
//! chain cache would be done again for every one of them. Here it is done once per segment:
//!
//! - what is kept is exactly what parsing the segment gives ([`HopHeader`], the hashes of its
//!   certificates), keyed by the segment's exact bytes: a segment that differs in one byte is
//!   another key, parsed afresh by the same code. Nothing is kept for a segment that does not
//!   parse, so every refusal is reached the way it always was;
//! - nothing here is trusted: the chain is still judged by the chain cache (with its expiry)
//!   and the SPIFFE verifier, the signature or the channel still authenticates each token;
//! - SHA-256 of the segment and its `.` is kept too, so a token's hash (the verified cache's
//!   and the relay set's key, and a child's `prv`) continues from there instead of rehashing
//!   the header.
//!
//! The set is small and bounded: [`CAPACITY`] segments of at most 16 KiB each; when it is full
//! it starts over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::digest::{self, Context};

use crate::token::jws::HopHeader;
use crate::token::sha256;

/// How many header segments are kept: one per minting SVID is enough.
const CAPACITY: usize = 64;

/// What parsing one header segment gave.
pub(crate) struct KnownHeader {
    /// The parsed header.
    pub(crate) header: HopHeader,
    /// SHA-256 of the `x5c` entries' hashes: the chain cache's key.
    pub(crate) chain_key: [u8; 32],
    /// SHA-256 of the leaf certificate's DER.
    pub(crate) leaf_sha256: [u8; 32],
    /// SHA-256 having taken the segment and its `.`.
    hashed: Context,
}

/// The header segments seen, by their bytes.
#[derive(Default)]
pub(crate) struct KnownHeaders {
    entries: Mutex<HashMap<Box<str>, Arc<KnownHeader>>>,
}

// === impl KnownHeader ===

impl KnownHeader {
    /// What `segment` parsed as `header` gives.
    pub(crate) fn new(segment: &str, header: HopHeader) -> Self {
        let mut entries = Vec::with_capacity(header.x5c.len() * 32);
        for der in &header.x5c {
            entries.extend_from_slice(&sha256(der));
        }
        let mut leaf_sha256 = [0; 32];
        if let Some(first) = entries.get(..32) {
            leaf_sha256.copy_from_slice(first);
        }
        let mut hashed = Context::new(&digest::SHA256);
        hashed.update(segment.as_bytes());
        hashed.update(b".");
        Self {
            header,
            chain_key: sha256(&entries),
            leaf_sha256,
            hashed,
        }
    }

    /// SHA-256 of `compact`, a token whose header segment is this one.
    pub(crate) fn hash_of(&self, compact: &str, segment_len: usize) -> [u8; 32] {
        let mut hashed = self.hashed.clone();
        hashed.update(
            compact
                .as_bytes()
                .get(segment_len.saturating_add(1)..)
                .unwrap_or_default(),
        );
        let mut out = [0; 32];
        // INVARIANT: a SHA-256 digest is 32 bytes, so the lengths match.
        out.copy_from_slice(hashed.finish().as_ref());
        out
    }
}

// === impl KnownHeaders ===

impl KnownHeaders {
    /// The parse of `segment`, if it was seen.
    pub(crate) fn get(&self, segment: &str) -> Option<Arc<KnownHeader>> {
        self.lock().get(segment).cloned()
    }

    /// Keeps what `segment` parsed to.
    pub(crate) fn insert(&self, segment: &str, known: Arc<KnownHeader>) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(Box::from(segment), known);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<KnownHeader>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many segments are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
