//! What one audit record costs the request path when it is appended to the stdout buffer,
//! without and with sealing (`telemetry.audit.sign`): `append/plain`, `append/sealed` (the
//! record's SHA-256, before the buffer's lock, and its 32 bytes into the batch root under it). And
//! what the writer thread spends on one seal: `seal/1024_records` writes 1024 pending records
//! and their seal, signed with a P-256 SVID (to an `io::sink`, so no write(2) is counted).

#![allow(
    clippy::unwrap_used,
    reason = "bench setup: a failure means a broken bench, not a runtime path"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hopgate_config::WhenFull;
use hopgate_proxy::telemetry::stdout::StdoutWriter;
use hopgate_proxy::test_util::pki::Ca;
use hopgate_proxy::tls::Identity;

/// A record of the usual size (some 500 bytes), as the sidecar writes one.
const RECORD: &str = r#"{"timestamp":"2026-12-03T06:45:01.123456789Z","level":"INFO","target":"hopgate::audit","decision_id":"6f1c2a9e-8d4b-4f7a-9c3e-2b1d0a9f8e7d","effect":"allow","mode":"enforce","direction":"inbound","principal":"spiffe://example.org/ns/agents/sa/support-agent","action":"generate","resource":"spiffe://example.org/ns/ml/sa/inference","policies":["support-may-generate"],"errors":[],"reason":null,"txn":"0f9e8d7c-6b5a-4938-8271-605f4e3d2c1b","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","token_jti":"a1b2c3d4-e5f6-4789-8abc-def012345678","sub":"alice","depth":1}"#;

/// Appends `iters` records, draining the buffer (untimed) every 1000.
fn append_timed(writer: &'static StdoutWriter, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(1000);
        let start = Instant::now();
        for _ in 0..n {
            writer.record(RECORD.as_bytes());
        }
        total += start.elapsed();
        writer.drain(&mut std::io::sink());
        done += n;
    }
    total
}

fn identity() -> Arc<Identity> {
    let ca = Ca::new("example.org");
    let leaf = ca
        .leaf("spiffe://example.org/ns/ml/sa/inference")
        .build()
        .svid();
    Arc::new(Identity::new(leaf, Ca::bundles(&[&ca])))
}

fn audit_seal(c: &mut Criterion) {
    let identity = identity();
    for (name, sign) in [("append/plain", false), ("append/sealed", true)] {
        let writer = StdoutWriter::detached(64 << 20, WhenFull::Refuse, sign);
        let signer = Arc::clone(&identity);
        writer.seal_with(move || Some(Arc::clone(&signer)));
        c.bench_function(name, |b| b.iter_custom(|iters| append_timed(writer, iters)));
    }
    let writer = StdoutWriter::detached(64 << 20, WhenFull::Refuse, true);
    writer.seal_with(move || Some(Arc::clone(&identity)));
    c.bench_function("seal/1024_records", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..1024 {
                    writer.record(RECORD.as_bytes());
                }
                let start = Instant::now();
                writer.drain(&mut std::io::sink());
                total += start.elapsed();
            }
            total
        });
    });
}

criterion_group!(benches, audit_seal);
criterion_main!(benches);
