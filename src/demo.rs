//! `hopgate demo`: the demo mesh (support-agent → inference → crm; docs/cedar.md, "Writing
//! rules") in one process, on loopback, with the real listeners.
//!
//! ```text
//!  alice's request ─▶ support-agent app ─▶ agent hopgate OUTBOUND ══mTLS══▶ inference hopgate INBOUND
//!   (Bearer, demo IdP)                        (origin token → hop token)        ─▶ inference app
//!  inference app ─▶ inference hopgate OUTBOUND ══mTLS══▶ crm hopgate INBOUND ─▶ crm app
//!                   (relayed token → child token)               (MCP: decides each tool,
//!                                                                filters tools/list)
//! ```
//!
//! A dev CA for `demo.local` issues the three SVIDs; a demo identity provider (an ES256 key and
//! its JWKS file) issues alice's token; the policies are the shipped `examples/policies`. Each
//! sidecar is a full [`Proxy`] (inbound, outbound, Cedar, tokens, audit into memory, spans into a
//! shared in-memory collector and, with `--otlp`, to a collector); crm's app is also an MCP tool
//! server on `/mcp`, and crm's and inference's sidecars read MCP (`mcp.paths`). The six steps
//! print what was called, the decisions, the hop-token chain and the span tree, and the command
//! exits 0 only when every step behaved as expected:
//!
//! 1. alice's request reaches crm through the chain, the scope narrowed hop by hop;
//! 2. the support agent calling crm directly is denied;
//! 3. crm's token, replayed by the support agent, is rejected: it is bound to inference;
//! 4. inference asking crm to write for alice is denied: her scope covers reading only;
//! 5. inference, an MCP client of crm's tools for alice, is listed only the tools its chain may
//!    call, and calling one it may not is a JSON-RPC error with the decision id;
//! 6. of two SSE streams from inference to the agent, the one whose transaction is revoked is
//!    cut within a second, and the other goes on.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hopgate_config::{SpiffeId, TrustDomain};
use hopgate_proxy::telemetry::audit::AuditSink;
use hopgate_proxy::telemetry::trace::SpanCollector;
use hopgate_proxy::tls::{Identity, outbound_client_config};
use hopgate_proxy::{BuildOptions, Proxy};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_sdk::trace::SpanData;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::dev_ca;
use crate::token_cmd::render_tree;

mod app;
mod mcp;
mod mesh;
mod stream;

use app::{App, DemoIdp, Reply, Role, get, json_response, post};
use mcp::Answered;
use mesh::{Mesh, field, lock};

const TRUST_DOMAIN: &str = "demo.local";
const AGENT: &str = "spiffe://demo.local/ns/agents/sa/support-agent";
const INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";
const CRM: &str = "spiffe://demo.local/ns/tools/sa/crm";
const IDP: &str = "https://idp.demo.local";
const IDP_AUDIENCE: &str = "agents";
/// alice may have the agent generate for her and read tickets; not write them.
const ALICE_SCOPE: &str = "inference.generate tickets.read";

const SCHEMA: &str = include_str!("../examples/policies/schema.cedarschema");
const MESH: &str = include_str!("../examples/policies/mesh.cedar");
const GUARDS: &str = include_str!("../examples/policies/guards.cedar");

/// `hopgate demo` options.
#[derive(Debug)]
pub(crate) struct DemoOptions {
    /// Also export spans to this OTLP collector (`:4318` means HTTP/protobuf, else gRPC).
    pub(crate) otlp: Option<String>,
    /// Keep the mesh up after the steps, with curl commands to explore it.
    pub(crate) serve: bool,
}

/// One step's outcome against its expectation.
struct Outcome {
    ok: bool,
    why: String,
}

