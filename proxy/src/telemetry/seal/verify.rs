//! The offline check of a sealed audit log (`hopgate audit verify`): pure, on a file's bytes.
//!
//! A line counts if, from its first `{`, it is a JSON object whose `target` is
//! [`RECORD_TARGET`] or [`SEAL_TARGET`]; the bytes from that `{` to the end of the line are what
//! was hashed. Every other line is a log line and is skipped, so raw stdout and log output with
//! a prefix per line both verify.
//!
//! The walk stops at the first break: a seal out of sequence, a `prev` that does not match, a
//! batch of records that does not match its seal (the digests name the record), a bad
//! signature, an `x5c` that does not verify at the seal's own timestamp, a signer whose SPIFFE
//! ID changes within a run, records dropped, records after the last seal, an unsigned seal.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::Duration;

use aws_lc_rs::digest::{Context, SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hopgate_config::SpiffeId;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    DIGEST_LEN, RECORD_TARGET, SEAL_TARGET, SealFields, line_digest, short_digest, signing_input,
};
use crate::tls::SpiffeClientVerifier;
use crate::tls::svid_profile::{self, Usage};
use crate::token::{Alg, LeafKey, MAX_X5C, RejectReason, sha256, verify_signature};

/// Checks a seal's `x5c` chain (leaf first) as an SVID at the seal's time.
pub trait ChainCheck {
    /// The leaf's SPIFFE ID when `chain` verifies at `at`; why not otherwise.
    ///
    /// # Errors
    /// A description of why the chain does not verify.
    fn verify_chain(&self, chain: &[CertificateDer<'_>], at: UnixTime) -> Result<SpiffeId, String>;
}

impl ChainCheck for SpiffeClientVerifier {
    fn verify_chain(&self, chain: &[CertificateDer<'_>], at: UnixTime) -> Result<SpiffeId, String> {
        let (leaf, intermediates) = chain.split_first().ok_or("`x5c` is empty")?;
        self.verify_svid(leaf, intermediates, at)
            .map_err(|err| err.to_string())
    }
}

/// What an intact log holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Audit records, all sealed.
    pub records: u64,
    /// Seals.
    pub seals: u64,
    /// Runs: a run starts at a seal with `seq` 0 (one process's output).
    pub runs: u64,
    /// The SPIFFE IDs that signed, in order of first appearance.
    pub signers: Vec<SpiffeId>,
    /// How many distinct SVIDs (leaf certificates) signed.
    pub svids: usize,
    /// Whether the signers' chains were verified against bundles; without, the signatures
    /// were checked against each seal's own `x5c` leaf only.
    pub trusted: bool,
}

/// Where and why a log is not intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// The line (1-based) at fault; `None` for the file as a whole.
    pub line: Option<usize>,
    /// What is wrong.
    pub what: String,
}

/// One line that counts.
enum Entry<'a> {
    Record(&'a [u8]),
    Seal(&'a [u8]),
}

/// A seal line, decoded.
struct Seal {
    seq: u64,
    count: u64,
    dropped: u64,
    prev: Option<String>,
    root: [u8; 32],
    root_text: String,
    digests: Vec<[u8; DIGEST_LEN]>,
    digests_text: String,
    timestamp: String,
    at: UnixTime,
    signature: Option<Signature>,
}

/// A seal's `alg`, `sig` and `x5c` (leaf first).
struct Signature {
    alg: Alg,
    sig: Vec<u8>,
    x5c: Vec<CertificateDer<'static>>,
}

/// The state of the walk through one file.
#[derive(Default)]
struct Walk<'a> {
    /// Records since the last seal: line number and bytes.
    pending: Vec<(usize, &'a [u8])>,
    /// The last seal: its `seq`, the SHA-256 of its line, its line number.
    last: Option<(u64, [u8; 32], usize)>,
    /// The signer of the current run and the line of its first seal.
    run_signer: Option<(SpiffeId, usize)>,
    leaves: BTreeSet<[u8; 32]>,
    records: u64,
    seals: u64,
    runs: u64,
    signers: Vec<SpiffeId>,
}

/// The only field read from a line to classify it.
#[derive(Deserialize)]
struct Target<'a> {
    #[serde(borrow)]
    target: Option<Cow<'a, str>>,
}

/// Verifies a log. With `chains`, each seal's `x5c` must verify against it at the seal's
/// timestamp; without, signatures are checked against each seal's leaf only, and the report
/// says the signer is not trusted.
///
/// # Errors
/// The first [`Break`].
pub fn verify(contents: &[u8], chains: Option<&dyn ChainCheck>) -> Result<Report, Break> {
    let mut walk = Walk::default();
    for (index, line) in contents.split(|&b| b == b'\n').enumerate() {
        let number = index.saturating_add(1);
        match classify(line) {
            None => {}
            Some(Entry::Record(bytes)) => walk.pending.push((number, bytes)),
            Some(Entry::Seal(bytes)) => walk.seal(number, bytes, chains)?,
        }
    }
    if let Some(&(line, _)) = walk.pending.first() {
        let n = walk.pending.len();
        let what = if n == 1 {
            "1 record at the end is not sealed".to_owned()
        } else {
            format!("{n} records at the end are not sealed")
        };
        return Err(at(line, what));
    }
    if walk.seals == 0 {
        return Err(Break {
            line: None,
            what: "no audit records and no seals: nothing to verify".to_owned(),
        });
    }
    Ok(Report {
        records: walk.records,
        seals: walk.seals,
        runs: walk.runs,
        signers: walk.signers,
        svids: walk.leaves.len(),
        trusted: chains.is_some(),
    })
}

/// The SPIFFE ID in the leaf of the first signed seal, unverified: to pick the bundle of the
/// signer's trust domain before verifying.
pub fn first_signer(contents: &[u8]) -> Option<SpiffeId> {
    contents
        .split(|&b| b == b'\n')
        .filter_map(|line| match classify(line) {
            Some(Entry::Seal(bytes)) => parse_seal(bytes).ok(),
            _ => None,
        })
        .find_map(|seal| {
            let leaf = seal.signature?.x5c.into_iter().next()?;
            svid_profile::check_leaf(&leaf, Usage::ClientAuth)
                .ok()
                .map(|leaf| leaf.id)
        })
}

fn at(line: usize, what: impl Into<String>) -> Break {
    Break {
        line: Some(line),
        what: what.into(),
    }
}

/// The record or seal a line holds, from its first `{`; `None` for a log line.
fn classify(line: &[u8]) -> Option<Entry<'_>> {
    let start = line.iter().position(|&b| b == b'{')?;
    let json = line.get(start..)?;
    if !json
        .windows(RECORD_TARGET.len())
        .any(|w| w == RECORD_TARGET.as_bytes())
    {
        return None;
    }
    let probe: Target<'_> = serde_json::from_slice(json).ok()?;
    match probe.target.as_deref() {
        Some(RECORD_TARGET) => Some(Entry::Record(json)),
        Some(SEAL_TARGET) => Some(Entry::Seal(json)),
        _ => None,
    }
}

