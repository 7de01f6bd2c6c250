//! Loading a folder: the shipped examples, re-keying, strictness and load errors.

use std::path::Path;

use serde_json::json;

use super::{AGENT, Folder, Hop, INFERENCE, SCHEMA};
use crate::{DenyReason, PolicyError, PolicySnapshot};

const DEMO_AGENT: &str = "spiffe://demo.local/ns/agents/sa/support-agent";
const DEMO_INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";
const DEMO_CRM: &str = "spiffe://demo.local/ns/tools/sa/crm";

fn examples() -> PolicySnapshot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    PolicySnapshot::load(&dir, "call").unwrap()
}

fn chain(scope: &str, depth: usize) -> serde_json::Value {
    let mut act = json!({ "sub": DEMO_AGENT });
    for _ in 1..depth {
        act = json!({ "sub": DEMO_INFERENCE, "act": act });
    }
    json!({ "sub": "alice", "iss": DEMO_INFERENCE, "scope": scope, "act": act })
}

#[test]
fn the_shipped_example_folder_loads_strictly_without_warnings() {
    let snapshot = examples();
    assert!(snapshot.warnings().is_empty(), "{:?}", snapshot.warnings());
    assert!(snapshot.impossible_policies().is_empty());
    assert_eq!(snapshot.digest().len(), 64);
    assert!(snapshot.policy_ids().contains(&"deny-agent-direct-to-crm"));
}

#[test]
fn the_demo_scenario_decides_as_designed() {
    let snapshot = examples();
    let generate = Hop::new(DEMO_AGENT, DEMO_INFERENCE).action("generate");
    assert!(generate.decide(&snapshot).is_allowed());

    let read = Hop::new(DEMO_INFERENCE, DEMO_CRM).action("read_ticket");
    assert!(!read.decide(&snapshot).is_allowed(), "no token, no scope");
    let read = read.token(chain("tickets.read", 2));
    assert_eq!(
        read.decide(&snapshot).policies(),
        ["inference-read-ticket-on-crm"]
    );

    let direct = Hop::new(DEMO_AGENT, DEMO_CRM)
        .action("read_ticket")
        .decide(&snapshot);
    assert_eq!(direct.reason(), Some(DenyReason::Forbidden));
    assert_eq!(direct.policies(), ["deny-agent-direct-to-crm"]);

    let write = Hop::new(DEMO_INFERENCE, DEMO_CRM)
        .action("write_ticket")
        .token(chain("tickets.read", 2));
    assert_eq!(write.decide(&snapshot).reason(), Some(DenyReason::NoPermit));

    let deep = Hop::new(DEMO_INFERENCE, DEMO_CRM)
        .action("read_ticket")
        .token(chain("tickets.read", 5));
    assert_eq!(deep.decide(&snapshot).policies(), ["deny-deep-chains"]);

    let foreign = Hop::new("spiffe://evil.example/ns/x/sa/y", DEMO_INFERENCE).action("generate");
    assert_eq!(
        foreign.decide(&snapshot).policies(),
        ["deny-foreign-trust-domains"]
    );
}

#[test]
fn policies_are_keyed_by_their_id_annotation_and_others_by_file_and_index() {
    let folder = Folder::with_policies(
        r#"
        permit (principal == Hop::Workload::"spiffe://example.org/a", action, resource);
        @id("named") permit (principal == Hop::Workload::"spiffe://example.org/b", action, resource);
        permit (principal == Hop::Workload::"spiffe://example.org/c", action, resource);
        "#,
    );
    folder.write(
        "0-first.cedar",
        r#"@id("from \"first\" file") forbid (principal == Hop::Workload::"spiffe://example.org/d", action, resource);"#,
    );
    let snapshot = folder.snapshot();
    assert_eq!(
        snapshot.policy_ids(),
        ["from \"first\" file", "policies:0", "named", "policies:2"]
    );
    let decision = Hop::new("spiffe://example.org/b", INFERENCE).decide(&snapshot);
    assert_eq!(decision.policies(), ["named"]);
}

