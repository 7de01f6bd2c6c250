//! MCP through a hopgate pair with the official MCP Python SDK (`mcp` 2.3.0, in the tools
//! virtualenv `./test.sh` makes) on both ends: its streamable-HTTP server as crm's app, and
//! its client calling through inference's outbound side, in the 2026-07-28 revision (the
//! `Mcp-Method`/`Mcp-Name` headers, stateless) and the older `initialize` handshake (a session,
//! the tool name in the body alone). Each call is decided on its own, by its tool.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::mcp_app::{AliceChain, alice_chain, read_tools_rule};
use crate::support::workload::workload_id;

const MCP: &str = "mcp:\n  paths: [/mcp]\n";

/// crm's rules: inference may hold a session and list; it may call the reading tools for a
/// person whose chain carries the read scope; the session's GET stream and DELETE are `call`.
fn crm_policy() -> String {
    let inference = workload_id("inference");
    let session = format!(
        r#"@id("mcp-session") permit (principal == Hop::Workload::"{inference}", action in
  [Hop::Action::"initialize", Hop::Action::"notifications/initialized", Hop::Action::"ping",
   Hop::Action::"server/discover", Hop::Action::"tools/list", Hop::Action::"call"], resource);
"#
    );
    format!("{session}{}", read_tools_rule())
}

/// The tools virtualenv's python; panics, saying how to make it, when it is not set.
fn python() -> PathBuf {
    let python = std::env::var_os("HOPGATE_TEST_PYTHON").map(PathBuf::from);
    match python {
        Some(python) if python.is_file() => python,
        _ => panic!(
            "HOPGATE_TEST_PYTHON is not set to a python with mcp 2.3.0: `./test.sh system` sets it \
             (`./test.sh mcp-venv` makes the virtualenv and prints it)"
        ),
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp")
        .join(name)
}

/// The SDK's tool server; killed on drop.
struct CrmServer {
    child: Child,
    port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl CrmServer {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls.jsonl");
        let mut child = Command::new(python())
            .arg(script("crm_server.py"))
            .args(["--port", "0", "--log"])
            .arg(&log)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("crm_server.py said {line:?}"))
            .parse()
            .unwrap();
        Self {
            child,
            port,
            log,
            dir,
        }
    }

    /// The tools that ran, with the protocol version and session id each came with.
    fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl Drop for CrmServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Mesh {
    server: CrmServer,
    chain: AliceChain,
}

async fn mesh(server_args: &[&str]) -> Mesh {
    let server = CrmServer::start(server_args);
    let app = ([127, 0, 0, 1], server.port).into();
    let chain = alice_chain(app, &crm_policy(), MCP).await;
    Mesh { server, chain }
}

impl Mesh {
    /// The SDK client, as inference's app, through inference's outbound side: its one line of
    /// output, parsed. `for_alice` relays alice's hop token on every request.
    async fn client(&self, for_alice: bool, args: &[&str]) -> Value {
        let url = format!("http://{}/mcp", self.chain.inference.outbound);
        let mut command = Command::new(python());
        command
            .arg(script("client.py"))
            .arg(url)
            .args(args)
            .args(["--header", "host:crm.tools"]);
        if for_alice {
            command.args(["--header", &format!("hop-token:{}", self.chain.alice)]);
        }
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "client.py {args:?}: {}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("client.py {args:?} printed {stdout:?}: {e}"))
    }
}

/// One revision mode against one server mode: the list filtered for alice's chain, a reading
/// tool called, a writing one refused as a JSON-RPC error with the decision id, and the
/// refused call never reaching the tool.
async fn decided_per_tool(mesh: &Mesh, revision: &str, extra: &[&str]) {
    let mut args = vec!["--revision", revision];
    args.extend_from_slice(extra);
    let with = |more: &[&'static str]| {
        let mut all: Vec<&str> = more.to_vec();
        all.extend_from_slice(&args);
        all
    };

    let listed = mesh.client(true, &with(&["list"])).await;
    assert_eq!(
        listed,
        serde_json::json!(["read_ticket", "search_tickets"]),
        "{revision}"
    );
    // Inference for itself: nobody behind the call, no tool.
    assert_eq!(
        mesh.client(false, &with(&["list"])).await,
        serde_json::json!([]),
        "{revision}"
    );

    let read = mesh
        .client(true, &with(&["call", "read_ticket", r#"{"id":"T-1"}"#]))
        .await;
    assert_eq!(read["ok"], true, "{revision}: {read}");

    let write = mesh
        .client(
            true,
            &with(&["call", "write_ticket", r#"{"id":"T-1","text":"x"}"#]),
        )
        .await;
    assert_eq!(write["ok"], false, "{revision}: {write}");
    assert_eq!(write["http_status"], 403, "{revision}: {write}");
    assert_eq!(write["code"], -32001, "{revision}: {write}");
    assert!(
        write["data"]["decision_id"].is_string(),
        "{revision}: {write}"
    );

    let tools: Vec<String> = mesh
        .server
        .calls()
        .iter()
        .filter_map(|call| call["tool"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !tools.is_empty() && tools.iter().all(|tool| tool == "read_ticket"),
        "{revision}: the tool server ran {tools:?}"
    );
}

#[tokio::test]
async fn the_sdk_client_and_server_decided_per_tool_on_the_2026_07_28_headers() {
    let mesh = mesh(&["--response", "json"]).await;
    decided_per_tool(&mesh, "latest", &[]).await;
    let call = mesh.server.calls().pop().unwrap();
    assert_eq!(call["mcp_method"], "tools/call", "{call}");
    assert_eq!(call["mcp_name"], "read_ticket", "{call}");
    assert_eq!(call["mcp_protocol_version"], "2026-07-28", "{call}");
    assert!(
        call["hop_token"].is_string(),
        "crm's app got its hop token: {call}"
    );
}

#[tokio::test]
async fn the_sdk_client_on_the_initialize_handshake_keeps_its_session_and_is_decided_per_call() {
    let mesh = mesh(&["--response", "sse"]).await;
    decided_per_tool(&mesh, "old", &[]).await;
    let call = mesh.server.calls().pop().unwrap();
    assert!(
        call["mcp_session_id"].is_string(),
        "the session passed: {call}"
    );
    assert!(
        call["mcp_name"].is_null(),
        "no Mcp-Name before 2026-07-28: {call}"
    );
}

#[tokio::test]
async fn the_sdk_client_probing_first_and_an_sse_listing_are_decided_and_filtered_alike() {
    let mesh = mesh(&["--response", "sse"]).await;
    // `auto` probes with server/discover first; `--log-level` makes 2026-07-28 answers SSE.
    decided_per_tool(&mesh, "auto", &["--log-level", "info"]).await;
    decided_per_tool(&mesh, "latest", &["--log-level", "info"]).await;

    // The listing came back as an event stream, filtered in place.
    let trace = mesh.server.dir.path().join("trace.jsonl");
    let trace_arg = trace.to_str().unwrap();
    let args = [
        "list",
        "--revision",
        "latest",
        "--log-level",
        "info",
        "--trace",
        trace_arg,
    ];
    let listed = mesh.client(true, &args).await;
    assert_eq!(listed, serde_json::json!(["read_ticket", "search_tickets"]));
    let exchanges: Vec<Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let list = exchanges
        .iter()
        .find(|e| e["rpc_method"] == "tools/list")
        .unwrap_or_else(|| panic!("no tools/list in {exchanges:?}"));
    assert_eq!(list["status"], 200, "{list}");
    let content_type = list["content_type"].as_str().unwrap_or_default();
    assert!(content_type.starts_with("text/event-stream"), "{list}");
}
