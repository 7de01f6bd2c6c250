#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hopgate_config::TrustDomain;

use super::*;
use crate::telemetry::seal::{Batch, Chain};
use crate::test_util::pki::Ca;
use crate::tls::Identity;

mod never_panics;

const ID: &str = "spiffe://example.org/ns/ml/sa/inference";

/// A log written as the sidecar writes one: records, log lines and seals by a [`Chain`] whose
/// identity the test can swap.
struct Log {
    lines: Vec<String>,
    batch: Batch,
    chain: Chain,
    signer: Arc<Mutex<Option<Arc<Identity>>>>,
    records: usize,
}

impl Log {
    fn new(identity: Arc<Identity>) -> Self {
        let signer = Arc::new(Mutex::new(Some(identity)));
        let mut log = Self {
            lines: Vec::new(),
            batch: Batch::new(),
            chain: Chain::default(),
            signer: Arc::clone(&signer),
            records: 0,
        };
        log.chain
            .set_source(Box::new(move || signer.lock().unwrap().clone()));
        log
    }

    /// A new process starting on the same output: its chain starts at seq 0.
    fn restart(&mut self) {
        let signer = Arc::clone(&self.signer);
        self.chain = Chain::default();
        self.chain
            .set_source(Box::new(move || signer.lock().unwrap().clone()));
    }

    fn records(&mut self, n: usize) -> &mut Self {
        for _ in 0..n {
            self.records += 1;
            let line = format!(
                r#"{{"timestamp":"2026-12-03T06:45:01Z","level":"INFO","target":"hopgate::audit","decision_id":"d-{}","effect":"allow"}}"#,
                self.records
            );
            self.batch.add(&sha256(line.as_bytes()));
            self.lines.push(line);
        }
        self
    }

    fn log_line(&mut self, line: &str) -> &mut Self {
        self.lines.push(line.to_owned());
        self
    }

    fn seal_at(&mut self, at: SystemTime) -> &mut Self {
        let sealed = self.batch.take();
        let out = self.chain.seal(&sealed, at);
        self.lines.push(String::from_utf8(out.line).unwrap());
        self
    }

    fn seal(&mut self) -> &mut Self {
        self.seal_at(SystemTime::now())
    }

    fn sign_with(&mut self, identity: Option<Arc<Identity>>) -> &mut Self {
        *self.signer.lock().unwrap() = identity;
        self
    }

    fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

struct Pki {
    ca: Ca,
    checker: SpiffeClientVerifier,
}

impl Pki {
    fn new() -> Self {
        let ca = Ca::new("example.org");
        let td = TrustDomain::parse("example.org").unwrap();
        let checker = SpiffeClientVerifier::new(&Ca::bundles(&[&ca]), &[td]).unwrap();
        Self { ca, checker }
    }

    fn identity(&self, id: &str) -> Arc<Identity> {
        Arc::new(Identity::new(
            self.ca.leaf(id).build().svid(),
            Ca::bundles(&[&self.ca]),
        ))
    }

