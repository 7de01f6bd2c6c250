//! A stdout nobody reads (a paused log shipper, a blocking container log driver) never freezes
//! the data plane or `/live`. Audit records wait in a bounded buffer written by a thread of its
//! own; when it fills, `telemetry.audit.when_full` decides: `refuse` answers new requests 503
//! `audit_unavailable` and turns `/ready` 503, `drop` serves them and counts the lost records.
//! Either way everything resumes once stdout is read again.
//!
//! The real binary runs as a child process with a 64 KiB buffer; the test stops reading its
//! stdout pipe, so the pipe (64 KiB on Linux) and then the buffer fill for real.

use std::time::Duration;

use http::StatusCode;

use crate::policy::PERMIT_EXAMPLE_ORG;
use crate::support::client::{Conn, Proto};
use crate::support::eventually::eventually;
use crate::support::proxy::{Mesh, POLICY_SCHEMA, POLICY_YAML, admin_get};
use crate::support::sidecar::Sidecar;
use crate::support::upstream::Upstream;

/// More requests than a stalled 64 KiB pipe plus a 64 KiB buffer can hold the records of.
const MAX_REQUESTS: usize = 3000;

/// A sidecar with policies (so each request writes a record) and a 64 KiB audit buffer.
async fn sidecar(mesh: &Mesh, app: &Upstream, when_full: &str) -> Sidecar {
    mesh.write_policies(&[
        ("schema.cedarschema", POLICY_SCHEMA),
        ("mesh.cedar", PERMIT_EXAMPLE_ORG),
    ]);
    let top =
        format!("{POLICY_YAML}telemetry:\n  audit: {{ when_full: {when_full}, buffer: 64KiB }}\n");
    let config = mesh.write_config(app.addr, "", &top);
    Sidecar::start(&config).await
}

/// `/live` must answer 200 at once whatever stdout does.
async fn assert_live(sidecar: &Sidecar) {
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(2), admin_get(sidecar.admin, "/live"))
            .await
            .expect("/live did not answer in 2 s");
    assert_eq!(status, 200, "{body}");
}

async fn metric(sidecar: &Sidecar, name: &str) -> f64 {
    let (_, text) = admin_get(sidecar.admin, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// One request, bounded: a request that hangs on a stalled stdout fails the test.
async fn call(conn: &mut Conn, n: usize) -> crate::support::client::Reply {
    tokio::time::timeout(Duration::from_secs(5), conn.get(&format!("/r/{n}"), &[]))
        .await
        .unwrap_or_else(|_| panic!("request {n} hung for 5 s on a stalled stdout"))
}

/// Waits (bounded) until every record of `expected` is read from stdout.
async fn wait_for_records(sidecar: &Sidecar, expected: usize) {
    let what = format!("fewer than {expected} audit records after the drain");
    eventually(Duration::from_secs(10), what, || async move {
        (sidecar.audit_lines().len() >= expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stdout_under_refuse_answers_503_audit_unavailable_until_it_is_read_again() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let sidecar = sidecar(&mesh, &app, "refuse").await;
    let mut conn = mesh
        .client("caller", Proto::H2)
        .open(sidecar.inbound)
        .await
        .unwrap();
    assert_eq!(call(&mut conn, 0).await.status, StatusCode::OK);
    wait_for_records(&sidecar, 1).await;

    sidecar.pause_stdout();
    let mut served = 1;
    let refused = loop {
        assert!(
            served < MAX_REQUESTS,
            "{served} requests served on a stalled stdout, none refused"
        );
        let reply = call(&mut conn, served).await;
        if reply.status != StatusCode::OK {
            break reply;
        }
        served += 1;
        if served % 100 == 0 {
            assert_live(&sidecar).await;
        }
    };
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json()["error"], "audit_unavailable", "{refused:?}");
    // Refused without reaching the app: the app saw only what was served.
    assert_eq!(app.received().len(), served);
    let (status, body) = admin_get(sidecar.admin, "/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit_unavailable"), "{body}");
    assert_live(&sidecar).await;
    // Still refused while nobody reads.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        call(&mut conn, served).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    sidecar.resume_stdout();
    wait_for_records(&sidecar, served).await;
    let admin = sidecar.admin;
    eventually(
        Duration::from_secs(5),
        "/ready still 503 after the drain",
        || async move { (admin_get(admin, "/ready").await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(call(&mut conn, served + 1).await.status, StatusCode::OK);
    wait_for_records(&sidecar, served + 1).await;
    // Nothing served went unrecorded, and nothing was dropped.
    assert_eq!(sidecar.audit_lines().len(), served + 1);
    assert_eq!(
        metric(&sidecar, "hopgate_audit_records_dropped_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stdout_under_drop_serves_every_request_and_counts_the_lost_records() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let sidecar = sidecar(&mesh, &app, "drop").await;
    let mut conn = mesh
        .client("caller", Proto::H1)
        .open(sidecar.inbound)
        .await
        .unwrap();
    assert_eq!(call(&mut conn, 0).await.status, StatusCode::OK);
    wait_for_records(&sidecar, 1).await;

    sidecar.pause_stdout();
    let mut served = 1;
    let mut dropped = 0.0;
    while dropped == 0.0 {
        assert!(
            served < MAX_REQUESTS,
            "{served} requests on a stalled stdout and no record dropped"
        );
        for _ in 0..50 {
            let reply = call(&mut conn, served).await;
            assert_eq!(reply.status, StatusCode::OK, "request {served}: {reply:?}");
            served += 1;
        }
        assert_live(&sidecar).await;
        let (status, body) = admin_get(sidecar.admin, "/ready").await;
        assert_eq!(status, 200, "drop never turns /ready 503: {body}");
        dropped = metric(&sidecar, "hopgate_audit_records_dropped_total").await;
    }
    // Served past the point of dropping, too.
    for _ in 0..50 {
        assert_eq!(call(&mut conn, served).await.status, StatusCode::OK);
        served += 1;
    }
    assert_eq!(app.received().len(), served);

    sidecar.resume_stdout();
    assert_eq!(call(&mut conn, served).await.status, StatusCode::OK);
    served += 1;
    let dropped = metric(&sidecar, "hopgate_audit_records_dropped_total").await;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a small count"
    )]
    let dropped = dropped as usize;
    // Every record served is either on stdout or counted as dropped.
    wait_for_records(&sidecar, served - dropped).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sidecar.audit_lines().len() + dropped,
        served,
        "{dropped} dropped"
    );
    let last = sidecar.audit_lines().pop().unwrap();
    assert_eq!(
        last["effect"], "allow",
        "recording resumed after the drain: {last}"
    );
}
