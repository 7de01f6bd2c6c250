//! Deciding hops: the Cedar model and the safety rules of docs/security.md, "Cedar evaluation
//! pitfalls".

use serde_json::json;

use super::{AGENT, CRM, FOREIGN, Folder, Hop, INFERENCE};
use crate::{DenyReason, Effect};

const PERMIT_AGENT: &str = r#"
@id("agent-may-call")
permit (principal == Hop::Workload::"spiffe://example.org/ns/agents/sa/agent", action, resource);
"#;

#[test]
fn a_matching_permit_allows_and_is_named() {
    let snapshot = Folder::with_policies(PERMIT_AGENT).snapshot();
    let decision = Hop::new(AGENT, INFERENCE).decide(&snapshot);
    assert_eq!(decision.effect(), Effect::Allow);
    assert_eq!(decision.reason(), None);
    assert_eq!(decision.policies(), ["agent-may-call"]);
    assert!(decision.errors().is_empty());
    assert_eq!(decision.action(), "call");
}

#[test]
fn no_matching_permit_denies_by_default() {
    let snapshot = Folder::with_policies(PERMIT_AGENT).snapshot();
    let decision = Hop::new(INFERENCE, CRM).decide(&snapshot);
    assert_eq!(decision.effect(), Effect::Deny);
    assert_eq!(decision.reason(), Some(DenyReason::NoPermit));
    assert!(decision.policies().is_empty());
}

#[test]
fn forbid_wins_over_a_matching_permit_ced_03() {
    let policies = format!(
        r#"{PERMIT_AGENT}
        @id("no-crm") forbid (principal, action, resource == Hop::Workload::"{CRM}");"#
    );
    let snapshot = Folder::with_policies(&policies).snapshot();
    let decision = Hop::new(AGENT, CRM).decide(&snapshot);
    assert_eq!(decision.reason(), Some(DenyReason::Forbidden));
    assert_eq!(decision.policies(), ["no-crm"]);
    assert!(Hop::new(AGENT, INFERENCE).decide(&snapshot).is_allowed());
}

#[test]
fn an_erroring_forbid_denies_where_cedar_alone_would_allow_ced_01() {
    // Validates strictly, overflows at run time once the chain has an actor: Cedar skips the
    // forbid and answers allow from the permit; hopgate must deny.
    let policies = format!(
        r#"{PERMIT_AGENT}
        @id("overflowing-forbid") forbid (principal, action, resource)
        when {{ context.token has depth && context.token.depth + 9223372036854775807 > 0 }};"#
    );
    let snapshot = Folder::with_policies(&policies).snapshot();
    let hop = Hop::new(AGENT, INFERENCE).token(json!({
        "sub": AGENT, "iss": AGENT, "act": { "sub": AGENT },
    }));
    let decision = hop.decide(&snapshot);
    assert_eq!(decision.effect(), Effect::Deny);
    assert_eq!(decision.reason(), Some(DenyReason::EvaluationError));
    assert_eq!(decision.policies(), ["overflowing-forbid"]);
    assert_eq!(decision.errors().len(), 1);
    assert!(
        decision.errors()[0].contains("overflowing-forbid"),
        "{:?}",
        decision.errors()
    );
}

#[test]
fn an_empty_policy_set_denies_everything_ced_02() {
    let folder = Folder::new(&[("schema.cedarschema", super::SCHEMA)]);
    let snapshot = folder.snapshot();
    let decision = Hop::new(AGENT, INFERENCE).decide(&snapshot);
    assert_eq!(decision.reason(), Some(DenyReason::NoPermit));
    assert!(snapshot.warnings().iter().any(|w| w.contains("CED-02")));
}

