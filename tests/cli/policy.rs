//! `hopgate policy check`, `explain` and `test`.

use super::*;

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
