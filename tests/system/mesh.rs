//! The whole topology on one machine: three hosts (agent, inference, crm), each a network
//! namespace with its own IP on one bridge, its app and its hopgate under uids of their own,
//! and SVIDs from a real SPIRE agent. `hopgate iptables apply` captures each host's traffic,
//! so the apps call `http://inference.ml:8080/...` and `http://crm.tools:8080/...` with no
//! proxy settings, and every route names its hosts by DNS name (each host's hosts file).
//!
//! ```text
//!   10.98.0.2 agent            10.98.0.3 inference          10.98.0.4 crm
//!   app ─▶ iptables ─▶ hopgate ══mTLS══▶ hopgate ─▶ app ─▶ iptables ─▶ hopgate ══mTLS══▶ hopgate ─▶ app
//! ```
//!
//! The demo's four steps run on it, with the demo's policies, and must behave as in the demo.
//! Then the inference sidecar is restarted under traffic and requests resume, and crm moves to
//! another IP: the sidecars follow the name within `dns_refresh`.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::readable::ReadableDir;
use crate::spire::{SpireAgent, SpireServer, fetch_x509, wait_for_svid};
use crate::support::eventually::eventually;
use crate::support::idp::Idp;
use crate::support::sidecar::Sidecar;

mod net;

use net::Net;

const AGENT: &str = "spiffe://demo.local/ns/agents/sa/support-agent";
const INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";
const CRM: &str = "spiffe://demo.local/ns/tools/sa/crm";
const AGENT_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
const INFERENCE_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 3);
const CRM_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 4);
/// Where crm moves to.
const CRM_MOVED_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 14);
/// `outbound.dns_refresh` in this mesh.
const DNS_REFRESH: Duration = Duration::from_secs(1);
/// The sidecars' uids (each its own, and the `--proxy-uid` of its host), then the apps'.
const SIDECAR_UID: [u32; 3] = [10301, 10302, 10303];
const APP_UID: u32 = 10310;
const APP_PY: &str = include_str!("mesh/app.py");
const SCHEMA: &str = include_str!("../../examples/policies/schema.cedarschema");
const MESH_CEDAR: &str = include_str!("../../examples/policies/mesh.cedar");
const GUARDS_CEDAR: &str = include_str!("../../examples/policies/guards.cedar");

/// The hosts, in [`SIDECAR_UID`] order: name, IP, SPIFFE ID.
const HOSTS: [(&str, Ipv4Addr, &str); 3] = [
    ("agent", AGENT_IP, AGENT),
    ("inference", INFERENCE_IP, INFERENCE),
    ("crm", CRM_IP, CRM),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_host_mesh_with_transparent_capture_dns_names_and_spire_behaves_as_the_demo() {
    let mut mesh = Mesh::start().await;

    // Step 1: alice → agent → inference (generate) → crm (read_ticket).
    let (status, body) = mesh.ask(&[]).await;
    assert_eq!(status, 200, "step 1: {body}\n{}", mesh.logs());
    let at_crm = mesh.last_request("crm");
    let claims = claims(at_crm["headers"]["hop-token"].as_str().unwrap());
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["iss"], INFERENCE, "{claims}");
    assert_eq!(claims["aud"], CRM, "{claims}");
    assert_eq!(
        claims["scope"], "tickets.read",
        "narrowed hop by hop: {claims}"
    );
    assert_eq!(at_crm["headers"]["host"], "crm.tools:8080");

    // Step 2: the agent calls crm directly; crm's policy forbids it.
    let (status, body) = mesh.curl_app("agent", "/direct-crm", &[]).await;
    assert_eq!(status, 403, "step 2: {body}");
    mesh.sidecar("crm")
        .wait_for_audit(|r| {
            r["effect"] == "deny"
                && r["policies"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|id| id == "deny-agent-direct-to-crm"))
        })
        .await;

    // Step 3: the agent, bypassing its sidecar (as its uid, which capture exempts), replays
    // the token crm received, with its own SPIRE SVID: the token is bound to inference's.
    let stolen = at_crm["headers"]["hop-token"].as_str().unwrap().to_owned();
    let (status, body) = mesh.replay_as_agent(&stolen).await;
    assert_eq!(status, 401, "step 3: {body}");
    let reason: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reason["reason"], "binding", "{body}");

    // Step 4: alice asks for a write; her token carries no `tickets.write`, so crm denies it.
    let (status, body) = mesh.ask(&[("x-demo-crm-action", "write_ticket")]).await;
    assert_eq!(status, 403, "step 4: {body}");
    mesh.sidecar("crm")
        .wait_for_audit(|r| r["effect"] == "deny" && r["action"] == "write_ticket")
        .await;

    mesh.restart_inference_under_traffic().await;
    mesh.move_crm().await;
}