pub(crate) async fn run(options: DemoOptions) -> anyhow::Result<ExitCode> {
    // Installed first, so a SIGTERM during the steps also ends in the cleanup below.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let started = Instant::now();
    let mesh = Mesh::start(options.otlp.as_deref())
        .await
        .context("starting the demo mesh")?;
    println!(
        "hopgate demo: three workloads of {TRUST_DOMAIN}, each an app behind its own hopgate, on loopback"
    );
    println!(
        "  crm's app also serves MCP tools on /mcp (streamable HTTP, {})",
        mcp::PROTOCOL_VERSION
    );
    for sidecar in &mesh.sidecars {
        println!(
            "  {:<14} inbound {}  outbound {}  admin {}",
            sidecar.name, sidecar.inbound, sidecar.outbound, sidecar.admin
        );
    }
    println!("  policies: examples/policies (mesh.cedar, guards.cedar); end user: alice ({IDP})");
    let (first, txn) = step1(&mesh).await;
    let outcomes = [
        first,
        step2(&mesh).await,
        step3(&mesh).await,
        step4(&mesh).await,
        step5(&mesh).await,
        stream::step6(&mesh).await,
    ];
    let trail = audit_trail(&mesh, txn.as_deref());
    println!();
    let mut all = true;
    let labels = (1..=outcomes.len()).map(|n| format!("step {n}"));
    for (label, outcome) in labels
        .chain(["audit trace".to_owned()])
        .zip(outcomes.iter().chain([&trail]))
    {
        let mark = if outcome.ok { "ok  " } else { "FAIL" };
        println!("{mark} {label}: {}", outcome.why);
        all &= outcome.ok;
    }
    println!(
        "{} in {:.1}s",
        if all {
            "every step behaved as expected"
        } else {
            "some steps did not behave as expected"
        },
        started.elapsed().as_secs_f64()
    );
    if options.serve {
        mesh.serve(&mut terminate).await?;
    }
    // Stopping each sidecar sends the spans it still holds, so a collector gets them all.
    let spans = mesh.shutdown().await;
    if let Some(url) = &options.otlp {
        println!("{spans} spans exported to {url}");
    }
    Ok(if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// === the steps ===

/// Step 1, and the transaction it was.
async fn step1(mesh: &Mesh) -> (Outcome, Option<String>) {
    header(
        1,
        "alice → support-agent → inference (generate) → crm (read_ticket)",
    );
    let mark = mesh.mark();
    println!(
        "call: alice's request to the support-agent app, which calls http://inference.ml/generate\n      through its hopgate with `Authorization: Bearer <alice's IdP token>`; the inference app\n      calls http://crm.tools/tickets/42 through its own, relaying the hop token it received"
    );
    let reply = get(
        mesh.app(Role::Agent).addr,
        "agent.demo",
        "/ask",
        &[("authorization", &format!("Bearer {}", mesh.alice))],
    )
    .await;
    println!("result: {}", reply.summary());
    mesh.print_decisions(&mark);
    let at_crm = mesh.app(Role::Crm).last_token();
    let mut txn = None;
    let mut ok = reply.status == 200;
    let mut why = format!("alice's call reached crm: HTTP {}", reply.status);
    if let Some(token) = &at_crm {
        println!("hop token crm received (`hopgate token inspect`):");
        print_token(token);
        let claims = hopgate_proxy::token::inspect(token).map(|t| t.claims().clone());
        if let Ok(claims) = claims {
            let scopes: Vec<&str> = claims.scopes().collect();
            let chain_ok = claims.sub() == "alice" && claims.iss() == INFERENCE;
            txn = Some(claims.txn().to_owned());
            ok &= chain_ok && scopes == ["tickets.read"];
            why = format!(
                "allowed; crm saw sub=alice, minted by inference for crm, scope narrowed to `{}`",
                scopes.join(" ")
            );
        } else {
            ok = false;
        }
    } else {
        ok = false;
        why.push_str(", but crm's app got no hop token");
    }
    mesh.print_spans(&mark);
    (Outcome { ok, why }, txn)
}

async fn step2(mesh: &Mesh) -> Outcome {
    header(2, "support-agent → crm directly");
    let mark = mesh.mark();
    println!("call: the support-agent app calls http://crm.tools/tickets/42 through its hopgate");
    let reply = get(mesh.app(Role::Agent).addr, "agent.demo", "/direct-crm", &[]).await;
    println!("result: {}", reply.summary());
    let decisions = mesh.print_decisions(&mark);
    let denied_by = decisions
        .iter()
        .find(|d| field(d, "effect") == "deny")
        .map(|d| field(d, "policies").clone());
    let ok = reply.status == 403
        && denied_by
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|p| p.iter().any(|id| id == "deny-agent-direct-to-crm"));
    mesh.print_spans(&mark);
    Outcome {
        ok,
        why: format!(
            "denied with 403 by crm's policy {}",
            denied_by.map_or_else(|| "(none)".to_owned(), |p| p.to_string())
        ),
    }
}

async fn step3(mesh: &Mesh) -> Outcome {
    header(
        3,
        "the inference→crm hop token, replayed by the support agent",
    );
    let mark = mesh.mark();
    let Some(stolen) = mesh.app(Role::Crm).last_token() else {
        return Outcome {
            ok: false,
            why: "no token from step 1 to replay".to_owned(),
        };
    };
    println!(
        "call: the support agent, bypassing its sidecar, connects to crm's hopgate with its own SVID\n      and presents the token crm received from inference in step 1"
    );
    let reply = match mesh.replay_as_agent(&stolen).await {
        Ok(reply) => reply,
        Err(err) => {
            return Outcome {
                ok: false,
                why: format!("the replay could not be sent: {err:#}"),
            };
        }
    };
    println!("result: {}", reply.summary());
    mesh.print_decisions(&mark);
    mesh.print_spans(&mark);
    let reason = serde_json::from_str::<Value>(&reply.body)
        .ok()
        .and_then(|v| field(&v, "reason").as_str().map(str::to_owned))
        .unwrap_or_default();
    Outcome {
        ok: reply.status == 401 && reason == "binding",
        why: format!(
            "rejected with {} `{reason}`: the token is bound to inference's certificate",
            reply.status
        ),
    }
}

async fn step4(mesh: &Mesh) -> Outcome {
    header(4, "inference asks crm to write_ticket for alice");
    let mark = mesh.mark();
    println!(
        "call: as in step 1, but the inference app asks crm to `write_ticket`; alice's origin scope\n      only covers reading"
    );
    let reply = get(
        mesh.app(Role::Agent).addr,
        "agent.demo",
        "/ask",
        &[
            ("authorization", &format!("Bearer {}", mesh.alice)),
            ("x-demo-crm-action", "write_ticket"),
        ],
    )
    .await;
    println!("result: {}", reply.summary());
    let decisions = mesh.print_decisions(&mark);
    if let Some(parent) = mesh.app(Role::Inference).last_token() {
        println!("hop token the inference app relayed (its child can only narrow this scope):");
        print_token(&parent);
    }
    mesh.print_spans(&mark);
    let denied = decisions.iter().any(|d| {
        field(d, "effect") == "deny"
            && field(d, "resource") == CRM
            && field(d, "action") == "write_ticket"
    });
    let parent_scope_lacks_write = mesh
        .app(Role::Inference)
        .last_token()
        .and_then(|t| hopgate_proxy::token::inspect(&t).ok())
        .is_some_and(|t| !t.claims().scopes().any(|s| s == "tickets.write"));
    Outcome {
        ok: reply.status == 403 && denied && parent_scope_lacks_write,
        why: "denied with 403 by crm: the token cannot carry `tickets.write`, so no permit applies"
            .to_owned(),
    }
}

async fn step5(mesh: &Mesh) -> Outcome {
    header(5, "inference uses crm's MCP tools for alice");
    let mark = mesh.mark();
    let tools: Vec<&str> = mcp::TOOLS.iter().map(|(name, _)| *name).collect();
    println!(
        "call: as in step 1, alice's request to the support-agent app, which calls\n      http://inference.ml/crm-tools; the inference app, acting for alice (her origin scope only\n      covers reading), is an MCP client of http://crm.tools/mcp through its own hopgate: relaying\n      the hop token, it POSTs `tools/list`, then `tools/call` of `read_ticket` and `write_ticket`\n      with the MCP {} headers (Mcp-Method, Mcp-Name, MCP-Protocol-Version);\n      crm's app lists every tool it has: {}",
        mcp::PROTOCOL_VERSION,
        tools.join(", ")
    );
    let reply = get(
        mesh.app(Role::Agent).addr,
        "agent.demo",
        "/ask-tools",
        &[("authorization", &format!("Bearer {}", mesh.alice))],
    )
    .await;
    let calls = Answered::parse(&reply.body);
    if calls.is_empty() {
        println!("result: {}", reply.summary());
    } else {
        println!(
            "result: HTTP {}; what the inference app got back:",
            reply.status
        );
    }
    let (mut listed, mut read, mut denied) = (None, false, None);
    for call in &calls {
        let label = call.label();
        if let Some(error) = call.error() {
            println!(
                "  {label}: HTTP {}, JSON-RPC error {} `{}`\n    decision_id {}  reason {}",
                call.status, error.code, error.message, error.decision_id, error.reason
            );
            if call.tool.as_deref() == Some("write_ticket")
                && call.status == 403
                && error.code == -32001
                && error.reason == "forbidden"
                && !error.decision_id.is_empty()
            {
                denied = Some(error.decision_id.to_owned());
            }
        } else if call.method == "tools/list" {
            let shown = call.tools();
            println!(
                "  {label}: HTTP {}, tools: {}",
                call.status,
                shown.join(", ")
            );
            listed = Some(shown.join(", "));
        } else {
            let text = call.text().unwrap_or("(no text result)");
            println!("  {label}: HTTP {}, text: {text}", call.status);
            read |= call.tool.as_deref() == Some("read_ticket") && call.status == 200;
        }
    }
    let decisions = mesh.print_decisions(&mark);
    mesh.print_spans(&mark);
    // The decision id in the error is the one crm's sidecar recorded for the denied call.
    let recorded = denied.as_ref().is_some_and(|id| {
        decisions.iter().any(|d| {
            field(d, "decision_id") == id.as_str()
                && field(d, "effect") == "deny"
                && field(d, "mcp_name") == "write_ticket"
        })
    });
    let listed_ok = listed.as_deref() == Some("read_ticket, search_tickets");
    let why = match (&listed, &denied) {
        (Some(listed), Some(id)) => format!(
            "crm's tools/list for alice showed {listed}{}; tools/call write_ticket was 403, JSON-RPC -32001 with decision {id}",
            if listed_ok {
                " (write_ticket dropped)"
            } else {
                ""
            }
        ),
        (Some(listed), None) => format!(
            "crm's tools/list for alice showed {listed}, but tools/call write_ticket was not refused as expected"
        ),
        (None, _) => format!(
            "no tools/list result reached inference: {}",
            reply.summary()
        ),
    };
    Outcome {
        ok: reply.status == 200 && listed_ok && read && recorded,
        why,
    }
}

/// The demo's ending: step 1's transaction joined from the three sidecars' audit logs, as
/// `hopgate audit trace` prints it.
fn audit_trail(mesh: &Mesh, txn: Option<&str>) -> Outcome {
    let logs = mesh.audit_logs();
    let names: Vec<&str> = logs.iter().map(|(name, _)| name.as_str()).collect();
    println!("\n── the audit trail of step 1 {}", "─".repeat(50));
    let Some(txn) = txn else {
        return Outcome {
            ok: false,
            why: "step 1 left no transaction to trace".to_owned(),
        };
    };
    println!("call: hopgate audit trace {txn} {}", names.join(" "));
    match crate::audit_trace::trace(txn, &logs) {
        Ok(trace) => {
            print!("{}", crate::audit_trace::render_trace(&trace));
            Outcome {
                // agent → inference and inference → crm, each recorded on both sides.
                ok: trace.hops == 2 && trace.records == 4 && trace.roots.len() == 1,
                why: format!(
                    "step 1's transaction joined from the three sidecars' audit logs: {} hops, {} records",
                    trace.hops, trace.records
                ),
            }
        }
        Err(not_found) => Outcome {
            ok: false,
            why: not_found.to_string(),
        },
    }
}

fn header(n: u32, title: &str) {
    println!();
    println!(
        "── step {n}: {title} {}",
        "─".repeat(70usize.saturating_sub(title.len()))
    );
}

fn print_token(token: &str) {
    match hopgate_proxy::token::inspect(token) {
        Ok(parsed) => {
            for line in render_tree(parsed.claims()).lines() {
                println!("  {line}");
            }
        }
        Err(reason) => println!("  (undecodable: {})", reason.as_str()),
    }
}
