//! A collector that is down or hangs never fails or slows a request: spans are dropped and
//! counted instead (docs/telemetry.md, "Request spans").

use std::time::{Duration, Instant};

use crate::support::eventually::eventually;
use crate::support::otlp::telemetry;
use crate::support::workload::{Workload, Workloads};
use crate::tracing_spans::WAIT;

/// The value of `hopgate_telemetry_spans_dropped_total` on `workload`'s admin `/metrics`.
pub(crate) async fn spans_dropped(workload: &Workload) -> u64 {
    let (status, metrics) = workload.admin_get("/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("hopgate_telemetry_spans_dropped_total "))
        .unwrap_or_else(|| panic!("no hopgate_telemetry_spans_dropped_total in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// A caller and a callee, both exporting spans to `endpoint` (the caller over gRPC, the callee
/// over HTTP), and the same pair with tracing off.
async fn traced_and_plain_pairs(mesh: &Workloads, endpoint: &str) -> [(Workload, Workload); 2] {
    let callee = mesh
        .workload("callee")
        .top_yaml(&telemetry("callee", endpoint, "http"))
        .start()
        .await;
    let caller = mesh
        .workload("caller")
        .client_only()
        .route("callee.svc", &callee, &["call"])
        .top_yaml(&telemetry("caller", endpoint, "grpc"))
        .start()
        .await;
    let plain_callee = mesh.workload("plain-callee").start().await;
    let plain_caller = mesh
        .workload("plain-caller")
        .client_only()
        .route("callee.svc", &plain_callee, &["call"])
        .start()
        .await;
    [(caller, callee), (plain_caller, plain_callee)]
}

/// One call, which must succeed; how long it took.
async fn timed_call(caller: &Workload) -> Duration {
    let start = Instant::now();
    let reply = caller.call("callee.svc", "/work", &[]).await;
    let took = start.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.body);
    took
}

fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
}

/// 50 calls through the traced pair and 50 through the plain one, interleaved so both see the
/// same machine: every traced call succeeds well inside the export timeout, and the traced
/// median stays within 2× + 5 ms of the plain one. Returns the two medians.
async fn assert_not_slowed(traced: &Workload, plain: &Workload) -> (Duration, Duration) {
    // Connections and TLS sessions are set up first, for both.
    for _ in 0..3 {
        timed_call(traced).await;
        timed_call(plain).await;
    }
    let mut traced_times = Vec::new();
    let mut plain_times = Vec::new();
    for _ in 0..50 {
        traced_times.push(timed_call(traced).await);
        plain_times.push(timed_call(plain).await);
    }
    let slowest = *traced_times.iter().max().unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "a traced call took {slowest:?}: {traced_times:?}"
    );
    let (traced_median, plain_median) = (median(traced_times), median(plain_times));
    assert!(
        traced_median <= plain_median * 2 + Duration::from_millis(5),
        "traced median {traced_median:?} vs untraced {plain_median:?}"
    );
    (traced_median, plain_median)
}

#[tokio::test]
async fn an_unreachable_collector_neither_fails_nor_slows_requests_and_counts_dropped_spans() {
    // A port nothing listens on any more.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mesh = Workloads::new();
    let [(caller, callee), (plain_caller, _plain_callee)] =
        traced_and_plain_pairs(&mesh, &format!("http://{closed}")).await;

    let (traced, plain) = assert_not_slowed(&caller, &plain_caller).await;
    eprintln!("median call: {traced:?} traced (collector down), {plain:?} untraced");

    // Both exporters (gRPC at the caller, HTTP at the callee) fail and count what they drop.
    for workload in [&caller, &callee] {
        eventually(
            Duration::from_secs(8),
            format_args!("no dropped spans counted at {}", workload.id),
            || async { (spans_dropped(workload).await > 0).then_some(()) },
        )
        .await;
    }
}

#[tokio::test]
async fn a_collector_that_accepts_but_never_answers_does_not_slow_requests() {
    // Accepts every connection and holds it, reading nothing and answering nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging = listener.local_addr().unwrap();
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = held_tx.send(stream);
        }
    });
    let mesh = Workloads::new();
    let [(caller, callee), (plain_caller, _plain_callee)] =
        traced_and_plain_pairs(&mesh, &format!("http://{hanging}")).await;

    let (traced, plain) = assert_not_slowed(&caller, &plain_caller).await;
    eprintln!("median call: {traced:?} traced (collector hangs), {plain:?} untraced");

    // The exporters did reach the collector (and are now waiting on it).
    let mut held = Vec::new();
    let deadline = Instant::now() + WAIT;
    while held.len() < 2 {
        match tokio::time::timeout_at(deadline.into(), held_rx.recv()).await {
            Ok(Some(stream)) => held.push(stream),
            _ => panic!("the exporters connected {} times", held.len()),
        }
    }
    // The sidecars still answer their admin endpoint while their exports wait.
    for workload in [&caller, &callee] {
        let (status, _) = workload.admin_get("/metrics").await;
        assert_eq!(status, 200);
    }
    // A batch that never gets an answer is dropped at its deadline (5 s, retries included),
    // and counted.
    for workload in [&caller, &callee] {
        eventually(
            Duration::from_secs(10),
            format_args!("no dropped spans counted at {}", workload.id),
            || async { (spans_dropped(workload).await > 0).then_some(()) },
        )
        .await;
    }
}
