//! `context.token.enduser` and `context.token.tctx`: a person behind the call, and the origin's
//! signed transaction context in place of the caller's unsigned intent headers.

use serde_json::json;

use crate::tests::{AGENT, CRM, Folder, Hop, INFERENCE};

#[test]
fn a_policy_can_require_a_person_behind_the_call_with_token_enduser() {
    let snapshot = Folder::with_policies(
        r#"@id("people-only") permit (principal, action, resource)
        when { context.token has enduser && context.token.enduser };"#,
    )
    .snapshot();
    let alice = Hop::new(INFERENCE, CRM).token(json!({
        "sub": "alice", "iss": INFERENCE, "act": { "sub": INFERENCE, "act": { "sub": AGENT } },
    }));
    assert!(alice.decide(&snapshot).is_allowed());
    // The agent started the chain for itself: the route's full scopes, but nobody behind it.
    let workload = Hop::new(INFERENCE, CRM).token(json!({
        "sub": AGENT, "iss": INFERENCE, "act": { "sub": INFERENCE },
        "scope": "read_ticket write_ticket",
    }));
    assert!(!workload.decide(&snapshot).is_allowed());
    assert!(!Hop::new(INFERENCE, CRM).decide(&snapshot).is_allowed());
}

#[test]
fn a_downstream_hop_trusts_the_signed_tctx_over_the_callers_intent_headers() {
    let snapshot = Folder::with_policies(
        r#"@id("support-transactions") permit (principal, action, resource)
        when { context.token has tctx && context.token.tctx has purpose &&
               context.token.tctx.purpose == "support" };"#,
    )
    .snapshot();
    let signed = |purpose: &str| {
        Hop::new(INFERENCE, CRM).token(json!({
            "sub": "alice", "iss": INFERENCE, "tctx": { "purpose": purpose },
        }))
    };
    assert!(signed("support").decide(&snapshot).is_allowed());
    // The caller's own header says support; the origin signed billing.
    let relabelled = signed("billing").intent("purpose", "support");
    assert!(!relabelled.decide(&snapshot).is_allowed());
    // Without a tctx the attribute is absent, not guessed.
    let bare = Hop::new(INFERENCE, CRM).token(json!({ "sub": "alice", "iss": INFERENCE }));
    assert!(!bare.decide(&snapshot).is_allowed());
}

#[test]
fn a_tctx_entry_that_is_not_a_string_is_invisible_to_policies() {
    let snapshot = Folder::with_policies(
        r#"@id("any-purpose") permit (principal, action, resource)
        when { context.token has tctx && context.token.tctx has purpose };"#,
    )
    .snapshot();
    let hop = Hop::new(INFERENCE, CRM).token(json!({
        "sub": "alice", "iss": INFERENCE, "tctx": { "purpose": 7 },
    }));
    assert!(!hop.decide(&snapshot).is_allowed());
}

#[test]
fn a_tctx_attribute_declared_with_another_type_is_a_load_error() {
    let schema =
        crate::tests::SCHEMA.replace("tctx?: { purpose?: String }", "tctx?: { level?: Long }");
    let folder = Folder::new(&[
        ("schema.cedarschema", &schema),
        ("policies.cedar", "permit (principal, action, resource);"),
    ]);
    let error = folder.load_error();
    assert!(
        error.contains("`context.token.tctx.level` must be a String"),
        "{error}"
    );
}