#[test]
fn an_undeclared_action_is_denied_as_unknown_action_without_evaluation() {
    let policies = r#"@id("everyone") permit (principal, action, resource)
        when { principal in Hop::TrustDomain::"example.org" };"#;
    let snapshot = Folder::with_policies(policies).snapshot();
    let decision = Hop::new(AGENT, INFERENCE)
        .action("launch_missiles")
        .decide(&snapshot);
    assert_eq!(decision.reason(), Some(DenyReason::UnknownAction));
    assert_eq!(decision.action(), "launch_missiles");
    assert!(decision.policies().is_empty() && decision.errors().is_empty());
    assert!(
        Hop::new(AGENT, INFERENCE)
            .action("generate")
            .decide(&snapshot)
            .is_allowed()
    );
}

#[test]
fn the_default_action_applies_without_an_intent_action_header() {
    let policies = r#"@id("calls") permit (principal, action == Hop::Action::"call", resource)
        when { principal in Hop::TrustDomain::"example.org" };"#;
    let snapshot = Folder::with_policies(policies).snapshot();
    let decision = Hop::new(AGENT, INFERENCE).decide(&snapshot);
    assert!(decision.is_allowed());
    assert_eq!(decision.action(), "call");
    assert!(
        !Hop::new(AGENT, INFERENCE)
            .action("generate")
            .decide(&snapshot)
            .is_allowed()
    );
}

#[test]
fn a_declared_intent_attribute_is_usable_in_a_policy() {
    let policies = r#"@id("support") permit (principal, action, resource)
        when { principal in Hop::TrustDomain::"example.org" &&
               context.intent has purpose && context.intent.purpose == "support" };"#;
    let snapshot = Folder::with_policies(policies).snapshot();
    let hop = Hop::new(AGENT, INFERENCE);
    assert!(
        hop.clone()
            .intent("purpose", "support")
            .decide(&snapshot)
            .is_allowed()
    );
    assert!(
        !hop.clone()
            .intent("purpose", "marketing")
            .decide(&snapshot)
            .is_allowed()
    );
    assert!(!hop.decide(&snapshot).is_allowed());
}

#[test]
fn an_undeclared_intent_header_is_ignored() {
    let hop = Hop::new(AGENT, INFERENCE)
        .intent("team", "red")
        .intent("purpose", "support")
        .intent("purpose", "second value is ignored");
    let context = hop.with(|req| {
        req.context(
            &["purpose".to_owned()],
            &[],
            &crate::usage::ContextUsage::everything(),
        )
        .unwrap()
    });
    let text = context.to_string();
    assert!(text.contains("\"support\""), "{text}");
    assert!(
        !text.contains("team") && !text.contains("second value"),
        "{text}"
    );

    let policies = r#"@id("support") permit (principal, action, resource)
        when { principal in Hop::TrustDomain::"example.org" &&
               context.intent has purpose && context.intent.purpose == "support" };"#;
    let snapshot = Folder::with_policies(policies).snapshot();
    assert!(hop.decide(&snapshot).is_allowed());
}

#[test]
fn a_trust_domain_is_every_workloads_parent() {
    let policies = r#"@id("home") permit (principal in Hop::TrustDomain::"example.org", action, resource)
        when { principal.trust_domain == "example.org" && resource.path == "/ns/ml/sa/inference" };"#;
    let snapshot = Folder::with_policies(policies).snapshot();
    assert!(Hop::new(AGENT, INFERENCE).decide(&snapshot).is_allowed());
    assert!(!Hop::new(FOREIGN, INFERENCE).decide(&snapshot).is_allowed());
    assert!(!Hop::new(AGENT, CRM).decide(&snapshot).is_allowed());
}

