//! What MCP awareness adds to a request: reading and parsing a 1 KiB `tools/call` body
//! (duplicate-key and header checks included), the decision with `context.mcp` against the
//! same decision without it, and filtering a `tools/list` result of 20 tools (one memoized
//! decision per tool). Target: an MCP call costs at most 15 µs more than a plain one.

#![allow(
    clippy::unwrap_used,
    reason = "bench setup: a failure means a broken bench, not a runtime path"
)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hopgate_config::{InboundMode, SpiffeId};
use hopgate_policy::{Direction, HopRequest, PolicyStore, TokenFacts};
use hopgate_proxy::http::authorize::{Authorizer, HttpFacts};
use hopgate_proxy::http::mcp::{McpCall, ToolFilter, read_body};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::Full;
use serde_json::json;

const SCHEMA: &str = include_str!("../examples/policies/schema.cedarschema");
const MESH: &str = include_str!("../examples/policies/mesh.cedar");
const GUARDS: &str = include_str!("../examples/policies/guards.cedar");
const INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";
const CRM: &str = "spiffe://demo.local/ns/tools/sa/crm";

/// A `tools/call` of `read_ticket` padded to about 1 KiB of arguments.
fn call_body() -> Bytes {
    let note = "x".repeat(900);
    let body = json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
        "params":{"name":"read_ticket","arguments":{"id":"T-1","note":note},
                  "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}});
    Bytes::from(body.to_string())
}

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "read_ticket"),
        ("mcp-protocol-version", "2026-07-28"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
}

fn authorizer() -> (Authorizer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("schema.cedarschema", SCHEMA),
        ("mesh.cedar", MESH),
        ("guards.cedar", GUARDS),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let store = PolicyStore::load(dir.path(), "call").unwrap();
    // The config only supplies the intent settings: it checks that its files can be read, and
    // nothing reads them.
    for file in ["c.pem", "k.pem", "b.pem"] {
        std::fs::write(dir.path().join(file), "").unwrap();
    }
    let config = hopgate_config::from_yaml(
        "identity:\n  svid: { cert: c.pem, key: k.pem }\n  bundles: { demo.local: b.pem }\noutbound:\n  listen: 127.0.0.1:0\n",
        dir.path(),
    )
    .unwrap();
    let intent = config.intent();
    (
        Authorizer::new(Some(store), InboundMode::Enforce, intent),
        dir,
    )
}

fn mcp(c: &mut Criterion) {
    let body = call_body();
    let headers = headers();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("mcp");

    group.bench_function("parse/1KiB_tools_call", |b| {
        b.iter(|| McpCall::parse(black_box(&body), black_box(&headers)).unwrap());
    });
    group.bench_function("read_and_parse/1KiB_tools_call", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let bytes = read_body(Full::new(body.clone()), 1 << 20, Duration::from_secs(10))
                    .await
                    .unwrap();
                McpCall::parse(&bytes, &headers).unwrap()
            })
        });
    });

    let (authorizer, _dir) = authorizer();
    let (peer, dest) = (
        SpiffeId::parse(INFERENCE).unwrap(),
        SpiffeId::parse(CRM).unwrap(),
    );
    let token = TokenFacts::from_claims(&json!({
        "sub": "alice", "iss": INFERENCE, "txn": "t-1", "scope": "tickets.read",
        "act": {"sub": INFERENCE, "act": {"sub": "spiffe://demo.local/ns/agents/sa/support-agent"}},
    }))
    .unwrap();
    let (parts, ()) = Request::post("/mcp")
        .header("host", "crm.tools")
        .body(())
        .unwrap()
        .into_parts();
    let call = McpCall::parse(&body, &headers).unwrap();
    let mut facts = HttpFacts::from_parts(&parts, "intent-").unwrap();
    let plain = facts.hop_request(&peer, &dest, Direction::Inbound, Some(&token));
    let plain = HopRequest {
        action: Some("read_ticket"),
        ..plain
    };
    group.bench_function("decide/plain_read_ticket", |b| {
        b.iter(|| authorizer.decide(black_box(&plain)));
    });
    facts.mcp = Some(call.facts());
    let request = facts.hop_request(&peer, &dest, Direction::Inbound, Some(&token));
    assert_ne!(
        authorizer
            .decide(&request)
            .decision
            .unwrap()
            .policies()
            .len(),
        0
    );
    group.bench_function("decide/mcp_tools_call", |b| {
        b.iter(|| authorizer.decide(black_box(&request)));
    });

    let tools: Vec<_> = (0..20)
        .map(|i| {
            let name = if i == 0 {
                "read_ticket".to_owned()
            } else {
                format!("tool_{i}")
            };
            json!({"name": name, "description": "a tool", "inputSchema": {"type": "object"}})
        })
        .collect();
    let list = Bytes::from(json!({"jsonrpc":"2.0","id":1,"result":{"tools":tools}}).to_string());
    let filter = ToolFilter::new(&request, &facts, "2026-07-28");
    let mut json_headers = HeaderMap::new();
    json_headers.insert("content-type", HeaderValue::from_static("application/json"));
    group.bench_function("filter/20_tools", |b| {
        b.iter(|| {
            filter
                .apply(&authorizer, &json_headers, black_box(&list))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, mcp);
criterion_main!(benches);
