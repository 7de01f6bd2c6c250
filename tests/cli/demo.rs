//! `hopgate demo`.

use super::*;

#[test]
fn demo_runs_the_five_steps_and_exits_0_when_each_behaves_as_expected() {
    let out = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok   step 1: allowed; crm saw sub=alice",
        "ok   step 2: denied with 403 by crm's policy [\"deny-agent-direct-to-crm\"]",
        "ok   step 3: rejected with 401 `binding`",
        "ok   step 4: denied with 403 by crm",
        "ok   step 5: crm's tools/list for alice showed read_ticket, search_tickets (write_ticket dropped); tools/call write_ticket was 403, JSON-RPC -32001 with decision ",
        "ok   audit trace: step 1's transaction joined from the three sidecars' audit logs: 2 hops, 4 records",
        "every step behaved as expected",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    // The span tree shows the whole chain as one trace, and no token is printed whole.
    assert!(
        stdout.contains(
            "└─ crm hopgate.inbound  GET /tickets/42 → 200  allow [inference-read-ticket-on-crm]"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("eyJ"), "a token was printed: {stdout}");
    // Step 5: crm's app lists three tools; crm's sidecar shows inference, for alice, the two
    // it may call, and answers the write with a JSON-RPC error naming its decision, which
    // crm's audit record of the denied call carries.
    assert!(
        stdout.contains("  tools/list (id 1): HTTP 200, tools: read_ticket, search_tickets\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"  tools/call read_ticket (id 2): HTTP 200, text: {"ticket":"42""#),
        "{stdout}"
    );
    let denied = "  tools/call write_ticket (id 3): HTTP 403, JSON-RPC error -32001 `Forbidden: hopgate's policy denies this call`\n    decision_id ";
    let decision = stdout
        .split_once(denied)
        .and_then(|(_, rest)| rest.split_once("  reason forbidden\n"))
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("no JSON-RPC error for write_ticket in:\n{stdout}"));
    assert_eq!(decision.len(), 36, "not a decision id: {decision}");
    assert!(
        stdout.contains(&format!(
            "  crm        inbound  403 deny  action tools/call write_ticket: no permit applies (default deny)\n             decision {decision}  sub alice  depth 2"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("└─ crm hopgate.inbound  POST /mcp tools/call write_ticket → 403  deny"),
        "{stdout}"
    );
    // Steps 1 and 4 are two calls by alice: two transactions (CHA-06), each token showing the
    // transaction context its origin set.
    let txns: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("├─ txn:"))
        .map(str::trim)
        .collect();
    assert_eq!(txns.len(), 2, "{stdout}");
    assert_ne!(txns[0], txns[1], "steps 1 and 4 share a txn:\n{stdout}");
    assert!(
        stdout.contains(r#"├─ tctx:    {"purpose":"support"}"#),
        "{stdout}"
    );
}

#[test]
fn demo_serve_prints_its_files_and_a_token_to_inspect_and_cleans_up_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(["demo", "--serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The last line `--serve` prints before it waits.
    while !printed.contains("/identity") {
        let line = lines.next().expect("demo --serve ended early").unwrap();
        printed.push_str(&line);
        printed.push('\n');
    }
    let root = printed
        .lines()
        .find_map(|l| l.strip_prefix("The mesh stays up in "))
        .and_then(|l| l.split(';').next())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no folder in:\n{printed}"));
    assert!(root.join("ca/ca_key.pem").exists(), "{printed}");
    for name in ["agent", "inference", "crm"] {
        let config = root.join(format!("{name}.yaml"));
        assert!(printed.contains(&config.display().to_string()), "{printed}");
        assert!(config.exists());
        let audit = root.join(format!("{name}.audit.jsonl"));
        assert!(printed.contains(&audit.display().to_string()), "{printed}");
    }
    assert!(!printed.contains("eyJ"), "a token was printed: {printed}");

    // The token file it names is a real hop token that `token inspect` verifies.
    let inspect = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("hopgate token inspect - --bundle "))
        .unwrap_or_else(|| panic!("no token to inspect in:\n{printed}"));
    let (bundle, token) = inspect.split_once(" < ").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(["token", "inspect", "-", "--bundle", bundle])
        .stdin(std::fs::File::open(token).unwrap())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("verified"), "{shown}");

    // SIGTERM, like Ctrl-C: the mesh stops and its folder, CA key included, is gone.
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!root.exists(), "{} was left behind", root.display());
}
