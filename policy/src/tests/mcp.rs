//! MCP calls as Cedar sees them: the method is the action, `context.mcp` names the tool, and
//! the schema check keeps `context.mcp` to the actions that are MCP methods.

use crate::tests::{CRM, Folder, INFERENCE};
use crate::{Direction, HopRequest, McpFacts, PolicySnapshot, SpiffeId, is_mcp_method};

/// A schema with the MCP actions: their context always has `mcp`.
const SCHEMA: &str = r#"
namespace Hop {
  entity TrustDomain;
  entity Workload in [TrustDomain] { trust_domain: String, path: String };
  type HopContext = {
    direction: String,
    http: { method: String, path: String, host: String },
    mcp?: { method: String, name?: String, protocol_version: String },
  };
  type McpContext = {
    direction: String,
    http: { method: String, path: String, host: String },
    mcp: { method: String, name?: String, protocol_version: String },
  };
  action call appliesTo { principal: Workload, resource: Workload, context: HopContext };
  action "tools/call", "tools/list", initialize
    appliesTo { principal: Workload, resource: Workload, context: McpContext };
}
"#;

fn snapshot(policies: &str) -> PolicySnapshot {
    Folder::new(&[("schema.cedarschema", SCHEMA), ("mcp.cedar", policies)]).snapshot()
}

fn decide(snapshot: &PolicySnapshot, method: &str, name: Option<&str>) -> bool {
    let (peer, dest) = (
        SpiffeId::parse(INFERENCE).unwrap(),
        SpiffeId::parse(CRM).unwrap(),
    );
    let req = HopRequest {
        action: Some(method),
        method: "POST",
        path: "/mcp",
        mcp: Some(McpFacts {
            method,
            name,
            protocol_version: "2026-07-28",
        }),
        ..HopRequest::new(&peer, &dest, Direction::Inbound)
    };
    snapshot.authorize(&req).is_allowed()
}

#[test]
fn a_policy_permits_one_tool_by_name_and_not_another() {
    let snapshot = snapshot(
        r#"@id("read-only-tools") permit (principal, action == Hop::Action::"tools/call", resource)
        when { context.mcp has name && context.mcp.name == "read_ticket" };"#,
    );
    assert!(decide(&snapshot, "tools/call", Some("read_ticket")));
    assert!(!decide(&snapshot, "tools/call", Some("delete_ticket")));
    assert!(!decide(&snapshot, "tools/call", None));
    assert!(!decide(&snapshot, "tools/list", None));
}

#[test]
fn context_mcp_may_be_required_for_mcp_actions_and_must_be_optional_for_the_others() {
    // McpContext declares `mcp` required on the MCP actions: accepted (hopgate always sets it).
    let folder = Folder::new(&[("schema.cedarschema", SCHEMA), ("p.cedar", "")]);
    assert!(PolicySnapshot::load(folder.path(), "call").is_ok());
    // On `call`, which no MCP request is decided as, a required `mcp` would be a lie.
    let wrong = SCHEMA.replace("    mcp?: {", "    mcp: {");
    let folder = Folder::new(&[("schema.cedarschema", &wrong), ("p.cedar", "")]);
    let error = PolicySnapshot::load(folder.path(), "call")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("action `call`: `context.mcp` must be optional"),
        "{error}"
    );
    // A name is not on every MCP call (tools/list has none): it must be optional.
    let wrong = SCHEMA.replace(
        "mcp: { method: String, name?: String",
        "mcp: { method: String, name: String",
    );
    let folder = Folder::new(&[("schema.cedarschema", &wrong), ("p.cedar", "")]);
    let error = PolicySnapshot::load(folder.path(), "call")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("action `tools/call`: `context.mcp.name` must be optional"),
        "{error}"
    );
}

#[test]
fn mcp_methods_are_the_protocols_names_and_plain_actions_are_not() {
    for method in [
        "tools/call",
        "tools/list",
        "resources/read",
        "initialize",
        "ping",
    ] {
        assert!(is_mcp_method(method), "{method}");
    }
    for action in ["call", "generate", "read_ticket"] {
        assert!(!is_mcp_method(action), "{action}");
    }
}
