//! Fixture records with every field of an audit record, and a compact view of a tree.

use serde_json::{Value, json};

use super::super::tree::{Link, Node, Trace};

pub(super) const AGENT: &str = "spiffe://demo.local/ns/agents/sa/support-agent";
pub(super) const INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";
pub(super) const CRM: &str = "spiffe://demo.local/ns/tools/sa/crm";
pub(super) const SEARCH: &str = "spiffe://demo.local/ns/tools/sa/search";
pub(super) const DB: &str = "spiffe://demo.local/ns/data/sa/db";
pub(super) const TXN: &str = "iq_Uy6FgY2-oQEQE-LW7Nw";
pub(super) const H0: &str = "z1_F2p0-WSR3f7tbye21mgXwHvKCWInLNzc-yTG8R9o";
pub(super) const H1: &str = "Qk7vN3d1xR0pLmE9sT2uY6wA8bC4fG5hJ1kZ0oP3qRs";
pub(super) const H2: &str = "c9Xr2LmQ8vT4wN6yB1zA3sD5fG7hJ0kP2oI4uE6rT8y";
pub(super) const H3: &str = "Ww3eR5tY7uI9oP1aS3dF5gH7jK9lZ1xC3vB5nM7qE9r";

/// An allowed record of hop `hash` (parent `prv`) from `from` to `to`, on side `direction`,
/// with every field of an audit record.
pub(super) fn rec(
    at: &str,
    direction: &str,
    from: &str,
    to: &str,
    hash: &str,
    prv: Option<&str>,
) -> Value {
    let outbound = direction == "outbound";
    let host = to.rsplit('/').next().unwrap_or_default();
    let seed: u32 = at.bytes().chain(direction.bytes()).map(u32::from).sum();
    json!({
        "timestamp": format!("2026-11-22T10:15:{at}Z"),
        "level": "INFO",
        "target": "hopgate::audit",
        "decision_id": format!("{seed:08x}-6b1d-4c8e-9a57-0d6f3b2e1a10"),
        "mode": "enforce",
        "direction": direction,
        "principal": from,
        "action": if to == CRM { "read_ticket" } else { "generate" },
        "resource": to,
        "policies": [format!("allow-{host}")],
        "errors": [],
        "method": "POST",
        "path": "/v1/call",
        "host": host,
        "client_addr": "127.0.0.1:50432",
        "route": if outbound { Value::from(host) } else { Value::Null },
        "txn": TXN,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "token_jti": format!("jti-{}", hash.get(..6).unwrap_or_default()),
        "token_hash": hash,
        "token_prv": prv,
        "sub": "alice",
        "depth": if prv.is_some() { 2 } else { 1 },
        "mcp_method": null,
        "mcp_name": null,
        "effect": "allow",
        "reason": null,
        "status": 200,
        "duration_us": 1234,
    })
}

/// `record` with `fields` replaced, as one log line.
pub(super) fn with(mut record: Value, fields: &[(&str, Value)]) -> String {
    for (key, value) in fields {
        record[*key] = value.clone();
    }
    record.to_string()
}

/// A deny by `policy` at this side, with status 403.
pub(super) fn denied(record: Value, policy: &str) -> String {
    with(
        record,
        &[
            ("effect", json!("deny")),
            ("reason", json!("forbidden")),
            ("status", json!(403)),
            ("policies", json!([policy])),
        ],
    )
}

pub(super) fn sources(files: &[(&str, Vec<String>)]) -> Vec<(String, Vec<String>)> {
    files
        .iter()
        .map(|(name, lines)| ((*name).to_owned(), lines.clone()))
        .collect()
}

/// The logs of agent → inference → crm, crm denying the last hop.
pub(super) fn chain() -> Vec<(String, Vec<String>)> {
    sources(&[
        (
            "agent.log",
            vec![
                r#"{"timestamp":"2026-11-22T10:15:01Z","level":"INFO","target":"hopgate","message":"listening"}"#.to_owned(),
                rec("02.100", "outbound", AGENT, INFERENCE, H0, None).to_string(),
            ],
        ),
        (
            "inference.log",
            vec![
                rec("02.110", "inbound", AGENT, INFERENCE, H0, None).to_string(),
                with(rec("02.300", "outbound", INFERENCE, CRM, H1, Some(H0)), &[("status", json!(403))]),
            ],
        ),
        (
            "crm.log",
            vec![denied(rec("02.310", "inbound", INFERENCE, CRM, H1, Some(H0)), "deny-inference-to-crm")],
        ),
    ])
}

/// The tree in preorder: depth, caller, destination, link and record count of each hop.
pub(super) fn walk(trace: &Trace) -> Vec<(usize, String, String, Link, usize)> {
    fn visit(node: &Node, depth: usize, out: &mut Vec<(usize, String, String, Link, usize)>) {
        let hop = &node.hop;
        let name = |id: &Option<String>| id.clone().unwrap_or_else(|| "?".to_owned());
        out.push((
            depth,
            name(&hop.caller),
            name(&hop.destination),
            node.link,
            hop.records.len(),
        ));
        for child in &node.children {
            visit(child, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    for root in &trace.roots {
        visit(root, 0, &mut out);
    }
    out
}

pub(super) fn hop(
    depth: usize,
    from: &str,
    to: &str,
    link: Link,
    records: usize,
) -> (usize, String, String, Link, usize) {
    (depth, from.to_owned(), to.to_owned(), link, records)
}
