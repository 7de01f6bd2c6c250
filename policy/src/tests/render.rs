//! `PolicySnapshot::cedar_request`: the request a decision evaluated, rendered for people.

use serde_json::json;

use super::{AGENT, Folder, Hop, INFERENCE};

#[test]
fn cedar_request_renders_the_request_a_decision_evaluates() {
    let folder = Folder::with_policies(&format!(
        r#"@id("agent-generates") permit (principal in Hop::Group::"agents",
             action == Hop::Action::"generate", resource == Hop::Workload::"{INFERENCE}")
           when {{ context.intent has purpose && context.intent.purpose == "support" }};"#
    ));
    folder.write(
        "entities.json",
        &json!([
            { "uid": { "type": "Hop::Group", "id": "agents" }, "attrs": {}, "parents": [] },
            { "uid": { "type": "Hop::Workload", "id": AGENT }, "attrs": {},
              "parents": [{ "type": "Hop::Group", "id": "agents" }] },
        ])
        .to_string(),
    );
    let snapshot = folder.snapshot();
    let hop = Hop::new(AGENT, INFERENCE)
        .action("generate")
        .intent("purpose", "support");
    assert!(hop.decide(&snapshot).is_allowed());
    let rendered = hop.with(|req| snapshot.cedar_request(req)).unwrap();
    assert_eq!(rendered.principal(), format!("Hop::Workload::\"{AGENT}\""));
    assert_eq!(rendered.action(), "Hop::Action::\"generate\"");
    assert_eq!(
        rendered.resource(),
        format!("Hop::Workload::\"{INFERENCE}\"")
    );
    // As evaluated: only what a policy reads, so no `http` and no `direction`.
    assert_eq!(
        rendered.context(),
        &json!({ "intent": { "purpose": "support" } })
    );
    let uids: Vec<String> = rendered
        .entities()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}::{}", e["uid"]["type"], e["uid"]["id"]))
        .collect();
    assert_eq!(
        uids,
        [
            format!("\"Hop::Workload\"::\"{AGENT}\""),
            format!("\"Hop::Workload\"::\"{INFERENCE}\""),
            "\"Hop::Action\"::\"generate\"".to_owned(),
            "\"Hop::Group\"::\"agents\"".to_owned(),
        ]
    );
    let agent = &rendered.entities()[0];
    assert_eq!(agent["attrs"]["trust_domain"], "example.org");
}

#[test]
fn cedar_request_is_none_for_an_action_nothing_is_evaluated_for() {
    let snapshot = Folder::with_policies("").snapshot();
    let hop = Hop::new(AGENT, INFERENCE).action("fly");
    assert!(hop.with(|req| snapshot.cedar_request(req)).is_none());
}