#[test]
fn entities_json_groups_become_parents_of_listed_workloads() {
    let entities = json!([
        { "uid": { "type": "Hop::Workload", "id": AGENT },
          "attrs": {}, "parents": [{ "type": "Hop::Group", "id": "ml-clients" }] },
        { "uid": { "type": "Hop::Group", "id": "ml-clients" },
          "attrs": {}, "parents": [{ "type": "Hop::Group", "id": "everyone" }] },
    ]);
    let folder = Folder::with_policies(
        r#"@id("ml") permit (principal in Hop::Group::"everyone", action, resource)
           when { principal.trust_domain == "example.org" };"#,
    );
    folder.write("entities.json", &entities.to_string());
    let snapshot = folder.snapshot();
    let decision = Hop::new(AGENT, INFERENCE).decide(&snapshot);
    assert!(decision.is_allowed(), "{decision:?}");
    assert!(!Hop::new(CRM, INFERENCE).decide(&snapshot).is_allowed());
}

#[test]
fn token_facts_reach_the_policy_as_actors_depth_and_origin() {
    let policies = format!(
        r#"@id("chain") permit (principal, action, resource)
        when {{ principal in Hop::TrustDomain::"example.org" && context.token.present &&
               context.token has depth && context.token.depth == 2 &&
               context.token has origin && context.token.origin == "{AGENT}" &&
               context.token has actors && context.token.actors.contains("{INFERENCE}") &&
               context.token has sub && context.token.sub == "alice" }};"#
    );
    let snapshot = Folder::with_policies(&policies).snapshot();
    let hop = Hop::new(INFERENCE, CRM);
    assert!(
        !hop.decide(&snapshot).is_allowed(),
        "no token, token.present is false"
    );
    let hop = hop.token(json!({
        "sub": "alice", "iss": INFERENCE,
        "act": { "sub": INFERENCE, "act": { "sub": AGENT } },
    }));
    assert!(hop.decide(&snapshot).is_allowed());
}

#[test]
fn quotes_backslashes_and_colons_in_token_data_cannot_inject_policy_ced_04() {
    let policies = r#"@id("alice-only") permit (principal, action, resource)
        when { principal in Hop::TrustDomain::"example.org" &&
               context.token has sub && context.token.sub == "alice" };"#;
    let snapshot = Folder::with_policies(policies).snapshot();
    for sub in [
        r#"alice" || true || ""#,
        r#"alice\"#,
        r#"Hop::Workload::"alice""#,
        "alice\" };\npermit(principal, action, resource);//",
    ] {
        let hop = Hop::new(AGENT, INFERENCE).token(json!({ "sub": sub, "iss": AGENT }));
        let decision = hop.decide(&snapshot);
        assert_eq!(decision.reason(), Some(DenyReason::NoPermit), "sub {sub:?}");
        assert!(decision.errors().is_empty());
    }
    let hop = Hop::new(AGENT, INFERENCE).token(json!({ "sub": "alice", "iss": AGENT }));
    assert!(hop.decide(&snapshot).is_allowed());
}

#[test]
fn a_workload_uid_is_built_from_its_id_not_from_text_ced_04() {
    let names = crate::entities::Names::new().unwrap();
    let peer = crate::SpiffeId::parse(AGENT).unwrap();
    let uid = names.workload(&peer);
    assert_eq!(uid.id().unescaped(), AGENT);
    assert_eq!(uid.type_name().to_string(), "Hop::Workload");
}

#[test]
fn every_decision_gets_its_own_id() {
    let snapshot = Folder::with_policies(PERMIT_AGENT).snapshot();
    let a = Hop::new(AGENT, INFERENCE).decide(&snapshot);
    let b = Hop::new(AGENT, INFERENCE).decide(&snapshot);
    assert_ne!(a.id(), b.id());
    assert_eq!(a.id().len(), 36);
}

#[test]
fn the_http_facts_and_direction_reach_the_policy() {
    let policies = r#"@id("reads") permit (principal, action, resource)
        when { principal in Hop::TrustDomain::"example.org" && context.direction == "inbound" &&
               context.http.method == "GET" && context.http.path like "/v1/*" &&
               context.http.host == "svc.local" };"#;
    let snapshot = Folder::with_policies(policies).snapshot();
    assert!(Hop::new(AGENT, INFERENCE).decide(&snapshot).is_allowed());
    assert!(
        !Hop::new(AGENT, INFERENCE)
            .method("POST")
            .decide(&snapshot)
            .is_allowed()
    );
}