// === impl Walk ===

impl<'a> Walk<'a> {
    fn seal(
        &mut self,
        line: usize,
        bytes: &'a [u8],
        chains: Option<&dyn ChainCheck>,
    ) -> Result<(), Break> {
        let seal = parse_seal(bytes).map_err(|what| at(line, format!("malformed seal: {what}")))?;
        self.sequence(line, &seal)?;
        check_records(&self.pending, &seal, line)?;
        let Some(Signature { alg, sig, x5c }) = &seal.signature else {
            return Err(at(
                line,
                "seal not signed (the sidecar had no SVID to sign it with)",
            ));
        };
        let leaf = x5c
            .first()
            .ok_or_else(|| at(line, "malformed seal: `x5c` is empty"))?;
        let key = LeafKey::parse(leaf).ok_or_else(|| {
            at(
                line,
                "malformed seal: the `x5c` leaf is not a certificate with a key hopgate signs with",
            )
        })?;
        let input = signing_input(&SealFields {
            seq: seal.seq,
            count: seal.count,
            dropped: seal.dropped,
            prev: seal.prev.as_deref(),
            root: &seal.root_text,
            digests: &seal.digests_text,
            timestamp: &seal.timestamp,
            alg: alg.as_str(),
        });
        verify_signature(*alg, &key, input.as_bytes(), sig).map_err(|reason| match reason {
            RejectReason::Alg => at(
                line,
                format!("bad signature: `alg` {alg} does not fit the x5c leaf's key"),
            ),
            _ => at(
                line,
                "bad signature: the seal does not verify with its x5c leaf's key",
            ),
        })?;
        let id = match chains {
            Some(chains) => chains.verify_chain(x5c, seal.at).map_err(|why| {
                at(
                    line,
                    format!(
                        "x5c does not verify against the bundles at {}: {why}",
                        seal.timestamp
                    ),
                )
            })?,
            None => {
                svid_profile::check_leaf(leaf, Usage::ClientAuth)
                    .map_err(|err| at(line, format!("the x5c leaf is not an SVID: {err}")))?
                    .id
            }
        };
        match &self.run_signer {
            Some((signer, first)) if *signer != id => {
                return Err(at(
                    line,
                    format!(
                        "signer changed within a run: {signer} (seal at line {first}), now {id}"
                    ),
                ));
            }
            Some(_) => {}
            None => self.run_signer = Some((id.clone(), line)),
        }
        if seal.dropped > 0 {
            let n = seal.dropped;
            let what = if n == 1 {
                "1 record was dropped before this seal (when_full: drop)".to_owned()
            } else {
                format!("{n} records were dropped before this seal (when_full: drop)")
            };
            return Err(at(line, what));
        }
        if !self.signers.contains(&id) {
            self.signers.push(id);
        }
        self.leaves.insert(sha256(leaf));
        self.last = Some((seal.seq, sha256(bytes), line));
        self.records = self.records.saturating_add(seal.count);
        self.seals = self.seals.saturating_add(1);
        self.pending.clear();
        Ok(())
    }

