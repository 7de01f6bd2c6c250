//! The tree for a terminal, in the style of `hopgate token inspect`: the transaction and its
//! end user at the top, then one node per hop, caller → destination, each under the hop whose
//! token it relayed.

use std::fmt::Write as _;

use super::record::{Record, Side};
use super::tree::{Hop, Link, Node, Trace};

/// The effects of an outbound record after which the request went on to the receiver, so an
/// inbound record is expected.
const FORWARDED: [&str; 2] = ["allow", "audit_deny"];

/// `trace` as text, one line each, ending with a newline.
pub(crate) fn render(trace: &Trace) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "transaction {}", trace.txn);
    let sub = if trace.subs.is_empty() {
        "(none in the records)".to_owned()
    } else if let [one] = trace.subs.as_slice() {
        one.clone()
    } else {
        format!("{} (the records disagree)", trace.subs.join(", "))
    };
    let _ = writeln!(out, "├─ sub:     {sub}");
    let _ = writeln!(
        out,
        "├─ records: {} in {} {}, from {} of {} {} read: {}",
        trace.records,
        trace.hops,
        plural(trace.hops, "hop", "hops"),
        trace.sources.len(),
        trace.sources_read,
        plural(trace.sources_read, "file", "files"),
        trace.sources.join(", ")
    );
    let _ = writeln!(
        out,
        "└─ hops (caller → destination; each under the hop whose token it relayed):"
    );
    let count = trace.roots.len();
    for (i, node) in trace.roots.iter().enumerate() {
        write_node(&mut out, node, "   ", i + 1 == count);
    }
    out
}

/// `node` and its children, below `prefix`; `last` when no sibling follows it.
fn write_node(out: &mut String, node: &Node, prefix: &str, last: bool) {
    let (branch, next) = if last {
        ("└─ ", "   ")
    } else {
        ("├─ ", "│  ")
    };
    let _ = writeln!(out, "{prefix}{branch}{}", title(node));
    let inner = format!("{prefix}{next}");
    // The details keep the bar down to the children, when there are any.
    let bar = if node.children.is_empty() {
        format!("{inner}   ")
    } else {
        format!("{inner}│  ")
    };
    for line in details(node) {
        let _ = writeln!(out, "{bar}{line}");
    }
    let count = node.children.len();
    for (i, child) in node.children.iter().enumerate() {
        write_node(out, child, &inner, i + 1 == count);
    }
}

/// The node's first line: who called whom.
fn title(node: &Node) -> String {
    let hop = &node.hop;
    let unknown = "(unknown)";
    let caller = hop
        .caller
        .as_deref()
        .unwrap_or(if hop.is_absent() { "?" } else { unknown });
    let destination = hop.destination.as_deref().unwrap_or(unknown);
    let mut title = format!("{caller} → {destination}");
    match node.link {
        Link::Child | Link::Origin => {}
        Link::Absent => title.push_str("   ABSENT: no record of this hop in these logs"),
        Link::Cycle => title.push_str("   (its parent token is among its own descendants)"),
        Link::Cut => title.push_str("   (continued: nested too deep to draw under its parent)"),
    }
    title
}

/// The lines under a node's title: the request, the token, then each record.
fn details(node: &Node) -> Vec<String> {
    let hop = &node.hop;
    let mut lines = Vec::new();
    if hop.is_absent() {
        if let Some(hash) = &hop.token_hash {
            lines.push(format!("token sha256 {hash}: the parent its children name"));
        }
        lines.push(
            "neither its caller's nor its receiver's record is here: give their logs".to_owned(),
        );
        return lines;
    }
    lines.push(request(hop));
    let mut token = format!("jti {}", hop.jti.as_deref().unwrap_or("(none)"));
    if let Some(hash) = &hop.token_hash {
        let _ = write!(token, "  sha256 {hash}");
    }
    if node.link == Link::Origin && hop.token_hash.is_some() {
        token.push_str("  (first hop: no parent token)");
    }
    lines.push(token);
    let has = |side: Side| hop.records.iter().any(|r| r.side == side);
    let forwarded = hop.records.iter().any(|r| {
        r.side == Side::Outbound && r.str("effect").is_some_and(|e| FORWARDED.contains(&e))
    });
    if !has(Side::Outbound) {
        lines.push(format!(
            "{:<10}no record: the caller's log is not among these",
            Side::Outbound.as_str()
        ));
    }
    let width = hop
        .records
        .iter()
        .map(|r| decided(r).chars().count())
        .max()
        .unwrap_or_default();
    for record in &hop.records {
        lines.extend(record_lines(record, hop.action.as_deref(), width));
    }
    if !has(Side::Inbound) && forwarded {
        lines.push(format!(
            "{:<10}no record: the receiver's log is not among these",
            Side::Inbound.as_str()
        ));
    }
    lines
}

