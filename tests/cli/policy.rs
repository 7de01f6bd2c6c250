//! `hopgate policy check`, `explain` and `test`.

use super::*;

mod sidecar;

const AGENT: &str = "spiffe://demo.local/ns/agents/sa/support-agent";
const INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";
const CRM: &str = "spiffe://demo.local/ns/tools/sa/crm";

/// The shipped example policies.
fn example_policies() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A policy folder with the shipped schema and `policies` as `test.cedar`.
fn policy_dir(policies: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        example_policies().join("schema.cedarschema"),
        dir.path().join("schema.cedarschema"),
    )
    .unwrap();
    std::fs::write(dir.path().join("test.cedar"), policies).unwrap();
    dir
}

/// `policy explain` on the example policies.
fn explain(args: &[&str]) -> Output {
    let examples = example_policies();
    let mut all = vec!["policy", "explain", path_arg(&examples)];
    all.extend_from_slice(args);
    hopgate(&all)
}

/// The value of `label:` in `policy explain` output.
fn explained<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .map_or_else(|| panic!("no `{label}` in:\n{out}"), str::trim)
}

#[test]
fn policy_check_accepts_the_shipped_example_policies() {
    let out = hopgate(&["policy", "check", path_arg(&example_policies())]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("policies, digest "),
        "{}",
        stdout(&out)
    );
}