    fn verify(&self, text: &str) -> Result<Report, Break> {
        verify(text.as_bytes(), Some(&self.checker))
    }
}

/// Three seals over 2, 3 and 1 records: lines 1–2 records, 3 a seal; 4–6 records, 7 a seal;
/// 8 a record, 9 a seal.
fn intact(pki: &Pki) -> Log {
    let mut log = Log::new(pki.identity(ID));
    log.records(2).seal().records(3).seal().records(1).seal();
    log
}

fn lines(log: &Log) -> Vec<String> {
    log.lines.clone()
}

fn joined(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn broken(pki: &Pki, lines: &[String]) -> Break {
    pki.verify(&joined(lines)).unwrap_err()
}

#[test]
fn an_intact_log_verifies_with_its_counts_and_signer() {
    let pki = Pki::new();
    let report = pki.verify(&intact(&pki).text()).unwrap();
    assert_eq!(report.records, 6);
    assert_eq!(report.seals, 3);
    assert_eq!(report.runs, 1);
    assert_eq!(report.signers, vec![SpiffeId::parse(ID).unwrap()]);
    assert_eq!(report.svids, 1);
    assert!(report.trusted);
}

#[test]
fn audit_verify_names_a_deleted_record_as_missing_at_its_place() {
    let pki = Pki::new();
    let mut lines = lines(&intact(&pki));
    lines.remove(4); // the second record of the second batch
    let found = broken(&pki, &lines);
    assert_eq!(found.line, Some(5), "{found:?}");
    assert_eq!(
        found.what,
        "record missing (the seal at line 6 lists one that is not here)"
    );
}

#[test]
fn audit_verify_names_the_altered_record() {
    let pki = Pki::new();
    let mut lines = lines(&intact(&pki));
    lines[4] = lines[4].replace("\"allow\"", "\"deny\"");
    let found = broken(&pki, &lines);
    assert_eq!(found.line, Some(5), "{found:?}");
    assert!(found.what.starts_with("record altered"), "{found:?}");
}

#[test]
fn audit_verify_names_two_swapped_records_as_reordered() {
    let pki = Pki::new();
    let mut lines = lines(&intact(&pki));
    lines.swap(3, 4);
    let found = broken(&pki, &lines);
    assert_eq!(found.line, Some(4), "{found:?}");
    assert!(found.what.starts_with("records reordered"), "{found:?}");
}

#[test]
fn audit_verify_names_an_inserted_record() {
    let pki = Pki::new();
    let mut lines = lines(&intact(&pki));
    let forged = lines[3].replace("d-3", "d-forged");
    lines.insert(4, forged);
    let found = broken(&pki, &lines);
    assert_eq!(found.line, Some(5), "{found:?}");
    assert_eq!(found.what, "record inserted (not in the seal at line 8)");
}

#[test]
fn a_record_missing_at_the_end_of_a_batch_is_named_at_its_seal() {
    let pki = Pki::new();
    let mut lines = lines(&intact(&pki));
    lines.remove(5);
    let found = broken(&pki, &lines);
    assert_eq!(found.line, Some(6), "{found:?}");
    assert!(found.what.starts_with("record missing"), "{found:?}");
}

#[test]
fn a_deleted_seal_is_a_seal_missing_or_reordered() {
    let pki = Pki::new();
    let mut lines = lines(&intact(&pki));
    lines.remove(6); // the second seal
    let found = broken(&pki, &lines);
    assert_eq!(found.line, Some(8), "{found:?}");
    assert!(
        found.what.starts_with("seal missing or reordered"),
        "{found:?}"
    );

    let mut lines = self::lines(&intact(&pki));
    lines.remove(2); // the first: the file no longer starts a run
    let found = broken(&pki, &lines);
    assert_eq!(found.line, Some(6), "{found:?}");
    assert!(
        found.what.starts_with("seal missing or reordered"),
        "{found:?}"
    );
}

#[test]
fn an_altered_seal_fails_its_signature() {
    let pki = Pki::new();
    let mut lines = lines(&intact(&pki));
    let seal: Value = serde_json::from_str(&lines[6]).unwrap();
    let stamp = seal["timestamp"].as_str().unwrap();
    lines[6] = lines[6].replace(stamp, "2020-01-01T00:00:00Z");
    let found = broken(&pki, &lines);
    assert_eq!(found.line, Some(7), "{found:?}");
    assert!(found.what.starts_with("bad signature"), "{found:?}");
}

#[test]
fn a_seal_signed_by_another_key_than_its_x5c_is_a_bad_signature() {
    let pki = Pki::new();
    let good = intact(&pki);
    let other = intact(&pki);
    let mut lines = lines(&good);
    let theirs: Value = serde_json::from_str(&other.lines[2]).unwrap();
    let ours: Value = serde_json::from_str(&lines[2]).unwrap();
    lines[2] = lines[2].replace(
        ours["sig"].as_str().unwrap(),
        theirs["sig"].as_str().unwrap(),
    );
    let found = broken(&pki, &lines);
    assert_eq!(found.line, Some(3), "{found:?}");
    assert!(found.what.starts_with("bad signature"), "{found:?}");
}

#[test]
fn a_signer_from_another_ca_does_not_verify_against_the_bundles() {
    let pki = Pki::new();
    let impostor = Pki::new();
    let log = intact(&impostor);
    let found = pki.verify(&log.text()).unwrap_err();
    assert_eq!(found.line, Some(3), "{found:?}");
    assert!(
        found
            .what
            .starts_with("x5c does not verify against the bundles at"),
        "{found:?}"
    );
}

#[test]
fn the_chain_is_verified_at_the_seals_timestamp_not_now() {
    let pki = Pki::new();
    let leaf = pki
        .ca
        .leaf(ID)
        .not_before(time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .build();
    let identity = Arc::new(Identity::new(leaf.svid(), Ca::bundles(&[&pki.ca])));
    let mut log = Log::new(identity);
    let before = SystemTime::now() - Duration::from_secs(2 * 3600);
    log.records(1).seal_at(before);
    let found = pki.verify(&log.text()).unwrap_err();
    assert!(found.what.starts_with("x5c does not verify"), "{found:?}");
    let mut log = Log::new(log.signer.lock().unwrap().clone().unwrap());
    log.records(1).seal();
    pki.verify(&log.text()).unwrap();
}

#[test]
fn an_svid_rotated_mid_log_verifies() {
    let pki = Pki::new();
    let mut log = Log::new(pki.identity(ID));
    log.records(2).seal();
    log.sign_with(Some(pki.identity(ID)));
    log.records(2).seal().records(1).seal();
    let report = pki.verify(&log.text()).unwrap();
    assert_eq!((report.records, report.seals, report.svids), (5, 3, 2));
    assert_eq!(report.signers.len(), 1);
}

#[test]
fn a_signer_whose_spiffe_id_changes_within_a_run_breaks() {
    let pki = Pki::new();
    let mut log = Log::new(pki.identity(ID));
    log.records(1).seal();
    log.sign_with(Some(pki.identity("spiffe://example.org/ns/ml/sa/other")));
    log.records(1).seal();
    let found = pki.verify(&log.text()).unwrap_err();
    assert_eq!(found.line, Some(4), "{found:?}");
    assert!(
        found.what.starts_with("signer changed within a run"),
        "{found:?}"
    );
}

#[test]
fn a_log_of_two_runs_one_after_another_verifies() {
    let pki = Pki::new();
    let mut log = intact(&pki);
    log.restart();
    log.records(2).seal().records(1).seal();
    let report = pki.verify(&log.text()).unwrap();
    assert_eq!((report.records, report.seals, report.runs), (9, 5, 2));
}

#[test]
fn trailing_unsealed_records_break_at_the_first_of_them() {
    let pki = Pki::new();
    let mut log = intact(&pki);
    log.records(2);
    let found = pki.verify(&log.text()).unwrap_err();
    assert_eq!(found.line, Some(10), "{found:?}");
    assert_eq!(found.what, "2 records at the end are not sealed");
}

#[test]
fn interleaved_log_lines_and_line_prefixes_are_skipped() {
    let pki = Pki::new();
    let mut log = Log::new(pki.identity(ID));
    log.log_line(
        r#"{"timestamp":"x","level":"INFO","target":"hopgate_proxy","message":"listening"}"#,
    )
    .records(1)
    .log_line("plain text, no JSON, and hopgate::audit in words")
    .log_line(r#"{"target":"hopgate::audit", broken json"#)
    .records(1)
    .seal();
    let prefixed: String = log
        .lines
        .iter()
        .map(|l| format!("2026-12-03T06:45:01.000000000Z stdout F {l}\n"))
        .collect();
    assert_eq!(pki.verify(&log.text()).unwrap().records, 2);
    assert_eq!(pki.verify(&prefixed).unwrap().records, 2);
}

#[test]
fn records_dropped_under_when_full_drop_break_at_their_seal() {
    let pki = Pki::new();
    let mut log = Log::new(pki.identity(ID));
    log.records(1);
    log.batch.lost();
    log.batch.lost();
    log.seal();
    let found = pki.verify(&log.text()).unwrap_err();
    assert_eq!(found.line, Some(2), "{found:?}");
    assert_eq!(
        found.what,
        "2 records were dropped before this seal (when_full: drop)"
    );
}

#[test]
fn an_unsigned_seal_breaks() {
    let pki = Pki::new();
    let mut log = Log::new(pki.identity(ID));
    log.records(1).seal().sign_with(None).records(1).seal();
    let found = pki.verify(&log.text()).unwrap_err();
    assert_eq!(found.line, Some(4), "{found:?}");
    assert!(found.what.starts_with("seal not signed"), "{found:?}");
}

#[test]
fn a_malformed_seal_is_a_break_naming_its_field() {
    let pki = Pki::new();
    let original = lines(&intact(&pki));
    for (from, to, field) in [
        ("\"count\":2", "\"count\":\"2\"", "`count`"),
        ("\"prev\":null", "\"prev\":\"abc\"", "`prev`"),
        ("\"alg\":\"ES256\"", "\"alg\":\"HS256\"", "`alg`"),
        ("\"x5c\":[\"", "\"x5c\":[\"%", "`x5c`"),
    ] {
        let mut lines = original.clone();
        assert!(lines[2].contains(from), "{from} in {}", lines[2]);
        lines[2] = lines[2].replace(from, to);
        let found = broken(&pki, &lines);
        assert_eq!(found.line, Some(3), "{found:?}");
        assert!(found.what.starts_with("malformed seal: "), "{found:?}");
        assert!(found.what.contains(field), "{field}: {found:?}");
    }
}

#[test]
fn without_bundles_the_hash_chain_and_signatures_are_still_checked() {
    let pki = Pki::new();
    let log = intact(&pki);
    let report = verify(log.text().as_bytes(), None).unwrap();
    assert!(!report.trusted);
    assert_eq!(report.signers, vec![SpiffeId::parse(ID).unwrap()]);
    assert_eq!(
        first_signer(log.text().as_bytes()),
        report.signers.first().cloned()
    );
    let mut lines = lines(&log);
    lines.swap(0, 1);
    let found = verify(joined(&lines).as_bytes(), None).unwrap_err();
    assert!(found.what.starts_with("records reordered"), "{found:?}");
}

#[test]
fn a_file_without_audit_lines_verifies_nothing() {
    let found = verify(b"just a log line\n", None).unwrap_err();
    assert_eq!(found.line, None);
}
