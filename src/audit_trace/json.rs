//! The tree as one JSON object (`--json`); its shape is documented in docs/telemetry.md.
//!
//! ```text
//! {"txn", "sub": [..], "records", "hops", "files": {"read", "with_txn": [..]}, "tree": [node]}
//! node: {"link", "caller", "destination", "action", "token_jti", "token_hash", "token_prv",
//!        "records": [{"file", "line", "record": {..as written..}}], "children": [node]}
//! ```

use serde_json::{Value, json};

use super::tree::{Node, Trace};

/// `trace` as one JSON value.
pub(crate) fn render(trace: &Trace) -> Value {
    json!({
        "txn": trace.txn,
        "sub": trace.subs,
        "records": trace.records,
        "hops": trace.hops,
        "files": { "read": trace.sources_read, "with_txn": trace.sources },
        "tree": trace.roots.iter().map(node).collect::<Vec<_>>(),
    })
}

/// One node and its children (the tree nests at most `MAX_DEPTH` levels).
fn node(node: &Node) -> Value {
    let hop = &node.hop;
    let records: Vec<Value> = hop
        .records
        .iter()
        .map(|r| {
            json!({
                "file": r.source,
                "line": r.line,
                "record": Value::Object(r.fields.clone()),
            })
        })
        .collect();
    json!({
        "link": node.link.as_str(),
        "caller": hop.caller,
        "destination": hop.destination,
        "action": hop.action,
        "token_jti": hop.jti,
        "token_hash": hop.token_hash,
        "token_prv": hop.token_prv,
        "records": records,
        "children": node.children.iter().map(self::node).collect::<Vec<_>>(),
    })
}
