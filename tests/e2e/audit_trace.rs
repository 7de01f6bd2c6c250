//! `hopgate audit trace` on the audit logs three real sidecars wrote for one transaction, the
//! last hop denied: agent → inference → crm, where crm's policy forbids the write.

use std::process::Command;

use serde_json::Value;

use crate::support::idp::Idp;
use crate::support::proxy::POLICY_SCHEMA;
use crate::support::workload::{Workload, Workloads};

const CRM_POLICY: &str = r#"@id("reads-only")
forbid (principal, action == Hop::Action::"write_ticket", resource);
@id("mesh") permit (principal, action, resource);
"#;

/// Writes a workload's audit log to `dir/<name>.log`, between two lines of other output.
fn write_log(dir: &std::path::Path, name: &str, workload: &Workload) -> String {
    let mut text = String::from("{\"level\":\"INFO\",\"message\":\"listening\"}\n");
    for line in workload.audit.lock().unwrap().iter() {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("a log line that is not JSON\n");
    let path = dir.join(format!("{name}.log"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn audit_trace_joins_three_sidecars_logs_into_one_tree_ending_in_the_denied_hop() {
    let mesh = Workloads::new();
    let idp = Idp::new();
    idp.write_jwks(mesh.dir.path());
    let crm = mesh
        .workload("crm")
        .policy("schema.cedarschema", POLICY_SCHEMA)
        .policy("crm.cedar", CRM_POLICY)
        .start()
        .await;
    let inference = mesh
        .workload("inference")
        .route("crm.tools", &crm, &["read_ticket", "write_ticket"])
        .start()
        .await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("inference.ml", &inference, &["generate", "write_ticket"])
        .top_yaml(&Idp::token_yaml("jwks.json"))
        .start()
        .await;
    let alice = format!("Bearer {}", idp.token("alice", "generate write_ticket"));
    // Another transaction first: the trace must leave it out.
    assert_eq!(agent.call("inference.ml", "/", &[]).await.status, 200);
    let reply = agent
        .call(
            "inference.ml",
            "/tickets/7",
            &[
                ("authorization", &alice),
                ("x-next", "crm.tools"),
                ("x-next-action", "write_ticket"),
            ],
        )
        .await;
    assert_eq!(reply.json()["downstream"]["status"], 403, "{}", reply.body);
    let txn = crm.audit_records()[0]["txn"].as_str().unwrap().to_owned();

    let logs = tempfile::tempdir().unwrap();
    let files: Vec<String> = [("agent", &agent), ("inference", &inference), ("crm", &crm)]
        .iter()
        .map(|(name, w)| write_log(logs.path(), name, w))
        .collect();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hopgate"))
            .args(["audit", "trace", &txn])
            .args(&files)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tree["hops"], 2, "{tree:#}");
    assert_eq!(tree["records"], 4, "{tree:#}");
    let [root] = tree["tree"].as_array().unwrap().as_slice() else {
        panic!("one root: {tree:#}")
    };
    assert_eq!(root["caller"], Value::String(agent.id.clone()));
    assert_eq!(root["destination"], Value::String(inference.id.clone()));
    let [child] = root["children"].as_array().unwrap().as_slice() else {
        panic!("one child: {tree:#}")
    };
    assert_eq!(child["token_prv"], root["token_hash"]);
    assert_eq!(child["destination"], Value::String(crm.id.clone()));
    let denied = child["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["record"]["direction"] == "inbound")
        .expect("crm's record of the hop");
    assert_eq!(denied["record"]["effect"], "deny");
    assert_eq!(denied["record"]["policies"][0], "reads-only");
    assert_eq!(denied["record"]["status"], 403);
    assert!(denied["file"].as_str().unwrap().ends_with("crm.log"));

    let text = run(&[]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("reads-only") && text.contains("alice"),
        "{text}"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(["audit", "trace", "no-such-txn"])
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}