#[test]
fn policy_check_fails_on_a_syntax_error_and_names_the_file() {
    let dir = policy_dir("@id(\"half\")\npermit (principal,\n");
    let out = hopgate(&["policy", "check", path_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("test.cedar"), "{}", stderr(&out));
}

#[test]
fn policy_check_fails_on_a_policy_that_can_never_apply() {
    // `colour` is not a declared intent attribute: the permit can never apply.
    let dir = policy_dir(
        "@id(\"never\")\npermit (principal in Hop::TrustDomain::\"demo.local\", action, resource)\nwhen { context.intent has colour };\n",
    );
    let out = hopgate(&["policy", "check", path_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("policy `never` can never apply"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn policy_explain_names_the_forbid_that_stops_the_agent_calling_the_crm_directly() {
    let out = explain(&["--peer", AGENT, "--dest", CRM]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert_eq!(explained(&text, "decision:"), "deny");
    assert_eq!(explained(&text, "policies:"), "deny-agent-direct-to-crm");
    assert_eq!(explained(&text, "reason:"), "forbidden");
    assert_eq!(explained(&text, "action:"), "call");
    let id = explained(&text, "decision id:");
    assert_eq!(id.len(), 36, "not a UUID: {id}");
}

#[test]
fn policy_explain_names_the_permit_that_lets_the_agent_generate_on_inference() {
    let out = explain(&["--action", "generate", "--peer", AGENT, "--dest", INFERENCE]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert_eq!(explained(&text, "decision:"), "allow");
    assert_eq!(explained(&text, "action:"), "generate");
    assert_eq!(explained(&text, "policies:"), "agent-generate-on-inference");

    // Without the action header it is the default `call`, which no permit names.
    let out = explain(&["--peer", AGENT, "--dest", INFERENCE]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(explained(&stdout(&out), "reason:"), "no_permit");
}

#[test]
fn policy_explain_reads_token_claims_for_inference_reading_a_ticket_for_alice() {
    let claims = r#"{"sub":"alice","iss":"spiffe://demo.local/ns/ml/sa/inference","scope":"tickets.read","act":{"sub":"spiffe://demo.local/ns/ml/sa/inference","act":{"sub":"spiffe://demo.local/ns/agents/sa/support-agent"}}}"#;
    let read = [
        "--action",
        "read_ticket",
        "--peer",
        INFERENCE,
        "--dest",
        CRM,
    ];
    let mut args = read.to_vec();
    args.extend(["--token-claims", claims]);
    let out = explain(&args);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert_eq!(explained(&text, "decision:"), "allow");
    assert_eq!(
        explained(&text, "policies:"),
        "inference-read-ticket-on-crm"
    );

    // The same hop without a token, or with a write, is denied.
    let out = explain(&read);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let mut write = vec![
        "--action",
        "write_ticket",
        "--peer",
        INFERENCE,
        "--dest",
        CRM,
    ];
    write.extend(["--token-claims", claims]);
    let out = explain(&write);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

#[test]
fn policy_explain_exits_78_on_bad_input() {
    for args in [
        vec!["--peer", "spiffe://demo.local/ns//sa/x", "--dest", CRM],
        vec![
            "--peer",
            AGENT,
            "--dest",
            CRM,
            "--token-claims",
            "{not json",
        ],
        vec!["--peer", AGENT, "--dest", CRM, "--header", "no colon here"],
    ] {
        let out = explain(&args);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
}

const CASES: &str = r#"- name: agent-generates-on-inference
  peer: spiffe://demo.local/ns/agents/sa/support-agent
  dest: spiffe://demo.local/ns/ml/sa/inference
  action: generate
  headers: { intent-purpose: support }
  expect: allow
- name: agent-cannot-call-crm-directly
  peer: spiffe://demo.local/ns/agents/sa/support-agent
  dest: spiffe://demo.local/ns/tools/sa/crm
  action: read_ticket
  expect: deny
- name: inference-reads-a-ticket-for-alice
  peer: spiffe://demo.local/ns/ml/sa/inference
  dest: spiffe://demo.local/ns/tools/sa/crm
  action: read_ticket
  method: POST
  path: /tickets/42
  token_claims:
    sub: alice
    iss: spiffe://demo.local/ns/ml/sa/inference
    scope: tickets.read
    act:
      sub: spiffe://demo.local/ns/ml/sa/inference
      act: { sub: spiffe://demo.local/ns/agents/sa/support-agent }
  expect: allow
"#;

fn policy_test(cases: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.yaml");
    std::fs::write(&file, cases).unwrap();
    hopgate(&[
        "policy",
        "test",
        path_arg(&example_policies()),
        path_arg(&file),
    ])
}

#[test]
fn policy_test_passes_when_every_case_holds() {
    let out = policy_test(CASES);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for name in [
        "agent-generates-on-inference",
        "agent-cannot-call-crm-directly",
        "inference-reads-a-ticket-for-alice",
    ] {
        assert!(text.contains(&format!("pass  {name}: ")), "{text}");
    }
    assert!(text.contains("3 passed, 0 failed"), "{text}");
}

#[test]
fn policy_test_fails_and_names_a_case_whose_expectation_is_wrong() {
    let cases = CASES.replace(
        "  action: read_ticket\n  expect: deny\n",
        "  action: read_ticket\n  expect: allow\n",
    );
    assert_ne!(cases, CASES);
    let out = policy_test(&cases);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let row = text
        .lines()
        .find(|l| l.starts_with("FAIL  agent-cannot-call-crm-directly: "))
        .unwrap_or_else(|| panic!("no FAIL row for the case:\n{text}"));
    assert!(row.contains("deny-agent-direct-to-crm"), "{row}");
    assert!(
        text.contains("pass  agent-generates-on-inference: "),
        "{text}"
    );
    assert!(text.contains("2 passed, 1 failed"), "{text}");
}

#[test]
fn policy_test_exits_78_on_a_malformed_or_missing_cases_file() {
    for cases in [
        "- name: [unclosed\n",
        "- name: x\n  peer: a\n  colour: red\n",
    ] {
        let out = policy_test(cases);
        assert_eq!(out.status.code(), Some(78), "{cases}: {}", stdout(&out));
        assert!(stderr(&out).contains("cases.yaml"), "{}", stderr(&out));
    }
    let out = hopgate(&[
        "policy",
        "test",
        path_arg(&example_policies()),
        "/nonexistent/cases.yaml",
    ]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
}

#[test]
fn policy_check_reports_a_duplicate_id_and_the_type_errors_in_one_run() {
    let dir = policy_dir(
        "@id(\"same\")\npermit (principal, action, resource)\nwhen { context.intent.porpose == \"x\" };\n",
    );
    std::fs::write(
        dir.path().join("more.cedar"),
        "// the same id again\n@id(\"same\")\nforbid (principal, action, resource)\nwhen { context.token.dept > 4 };\n",
    )
    .unwrap();
    let out = hopgate(&["policy", "check", path_arg(dir.path())]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let more = dir.path().join("more.cedar");
    let test = dir.path().join("test.cedar");
    for line in [
        format!(
            "error: {}:1:1: policy id `same` is already used in {}:2:1",
            test.display(),
            more.display()
        ),
        format!(
            "error: {}:4:8: for policy `same`, attribute `token.dept`",
            more.display()
        ),
        format!(
            "error: {}:3:8: for policy `same`, attribute `intent.porpose`",
            test.display()
        ),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&line)),
            "no `{line}` in:\n{err}"
        );
    }
    let problems = err.lines().filter(|l| l.starts_with("error: ")).count();
    let count = format!("{}: {problems} problem(s)", dir.path().display());
    assert!(err.contains(&count), "no `{count}` in:\n{err}");
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

#[test]
fn policy_explain_verbose_prints_the_cedar_request_with_its_context_and_entities() {
    let claims =
        r#"{"sub":"alice","iss":"spiffe://demo.local/ns/ml/sa/inference","scope":"tickets.read"}"#;
    let args = [
        "--action",
        "read_ticket",
        "--peer",
        INFERENCE,
        "--dest",
        CRM,
        "--token-claims",
        claims,
    ];
    let plain = stdout(&explain(&args));
    let mut verbose_args = args.to_vec();
    verbose_args.push("--verbose");
    let out = explain(&verbose_args);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    // The decision lines come first, as without --verbose.
    assert_eq!(explained(&text, "decision:"), "allow");
    let without_id = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with("decision id:"))
            .map(str::to_owned)
            .collect()
    };
    let (plain, verbose) = (without_id(&plain), without_id(&text));
    assert_eq!(plain[..], verbose[..plain.len()], "{text}");
    let (_, request) = text
        .split_once("cedar request:\n")
        .unwrap_or_else(|| panic!("no cedar request in:\n{text}"));
    assert!(
        request.contains(&format!("  principal: Hop::Workload::\"{INFERENCE}\"\n")),
        "{request}"
    );
    assert!(
        request.contains("  action:    Hop::Action::\"read_ticket\"\n"),
        "{request}"
    );
    assert!(
        request.contains(&format!("  resource:  Hop::Workload::\"{CRM}\"\n")),
        "{request}"
    );
    let (_, json) = request
        .split_once("  context:\n")
        .unwrap_or_else(|| panic!("no context in:\n{request}"));
    let (context, entities) = json
        .split_once("  entities:\n")
        .unwrap_or_else(|| panic!("no entities in:\n{request}"));
    let context: serde_json::Value = serde_json::from_str(context).unwrap();
    assert_eq!(context["token"]["present"], true, "{context}");
    assert_eq!(
        context["token"]["scope"],
        serde_json::json!(["tickets.read"])
    );
    let entities: serde_json::Value = serde_json::from_str(entities).unwrap();
    let ids: Vec<&str> = entities
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uid"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [INFERENCE, CRM, "read_ticket"], "{entities}");
    assert_eq!(entities[0]["attrs"]["trust_domain"], "demo.local");
    assert_eq!(entities[0]["parents"][0]["type"], "Hop::TrustDomain");
}

#[test]
fn policy_explain_verbose_says_why_there_is_no_cedar_request_for_an_undeclared_action() {
    let out = explain(&[
        "--action",
        "fly",
        "--peer",
        AGENT,
        "--dest",
        CRM,
        "--verbose",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert_eq!(explained(&text, "reason:"), "unknown_action");
    assert!(
        text.contains("cedar request: none: the schema does not declare the action"),
        "{text}"
    );
}

#[test]
fn policy_test_checks_the_determining_policies_and_the_deny_reason() {
    let cases = format!(
        "{CASES}  expect_policies: [inference-read-ticket-on-crm]
- name: reason-and-policies-hold
  peer: {AGENT}
  dest: {CRM}
  expect: deny
  expect_reason: forbidden
  expect_policies: [deny-agent-direct-to-crm]
- name: no-permit-has-no-policies
  peer: {INFERENCE}
  dest: {CRM}
  action: write_ticket
  expect: deny
  expect_reason: no_permit
  expect_policies: []
- name: wrong-reason
  peer: {AGENT}
  dest: {CRM}
  expect: deny
  expect_reason: no_permit
- name: wrong-policies
  peer: {AGENT}
  dest: {CRM}
  expect: deny
  expect_policies: [deny-agent-direct-to-crm, deny-deep-chains]
"
    );
    let out = policy_test(&cases);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    for name in [
        "inference-reads-a-ticket-for-alice",
        "reason-and-policies-hold",
        "no-permit-has-no-policies",
    ] {
        assert!(text.contains(&format!("pass  {name}: ")), "{text}");
    }
    let got = "got deny by [deny-agent-direct-to-crm] (forbidden)";
    for row in [
        format!("FAIL  wrong-reason: expected reason no_permit, {got}"),
        format!(
            "FAIL  wrong-policies: expected policies [deny-agent-direct-to-crm, deny-deep-chains], {got}"
        ),
    ] {
        assert!(text.lines().any(|l| l == row), "no `{row}` in:\n{text}");
    }
    assert!(text.contains("5 passed, 2 failed"), "{text}");
}

#[test]
fn policy_test_refuses_a_cases_file_without_cases() {
    for cases in ["[]\n", "", "# nothing yet\n"] {
        let out = policy_test(cases);
        assert_eq!(out.status.code(), Some(78), "{cases:?}: {}", stdout(&out));
        assert!(stderr(&out).contains("has no cases"), "{}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{cases:?}: {}", stdout(&out));
    }
}

#[test]
fn policy_test_exits_78_on_a_misspelt_expectation() {
    for (cases, says) in [
        (
            CASES.replace(
                "  expect: deny\n",
                "  expect: deny\n  expect_reason: forbiden\n",
            ),
            "unknown variant `forbiden`",
        ),
        (
            CASES.replace("  expect: deny\n", "  expect: deny\n  expect_policy: [x]\n"),
            "expect_policy",
        ),
    ] {
        let out = policy_test(&cases);
        assert_eq!(out.status.code(), Some(78), "{}", stdout(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
}

#[test]
fn policy_commands_end_quietly_when_stdout_is_closed_early() {
    let examples = example_policies();
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.yaml");
    std::fs::write(&cases, CASES).unwrap();
    let commands: [(Vec<&str>, i32); 3] = [
        (
            vec![
                "explain",
                path_arg(&examples),
                "--peer",
                AGENT,
                "--dest",
                CRM,
                "--verbose",
            ],
            1,
        ),
        (vec!["test", path_arg(&examples), path_arg(&cases)], 0),
        (vec!["check", path_arg(&examples)], 0),
    ];
    for (args, code) in commands {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hopgate"))
            .arg("policy")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before anything is written, as `| head -0` would.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    }
}
