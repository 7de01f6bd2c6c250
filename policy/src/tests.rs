//! Behaviour tests of the crate as the proxy uses it: a policy folder on disk, hops, decisions.
//! Each test names the rule it covers (its ID in docs/security.md), where there is one.

mod authorize;
mod load;
mod mcp;
mod reload;
mod render;
mod revocations;
mod slicing;
mod token_context;

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use crate::{Decision, Direction, HopRequest, PolicySnapshot, SpiffeId, TokenFacts};

/// A schema like the shipped one.
pub(crate) const SCHEMA: &str = r#"
namespace Hop {
  entity TrustDomain;
  entity Group in [Group];
  entity Workload in [TrustDomain, Group] { trust_domain: String, path: String };
  type HopContext = {
    direction: String,
    http: { method: String, path: String, host: String },
    intent: { purpose?: String },
    token: {
      present: Bool, enduser?: Bool, sub?: String, iss?: String, txn?: String,
      scope?: Set<String>, actors?: Set<String>, depth?: Long, origin?: String,
      tctx?: { purpose?: String },
    },
  };
  action call, generate, read_ticket, write_ticket
    appliesTo { principal: Workload, resource: Workload, context: HopContext };
}
"#;

pub(crate) const AGENT: &str = "spiffe://example.org/ns/agents/sa/agent";
pub(crate) const INFERENCE: &str = "spiffe://example.org/ns/ml/sa/inference";
pub(crate) const CRM: &str = "spiffe://example.org/ns/tools/sa/crm";
pub(crate) const FOREIGN: &str = "spiffe://other.org/ns/agents/sa/agent";

/// A policy folder in a temporary directory.
pub(crate) struct Folder {
    dir: TempDir,
}

/// A hop to decide, with owned facts; `decide` borrows them into a `HopRequest`.
#[derive(Clone, Debug)]
pub(crate) struct Hop {
    pub(crate) peer: SpiffeId,
    pub(crate) dest: SpiffeId,
    pub(crate) action: Option<String>,
    pub(crate) method: String,
    pub(crate) intent: Vec<(String, String)>,
    pub(crate) token: Option<TokenFacts>,
}

// === impl Folder ===

impl Folder {
    /// The test schema and one `policies.cedar`.
    pub(crate) fn with_policies(policies: &str) -> Self {
        Self::new(&[("schema.cedarschema", SCHEMA), ("policies.cedar", policies)])
    }

    pub(crate) fn new(files: &[(&str, &str)]) -> Self {
        let folder = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        for (name, text) in files {
            folder.write(name, text);
        }
        folder
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn write(&self, name: &str, text: &str) {
        fs::write(self.dir.path().join(name), text).unwrap();
    }

    pub(crate) fn snapshot(&self) -> PolicySnapshot {
        PolicySnapshot::load(self.path(), "call").unwrap()
    }

    pub(crate) fn load_error(&self) -> String {
        PolicySnapshot::load(self.path(), "call")
            .unwrap_err()
            .to_string()
    }
}

// === impl Hop ===

impl Hop {
    pub(crate) fn new(peer: &str, dest: &str) -> Self {
        Self {
            peer: SpiffeId::parse(peer).unwrap(),
            dest: SpiffeId::parse(dest).unwrap(),
            action: None,
            method: "GET".to_owned(),
            intent: Vec::new(),
            token: None,
        }
    }

    pub(crate) fn action(mut self, action: &str) -> Self {
        self.action = Some(action.to_owned());
        self
    }

    pub(crate) fn method(mut self, method: &str) -> Self {
        self.method = method.to_owned();
        self
    }

    pub(crate) fn intent(mut self, name: &str, value: &str) -> Self {
        self.intent.push((name.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn token(mut self, claims: serde_json::Value) -> Self {
        self.token = Some(TokenFacts::from_claims(&claims).unwrap());
        self
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&HopRequest<'_>) -> R) -> R {
        let intent: Vec<(&str, &str)> = self
            .intent
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let req = HopRequest {
            action: self.action.as_deref(),
            method: &self.method,
            path: "/v1/things",
            host: "svc.local",
            intent: &intent,
            token: self.token.as_ref(),
            ..HopRequest::new(&self.peer, &self.dest, Direction::Inbound)
        };
        f(&req)
    }

    pub(crate) fn decide(&self, snapshot: &PolicySnapshot) -> Decision {
        self.with(|req| snapshot.authorize(req))
    }
}

#[test]
fn snapshots_and_stores_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicySnapshot>();
    assert_send_sync::<crate::PolicyStore>();
    assert_send_sync::<Decision>();
}