#[test]
fn a_duplicate_id_is_a_load_error_naming_both_places() {
    let folder = Folder::with_policies(r#"@id("same") permit (principal, action, resource);"#);
    folder.write(
        "b.cedar",
        "// first\n\n  @id(\"same\") forbid (principal, action, resource);",
    );
    let err = PolicySnapshot::load(folder.path(), "call").unwrap_err();
    let [problem] = err.problems() else {
        panic!("not one problem: {err}");
    };
    assert!(problem.path().ends_with("policies.cedar"), "{problem}");
    assert_eq!(problem.position(), Some((1, 1)), "{problem}");
    let first = folder.path().join("b.cedar");
    assert_eq!(
        problem.message(),
        format!(
            "policy id `same` is already used in {}:3:3",
            first.display()
        )
    );
}

#[test]
fn a_duplicate_id_does_not_hide_the_other_problems_of_any_file() {
    let folder = Folder::with_policies(
        "@id(\"same\") permit (principal, action, resource)\nwhen { context.intent.porpose == \"x\" };\n\
         @id(\"same\") forbid (principal, action, resource)\nwhen { context.token.dept > 4 };\n",
    );
    folder.write("a.cedar", "permit (principal,");
    folder.write(
        "c.cedar",
        r#"@id("bad-scope") forbid (principal == Hop::Workload::"spiffe://EXAMPLE.org/a", action, resource);"#,
    );
    let err = PolicySnapshot::load(folder.path(), "call").unwrap_err();
    let problems: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    let at = |needle: &str| {
        problems
            .iter()
            .position(|p| p.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {problems:#?}"))
    };
    let syntax = at("a.cedar:1:");
    let typo = at("policies.cedar:2:");
    let duplicate = at("policy id `same` is already used in");
    let duplicates_own = at("policies.cedar:4:");
    let scope = at("CED-05");
    assert!(
        problems[duplicate].contains("policies.cedar:3:1: "),
        "{problems:#?}"
    );
    assert!(problems[duplicates_own].contains("dept"), "{problems:#?}");
    assert!(problems[scope].contains("c.cedar"), "{problems:#?}");
    // Files by name (a, c, policies), each in line order.
    assert!(
        syntax < scope && scope < typo && typo < duplicate && duplicate < duplicates_own,
        "not in file and line order: {problems:#?}"
    );
}

#[test]
fn a_context_shape_problem_does_not_hide_the_policies_validation_errors() {
    let schema = SCHEMA.replace("purpose?: String", "purpose?: Long");
    let folder = Folder::new(&[("schema.cedarschema", &schema)]);
    folder.write(
        "policies.cedar",
        r#"@id("typo") permit (principal, action, resource) when { context.http.methd == "GET" };"#,
    );
    let err = folder.load_error();
    assert!(
        err.contains("`context.intent.purpose` must be a String") && err.contains("`typo`"),
        "{err}"
    );
}

#[test]
fn an_id_annotation_is_found_past_comments_strings_and_escapes() {
    let folder = Folder::with_policies(
        "// @id(\"x\") in a comment\n\
         @id(\"x\") permit (principal, action, resource) when { context.http.path == \"@id(\\\"x\\\")\" };\n\
         @id(\"\\u{78}\") forbid (principal, action, resource);\n",
    );
    let err = PolicySnapshot::load(folder.path(), "call").unwrap_err();
    let [problem] = err.problems() else {
        panic!("not one problem: {err}");
    };
    assert_eq!(problem.position(), Some((3, 1)), "{problem}");
    assert!(
        problem.message().ends_with("policies.cedar:2:1"),
        "{problem}"
    );
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let folder = Folder::with_policies("\n\npermit (principal, action, resource) when { 1 + };");
    let err = folder.load_error();
    assert!(err.contains("policies.cedar:3:"), "{err}");
    assert!(err.contains("unexpected token"), "{err}");
}

#[test]
fn a_strict_validation_error_fails_the_load_naming_policy_and_line() {
    let folder = Folder::with_policies(
        "@id(\"typo\")\npermit (principal, action, resource)\nwhen { context.intent.porpose == \"x\" };",
    );
    let err = folder.load_error();
    assert!(err.contains("policies.cedar:3:"), "{err}");
    assert!(err.contains("`typo`"), "{err}");
}

#[test]
fn an_unguarded_optional_attribute_fails_strict_validation() {
    let folder = Folder::with_policies(
        r#"@id("unguarded") permit (principal, action, resource) when { context.intent.purpose == "x" };"#,
    );
    assert!(folder.load_error().contains("`unguarded`"));
}

#[test]
fn impossible_policies_names_a_policy_that_can_never_apply() {
    let schema = SCHEMA.replacen(
        "action call,",
        "action administer appliesTo { principal: Group, resource: Group, context: HopContext };\n  action call,",
        1,
    );
    let folder = Folder::new(&[("schema.cedarschema", &schema)]);
    folder.write(
        "policies.cedar",
        r#"
        @id("never") permit (principal, action, resource) when { false };
        @id("wrong-types") permit (principal == Hop::Workload::"spiffe://example.org/a",
            action == Hop::Action::"administer", resource);
        @id("fine") permit (principal == Hop::Workload::"spiffe://example.org/a", action, resource);
        "#,
    );
    let snapshot = folder.snapshot();
    assert_eq!(snapshot.impossible_policies(), ["never", "wrong-types"]);
    assert!(
        snapshot
            .warnings()
            .iter()
            .any(|w| w.contains("policies.cedar"))
    );
}

#[test]
fn a_non_canonical_spiffe_id_in_a_scope_is_a_load_error_ced_05() {
    for id in [
        "spiffe://EXAMPLE.org/a",
        "spiffe://example.org/a/",
        "spiffe://example.org/%41",
    ] {
        let folder = Folder::with_policies(&format!(
            r#"@id("x") forbid (principal == Hop::Workload::"{id}", action, resource);"#
        ));
        let err = folder.load_error();
        assert!(err.contains("CED-05") && err.contains("`x`"), "{err}");
    }
}

#[test]
fn a_permit_for_any_principal_without_a_trust_domain_is_warned_about_ced_06() {
    let folder = Folder::with_policies(r#"@id("open") permit (principal, action, resource);"#);
    let snapshot = folder.snapshot();
    assert!(
        snapshot
            .warnings()
            .iter()
            .any(|w| w.contains("`open`") && w.contains("CED-06")),
        "{:?}",
        snapshot.warnings()
    );
    let folder = Folder::with_policies(
        r#"@id("home") permit (principal in Hop::TrustDomain::"example.org", action, resource);"#,
    );
    assert!(folder.snapshot().warnings().is_empty());
}

#[test]
fn a_folder_without_a_schema_does_not_load() {
    let folder = Folder::new(&[("a.cedar", "permit (principal, action, resource);")]);
    let err = PolicySnapshot::load(folder.path(), "call").unwrap_err();
    assert!(matches!(err, PolicyError::MissingSchema { .. }), "{err}");
    assert!(err.to_string().contains("schema.cedarschema"));
}

#[test]
fn a_schema_syntax_error_names_the_schema_file() {
    let folder = Folder::new(&[("schema.cedarschema", "namespace Hop { entity ; }")]);
    let err = folder.load_error();
    assert!(err.contains("schema.cedarschema:1:"), "{err}");
}

#[test]
fn an_intent_attribute_that_is_not_a_string_is_a_load_error() {
    let schema = SCHEMA.replace("purpose?: String", "purpose?: Long");
    let folder = Folder::new(&[("schema.cedarschema", &schema)]);
    let err = folder.load_error();
    assert!(
        err.contains("`context.intent.purpose` must be a String"),
        "{err}"
    );
}

#[test]
fn policy_templates_are_refused() {
    let folder = Folder::with_policies("permit (principal == ?principal, action, resource);");
    assert!(folder.load_error().contains("templates"));
}

#[test]
fn entities_json_must_conform_to_the_schema() {
    let folder = Folder::with_policies("");
    folder.write(
        "entities.json",
        &json!([{ "uid": { "type": "Hop::Group", "id": "g" }, "attrs": { "size": 3 }, "parents": [] }])
            .to_string(),
    );
    let err = folder.load_error();
    assert!(
        err.contains("entities.json") && err.contains("size"),
        "{err}"
    );
}

#[test]
fn an_undeclared_default_action_is_warned_about() {
    let folder = Folder::with_policies("");
    let snapshot = PolicySnapshot::load(folder.path(), "invoke").unwrap();
    assert!(snapshot.warnings().iter().any(|w| w.contains("`invoke`")));
    assert_eq!(snapshot.default_action(), "invoke");
    let decision = Hop::new(AGENT, INFERENCE).decide(&snapshot);
    assert_eq!(decision.reason(), Some(DenyReason::UnknownAction));
}

#[test]
fn the_digest_covers_every_file_read() {
    let folder = Folder::with_policies("");
    let before = folder.snapshot().digest().to_owned();
    assert_eq!(folder.snapshot().digest(), before, "stable");
    folder.write("entities.json", "[]");
    assert_ne!(folder.snapshot().digest(), before);
    folder.write("notes.txt", "not read");
    let with_entities = folder.snapshot().digest().to_owned();
    folder.write("notes.txt", "still not read");
    assert_eq!(folder.snapshot().digest(), with_entities);
}

#[test]
fn a_permit_that_reads_prior_actors_is_warned_about_ced_08() {
    let folder = Folder::with_policies(&format!(
        r#"@id("by-actor") permit (principal in Hop::TrustDomain::"example.org", action, resource)
           when {{ context.token has actors && context.token.actors.contains("{AGENT}") }};
           @id("restrict") forbid (principal, action, resource)
           when {{ context.token has actors && context.token.actors.contains("{AGENT}") }};"#
    ));
    let warnings = folder.snapshot().warnings().to_vec();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("`by-actor`") && warnings[0].contains("CED-08"));
}
