//! A hop whose caller takes its identity from the Workload API: the hop token is minted with
//! the SVID the Workload API delivered, and follows its rotation (key, `x5c` and `cnf` of the
//! new SVID, on connections made with it).

use std::time::Duration;

use http::StatusCode;

use crate::caller_rotation::{hex_sha256, xfcc};
use crate::outbound::{b64_sha256, oracle_verify, received_token};
use crate::support::eventually::eventually;
use crate::support::workload::{Workload, Workloads, workload_id};
use crate::support::workload_api::{Answer, WorkloadApiServer, response};

/// Waits until B's app receives a request whose client certificate is `cert`.
async fn wait_until_b_sees(a: &Workload, b: &Workload, cert: &[u8]) {
    let want = format!("Hash={}", hex_sha256(cert));
    eventually(
        Duration::from_secs(10),
        "B never saw A's SVID from the Workload API",
        || async {
            let reply = a.call("b.test", "/hop", &[]).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            b.app
                .received()
                .iter()
                .rev()
                .take(5)
                .any(|r| xfcc(r).contains(&want))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_caller_with_a_workload_api_svid_mints_hop_tokens_with_it_and_follows_its_rotation() {
    let mesh = Workloads::new();
    let a_id = workload_id("a");
    let first = mesh.ca.leaf(&a_id).build();
    let api = WorkloadApiServer::start(Answer::Svid(response(&first, &a_id, &mesh.ca, &[]))).await;
    let b = mesh.workload("b").start().await;
    let a = mesh
        .workload("a")
        .client_only()
        .workload_api(&api.endpoint())
        .route("b.test", &b, &["read"])
        .start()
        .await;

    // B (files) verified A's token; an independent verifier agrees: signed with the key the
    // Workload API delivered, its x5c and cnf naming that SVID's certificate.
    wait_until_b_sees(&a, &b, &first.cert_der).await;
    let claims = oracle_verify(&received_token(&b), &a_id, &b.id);
    assert_eq!(claims["cnf"]["x5t#S256"], b64_sha256(&first.cert_der));

    // A rotation to an SVID that expires in 30 s (less than token.ttl, 60 s).
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
    let next = mesh.ca.leaf(&a_id).not_after(not_after).build();
    api.push(Answer::Svid(response(&next, &a_id, &mesh.ca, &[])));
    wait_until_b_sees(&a, &b, &next.cert_der).await;
    let claims = oracle_verify(&received_token(&b), &a_id, &b.id);
    assert_eq!(claims["cnf"]["x5t#S256"], b64_sha256(&next.cert_der));
    // The token lives no longer than the SVID that minted it.
    let exp = claims["exp"].as_i64().unwrap();
    assert!(
        exp <= not_after.unix_timestamp(),
        "exp {exp} past notAfter {not_after}"
    );
}
