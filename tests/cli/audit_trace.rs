//! `hopgate audit trace`: the real binary on sidecar logs written to a temp folder.

use super::*;

const AGENT: &str = "spiffe://demo.local/ns/agents/sa/support-agent";
const INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";
const CRM: &str = "spiffe://demo.local/ns/tools/sa/crm";
const TXN: &str = "iq_Uy6FgY2-oQEQE-LW7Nw";
const H0: &str = "z1_F2p0-WSR3f7tbye21mgXwHvKCWInLNzc-yTG8R9o";
const H1: &str = "Qk7vN3d1xR0pLmE9sT2uY6wA8bC4fG5hJ1kZ0oP3qRs";

/// One audit record with every field, as a sidecar writes it.
#[allow(
    clippy::too_many_arguments,
    reason = "one fixture line, every varying field named"
)]
fn record(
    at: &str,
    direction: &str,
    from: &str,
    to: &str,
    hash: &str,
    prv: Option<&str>,
    effect: &str,
    status: u16,
) -> String {
    let reason = if effect == "allow" {
        serde_json::Value::Null
    } else {
        "forbidden".into()
    };
    let route = if direction == "outbound" {
        to.rsplit('/').next().into()
    } else {
        serde_json::Value::Null
    };
    serde_json::json!({
        "timestamp": format!("2026-11-22T10:15:{at}Z"), "level": "INFO",
        "target": "hopgate::audit", "decision_id": format!("6f1c4a9e-6b1d-4c8e-9a57-0d6f3b2{}", at.replace('.', "")),
        "mode": "enforce", "direction": direction, "principal": from,
        "action": "read_ticket", "resource": to, "policies": ["crm-policy"], "errors": [],
        "method": "GET", "path": "/tickets/42", "host": to.rsplit('/').next(), "client_addr": "127.0.0.1:50432",
        "route": route, "txn": TXN, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "token_jti": format!("jti-{}", &hash[..6]), "token_hash": hash, "token_prv": prv,
        "sub": "alice", "depth": 1, "mcp_method": null, "mcp_name": null,
        "effect": effect, "reason": reason, "status": status, "duration_us": 2345,
    })
    .to_string()
}

/// The logs of agent → inference → crm, crm denying; returns the folder and the three paths.
fn logs() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "agent.log",
            vec![
                r#"{"timestamp":"2026-11-22T10:15:00Z","level":"INFO","target":"hopgate","message":"listening"}"#.to_owned(),
                record("02.100", "outbound", AGENT, INFERENCE, H0, None, "allow", 200),
            ],
        ),
        (
            "inference.log",
            vec![
                format!("inference-7c9f hopgate {}", record("02.110", "inbound", AGENT, INFERENCE, H0, None, "allow", 200)),
                record("02.300", "outbound", INFERENCE, CRM, H1, Some(H0), "allow", 403),
                r#"{"target":"hopgate::audit.seal","seq":1}"#.to_owned(),
            ],
        ),
        (
            "crm.log",
            vec![record("02.310", "inbound", INFERENCE, CRM, H1, Some(H0), "deny", 403)],
        ),
    ];
    let mut paths = Vec::new();
    for (name, lines) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        paths.push(path.to_str().unwrap().to_owned());
    }
    (dir, paths)
}

fn trace(args: &[&str], files: &[String]) -> (Option<i32>, String, String) {
    let mut all = vec!["audit", "trace"];
    all.extend_from_slice(args);
    all.extend(files.iter().map(String::as_str));
    let out = hopgate(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code(), stdout, stderr(&out))
}

#[test]
fn audit_trace_prints_the_tree_of_a_transaction_and_exits_0() {
    let (_dir, files) = logs();
    let (code, stdout, stderr) = trace(&[TXN], &files);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("transaction {TXN}\n├─ sub:     alice\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("├─ records: 4 in 2 hops, from 3 of 3 files read"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("   └─ {AGENT} → {INFERENCE}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("      └─ {INFERENCE} → {CRM}\n")),
        "{stdout}"
    );
    let deny = stdout
        .lines()
        .find(|l| l.contains("deny (forbidden)"))
        .unwrap();
    assert!(deny.contains("inbound") && deny.contains("403"), "{deny}");
    assert!(deny.ends_with(&format!("{}:1", files[2])), "{deny}");
    // The prefixed line counts, at its own line number.
    assert!(stdout.contains(&format!("{}:1", files[1])), "{stdout}");
    assert!(
        stdout.contains("decision 6f1c4a9e-6b1d-4c8e-9a57-0d6f3b202310"),
        "{stdout}"
    );
    assert!(stdout.contains("jti jti-Qk7vN3"), "{stdout}");
}

#[test]
fn audit_trace_exits_1_when_no_record_has_the_transaction_and_says_what_it_read() {
    let (_dir, files) = logs();
    let (code, stdout, stderr) = trace(&["no-such-txn"], &files);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(
            "no audit record of transaction `no-such-txn`: 4 audit records read from 3 files"
        ),
        "{stderr}"
    );
}

#[test]
fn audit_trace_takes_a_txn_that_starts_with_a_hyphen_as_the_id_not_an_option() {
    // A txn is 16 random bytes in base64url: one in 64 starts with `-`.
    let (_dir, files) = logs();
    let (code, stdout, stderr) = trace(&["-B3vUq0qk1mHq9Rw5v2TzA"], &files);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("no audit record of transaction `-B3vUq0qk1mHq9Rw5v2TzA`"),
        "{stderr}"
    );
}

#[test]
fn audit_trace_exits_1_naming_a_file_it_cannot_read() {
    let (dir, mut files) = logs();
    let missing = dir.path().join("gone.log");
    files.push(missing.to_str().unwrap().to_owned());
    let (code, stdout, stderr) = trace(&[TXN], &files);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("cannot read `{}`", missing.display())),
        "{stderr}"
    );
}

#[test]
fn audit_trace_exits_1_for_an_empty_txn() {
    let (_dir, files) = logs();
    let (code, _, stderr) = trace(&[" "], &files);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("TXN is empty"), "{stderr}");
}

#[test]
fn audit_trace_json_is_one_object_holding_the_tree() {
    let (_dir, files) = logs();
    let (code, stdout, stderr) = trace(&[TXN, "--json"], &files);
    assert_eq!(code, Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["txn"], TXN);
    assert_eq!(json["sub"], serde_json::json!(["alice"]));
    assert_eq!(json["files"]["read"], 3);
    let root = &json["tree"][0];
    assert_eq!(root["link"], "origin");
    assert_eq!(root["caller"], AGENT);
    assert_eq!(root["destination"], INFERENCE);
    let child = &root["children"][0];
    assert_eq!(child["token_prv"], H0);
    assert_eq!(child["records"][1]["file"], files[2].as_str());
    assert_eq!(child["records"][1]["line"], 1);
    assert_eq!(child["records"][1]["record"]["effect"], "deny");
}
