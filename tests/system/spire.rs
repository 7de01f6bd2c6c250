//! A real SPIRE server and agent (v1.13.3) for the system tests, and tests of that harness.
//!
//! `./test.sh setup` builds `spire-server` and `spire-agent` once into
//! `${CARGO_TARGET_DIR:-target}/tools/spire-1.13.3/bin`. Each [`SpireServer`] and [`SpireAgent`]
//! lives in a fresh temporary directory (config, data, sockets, log) and is killed on drop.
//!
//! - [`SpireServer::start`]: a server for one trust domain on free loopback ports, join-token
//!   node attestation, SQLite on disk, X.509-SVIDs of the TTL asked for (so a test sees them
//!   rotate), and a bundle endpoint (`https_spiffe`) at [`SpireServer::bundle_endpoint_url`].
//! - [`SpireAgent::start`]: an agent attested to it by a join token, with the `unix` workload
//!   attestor; workloads select their entries by uid ([`SpireServer::register`]).
//! - [`wait_for_svid`] and [`fetch_x509`]: the Workload API as seen by a uid, through
//!   `spire-agent api fetch x509` run under `setpriv`.
//! - [`SpireServer::federate_with`]: two trust domains that trust each other's bundles.
//!
//! Federation is set up the static way: each server's bundle (`bundle show -format spiffe`) is
//! set in the other (`bundle set -format spiffe -id`). A federation relationship (`federation
//! create`) would also poll the other's bundle endpoint, which matters only when a CA rotates:
//! here `ca_ttl` outlives any test, so the static bundles stay right, and the federated bundle
//! is in place the moment `federate_with` returns, with no polling to wait for or to fail.
//!
//! Every wait is bounded; a failure says what it waited for, the last error, and the tail of
//! the process's log.

use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::support::eventually::eventually;

mod process;
pub(crate) mod workload_api;

use process::{
    Failure, free_ports, go_duration, output_text, path_str, run, spawn_logged, tail, wait_healthy,
};
use workload_api::{certs_der, uri_san, validity};
pub(crate) use workload_api::{fetch_x509, wait_for_svid};

/// The SPIRE release the harness runs; `./test.sh setup` builds this one.
pub(crate) const SPIRE_VERSION: &str = "1.13.3";
/// How long a server or agent may take to become healthy, and an SVID to arrive.
const STARTUP: Duration = Duration::from_secs(30);
/// SPIRE backdates an SVID's notBefore by 10 s, and the agent renews one once (about) half its
/// lifetime is left, checking every 5 s: below this, it would renew on nearly every check.
/// SPIRE itself accepts any `default_x509_svid_ttl`.
const MIN_SVID_TTL: Duration = Duration::from_secs(15);

/// Numbers the agents of this test binary, so each has its own SPIFFE ID.
static AGENTS: AtomicUsize = AtomicUsize::new(0);

/// The directory holding `spire-server` and `spire-agent`; panics, saying how to build them,
/// when they are missing.
pub(crate) fn bin_dir() -> PathBuf {
    let dir = crate::tools::dir(&format!("spire-{SPIRE_VERSION}/bin"));
    for bin in ["spire-server", "spire-agent"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: `./test.sh setup` builds SPIRE {SPIRE_VERSION} there",
            dir.join(bin).display()
        );
    }
    dir
}