    /// `seq` and `prev`: 0 and `null` start a run; otherwise the previous seal's successor.
    fn sequence(&mut self, line: usize, seal: &Seal) -> Result<(), Break> {
        if seal.seq == 0 {
            if seal.prev.is_some() {
                return Err(at(line, "malformed seal: `prev` is not null at seq 0"));
            }
            self.runs = self.runs.saturating_add(1);
            self.run_signer = None;
            return Ok(());
        }
        let Some((seq, hash, last_line)) = self.last else {
            return Err(at(
                line,
                format!(
                    "seal missing or reordered: the first seal is seq {}, not 0",
                    seal.seq
                ),
            ));
        };
        if Some(seal.seq) != seq.checked_add(1) {
            return Err(at(
                line,
                format!(
                    "seal missing or reordered: seq {} after seq {seq} (line {last_line})",
                    seal.seq
                ),
            ));
        }
        if seal.prev.as_deref() != Some(URL_SAFE_NO_PAD.encode(hash).as_str()) {
            return Err(at(
                line,
                format!(
                    "seal altered or a seal missing: `prev` does not match the seal at line {last_line}"
                ),
            ));
        }
        Ok(())
    }
}

/// The batch's records against the seal's `count` and `root`; on a mismatch the digests say
/// which record is missing, altered, moved or added.
fn check_records(pending: &[(usize, &[u8])], seal: &Seal, seal_line: usize) -> Result<(), Break> {
    let digests: Vec<[u8; 32]> = pending.iter().map(|(_, r)| line_digest(r)).collect();
    let mut root = Context::new(&SHA256);
    for digest in &digests {
        root.update(digest);
    }
    let matches = u64::try_from(pending.len()).is_ok_and(|n| n == seal.count)
        && root.finish().as_ref() == seal.root.as_slice();
    if matches {
        return Ok(());
    }
    let actual: Vec<[u8; DIGEST_LEN]> = digests.iter().map(short_digest).collect();
    let sealed = &seal.digests;
    let first = actual
        .iter()
        .zip(sealed)
        .position(|(a, s)| a != s)
        .unwrap_or(actual.len().min(sealed.len()));
    let here = pending.get(first).map(|&(line, _)| line);
    let missing =
        format!("record missing (the seal at line {seal_line} lists one that is not here)");
    let inserted = format!("record inserted (not in the seal at line {seal_line})");
    let rest =
        |list: &[[u8; DIGEST_LEN]], digest| list.get(first..).is_some_and(|l| l.contains(digest));
    match (actual.get(first), sealed.get(first), here) {
        (Some(a), Some(s), Some(line)) => {
            let what = match (rest(sealed, a), rest(&actual, s)) {
                (true, true) => format!(
                    "records reordered (the seal at line {seal_line} lists them in another order)"
                ),
                (true, false) => missing,
                (false, true) => inserted,
                (false, false) => {
                    format!("record altered (it is not the one the seal at line {seal_line} lists)")
                }
            };
            Err(at(line, what))
        }
        (Some(_), None, Some(line)) => Err(at(line, inserted)),
        (None, Some(_), _) => Err(at(seal_line, missing)),
        _ => Err(at(
            seal_line,
            "seal altered: its `root` does not match the records its digests list",
        )),
    }
}

