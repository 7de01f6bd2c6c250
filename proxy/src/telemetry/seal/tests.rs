#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hopgate_config::WhenFull;
use serde_json::Value;

use super::*;
use crate::telemetry::stdout::StdoutWriter;
use crate::test_util::pki::Ca;
use crate::tls::Identity;
use crate::token::{Alg, LeafKey, verify_signature};

const ID: &str = "spiffe://example.org/ns/ml/sa/inference";

fn identity(ca: &Ca) -> Arc<Identity> {
    Arc::new(Identity::new(
        ca.leaf(ID).build().svid(),
        Ca::bundles(&[ca]),
    ))
}

fn chain_signed_by(identity: Arc<Identity>) -> Chain {
    let mut chain = Chain::default();
    chain.set_source(Box::new(move || Some(Arc::clone(&identity))));
    chain
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn record(n: usize) -> String {
    format!(r#"{{"level":"INFO","target":"hopgate::audit","decision_id":"d-{n}"}}"#)
}

/// The lines of `out` that are seals, parsed.
fn seals(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == SEAL_TARGET)
        .collect()
}

/// The documented root: SHA-256 over the SHA-256 of each record line, in order.
fn root_of(lines: &[&str]) -> [u8; 32] {
    let digests: Vec<u8> = lines.iter().flat_map(|l| sha256(l.as_bytes())).collect();
    sha256(&digests)
}

#[test]
fn a_batch_seals_the_sha256_of_its_lines_sha256s_and_an_8_byte_digest_of_each() {
    let mut batch = Batch::new();
    assert!(batch.is_empty());
    assert!(!batch.add(&sha256(b"first")));
    assert!(!batch.add(&sha256(b"second")));
    let sealed = batch.take();
    assert_eq!(sealed.count, 2);
    assert_eq!(sealed.root, root_of(&["first", "second"]));
    let mut digests = sha256(b"first")[..8].to_vec();
    digests.extend_from_slice(&sha256(b"second")[..8]);
    assert_eq!(sealed.digests, digests);
    assert_eq!(sealed.dropped, 0);
    assert!(batch.is_empty(), "take starts the next batch");
    assert_eq!(batch.take().root, sha256(b""));
}

#[test]
fn a_batch_is_due_after_one_second_or_at_1024_records() {
    let mut batch = Batch::new();
    assert_eq!(batch.due(Instant::now()), Due::Idle);
    batch.add(&sha256(b"one"));
    let now = Instant::now();
    assert!(matches!(batch.due(now), Due::At(at) if at > now));
    assert_eq!(batch.due(now + SEAL_AFTER), Due::Now);
    for _ in 1..SEAL_EVERY - 1 {
        assert!(!batch.add(&sha256(b"more")));
    }
    assert!(
        batch.add(&sha256(b"the 1024th")),
        "a full batch is due at once"
    );
    assert_eq!(batch.due(Instant::now()), Due::Now);
}

#[test]
fn the_signing_input_is_the_documented_fields_one_a_line() {
    let fields = SealFields {
        seq: 3,
        count: 12,
        dropped: 1,
        prev: None,
        root: "ROOT",
        digests: "DIGESTS",
        timestamp: "2026-12-03T06:45:01Z",
        alg: "ES256",
    };
    assert_eq!(
        signing_input(&fields),
        "hopgate-audit-seal-v1\n3\n12\n1\n\nROOT\nDIGESTS\n2026-12-03T06:45:01Z\nES256"
    );
    let fields = SealFields {
        prev: Some("PREV"),
        ..fields
    };
    assert_eq!(
        signing_input(&fields),
        "hopgate-audit-seal-v1\n3\n12\n1\nPREV\nROOT\nDIGESTS\n2026-12-03T06:45:01Z\nES256"
    );
}

#[test]
fn a_seal_line_has_the_documented_fields_in_order_and_its_leaf_verifies_it() {
    let ca = Ca::new("example.org");
    let identity = identity(&ca);
    let mut chain = chain_signed_by(Arc::clone(&identity));
    let mut batch = Batch::new();
    batch.add(&sha256(b"a record"));
    let out = chain.seal(&batch.take(), SystemTime::now());
    assert_eq!(out.warning, None);
    let line = String::from_utf8(out.line.clone()).unwrap();
    let order = [
        "timestamp",
        "level",
        "target",
        "seq",
        "count",
        "dropped",
        "prev",
        "root",
        "digests",
        "alg",
        "sig",
        "x5c",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|name| line.find(&format!("\"{name}\":")).unwrap())
        .collect();
    assert!(positions.is_sorted(), "{line}");
    assert!(line.starts_with("{\"timestamp\":"), "{line}");
    let seal: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(seal.as_object().unwrap().len(), order.len(), "{line}");
    assert_eq!(seal["level"], "INFO");
    assert_eq!(seal["target"], "hopgate::audit.seal");
    assert_eq!(seal["seq"], 0);
    assert_eq!(seal["count"], 1);
    assert_eq!(seal["prev"], Value::Null);
    assert_eq!(seal["root"], b64(&root_of(&["a record"])));
    assert_eq!(seal["alg"], "ES256");
    let leaf = identity.svid().leaf().unwrap();
    assert_eq!(seal["x5c"][0], STANDARD.encode(leaf));

    let input = signing_input(&SealFields {
        seq: 0,
        count: 1,
        dropped: 0,
        prev: None,
        root: seal["root"].as_str().unwrap(),
        digests: seal["digests"].as_str().unwrap(),
        timestamp: seal["timestamp"].as_str().unwrap(),
        alg: "ES256",
    });
    let sig = URL_SAFE_NO_PAD
        .decode(seal["sig"].as_str().unwrap())
        .unwrap();
    let key = LeafKey::parse(leaf).unwrap();
    verify_signature(Alg::Es256, &key, input.as_bytes(), &sig).unwrap();

    let next = chain.seal(&Batch::new().take(), SystemTime::now());
    let next: Value = serde_json::from_slice(&next.line).unwrap();
    assert_eq!(next["seq"], 1);
    assert_eq!(next["prev"], b64(&sha256(&out.line)));
}

#[test]
fn without_an_identity_the_seal_is_unsigned_and_warned_about() {
    let mut chain = Chain::default();
    chain.set_source(Box::new(|| None));
    let out = chain.seal(&Batch::new().take(), SystemTime::now());
    assert!(out.warning.is_some());
    let seal: Value = serde_json::from_slice(&out.line).unwrap();
    assert_eq!(seal["alg"], Value::Null);
    assert_eq!(seal["sig"], Value::Null);
    assert_eq!(seal["x5c"], serde_json::json!([]));
}

/// A sealing writer without its thread, signing with a fresh SVID.
fn sealing_writer(capacity: usize, when_full: WhenFull) -> &'static StdoutWriter {
    let writer = StdoutWriter::detached(capacity, when_full, true);
    let identity = identity(&Ca::new("example.org"));
    writer.seal_with(move || Some(Arc::clone(&identity)));
    writer
}

