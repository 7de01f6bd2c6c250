//! `policy explain --config` and `policy test --config`: deciding with a sidecar's intent
//! settings and policy folder.

use super::*;

/// A folder with a sidecar config (`hopgate.yaml`: intent prefix `x-intent-`, default action
/// `generate`, `policy.dir: policies`), placeholder identity files, the policies in
/// `policies/` and a second copy of them in `other/`.
struct Sidecar {
    dir: tempfile::TempDir,
}

/// The shipped policies, plus a forbid on the `purpose` intent, so the prefix shows.
const PURPOSE: &str = "@id(\"generate-only-for-support\")
forbid (principal, action == Hop::Action::\"generate\", resource)
unless { context.intent has purpose && context.intent.purpose == \"support\" };
";

const IDENTITY: &str = "identity:
  svid: { cert: svid.pem, key: svid_key.pem }
  bundles: { demo.local: bundle.pem }
outbound:
  listen: 127.0.0.1:15001
";

impl Sidecar {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for file in ["svid.pem", "svid_key.pem", "bundle.pem"] {
            std::fs::write(dir.path().join(file), "placeholder").unwrap();
        }
        for folder in ["policies", "other"] {
            let to = dir.path().join(folder);
            std::fs::create_dir(&to).unwrap();
            for file in ["schema.cedarschema", "mesh.cedar", "guards.cedar"] {
                std::fs::copy(example_policies().join(file), to.join(file)).unwrap();
            }
            std::fs::write(to.join("purpose.cedar"), PURPOSE).unwrap();
        }
        let sidecar = Self { dir };
        sidecar.config(&format!(
            "{IDENTITY}policy: {{ dir: policies }}\nintent: {{ header_prefix: x-intent-, default_action: generate }}\n"
        ));
        sidecar
    }

    fn config(&self, yaml: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("hopgate.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn policy_explain_decides_with_the_intent_settings_and_policy_dir_of_a_config() {
    let sidecar = Sidecar::new();
    let config = sidecar.path("hopgate.yaml");
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "explain",
            "--config",
            path_arg(&config),
            "--peer",
            AGENT,
            "--dest",
            INFERENCE,
        ];
        args.extend_from_slice(extra);
        hopgate(&args)
    };

    // No --action: the config's default action, `generate`; the purpose in the config's prefix.
    let out = explain(&["--header", "x-intent-purpose: support"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert_eq!(explained(&text, "action:"), "generate");
    assert_eq!(explained(&text, "policies:"), "agent-generate-on-inference");

    // The default prefix is no intent header for this sidecar.
    let out = explain(&["--header", "intent-purpose: support"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert_eq!(explained(&text, "policies:"), "generate-only-for-support");

    // --action travels as `x-intent-action`.
    let out = explain(&["--action", "read_ticket"]);
    assert_eq!(explained(&stdout(&out), "action:"), "read_ticket");
    let out = explain(&["--header", "x-intent-action: read_ticket"]);
    assert_eq!(explained(&stdout(&out), "action:"), "read_ticket");
}

#[test]
fn policy_test_decides_with_the_intent_settings_and_policy_dir_of_a_config() {
    let sidecar = Sidecar::new();
    let cases = sidecar.path("cases.yaml");
    std::fs::write(
        &cases,
        format!(
            "- name: generate-is-the-default-action
  peer: {AGENT}
  dest: {INFERENCE}
  headers: {{ x-intent-purpose: support }}
  expect: allow
  expect_policies: [agent-generate-on-inference]
- name: the-default-prefix-is-not-read
  peer: {AGENT}
  dest: {INFERENCE}
  headers: {{ intent-purpose: support }}
  expect: deny
  expect_reason: forbidden
  expect_policies: [generate-only-for-support]
"
        ),
    )
    .unwrap();
    let config = sidecar.path("hopgate.yaml");
    let out = hopgate(&[
        "policy",
        "test",
        "--config",
        path_arg(&config),
        path_arg(&cases),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("2 passed, 0 failed"), "{text}");

    // DIR may be given too when it is the config's own folder.
    let policies = sidecar.path("policies/../policies");
    let out = hopgate(&[
        "policy",
        "test",
        path_arg(&policies),
        path_arg(&cases),
        "-c",
        path_arg(&config),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // A config without `policy` takes DIR.
    let config = sidecar.config(&format!(
        "{IDENTITY}intent: {{ header_prefix: x-intent-, default_action: generate }}\n"
    ));
    let other = sidecar.path("other");
    let out = hopgate(&[
        "policy",
        "test",
        "--config",
        path_arg(&config),
        path_arg(&other),
        path_arg(&cases),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn policy_explain_and_test_exit_78_unless_exactly_one_policy_folder_is_given() {
    let sidecar = Sidecar::new();
    let cases = sidecar.path("cases.yaml");
    std::fs::write(&cases, CASES).unwrap();
    let config = sidecar.path("hopgate.yaml");
    let other = sidecar.path("other");
    let hop = ["--peer", AGENT, "--dest", INFERENCE];
    let refused = |args: &[&str], says: &str| {
        let mut all = vec!["policy"];
        all.extend_from_slice(args);
        let out = hopgate(&all);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: no `{says}` in:\n{err}");
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    };

    // Neither DIR nor --config.
    refused(
        &[&["explain"][..], &hop].concat(),
        "no policy folder: give DIR, or --config",
    );
    refused(
        &["test", path_arg(&cases)],
        "no policy folder: give DIR, or --config",
    );

    // DIR and another folder in the config.
    let differ = "is not the `policy.dir` of";
    let args = [
        &["explain", path_arg(&other), "--config", path_arg(&config)][..],
        &hop,
    ];
    refused(&args.concat(), differ);
    refused(
        &[
            "test",
            path_arg(&other),
            path_arg(&cases),
            "--config",
            path_arg(&config),
        ],
        differ,
    );

    // A config without `policy` and no DIR.
    let bare = sidecar.config(IDENTITY);
    let none = "has no `policy.dir`: give the policy folder as DIR";
    refused(
        &[&["explain", "--config", path_arg(&bare)][..], &hop].concat(),
        none,
    );
    refused(
        &["test", "--config", path_arg(&bare), path_arg(&cases)],
        none,
    );

    // A config that does not load is reported as check-config reports it.
    let broken = sidecar.config(&format!("{IDENTITY}intent: {{ header_prefix: Intent- }}\n"));
    refused(
        &[&["explain", "--config", path_arg(&broken)][..], &hop].concat(),
        "error: intent.header_prefix: `Intent-` must be lowercase",
    );
    refused(
        &[
            "test",
            "--config",
            "/nonexistent/hopgate.yaml",
            path_arg(&cases),
        ],
        "cannot read config file `/nonexistent/hopgate.yaml`",
    );
}

#[test]
fn policy_explain_decides_an_mcp_call_by_its_tool_on_the_configs_mcp_paths() {
    let sidecar = Sidecar::new();
    let config = sidecar.config(&format!(
        "{IDENTITY}policy: {{ dir: policies }}\nmcp: {{ paths: [/tools] }}\n"
    ));
    let claims =
        r#"{"sub":"alice","iss":"spiffe://demo.local/ns/ml/sa/inference","scope":"tickets.read"}"#;
    // `policy explain` of a POST to `path` from inference for alice, with `headers`.
    let explain = |path: &str, headers: &[&str]| {
        let mut args = vec![
            "policy",
            "explain",
            "--config",
            path_arg(&config),
            "--peer",
            INFERENCE,
            "--dest",
            CRM,
            "--method",
            "POST",
            "--path",
            path,
            "--token-claims",
            claims,
        ];
        for header in headers {
            args.extend(["--header", header]);
        }
        hopgate(&args)
    };
    let call = |path: &str, tool: &str| {
        let name = format!("mcp-name: {tool}");
        explain(path, &["mcp-method: tools/call", &name])
    };
    let read = call("/tools", "read_ticket");
    let text = stdout(&read);
    assert_eq!(read.status.code(), Some(0), "{text}{}", stderr(&read));
    assert_eq!(explained(&text, "policies:"), "inference-read-tools-on-crm");
    let write = call("/tools", "write_ticket");
    assert_eq!(write.status.code(), Some(1), "{}", stdout(&write));
    // Off the config's MCP paths it is plain HTTP: decided as the default action, `call`.
    let plain = call("/mcp", "read_ticket");
    assert_eq!(plain.status.code(), Some(1), "{}", stdout(&plain));
    // On them, the method must be named.
    let unnamed = explain("/tools", &[]);
    assert_eq!(unnamed.status.code(), Some(78), "{}", stdout(&unnamed));
    assert!(
        stderr(&unnamed).contains("mcp-method"),
        "{}",
        stderr(&unnamed)
    );
}