#[test]
fn a_repeated_hop_reuses_its_decision_under_a_fresh_id() {
    let snapshot = Folder::with_policies(PERMIT_AGENT).snapshot();
    let hop = Hop::new(AGENT, INFERENCE);
    let first = hop.decide(&snapshot);
    let second = hop.decide(&snapshot);
    assert_eq!(snapshot.engine.memo.len(), 1);
    assert_eq!(second.effect(), Effect::Allow);
    assert_eq!(second.policies(), first.policies());
    assert_ne!(second.id(), first.id(), "every decision has its own id");
}

#[test]
fn the_memo_tells_apart_hops_that_differ_in_one_fact() {
    let policies = r#"@id("chain") permit (principal, action, resource)
        when { principal in Hop::TrustDomain::"example.org" && context.token.present &&
               context.token has depth && context.token.depth == 2 };"#;
    let snapshot = Folder::with_policies(policies).snapshot();
    let bare = Hop::new(INFERENCE, CRM);
    let chained = bare.clone().token(json!({
        "sub": "alice", "iss": INFERENCE,
        "act": { "sub": INFERENCE, "act": { "sub": AGENT } },
    }));
    let shallow = bare.clone().token(json!({
        "sub": "alice", "iss": INFERENCE, "act": { "sub": INFERENCE },
    }));
    for _ in 0..2 {
        assert!(!bare.decide(&snapshot).is_allowed());
        assert!(chained.decide(&snapshot).is_allowed());
        assert!(!shallow.decide(&snapshot).is_allowed());
    }
    assert_eq!(snapshot.engine.memo.len(), 3);
}

#[test]
fn the_memo_serves_every_transaction_alike_unless_a_policy_reads_txn() {
    let ticket = |txn: &str| {
        Hop::new(INFERENCE, CRM).token(json!({ "sub": "alice", "iss": INFERENCE, "txn": txn }))
    };
    // No policy reads `txn`: one Cedar evaluation serves every transaction.
    let snapshot = Folder::with_policies(
        r#"@id("tokens") permit (principal, action, resource) when { context.token.present };"#,
    )
    .snapshot();
    for txn in ["t1", "t2", "t3"] {
        assert!(ticket(txn).decide(&snapshot).is_allowed());
    }
    assert_eq!(snapshot.engine.memo.len(), 1);
    // One does: each transaction is decided on its own.
    let snapshot = Folder::with_policies(
        r#"@id("tokens") permit (principal, action, resource) when { context.token.present };
           @id("no-t1") forbid (principal, action, resource)
           when { context.token has txn && context.token.txn == "t1" };"#,
    )
    .snapshot();
    for _ in 0..2 {
        assert!(!ticket("t1").decide(&snapshot).is_allowed());
        assert!(ticket("t2").decide(&snapshot).is_allowed());
    }
    assert_eq!(snapshot.engine.memo.len(), 2);
}

#[test]
fn memo_keys_cannot_be_forged_by_moving_text_between_fields() {
    let key = |path: &str, host: &str, intent: &[(&str, &str)]| {
        Hop::new(AGENT, INFERENCE).with(|req| {
            let req = crate::HopRequest {
                path,
                host,
                intent,
                ..*req
            };
            crate::context::key(&req, "call", &crate::usage::ContextUsage::everything())
        })
    };
    let keys = [
        key("/a", "b", &[]),
        key("/a1:b", "", &[]),
        key("/a", "b", &[("purpose", "x")]),
        key("/a", "b", &[("purpose", "x1:y")]),
        key("/a", "b", &[("purpose", "x"), ("1:y", "")]),
    ];
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(a, b);
        }
    }
}