fn append(writer: &'static StdoutWriter, n: usize) {
    writer.record(record(n).as_bytes());
}

#[test]
fn the_writer_seals_1024_records_at_once_after_the_last_of_them() {
    let writer = sealing_writer(1 << 20, WhenFull::Refuse);
    for n in 0..1024 {
        append(writer, n);
    }
    let mut out = Vec::new();
    writer.drain(&mut out);
    let text = String::from_utf8(out.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1025);
    let seal: Value = serde_json::from_str(lines[1024]).unwrap();
    assert_eq!(seal["target"], SEAL_TARGET);
    assert_eq!(seal["count"], 1024);
    assert_eq!(seal["root"], b64(&root_of(&lines[..1024])));
}

#[test]
fn the_writer_wakes_on_its_own_to_seal_a_quiet_batch_after_one_second() {
    let writer = sealing_writer(1 << 20, WhenFull::Refuse);
    append(writer, 1);
    let mut out = Vec::new();
    writer.drain(&mut out);
    assert!(
        seals(&out).is_empty(),
        "the record is written before its seal is due"
    );
    let started = Instant::now();
    writer.drain(&mut out);
    let waited = started.elapsed();
    assert!(waited > Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let seals = seals(&out);
    assert_eq!(seals.len(), 1);
    assert_eq!(seals[0]["count"], 1);
    assert!(String::from_utf8(out).unwrap().starts_with(&record(1)));
}

#[test]
fn a_flush_asks_for_the_seal_at_once_and_log_lines_are_not_sealed() {
    let writer = sealing_writer(1 << 20, WhenFull::Refuse);
    append(writer, 1);
    writer.log_line(b"{\"target\":\"hopgate_proxy\",\"message\":\"a log line\"}\n");
    append(writer, 2);
    // No thread drains this writer: the flush asks for the seal and gives up after its limit.
    writer.flush(Duration::from_millis(10));
    let started = Instant::now();
    let mut out = Vec::new();
    writer.drain(&mut out);
    assert!(started.elapsed() < Duration::from_millis(500));
    let text = String::from_utf8(out.clone()).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    let seals = seals(&out);
    assert_eq!(seals[0]["count"], 2, "{text}");
    assert_eq!(seals[0]["root"], b64(&root_of(&[&record(1), &record(2)])));
}

#[test]
fn records_lost_to_a_full_buffer_are_counted_in_the_next_seal() {
    let writer = sealing_writer(4096, WhenFull::Drop);
    let mut kept = 0;
    while writer.record(&[b'a'; 100]) == crate::telemetry::stdout::Kept::Buffered {
        kept += 1;
    }
    writer.record(b"a");
    writer.flush(Duration::from_millis(10));
    let mut out = Vec::new();
    writer.drain(&mut out);
    let seals = seals(&out);
    assert_eq!(seals[0]["count"], kept);
    assert_eq!(seals[0]["dropped"], 2);
}

#[test]
fn without_sign_nothing_is_hashed_and_no_seal_is_written() {
    let writer = StdoutWriter::detached(1 << 20, WhenFull::Refuse, false);
    for n in 0..1100 {
        append(writer, n);
    }
    writer.flush(Duration::from_millis(10));
    let mut out = Vec::new();
    writer.drain(&mut out);
    assert!(seals(&out).is_empty());
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1100);
}
