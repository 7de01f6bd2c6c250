//! What the two sides' stack tests share: a test CA, a config folder with one SVID and an
//! optional Cedar file, and the pieces of a side built from that config.

use std::sync::Arc;

use hopgate_config::{Config, InboundMode, from_yaml};
use hopgate_policy::PolicyStore;

use crate::hop::{HopTelemetry, Shared};
use crate::http::authorize::Authorizer;
use crate::identity::{Derived, IdentityStore};
use crate::streams::Streams;
use crate::telemetry::audit::AuditSink;
use crate::telemetry::metrics::ProxyMetrics;
use crate::telemetry::trace::Tracing;
use crate::tls::test_support::TestCa;
use crate::token::Limits;

const SCHEMA: &str = include_str!("../../../examples/policies/schema.cedarschema");

/// A Cedar file for the fixture: its name, its text, and the `policy` section lines past
/// `dir: policies` (such as `outbound: true`).
pub(crate) struct Cedar<'a> {
    pub(crate) file: &'a str,
    pub(crate) text: &'a str,
    pub(crate) section: &'a str,
}

/// A config folder for `leaf` with `sides` as the config's side sections, and what a side
/// builds from it.
pub(crate) struct Fixture {
    pub(crate) ca: TestCa,
    pub(crate) config: Config,
    pub(crate) metrics: Arc<ProxyMetrics>,
    /// The config folder: kept so its files outlive the side.
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) fn new(leaf: &str, sides: &str, cedar: Option<Cedar<'_>>) -> Self {
        let ca = TestCa::new("example.org");
        let dir = tempfile::tempdir().unwrap();
        ca.leaf(leaf).write(dir.path());
        ca.write_bundle(dir.path(), "example.org");
        let policy_section = match cedar {
            Some(Cedar {
                file,
                text,
                section,
            }) => {
                let folder = dir.path().join("policies");
                std::fs::create_dir(&folder).unwrap();
                std::fs::write(folder.join("schema.cedarschema"), SCHEMA).unwrap();
                std::fs::write(folder.join(file), text).unwrap();
                format!("policy:\n  dir: policies\n{section}")
            }
            None => String::new(),
        };
        let yaml = format!(
            "identity:\n  svid: {{ cert: svid.pem, key: svid_key.pem }}\n  bundles: {{ example.org: example.org.pem }}\n\
             {sides}{policy_section}"
        );
        let config = from_yaml(&yaml, dir.path()).unwrap();
        Self {
            ca,
            config,
            metrics: Arc::new(ProxyMetrics::new()),
            _dir: dir,
        }
    }

    /// The identity store of the config's files, deriving what `derived` asks for.
    pub(crate) fn identity(&self, derived: Derived) -> Arc<IdentityStore> {
        let hopgate_config::IdentitySource::Files(files) = self.config.identity().source() else {
            panic!("a files identity");
        };
        IdentityStore::load(files, derived, Arc::clone(&self.metrics)).unwrap()
    }

    /// The hop token rules of the config.
    pub(crate) fn limits(&self) -> Limits {
        Limits::from(self.config.token())
    }

    /// The runner's shared stages: the config's policies (if any) decided in `mode`, no
    /// tracing, audit records kept in memory.
    pub(crate) fn shared(
        &self,
        mode: InboundMode,
        limits: &hopgate_config::InboundLimits,
        identity: &Arc<IdentityStore>,
    ) -> Shared {
        let policies = self
            .config
            .policy()
            .map(|p| PolicyStore::load(p.dir(), self.config.intent().default_action()).unwrap());
        let telemetry = HopTelemetry {
            tracing: Tracing::disabled(),
            metrics: Arc::clone(&self.metrics),
            audit: AuditSink::Memory(Arc::default()),
        };
        Shared::new(
            Authorizer::new(policies, mode, self.config.intent()).with_mcp(self.config.mcp()),
            telemetry,
            &hopgate_config::InboundTimeouts::default(),
            limits,
            Streams::new(
                self.config
                    .inbound()
                    .map_or(&hopgate_config::StreamsConfig::default(), |i| i.streams()),
                self.config.token().leeway(),
                Arc::clone(identity),
                Arc::default(),
            ),
        )
    }
}
