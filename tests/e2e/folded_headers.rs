//! Every spelling that folds into the token header (`hop_token`, any case) is stripped in both
//! directions (CHA-04b): CGI, WSGI and nginx-style apps read `hop_token` as `hop-token`, so a
//! copy that was never verified must not reach them, nor the next hop. The outbound direction
//! is tested against a destination that is not hopgate, in tests/e2e/outbound_edge.rs.

use crate::support::client::{Client, Proto};
use crate::support::workload::{Workloads, workload_id};

pub(crate) const SPELLINGS: [&str; 3] = ["hop_token", "HOP_TOKEN", "Hop_Token"];

#[tokio::test]
async fn folded_spellings_of_the_token_header_from_a_peer_never_reach_the_app_cha_04b() {
    let mesh = Workloads::new();
    let crm = mesh.workload("crm").start().await;
    let caller = mesh.ca.leaf(&workload_id("agent")).build();
    for proto in [Proto::H1, Proto::H2] {
        let client = Client::with_svid(&caller.chain_pem, &caller.key_pem, proto);
        let headers: Vec<(&str, &str)> = SPELLINGS.iter().map(|s| (*s, "forged")).collect();
        let reply = client
            .get(crm.inbound.unwrap(), "/", &headers)
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    for request in crm.app.received() {
        assert!(
            request.headers.get("hop_token").is_none(),
            "{:?}",
            request.headers
        );
        assert!(
            request.headers.get("hop-token").is_none(),
            "no token was sent"
        );
        // The verified XFCC is there, once.
        assert_eq!(
            request
                .headers
                .get_all("x-forwarded-client-cert")
                .iter()
                .count(),
            1
        );
    }
}
