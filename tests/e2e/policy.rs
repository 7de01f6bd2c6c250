//! Cedar authorization over real mTLS: the sidecar decides every request with the policy folder
//! it was given (docs/cedar.md, "The model"; docs/security.md, "Cedar evaluation pitfalls").
//!
//! Every test writes a policy folder next to the sidecar's config (the shipped schema plus the
//! test's policies), starts a sidecar on it and calls it with client SVIDs of `example.org`.

use std::net::SocketAddr;
use std::process::Command;

use http::StatusCode;

use crate::support::client::{Client, Proto, Reply};
use crate::support::proxy::{
    Mesh, POLICY_SCHEMA, POLICY_YAML, SERVER_ID, TestProxy, requests_total,
};
use crate::support::upstream::Upstream;

/// Admits every workload of the test trust domain.
pub(crate) const PERMIT_EXAMPLE_ORG: &str = r#"@id("example-org-callers")
permit (principal in Hop::TrustDomain::"example.org", action, resource);
"#;

/// The SPIFFE ID `Mesh::client(name, ..)` presents.
pub(crate) fn id(name: &str) -> String {
    format!("spiffe://example.org/ns/test/sa/{name}")
}

/// A sidecar in front of `app` deciding with the shipped schema plus `files`.
pub(crate) async fn sidecar(mesh: &Mesh, app: &Upstream, files: &[(&str, &str)]) -> TestProxy {
    mesh.write_policies(&[("schema.cedarschema", POLICY_SCHEMA)]);
    mesh.write_policies(files);
    mesh.proxy(app.addr).top_yaml(POLICY_YAML).start().await
}

/// Whether `s` is a lowercase hyphenated UUID v4, as decision ids are.
pub(crate) fn is_uuid_v4(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    lengths == [8, 4, 4, 4, 12]
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b'])
}

/// One sample of the Prometheus text (`name{labels}` exactly as exposed), or 0 when absent.
pub(crate) fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Asserts `reply` is hopgate's policy denial: 403 `application/json`
/// `{"error":"forbidden","decision_id":"<uuid>"}` and nothing else; returns the decision id.
pub(crate) fn assert_forbidden(reply: &Reply) -> String {
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.headers["content-type"], "application/json");
    let body = reply.json();
    let object = body.as_object().unwrap();
    assert_eq!(
        object.len(),
        2,
        "policy details stay in the audit log: {body}"
    );
    assert_eq!(body["error"], "forbidden", "{body}");
    let decision_id = body["decision_id"].as_str().unwrap().to_owned();
    assert!(is_uuid_v4(&decision_id), "not a UUID v4: {decision_id}");
    decision_id
}