/// The running mesh. Fields drop in order: processes first, the namespaces last.
struct Mesh {
    sidecars: Vec<(&'static str, Sidecar)>,
    apps: Vec<App>,
    alice: String,
    agent_svid: (PathBuf, PathBuf),
    files: ReadableDir,
    spire: (SpireServer, SpireAgent),
    net: Net,
}

impl Mesh {
    async fn start() -> Self {
        let net = Net::create("mesh", &HOSTS.map(|(name, ip, _)| (name, ip)));
        net.set_hosts(&names(CRM_IP));
        let server = SpireServer::start("demo.local", Duration::from_secs(3600)).await;
        let agent = SpireAgent::start(&server).await;
        for ((_, _, id), uid) in HOSTS.iter().zip(SIDECAR_UID) {
            server.register(id, agent.id(), uid, &[]).await;
        }
        for ((_, _, id), uid) in HOSTS.iter().zip(SIDECAR_UID) {
            wait_for_svid(&agent.socket(), uid, id).await;
        }
        let files = ReadableDir::new();
        files.write("policies/schema.cedarschema", SCHEMA);
        files.write("policies/mesh.cedar", MESH_CEDAR);
        files.write("policies/guards.cedar", GUARDS_CEDAR);
        files.write("app.py", APP_PY);
        let idp = Idp::new();
        idp.write_jwks(files.path());
        let agent_svid = fetch_x509(&agent.socket(), SIDECAR_UID[0]).await.unwrap();
        let svid = &agent_svid.svids[0];
        let agent_svid = (
            files.write("agent-svid/svid.pem", &svid.chain_pem),
            files.write("agent-svid/svid_key.pem", &svid.key_pem),
        );

        let mut apps = Vec::new();
        for ((name, _, _), uid) in HOSTS.iter().zip(SIDECAR_UID) {
            iptables_apply(&net, name, uid);
            apps.push(App::start(&net, name, &files).await);
        }
        let mut mesh = Self {
            sidecars: Vec::new(),
            apps,
            alice: idp.token("alice", "inference.generate tickets.read"),
            agent_svid,
            files,
            spire: (server, agent),
            net,
        };
        // Destinations first, so the first calls find them up.
        for name in ["crm", "inference", "agent"] {
            let config = mesh.write_config(name);
            let sidecar = mesh.start_sidecar(name, &config).await;
            mesh.sidecars.push((name, sidecar));
        }
        mesh
    }

    /// `name`'s config: SVIDs from the SPIRE agent, transparent outbound, routes by name.
    fn write_config(&self, name: &str) -> PathBuf {
        let socket = self.spire.1.socket();
        let route = |host: &str, id: &str, scopes: &str| {
            format!(
                "    - {{ host: {host}, original_dst: '{host}:8080', address: '{host}:15006', identity: '{id}', scopes: [{scopes}] }}\n"
            )
        };
        let (routes, extra) = match name {
            "agent" => (
                route(
                    "inference.ml",
                    INFERENCE,
                    "inference.generate, tickets.read, tickets.write",
                ) + &route("crm.tools", CRM, "tickets.read"),
                Idp::token_yaml("jwks.json"),
            ),
            "inference" => (
                route("crm.tools", CRM, "tickets.read, tickets.write"),
                String::new(),
            ),
            _ => ("    []\n".to_owned(), String::new()),
        };
        let yaml = format!(
            "identity:\n  workload_api: {{ socket: 'unix://{}', initial_timeout: 60s }}\n\
             inbound:\n  listen: 0.0.0.0:15006\n  app: localhost:8080\n\
             outbound:\n  listen: 127.0.0.1:15001\n  transparent: true\n  dns_refresh: {}ms\n  routes:\n{routes}\
             policy:\n  dir: policies\n\
             admin:\n  listen: 127.0.0.1:15000\n{extra}",
            socket.display(),
            DNS_REFRESH.as_millis(),
        );
        self.files.write(&format!("{name}.yaml"), &yaml)
    }