/// Decodes a seal line; the error names the field at fault.
fn parse_seal(bytes: &[u8]) -> Result<Seal, String> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) else {
        return Err("not a JSON object".to_owned());
    };
    let number = |name: &str| {
        map.get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("`{name}` is not a whole number"))
    };
    let (seq, count, dropped) = (number("seq")?, number("count")?, number("dropped")?);
    let prev = match map.get("prev") {
        Some(Value::Null) => None,
        Some(Value::String(prev)) if decoded(prev).is_some_and(|p| p.len() == 32) => {
            Some(prev.clone())
        }
        _ => return Err("`prev` is neither null nor base64url of 32 bytes".to_owned()),
    };
    let root_text = text(&map, "root")?;
    let root = decoded(&root_text)
        .and_then(|root| <[u8; 32]>::try_from(root).ok())
        .ok_or("`root` is not base64url of 32 bytes")?;
    let digests_text = text(&map, "digests")?;
    let raw = decoded(&digests_text).ok_or("`digests` is not base64url")?;
    let (chunks, remainder) = raw.as_chunks::<DIGEST_LEN>();
    if !remainder.is_empty() || u64::try_from(chunks.len()).ok() != Some(count) {
        return Err(format!(
            "`digests` does not hold {DIGEST_LEN} bytes for each of the `count` ({count}) records"
        ));
    }
    let timestamp = text(&map, "timestamp")?;
    let at =
        time::OffsetDateTime::parse(&timestamp, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
            .map(|secs| UnixTime::since_unix_epoch(Duration::from_secs(secs)))
            .ok_or("`timestamp` is not an RFC 3339 time")?;
    Ok(Seal {
        seq,
        count,
        dropped,
        prev,
        root,
        root_text,
        digests: chunks.to_vec(),
        digests_text,
        timestamp,
        at,
        signature: signature(&map)?,
    })
}

/// `alg`, `sig` and `x5c`: all set, or all null and empty (an unsigned seal).
fn signature(map: &Map<String, Value>) -> Result<Option<Signature>, String> {
    let Some(Value::Array(x5c)) = map.get("x5c") else {
        return Err("`x5c` is not a list".to_owned());
    };
    match (map.get("alg"), map.get("sig")) {
        (Some(Value::Null), Some(Value::Null)) if x5c.is_empty() => return Ok(None),
        (Some(Value::String(_)), Some(Value::String(_))) => {}
        _ => return Err("`alg`, `sig` and `x5c` are neither all set nor all empty".to_owned()),
    }
    let alg = map
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .filter(|alg| *alg != Alg::Rs256)
        .ok_or("`alg` is not ES256, ES384, PS256 or EdDSA")?;
    let sig = map
        .get("sig")
        .and_then(Value::as_str)
        .and_then(decoded)
        .ok_or("`sig` is not base64url")?;
    if x5c.is_empty() || x5c.len() > MAX_X5C {
        return Err(format!("`x5c` does not hold 1 to {MAX_X5C} certificates"));
    }
    let chain = x5c
        .iter()
        .map(|entry| {
            entry
                .as_str()
                .and_then(|text| STANDARD.decode(text).ok())
                .map(CertificateDer::from)
                .ok_or("`x5c` holds an entry that is not standard base64")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Signature {
        alg,
        sig,
        x5c: chain,
    }))
}

fn text(map: &Map<String, Value>, name: &str) -> Result<String, String> {
    map.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("`{name}` is not a string"))
}

fn decoded(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests;