async fn get(client: &Client, proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> Reply {
    client.get(proxy.inbound, path, headers).await.unwrap()
}

#[tokio::test]
async fn a_permit_naming_the_caller_admits_it_over_http1_and_http2() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let permit = format!(
        r#"@id("caller-may-call")
permit (principal == Hop::Workload::"{}", action == Hop::Action::"call", resource == Hop::Workload::"{SERVER_ID}");
"#,
        id("caller")
    );
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", &permit)]).await;
    for proto in [Proto::H1, Proto::H2] {
        let reply = get(&mesh.client("caller", proto), &proxy, "/permitted", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
        assert_eq!(reply.json()["path"], "/permitted");
        // Default deny: a caller no permit names is refused (CED-02).
        let reply = get(&mesh.client("stranger", proto), &proxy, "/unnamed", &[]).await;
        assert_forbidden(&reply);
    }
    let paths: Vec<String> = app.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/permitted", "/permitted"]);
    // Probes and operators can see that policies are enforced.
    let (_, ready) = proxy.admin_get("/ready").await;
    assert!(ready.contains(r#""policy":"enforced""#), "{ready}");
    let (_, policy) = proxy.admin_get("/policy").await;
    let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(policy["policy"], "enforced");
    assert_eq!(policy["policy_ids"][0], "caller-may-call");
}

#[tokio::test]
async fn an_empty_policy_set_denies_every_caller() {
    // CED-02: a schema and no policies.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, &[]).await;
    for proto in [Proto::H1, Proto::H2] {
        assert_forbidden(&get(&mesh.client("caller", proto), &proxy, "/", &[]).await);
    }
    assert!(app.received().is_empty());
}

#[tokio::test]
async fn the_method_path_and_host_the_app_sees_are_what_policies_read() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let policies = r#"@id("get-on-hopgate-test")
permit (principal in Hop::TrustDomain::"example.org", action, resource)
when { context.direction == "inbound" && context.http.method == "GET" && context.http.host == "hopgate.test" };

@id("no-admin-paths")
forbid (principal, action, resource) when { context.http.path like "/admin*" };
"#;
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", policies)]).await;
    for proto in [Proto::H1, Proto::H2] {
        let client = mesh.client("caller", proto);
        let reply = get(&client, &proxy, "/tickets?admin=1", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
        assert_forbidden(&get(&client, &proxy, "/admin/users", &[]).await);
    }
    let paths: Vec<String> = app.received().into_iter().map(|r| r.path).collect();
    assert!(paths.iter().all(|p| p.starts_with("/tickets")), "{paths:?}");
}

#[tokio::test]
async fn a_forbid_wins_over_a_matching_permit_with_a_403_carrying_a_uuid_decision_id() {
    // CED-03
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let forbid = format!(
        r#"@id("no-intruders")
forbid (principal == Hop::Workload::"{}", action, resource);
"#,
        id("intruder")
    );
    let proxy = sidecar(
        &mesh,
        &app,
        &[
            ("mesh.cedar", PERMIT_EXAMPLE_ORG),
            ("guards.cedar", &forbid),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        let reply = get(&mesh.client("intruder", proto), &proxy, "/secret", &[]).await;
        ids.push(assert_forbidden(&reply));
        let reply = get(&mesh.client("caller", proto), &proxy, "/open", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
    }
    assert_ne!(ids[0], ids[1], "every decision has its own id");
    assert!(
        app.received().iter().all(|r| r.path == "/open"),
        "a forbidden request reached the app"
    );
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert_eq!(
        requests_total(&metrics, &[("direction", "inbound"), ("decision", "deny")]),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        requests_total(&metrics, &[("direction", "inbound"), ("decision", "allow")]),
        2.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "hopgate_policy_evaluation_seconds_count") >= 4.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_forbid_that_errors_at_run_time_denies_instead_of_being_skipped() {
    // CED-01: Cedar skips an erring policy, so the permit alone would allow. The forbid passes
    // strict validation and overflows only when the declared intent says "boom".
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let erring = r#"@id("overflowing-forbid")
forbid (principal, action, resource)
when {
  context.intent has purpose && context.intent.purpose == "boom" &&
  9223372036854775807 + 1 > 0
};
"#;
    let proxy = sidecar(
        &mesh,
        &app,
        &[("mesh.cedar", PERMIT_EXAMPLE_ORG), ("erring.cedar", erring)],
    )
    .await;
    let (_, policy) = proxy.admin_get("/policy").await;
    assert!(
        policy.contains("overflowing-forbid"),
        "not loaded: {policy}"
    );
    for proto in [Proto::H1, Proto::H2] {
        let client = mesh.client("caller", proto);
        let reply = get(&client, &proxy, "/calm", &[("intent-purpose", "calm")]).await;
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
        let reply = get(&client, &proxy, "/boom", &[("intent-purpose", "boom")]).await;
        assert_forbidden(&reply);
    }
    assert!(app.received().iter().all(|r| r.path == "/calm"));
}

#[tokio::test]
async fn an_action_the_schema_does_not_declare_is_denied() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    // The permit admits every action: only the schema can refuse `launch_missiles`.
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", PERMIT_EXAMPLE_ORG)]).await;
    for proto in [Proto::H1, Proto::H2] {
        let client = mesh.client("caller", proto);
        let reply = get(
            &client,
            &proxy,
            "/launch",
            &[("intent-action", "launch_missiles")],
        )
        .await;
        assert_forbidden(&reply);
        let reply = get(
            &client,
            &proxy,
            "/generate",
            &[("intent-action", "generate")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "a declared action, {proto:?}");
        let reply = get(&client, &proxy, "/default", &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "the default action, {proto:?}"
        );
    }
    assert!(app.received().iter().all(|r| r.path != "/launch"));
}

#[tokio::test]
async fn an_undeclared_intent_header_is_ignored_and_invisible_to_policies() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    // The schema declares no `colour`: the validator warns the forbid is impossible, and at run
    // time `has` would see the attribute if the sidecar passed it. It must not.
    let snoop = r#"@id("no-colours")
forbid (principal, action, resource) when { context.intent has colour };
"#;
    let proxy = sidecar(
        &mesh,
        &app,
        &[("mesh.cedar", PERMIT_EXAMPLE_ORG), ("snoop.cedar", snoop)],
    )
    .await;
    for proto in [Proto::H1, Proto::H2] {
        let reply = get(
            &mesh.client("caller", proto),
            &proxy,
            "/colourful",
            &[("intent-colour", "red")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
    }
}

#[tokio::test]
async fn a_declared_intent_attribute_is_usable_in_a_when_clause() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let permit = r#"@id("generate-for-support")
permit (principal in Hop::TrustDomain::"example.org", action == Hop::Action::"generate", resource)
when { context.intent has purpose && context.intent.purpose == "support" };
"#;
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", permit)]).await;
    for proto in [Proto::H1, Proto::H2] {
        let client = mesh.client("agent", proto);
        let generate = ("intent-action", "generate");
        let reply = get(
            &client,
            &proxy,
            "/support",
            &[generate, ("intent-purpose", "support")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
        let reply = get(
            &client,
            &proxy,
            "/marketing",
            &[generate, ("intent-purpose", "marketing")],
        )
        .await;
        assert_forbidden(&reply);
        let reply = get(&client, &proxy, "/no-purpose", &[generate]).await;
        assert_forbidden(&reply);
    }
    assert!(app.received().iter().all(|r| r.path == "/support"));
}

#[tokio::test]
async fn principal_in_the_trust_domain_admits_its_workloads_and_only_them() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", PERMIT_EXAMPLE_ORG)]).await;
    for name in ["alpha", "beta"] {
        let reply = get(&mesh.client(name, Proto::H2), &proxy, "/", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
    }

    // The same callers against a permit for another trust domain: refused.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let other = r#"@id("other-org-callers")
permit (principal in Hop::TrustDomain::"other.org", action, resource);
"#;
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", other)]).await;
    for name in ["alpha", "beta"] {
        let reply = get(&mesh.client(name, Proto::H2), &proxy, "/", &[]).await;
        assert_forbidden(&reply);
    }
    assert!(app.received().is_empty());
}

#[tokio::test]
async fn entities_json_group_membership_admits_a_member_and_not_a_non_member() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let entities = serde_json::json!([
        { "uid": { "type": "Hop::Workload", "id": id("trainer") },
          "attrs": {}, "parents": [{ "type": "Hop::Group", "id": "ml" }] },
        { "uid": { "type": "Hop::Group", "id": "ml" }, "attrs": {}, "parents": [] },
    ])
    .to_string();
    let permit = r#"@id("ml-group")
permit (principal in Hop::Group::"ml", action, resource);
"#;
    let proxy = sidecar(
        &mesh,
        &app,
        &[("mesh.cedar", permit), ("entities.json", &entities)],
    )
    .await;
    for proto in [Proto::H1, Proto::H2] {
        let reply = get(&mesh.client("trainer", proto), &proxy, "/member", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
        let reply = get(&mesh.client("tourist", proto), &proxy, "/outsider", &[]).await;
        assert_forbidden(&reply);
    }
    assert!(app.received().iter().all(|r| r.path == "/member"));
}

#[tokio::test]
async fn audit_mode_lets_a_denied_request_through_and_counts_it_as_audit_deny() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let forbid = r#"@id("nobody")
forbid (principal, action, resource);
"#;
    mesh.write_policies(&[
        ("schema.cedarschema", POLICY_SCHEMA),
        ("mesh.cedar", PERMIT_EXAMPLE_ORG),
        ("guards.cedar", forbid),
    ]);
    let proxy = mesh
        .proxy(app.addr)
        .inbound_yaml("  mode: audit\n")
        .top_yaml(POLICY_YAML)
        .start()
        .await;
    for proto in [Proto::H1, Proto::H2] {
        let reply = get(&mesh.client("caller", proto), &proxy, "/audited", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
        assert_eq!(reply.json()["path"], "/audited");
    }
    let (_, metrics) = proxy.admin_get("/metrics").await;
    let count = |decision: &str| {
        requests_total(
            &metrics,
            &[("direction", "inbound"), ("decision", decision)],
        )
    };
    assert_eq!(count("audit_deny"), 2.0, "{metrics}");
    assert_eq!(count("deny"), 0.0, "{metrics}");
    assert_eq!(count("allow"), 0.0, "{metrics}");
    // Each would-deny decision has its audit line, marked as not enforced.
    let lines = proxy.audit.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["effect"], "audit_deny", "{line}");
        assert_eq!(record["mode"], "audit", "{line}");
        assert_eq!(record["target"], "hopgate::audit", "{line}");
    }
}

/// Runs curl with a client SVID against `inbound`; returns (exit code, body, status line).
async fn curl(
    flag: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
    url: String,
) -> (i32, String, String) {
    let args: Vec<String> = vec![
        "--silent".into(),
        "--show-error".into(),
        "--max-time".into(),
        "10".into(),
        flag.into(),
        // An SVID names a SPIFFE ID, not a DNS name; the client side is what is under test.
        "--insecure".into(),
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        "--write-out".into(),
        "\n%{http_code} %{http_version}".into(),
        url,
    ];
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(&args)
            .output()
            .expect("curl is installed (.ci/run installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = stdout.rsplit_once('\n').unwrap_or((&stdout, ""));
        (
            out.status.code().unwrap_or(-1),
            body.to_owned(),
            status.to_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn curl_is_admitted_by_a_permit_and_refused_by_a_forbid_over_http1_and_http2() {
    // CED-03 with an independent client.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let forbid = format!(
        r#"@id("no-curl-intruder")
forbid (principal == Hop::Workload::"{}", action, resource);
"#,
        id("curl-intruder")
    );
    let proxy = sidecar(
        &mesh,
        &app,
        &[
            ("mesh.cedar", PERMIT_EXAMPLE_ORG),
            ("guards.cedar", &forbid),
        ],
    )
    .await;
    let inbound: SocketAddr = proxy.inbound;
    let (friend, intruder) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ok_cert, ok_key) = mesh.leaf("curl-friend").write(friend.path());
    let (bad_cert, bad_key) = mesh.leaf("curl-intruder").write(intruder.path());
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, body, status) =
            curl(flag, &ok_cert, &ok_key, format!("https://{inbound}/friend")).await;
        assert_eq!(code, 0, "curl {flag}: {body}");
        assert_eq!(status, format!("200 {version}"), "curl {flag}: {body}");
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["path"], "/friend");

        let (code, body, status) = curl(
            flag,
            &bad_cert,
            &bad_key,
            format!("https://{inbound}/intruder"),
        )
        .await;
        assert_eq!(code, 0, "curl {flag}: {body}");
        assert_eq!(status, format!("403 {version}"), "curl {flag}: {body}");
        let denial: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(denial["error"], "forbidden", "{body}");
        assert!(
            is_uuid_v4(denial["decision_id"].as_str().unwrap()),
            "{body}"
        );
    }
    assert!(app.received().iter().all(|r| r.path == "/friend"));
}