/// The hop's request: action, method and path, MCP method and name.
fn request(hop: &Hop) -> String {
    let first = hop.records.first();
    let field = |key: &str| first.and_then(|r| r.str(key));
    let mut line = format!("action {}", hop.action.as_deref().unwrap_or("(none)"));
    match (field("method"), field("path")) {
        (Some(method), Some(path)) => {
            let _ = write!(line, "  {method} {path}");
        }
        (Some(one), None) | (None, Some(one)) => {
            let _ = write!(line, "  {one}");
        }
        (None, None) => {}
    }
    if let Some(host) = field("host") {
        let _ = write!(line, "  host {host}");
    }
    if let Some(method) = field("mcp_method") {
        let _ = write!(line, "  mcp {method}");
        if let Some(name) = field("mcp_name") {
            let _ = write!(line, " {name}");
        }
    }
    line
}

/// What a record decided: its effect, and its reason when it is not `allow`; for the second
/// record of a stream cut after it was admitted, the cut and why.
fn decided(record: &Record) -> String {
    if record.str("event") == Some("stream_closed") {
        return format!("cut ({})", record.str("reason").unwrap_or("no reason"));
    }
    let effect = record.str("effect").unwrap_or("(no effect)");
    if effect == "allow" {
        effect.to_owned()
    } else {
        format!("{effect} ({})", record.str("reason").unwrap_or("no reason"))
    }
}

/// Two lines for one record: what was decided and sent, then by what; the decision padded to
/// `width`, so the records of a hop line up.
fn record_lines(record: &Record, hop_action: Option<&str>, width: usize) -> [String; 2] {
    let decided = decided(record);
    let status = record
        .u64("status")
        .map_or_else(|| "---".to_owned(), |s| s.to_string());
    let mut first = format!(
        "{:<10}{decided:<width$}  {status}  {:>8}  {}  {}",
        record.side.as_str(),
        duration(record.u64("duration_us")),
        record.str("timestamp").unwrap_or("(no timestamp)"),
        record.location(),
    );
    if let Some(route) = record.str("route") {
        let _ = write!(first, "  route {route}");
    }
    let mut second = format!(
        "{:<10}decision {}",
        "",
        record.str("decision_id").unwrap_or("(none)")
    );
    let policies = record.strings("policies");
    if policies.is_empty() {
        second.push_str("  policies (none)");
    } else {
        let _ = write!(second, "  policies {}", policies.join(", "));
    }
    let errors = record.strings("errors");
    if !errors.is_empty() {
        let _ = write!(second, "  errors {}", errors.join("; "));
    }
    if let Some(mode) = record.str("mode").filter(|m| *m != "enforce") {
        let _ = write!(second, "  mode {mode}");
    }
    if let Some(action) = record.str("action").filter(|a| Some(*a) != hop_action) {
        let _ = write!(second, "  action {action}");
    }
    [first, second]
}

/// `duration_us` for a reader: `850 µs`, `12.5 ms`, `1.20 s`.
fn duration(micros: Option<u64>) -> String {
    let Some(us) = micros else {
        return "-".to_owned();
    };
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{}.{} ms", us / 1_000, (us % 1_000) / 100)
    } else {
        format!("{}.{:02} s", us / 1_000_000, (us % 1_000_000) / 10_000)
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}