/// A running `spire-server` for one trust domain; killed on drop.
#[derive(Debug)]
pub(crate) struct SpireServer {
    child: Child,
    trust_domain: String,
    port: u16,
    bundle_port: u16,
    socket: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

impl SpireServer {
    /// Starts a server for `trust_domain` whose X.509-SVIDs live `svid_ttl` (at least 15 s), and
    /// waits until its healthcheck passes.
    pub(crate) async fn start(trust_domain: &str, svid_ttl: Duration) -> Self {
        assert!(
            svid_ttl >= MIN_SVID_TTL,
            "an SVID TTL of {svid_ttl:?} would have the agent renew it on nearly every sync; \
             use at least {MIN_SVID_TTL:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let [port, bundle_port] = free_ports();
        let socket = dir.path().join("server.sock");
        let log = dir.path().join("server.log");
        // The CA must outlive an SVID six times over, or SPIRE shortens SVIDs near a rotation.
        let ca_ttl = svid_ttl
            .saturating_mul(6)
            .max(Duration::from_secs(24 * 3600));
        let d = dir.path().display();
        let config = format!(
            r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{socket}"
    trust_domain = "{trust_domain}"
    data_dir = "{d}/data"
    log_level = "DEBUG"
    ca_ttl = "{ca_ttl}"
    default_x509_svid_ttl = "{svid_ttl}"
    # The agent's own SVID: long enough not to rotate while a test watches workloads' ones.
    agent_ttl = "1h"
    federation {{
        bundle_endpoint {{
            address = "127.0.0.1"
            port = {bundle_port}
            profile "https_spiffe" {{}}
        }}
    }}
}}

plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{d}/datastore.sqlite3"
        }}
    }}
    KeyManager "disk" {{
        plugin_data {{
            keys_path = "{d}/keys.json"
        }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
"#,
            socket = socket.display(),
            ca_ttl = go_duration(ca_ttl),
            svid_ttl = go_duration(svid_ttl),
        );
        let conf = dir.path().join("server.conf");
        fs::write(&conf, config).unwrap();
        let bin = bin_dir().join("spire-server");
        let child = spawn_logged(&bin, &["run", "-config", &path_str(&conf)], &log);
        let mut server = Self {
            child,
            trust_domain: trust_domain.to_owned(),
            port,
            bundle_port,
            socket,
            log,
            dir,
        };
        let (socket, log) = (path_str(&server.socket), server.log.clone());
        wait_healthy(&mut server.child, &bin, &socket, &log, "spire-server").await;
        server
    }

    /// The trust domain's name, `example.org`.
    pub(crate) fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The trust domain's SPIFFE ID, `spiffe://example.org`.
    pub(crate) fn trust_domain_id(&self) -> String {
        format!("spiffe://{}", self.trust_domain)
    }

    /// The port agents reach the server at, on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Where the server serves its bundle (`https_spiffe` profile: its TLS certificate is an
    /// X.509-SVID for [`SpireServer::endpoint_spiffe_id`]).
    pub(crate) fn bundle_endpoint_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.bundle_port)
    }

    /// The SPIFFE ID the bundle endpoint authenticates as.
    pub(crate) fn endpoint_spiffe_id(&self) -> String {
        format!("spiffe://{}/spire/server", self.trust_domain)
    }

    /// The server's temporary directory (config, data, socket, log).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's log.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// A join token (valid 10 min) that attests an agent as `spiffe://<td><agent_id_path>`.
    pub(crate) async fn join_token(&self, agent_id_path: &str) -> String {
        let id = format!("{}{agent_id_path}", self.trust_domain_id());
        let out = self
            .cli(&["token", "generate"], &["-spiffeID", &id, "-ttl", "600"])
            .await;
        let token = out
            .lines()
            .find_map(|l| l.strip_prefix("Token:"))
            .unwrap_or_else(|| panic!("no token in `token generate`'s output: {out}"));
        token.trim().to_owned()
    }

    /// The trust domain's bundle as PEM: what an agent starts from.
    pub(crate) async fn bundle_pem(&self) -> String {
        self.cli(&["bundle", "show"], &[]).await
    }

    /// The trust domain's bundle as a SPIFFE bundle (JWKS JSON).
    pub(crate) async fn bundle_spiffe(&self) -> String {
        self.cli(&["bundle", "show"], &["-format", "spiffe"]).await
    }

    /// Registers `spiffe_id` for the workloads of `uid` under the agent `parent` (its
    /// [`SpireAgent::id`]), trusting the bundles of `federates_with` (`spiffe://other.org`; each
    /// must be federated first, see [`SpireServer::federate_with`]). Returns the entry's ID.
    pub(crate) async fn register(
        &self,
        spiffe_id: &str,
        parent: &str,
        uid: u32,
        federates_with: &[&str],
    ) -> String {
        let selector = format!("unix:uid:{uid}");
        let mut flags = vec![
            "-parentID",
            parent,
            "-spiffeID",
            spiffe_id,
            "-selector",
            &selector,
        ];
        for td in federates_with {
            flags.extend(["-federatesWith", td]);
        }
        let out = self.cli(&["entry", "create"], &flags).await;
        let entry = out
            .lines()
            .find_map(|l| l.strip_prefix("Entry ID"))
            .and_then(|rest| rest.split(':').nth(1))
            .unwrap_or_else(|| panic!("no entry ID in `entry create`'s output: {out}"));
        entry.trim().to_owned()
    }

    /// Deletes every entry for `spiffe_id`; panics if there is none.
    pub(crate) async fn delete_entry(&self, spiffe_id: &str) {
        let out = self
            .cli(
                &["entry", "show"],
                &["-spiffeID", spiffe_id, "-output", "json"],
            )
            .await;
        let shown: Value = serde_json::from_str(&out).unwrap();
        let ids: Vec<&str> = shown["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["id"].as_str())
            .collect();
        assert!(!ids.is_empty(), "no entry for {spiffe_id}: {out}");
        for id in ids {
            self.cli(&["entry", "delete"], &["-entryID", id]).await;
        }
    }

    /// Federates the two trust domains both ways: each server holds the other's bundle, so an
    /// entry registered with `federates_with` naming the other domain gets its bundle.
    pub(crate) async fn federate_with(&self, other: &Self) {
        self.set_bundle_of(other).await;
        other.set_bundle_of(self).await;
    }

    /// Sets `other`'s current bundle as the federated bundle of its trust domain.
    async fn set_bundle_of(&self, other: &Self) {
        let path = self
            .dir
            .path()
            .join(format!("{}.bundle.json", other.trust_domain));
        fs::write(&path, other.bundle_spiffe().await).unwrap();
        let (id, path) = (other.trust_domain_id(), path_str(&path));
        self.cli(
            &["bundle", "set"],
            &["-format", "spiffe", "-id", &id, "-path", &path],
        )
        .await;
    }

    /// Runs `spire-server <command> -socketPath <socket> <flags>` and returns its stdout;
    /// panics with its output and the server's log if it fails.
    pub(crate) async fn cli(&self, command: &[&str], flags: &[&str]) -> String {
        let mut args: Vec<String> = command.iter().map(|&a| a.to_owned()).collect();
        args.extend(["-socketPath".to_owned(), path_str(&self.socket)]);
        args.extend(flags.iter().map(|&a| a.to_owned()));
        let out = run(Command::new(bin_dir().join("spire-server")).args(&args)).await;
        assert!(
            out.status.success(),
            "spire-server {} failed ({}): {}\n--- server log ---\n{}",
            args.join(" "),
            out.status,
            output_text(&out),
            self.log_tail()
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for SpireServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `spire-agent`, attested to a [`SpireServer`]; killed on drop.
#[derive(Debug)]
pub(crate) struct SpireAgent {
    child: Child,
    id: String,
    socket: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

impl SpireAgent {
    /// Starts an agent attested to `server` by a fresh join token, serving the Workload API at
    /// `<dir>/agent.sock` to any uid, and waits until its healthcheck passes.
    pub(crate) async fn start(server: &SpireServer) -> Self {
        let n = AGENTS.fetch_add(1, Ordering::Relaxed);
        let path = format!("/host/agent-{}-{n}", std::process::id());
        let token = server.join_token(&path).await;
        let id = format!("{}{path}", server.trust_domain_id());
        let dir = tempfile::tempdir().unwrap();
        // Workloads of other uids reach the socket through this directory.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let bundle = dir.path().join("bundle.pem");
        fs::write(&bundle, server.bundle_pem().await).unwrap();
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        let d = dir.path().display();
        let config = format!(
            r#"agent {{
    data_dir = "{d}/data"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{socket}"
    trust_bundle_path = "{bundle}"
    trust_domain = "{td}"
    join_token = "{token}"
}}

plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
"#,
            port = server.port,
            socket = socket.display(),
            bundle = bundle.display(),
            td = server.trust_domain,
        );
        let conf = dir.path().join("agent.conf");
        fs::write(&conf, config).unwrap();
        let bin = bin_dir().join("spire-agent");
        let child = spawn_logged(&bin, &["run", "-config", &path_str(&conf)], &log);
        let mut agent = Self {
            child,
            id,
            socket,
            log,
            dir,
        };
        let (socket, log) = (path_str(&agent.socket), agent.log.clone());
        wait_healthy(&mut agent.child, &bin, &socket, &log, "spire-agent").await;
        agent
    }

    /// The agent's SPIFFE ID: the parent of the entries it serves.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The Workload API socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    /// The agent's temporary directory (config, data, socket, log).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the agent's log.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for SpireAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn spire_issues_an_svid_to_a_registered_uid() {
    let server = SpireServer::start("example.org", Duration::from_secs(60)).await;
    let agent = SpireAgent::start(&server).await;
    let id = "spiffe://example.org/ns/test/sa/one";
    server.register(id, agent.id(), 10001, &[]).await;

    let fetch = wait_for_svid(&agent.socket(), 10001, id).await;
    assert_eq!(fetch.svids.len(), 1, "{fetch:?}");
    let svid = &fetch.svids[0];
    assert_eq!(svid.spiffe_id, id);
    assert!(svid.key_pem.contains("PRIVATE KEY"), "{}", svid.key_pem);
    // The SVID's bundle is the server's: what a peer of example.org verifies it with.
    assert_eq!(
        certs_der(&svid.bundle_pem),
        certs_der(&server.bundle_pem().await)
    );
    assert!(fetch.federated_bundles.is_empty(), "{fetch:?}");

    // No entry selects uid 10002: the agent refuses it.
    let refused = fetch_x509(&agent.socket(), 10002).await.unwrap_err();
    assert!(
        refused.contains("no identity issued") && refused.contains("PermissionDenied"),
        "{refused}"
    );

    // Once the entry is gone, uid 10001 is refused too.
    server.delete_entry(id).await;
    let last = RefCell::new(String::from("no fetch yet"));
    let failure = Failure {
        what: format!("the agent still serves {id} to uid 10001"),
        last: &last,
        log: agent.dir().join("agent.log"),
    };
    let refused = eventually(STARTUP, failure, || async {
        match fetch_x509(&agent.socket(), 10001).await {
            Ok(fetch) => {
                *last.borrow_mut() = format!("served {fetch:?}");
                None
            }
            Err(refused) => Some(refused),
        }
    })
    .await;
    assert!(refused.contains("no identity issued"), "{refused}");
}

#[tokio::test]
async fn an_svid_lives_the_servers_ttl_and_the_agent_renews_it_in_time() {
    let server = SpireServer::start("example.org", Duration::from_secs(20)).await;
    let agent = SpireAgent::start(&server).await;
    let id = "spiffe://example.org/ns/test/sa/short";
    server.register(id, agent.id(), 10001, &[]).await;

    let first = wait_for_svid(&agent.socket(), 10001, id).await;
    let (not_before, not_after) = validity(&first.svids[0].chain_pem);
    // default_x509_svid_ttl from now, and SPIRE backdates notBefore by 10 s.
    assert_eq!(not_after - not_before, 30, "{first:?}");

    // The agent renews it at about half its lifetime: a new one, well before the first expires.
    let last = RefCell::new(String::from("no fetch yet"));
    let failure = Failure {
        what: format!("the agent did not renew {id}"),
        last: &last,
        log: agent.dir().join("agent.log"),
    };
    let renewed = eventually(Duration::from_secs(20), failure, || async {
        let fetch = wait_for_svid(&agent.socket(), 10001, id).await;
        let svid = fetch.svids.into_iter().next()?;
        if svid.chain_pem != first.svids[0].chain_pem {
            return Some(svid);
        }
        *last.borrow_mut() = "the same SVID".to_owned();
        None
    })
    .await;
    let (renewed_from, renewed_until) = validity(&renewed.chain_pem);
    let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs();
    assert!(
        now < not_after.try_into().unwrap(),
        "renewed only after the first expired"
    );
    assert!(renewed_from > not_before && renewed_until > not_after);
    assert_eq!(renewed.spiffe_id, id);
}

#[tokio::test]
async fn a_federated_entry_gets_the_other_trust_domains_bundle() {
    let ours = SpireServer::start("example.org", Duration::from_secs(60)).await;
    let theirs = SpireServer::start("other.org", Duration::from_secs(60)).await;
    ours.federate_with(&theirs).await;
    let agent = SpireAgent::start(&ours).await;
    let federated = "spiffe://example.org/ns/test/sa/federated";
    let local = "spiffe://example.org/ns/test/sa/local";
    ours.register(federated, agent.id(), 10001, &["spiffe://other.org"])
        .await;
    ours.register(local, agent.id(), 10002, &[]).await;

    let fetch = wait_for_svid(&agent.socket(), 10001, federated).await;
    let bundle = fetch
        .federated_bundles
        .get("spiffe://other.org")
        .unwrap_or_else(|| panic!("no bundle for other.org: {fetch:?}"));
    assert_eq!(certs_der(bundle), certs_der(&theirs.bundle_pem().await));
    assert_eq!(uri_san(bundle), "spiffe://other.org", "other.org's CA");
    assert_eq!(fetch.federated_bundles.len(), 1, "{fetch:?}");

    // An entry that does not federate gets no other bundle.
    let fetch = wait_for_svid(&agent.socket(), 10002, local).await;
    assert!(fetch.federated_bundles.is_empty(), "{fetch:?}");

    // Each server serves its bundle at its endpoint (https_spiffe: TLS with its own SVID).
    for server in [&ours, &theirs] {
        let out = run(Command::new("curl").args([
            "-sSk",
            "--max-time",
            "10",
            &server.bundle_endpoint_url(),
        ]))
        .await;
        assert!(out.status.success(), "{}", output_text(&out));
        let served: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            served["keys"].as_array().is_some_and(|k| !k.is_empty()),
            "{served}"
        );
    }
}
