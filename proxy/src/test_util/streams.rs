//! The registry of open requests, driven from a bench: open requests registered as an inbound
//! side keeps them, then a policy reload and the sweep that decides every one of them again.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hopgate_config::{IdentitySource, InboundMode, SpiffeId, from_yaml};
use hopgate_policy::{Direction, PolicySnapshot, PolicyStore, TokenFacts};

use super::pki::Ca;
use crate::http::authorize::Authorizer;
use crate::identity::{Derived, IdentityStore};
use crate::streams::{
    self, OpenFacts, OpenParties, OpenText, OpenToken, Owner, Registration, Streams,
};
use crate::telemetry::audit::AuditSink;
use crate::telemetry::metrics::ProxyMetrics;
use crate::token::Limits;

const OWN: &str = "spiffe://example.org/ns/b/sa/server";

/// Open requests on one inbound side whose policies come from a folder.
pub struct OpenRequests {
    side: BenchSide,
    store: Arc<PolicyStore>,
    streams: Arc<Streams>,
    seen: Option<Arc<PolicySnapshot>>,
    open: Vec<Registration>,
    _dir: tempfile::TempDir,
}

struct BenchSide {
    authorizer: Authorizer,
    metrics: Arc<ProxyMetrics>,
    audit: AuditSink,
}

impl Owner for BenchSide {
    fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    fn records(&self) -> (&ProxyMetrics, &AuditSink) {
        (&self.metrics, &self.audit)
    }
}

impl OpenRequests {
    /// `n` open requests under the policies of `policies` (action `call`), from `peers`
    /// callers of trust domain example.org, each on a path of its own (`/v1/items/{i}`), so
    /// no decision is the memo's: every one is made again after a reload.
    pub fn new(policies: &Path, n: usize, peers: usize) -> Self {
        let ca = Ca::new("example.org");
        let dir = tempfile::tempdir().unwrap();
        ca.leaf(OWN).build().write(dir.path());
        ca.write_bundle(dir.path());
        let yaml = "identity:\n  svid: { cert: svid.pem, key: svid_key.pem }\n  bundles: { example.org: example.org.bundle.pem }\n\
                    inbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:9\n";
        let config = from_yaml(yaml, dir.path()).unwrap();
        let IdentitySource::Files(files) = config.identity().source() else {
            panic!("a files identity");
        };
        let metrics = Arc::new(ProxyMetrics::new());
        let derived = Derived {
            allowed: Vec::new(),
            limits: Limits::from(config.token()),
            mint_ttl: None,
            routes: Vec::new(),
        };
        let identity = IdentityStore::load(files, derived, Arc::clone(&metrics)).unwrap();
        let store = PolicyStore::load(policies, "call").unwrap();
        let inbound = config.inbound().unwrap();
        let streams = Arc::new(Streams::new(
            inbound.streams(),
            Duration::from_secs(5),
            identity,
            Arc::default(),
        ));
        let parties: Vec<_> = (0..peers.max(1))
            .map(|p| {
                Arc::new(OpenParties {
                    peer: Some(id(&format!("spiffe://example.org/ns/n{p}/sa/caller"))),
                    own: id(OWN),
                    dest: None,
                    peer_chain: None,
                })
            })
            .collect();
        let open = (0..n)
            .map(|i| {
                let parties = Arc::clone(&parties[i % parties.len()]);
                streams.register(streams.open(facts(parties, i), 0, Instant::now()))
            })
            .collect();
        let side = BenchSide {
            authorizer: Authorizer::new(
                Some(Arc::clone(&store)),
                InboundMode::Enforce,
                config.intent(),
            ),
            metrics,
            audit: AuditSink::Memory(Arc::default()),
        };
        let seen = side.authorizer.policy_snapshot();
        Self {
            side,
            store,
            streams,
            seen,
            open,
            _dir: dir,
        }
    }

    /// Reloads the policy folder: a new snapshot, so the next sweep decides every request.
    pub fn reload(&self) {
        self.store.reload().unwrap();
    }

    /// One sweep, as after a reload; returns how many requests are open and not cut.
    pub async fn sweep(&mut self) -> usize {
        streams::sweep(&self.side, &self.streams, &mut self.seen).await;
        self.open
            .iter()
            .filter(|open| open.open().cut_reason().is_none())
            .count()
    }
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// The facts of open request `i`: a GET of a path of its own, with a hop token for alice.
fn facts(parties: Arc<OpenParties>, i: usize) -> OpenFacts {
    let path = format!("/v1/items/{i}");
    let jti = format!("jti-{i}");
    let iss = parties.peer.as_ref().unwrap().as_str().to_owned();
    OpenFacts {
        direction: Direction::Inbound,
        parties,
        method: http::Method::GET,
        text: OpenText::new(
            [
                Some(&path),
                Some("server"),
                None,
                None,
                None,
                None,
                None,
                Some(&jti),
                None,
            ],
            &[("purpose", "support")],
        ),
        token: Some(OpenToken {
            facts: TokenFacts {
                sub: "alice".into(),
                iss,
                txn: Some(format!("txn-{i}")),
                scope: vec!["read".into()],
                actors: Vec::new(),
                tctx: Vec::new(),
            },
            hash: [0; 32],
            depth: 0,
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        }),
        client_addr: None,
        trace_id: None,
        decision_id: Arc::from(format!("d-{i}")),
    }
}
