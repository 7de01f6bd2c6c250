//! Cross-module tests of the token module: mint → verify round trips, relay chains, every
//! rejection reason, the attack cases of docs/security.md ("JWS and JWT", "Delegation and
//! actors", "Confirmation and binding"), and an independent oracle.
//! Each test names the rule it covers.

use std::time::Duration;

use hopgate_config::SpiffeId;
use serde_json::{Map, Value};

use crate::tls::Svid;
use crate::token::origin::OriginClaims;
use crate::token::test_support::{AGENT, CRM, INFERENCE, TestCa, id, verifier};
use crate::token::{MintRequest, Minter, TokenVerifier};

mod attacks;
mod channel;
mod known_header;
mod oracle;
mod rejections;
mod relay;
mod roundtrip;
mod transactions;

/// The demo mesh: one trust domain, the agent, inference and crm workloads.
struct Mesh {
    ca: TestCa,
    agent: Svid,
    inference: Svid,
    crm: Svid,
}

impl Mesh {
    fn new() -> Self {
        let ca = TestCa::new("example.org");
        Self {
            agent: ca.svid(AGENT),
            inference: ca.svid(INFERENCE),
            crm: ca.svid(CRM),
            ca,
        }
    }

    fn minter(svid: &Svid) -> Minter {
        Minter::new(svid, Duration::from_secs(60)).unwrap()
    }

    fn verifier(&self, own: &str) -> TokenVerifier {
        verifier(own, &[&self.ca])
    }
}

/// A request for `aud` with `scopes` and nothing else.
fn request<'a>(aud: &'a SpiffeId, scopes: &'a [String]) -> MintRequest<'a> {
    MintRequest {
        aud,
        parent: None,
        origin: None,
        route_scopes: scopes,
        tctx: None,
        trace: None,
    }
}

fn scopes(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    scopes(list)
}

fn tctx(purpose: &str) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("purpose".to_owned(), Value::String(purpose.to_owned()));
    map
}

/// alice's verified origin token, as the agent's outbound side would hold it.
fn alice(scope: &[&str], exp: u64) -> OriginClaims {
    OriginClaims::for_test("alice", scope, exp)
}

fn spiffe(s: &str) -> SpiffeId {
    id(s)
}