    /// Starts `name`'s sidecar in its host, as its uid, and waits until it is ready.
    async fn start_sidecar(&self, name: &str, config: &Path) -> Sidecar {
        let uid = uid_of(name);
        let command = self
            .net
            .command_as(name, uid, env!("CARGO_BIN_EXE_hopgate"));
        let sidecar = Sidecar::start_with(command, config).await;
        let ready = || async {
            let (status, _) = self.curl(name, &["http://127.0.0.1:15000/ready"]).await;
            (status == 200).then_some(())
        };
        eventually(
            Duration::from_secs(20),
            format_args!("{name}'s sidecar is not ready: {}", sidecar.printed()),
            ready,
        )
        .await;
        sidecar
    }

    fn sidecar(&self, name: &str) -> &Sidecar {
        &self.sidecars.iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// alice's request to the agent app, which asks inference, which reads crm.
    async fn ask(&self, headers: &[(&str, &str)]) -> (u16, String) {
        let bearer = format!("Bearer {}", self.alice);
        let mut all = vec![("authorization", bearer.as_str())];
        all.extend_from_slice(headers);
        self.curl_app("agent", "/ask", &all).await
    }

    /// A GET to `host`'s app, from inside that host (as root, whose loopback calls capture
    /// leaves alone).
    async fn curl_app(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let url = format!("http://127.0.0.1:8080{path}");
        let mut args = vec![url];
        for (name, value) in headers {
            args.extend(["-H".to_owned(), format!("{name}: {value}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.curl(host, &args).await
    }

    /// `curl ARGS` in `host`'s namespace: (status, body); status 0 when curl failed.
    async fn curl(&self, host: &str, args: &[&str]) -> (u16, String) {
        let mut command = self.net.command(host, "curl");
        command
            .args(["-s", "-m", "30", "-w", "\n%{http_code}"])
            .args(args);
        run(command).await
    }

    /// The support agent's own request to crm's hopgate with its SVID and `token`, bypassing
    /// its sidecar: run as the agent sidecar's uid, which capture exempts.
    async fn replay_as_agent(&self, token: &str) -> (u16, String) {
        let (cert, key) = &self.agent_svid;
        let mut command = self.net.command_as("agent", SIDECAR_UID[0], "curl");
        command
            .args(["-s", "-m", "30", "-w", "\n%{http_code}", "-k", "--cert"])
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["-H", &format!("hop-token: {token}")])
            .arg("https://crm.tools:15006/tickets/42");
        run(command).await
    }

    /// What `host`'s app received last.
    fn last_request(&self, host: &str) -> Value {
        let app = self.apps.iter().find(|a| a.host == host).unwrap();
        let log = std::fs::read_to_string(&app.log).unwrap();
        serde_json::from_str(log.lines().last().expect("the app was called")).unwrap()
    }

    /// Every sidecar's output, for a failure message.
    fn logs(&self) -> String {
        self.sidecars
            .iter()
            .map(|(name, s)| format!("--- {name}\n{}", s.output()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM to inference's sidecar while alice's requests keep coming; a new one starts and
    /// the requests resume.
    async fn restart_inference_under_traffic(&mut self) {
        let i = self
            .sidecars
            .iter()
            .position(|(n, _)| *n == "inference")
            .unwrap();
        let (ok_before, failed_before) = self.asks_for(Duration::from_secs(2)).await;
        assert!(
            ok_before > 0 && failed_before == 0,
            "before the restart: {ok_before} ok, {failed_before} failed"
        );
        let (_, mut old) = self.sidecars.remove(i);
        old.signal("TERM");
        old.wait_for_exit(Duration::from_secs(15)).await;
        // While it is down, the agent's sidecar cannot reach it: a 502, never a hang.
        let (status, body) = self.ask(&[]).await;
        assert_eq!(status, 502, "with inference's sidecar down: {body}");
        let config = self.files.path().join("inference.yaml");
        let new = self.start_sidecar("inference", &config).await;
        self.sidecars.push(("inference", new));
        let (ok_after, failed_after) = self.asks_for(Duration::from_secs(2)).await;
        assert!(
            ok_after > 0 && failed_after == 0,
            "after the restart: {ok_after} ok, {failed_after} failed\n{}",
            self.logs()
        );
    }

    /// crm moves to another IP: its hosts entry changes everywhere, the sidecars resolve the
    /// new address within `dns_refresh`, and after crm's sidecar restarts (closing the
    /// connections to the old address, which is then removed) calls reach it at the new one.
    async fn move_crm(&mut self) {
        let crm_ns = self.net.host("crm").netns.clone();
        net::ip(&[
            "-n",
            &crm_ns,
            "addr",
            "add",
            &format!("{CRM_MOVED_IP}/24"),
            "dev",
            "eth0",
        ]);
        let moved = Instant::now();
        self.net.set_hosts(&names(CRM_MOVED_IP));
        let new_route = format!("{CRM_MOVED_IP}:15006");
        for name in ["agent", "inference"] {
            let sidecar = self.sidecar(name);
            eventually(
                DNS_REFRESH * 5,
                format_args!(
                    "{name} did not resolve crm.tools anew: {}",
                    sidecar.printed()
                ),
                || async {
                    let followed = sidecar
                        .output()
                        .lines()
                        .any(|l| l.contains("name resolved") && l.contains(&new_route));
                    followed.then_some(())
                },
            )
            .await;
        }
        // Within one refresh, plus the polling above and a lookup.
        let took = moved.elapsed();
        assert!(took <= DNS_REFRESH * 3, "followed after {took:?}");

        // The restart closes the connections to the old address (with a GOAWAY it can still
        // send from there); then the old address goes, so only the new one can answer.
        let i = self.sidecars.iter().position(|(n, _)| *n == "crm").unwrap();
        let (_, mut old) = self.sidecars.remove(i);
        old.signal("TERM");
        old.wait_for_exit(Duration::from_secs(15)).await;
        // The new address is a secondary of the same subnet: without this, removing the
        // primary would remove it too.
        let promote = "echo 1 > /proc/sys/net/ipv4/conf/eth0/promote_secondaries";
        let status = self.net.command("crm", "sh").args(["-c", promote]).status();
        assert!(status.unwrap().success(), "{promote}");
        net::ip(&[
            "-n",
            &crm_ns,
            "addr",
            "del",
            &format!("{CRM_IP}/24"),
            "dev",
            "eth0",
        ]);
        let config = self.files.path().join("crm.yaml");
        let new = self.start_sidecar("crm", &config).await;
        self.sidecars.push(("crm", new));
        let (status, body) = self.ask(&[]).await;
        assert_eq!(
            status,
            200,
            "crm at its new address: {body}\n{}",
            self.logs()
        );
        // The agent's direct call, captured with the new original destination, still meets
        // crm's policy (not `no_route`): the route's `original_dst` name followed too.
        let (status, body) = self.curl_app("agent", "/direct-crm", &[]).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("forbidden"), "{body}");
    }

    /// alice's requests one after another for `period`: (succeeded, failed).
    async fn asks_for(&self, period: Duration) -> (usize, usize) {
        let until = Instant::now() + period;
        let (mut ok, mut failed) = (0, 0);
        while Instant::now() < until {
            if self.ask(&[]).await.0 == 200 {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        (ok, failed)
    }
}

/// A host's app, as [`APP_UID`], logging what it receives.
struct App {
    host: &'static str,
    log: PathBuf,
    child: Child,
}

impl App {
    async fn start(net: &Net, host: &'static str, files: &ReadableDir) -> Self {
        let log = files.write(&format!("{host}.requests.jsonl"), "");
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        let mut child = net
            .command_as(host, APP_UID, "python3")
            .arg(files.path().join("app.py"))
            .arg(host)
            .arg(&log)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .map(|_| line)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(line.trim(), "listening", "{host}'s app did not start");
        Self { host, log, child }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The names every host resolves, with crm at `crm`.
fn names(crm: Ipv4Addr) -> [(&'static str, Ipv4Addr); 3] {
    [
        ("agent.demo", AGENT_IP),
        ("inference.ml", INFERENCE_IP),
        ("crm.tools", crm),
    ]
}

fn uid_of(host: &str) -> u32 {
    let i = HOSTS.iter().position(|(n, _, _)| *n == host).unwrap();
    SIDECAR_UID[i]
}

/// `hopgate iptables apply` in `host`, exempting the sidecar's `uid`, capturing both ways.
fn iptables_apply(net: &Net, host: &str, uid: u32) {
    let out = net
        .command(host, env!("CARGO_BIN_EXE_hopgate"))
        .args(["iptables", "apply", "--proxy-uid", &uid.to_string()])
        .args([
            "--outbound-port",
            "15001",
            "--inbound-port",
            "15006",
            "--capture-inbound",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iptables apply in {host}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a curl command (its last output line is the status): (status, body).
async fn run(mut command: Command) -> (u16, String) {
    let out = tokio::task::spawn_blocking(move || command.stdin(Stdio::null()).output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// The claims of a compact token, decoded without verification.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}
