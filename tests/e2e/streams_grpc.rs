//! A real gRPC server stream cut by a revocation (RVK-01 in docs/security.md): a tonic client
//! calls `grpc.health.v1.Health/Watch` through the caller's sidecar (h2c in, mTLS/h2 out) and
//! the server's sidecar, in front of a tonic server; revoking the call's `txn` at the server's
//! sidecar ends the client's stream with an error, not a clean end, and leaves new calls alone.
//!
//! The inbound side speaks HTTP/1.1 to its app, where hyper sends no trailer field the response
//! did not announce in `Trailer` (tonic announces none): a call's final `grpc-status` does not
//! come back, so this file asserts on the stream's messages and how it broke, not on a status.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::codec::Streaming;
use tonic::transport::{Channel, Endpoint};
use tonic_health::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;

use crate::policy::PERMIT_EXAMPLE_ORG;
use crate::support::proxy::POLICY_SCHEMA;
use crate::support::stream_app::{
    closed_sum, closed_total, cut_record, policy_status, request_record, wait_for_new_digest,
    write_into,
};
use crate::support::workload::Workloads;

const WATCH: &str = "/grpc.health.v1.Health/Watch";
const SERVICE: &str = "tickets";

/// The tonic health service on `127.0.0.1:0`, accepting the HTTP/1.1 the inbound side speaks to
/// its app as well as h2.
async fn health_server() -> (SocketAddr, HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .accept_http1(true)
            .serve_with_incoming(service, incoming)
            .await
            .unwrap();
    });
    (addr, reporter)
}

/// The next status on a watch, failing the test after 10 s of silence (a guard, not a bound).
async fn next(stream: &mut Streaming<HealthCheckResponse>) -> Result<i32, tonic::Status> {
    let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("nothing on the watch for 10 s")?;
    Ok(message.expect("the watch ended cleanly").status)
}

async fn watch(client: &mut HealthClient<Channel>) -> Streaming<HealthCheckResponse> {
    let request = HealthCheckRequest {
        service: SERVICE.to_owned(),
    };
    client.watch(request).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_01_revoking_a_txn_cuts_its_grpc_server_stream_through_both_sidecars() {
    let (app, reporter) = health_server().await;
    let mesh = Workloads::new();
    let server = mesh
        .workload("server")
        .app_at(app)
        .policy("schema.cedarschema", POLICY_SCHEMA)
        .policy("mesh.cedar", PERMIT_EXAMPLE_ORG)
        .start()
        .await;
    let caller = mesh
        .workload("caller")
        .client_only()
        .route("health.grpc", &server, &[])
        .start()
        .await;
    // h2c to the caller's outbound listener, every call addressed to the route's host.
    let channel = Endpoint::from_shared(format!("http://{}", caller.outbound))
        .unwrap()
        .origin("http://health.grpc".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    let mut cut = watch(&mut client).await;
    assert_eq!(next(&mut cut).await.unwrap(), ServingStatus::Serving as i32);
    // It streams: a change at the server arrives through both sidecars.
    reporter
        .set_service_status(SERVICE, ServingStatus::NotServing)
        .await;
    assert_eq!(
        next(&mut cut).await.unwrap(),
        ServingStatus::NotServing as i32
    );
    let request = request_record(&server.audit, "path", WATCH);
    let txn = request["txn"].as_str().unwrap().to_owned();

    let before = policy_status(server.admin).await["digest"].clone();
    let written = Instant::now();
    let entry = format!("- txn: {txn}\n  reason: incident 4711\n");
    write_into(
        &mesh.dir_of("server").join("policies"),
        "revocations.yaml",
        &entry,
    );
    let end = next(&mut cut).await;
    let latency = written.elapsed();
    eprintln!("RVK-01 gRPC: revocations.yaml written to the client's error: {latency:?} ({end:?})");
    let status = end.expect_err("the watch went on after its txn was revoked");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(latency <= Duration::from_secs(1), "took {latency:?}");
    assert_eq!(
        wait_for_new_digest(server.admin, &before).await["revocations"],
        1
    );

    cut_record(&server.audit, &request, "revoked", "unauthenticated").await;
    assert_eq!(closed_total(server.admin, "revoked").await, 1.0);
    assert_eq!(closed_sum(server.admin).await, 1.0);

    // A new call is a transaction of its own: it streams, on the same channel.
    let mut fresh = watch(&mut client).await;
    assert_eq!(
        next(&mut fresh).await.unwrap(),
        ServingStatus::NotServing as i32
    );
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    assert_eq!(
        next(&mut fresh).await.unwrap(),
        ServingStatus::Serving as i32
    );
}
