//! Policy hot reload on a running sidecar: a new forbid revokes access on connections that are
//! already open, a busy sidecar swaps policy sets without failing a request, and a broken or
//! invalid folder keeps the last good set (CED-07 in docs/security.md).
//!
//! The sidecar watches its policy folder and reloads once it has been quiet for ~100 ms; these
//! tests change files and poll (bounded) for the effect.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt;

use crate::policy::{PERMIT_EXAMPLE_ORG, assert_forbidden, id, sample, sidecar};
use crate::support::client::{Conn, Proto};
use crate::support::eventually::eventually;
use crate::support::proxy::{Mesh, TestProxy};
use crate::support::upstream::Upstream;

/// `/policy` as JSON.
async fn policy_status(proxy: &TestProxy) -> serde_json::Value {
    let (status, body) = proxy.admin_get("/policy").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `/policy` (bounded) until `done` holds; returns that status.
async fn wait_for_policy(
    proxy: &TestProxy,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let done = &done;
    eventually(
        Duration::from_secs(5),
        format_args!("no {what}"),
        || async move { Some(policy_status(proxy).await).filter(done) },
    )
    .await
}

/// `hopgate_policy_reloads_total{result}`.
async fn reloads(proxy: &TestProxy, result: &str) -> f64 {
    let (_, metrics) = proxy.admin_get("/metrics").await;
    sample(
        &metrics,
        &format!(r#"hopgate_policy_reloads_total{{result="{result}"}}"#),
    )
}

/// Adds a forbid for `caller` while a connection of `proto` is open, and polls on that very
/// connection until it is refused; returns how long that took.
async fn revocation_latency(proto: Proto) -> Duration {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", PERMIT_EXAMPLE_ORG)]).await;
    let mut conn = mesh
        .client("caller", proto)
        .open(proxy.inbound)
        .await
        .unwrap();
    assert_eq!(conn.get("/before", &[]).await.status, StatusCode::OK);

    let kill_switch = format!(
        r#"@id("revoke-caller")
forbid (principal == Hop::Workload::"{}", action, resource);
"#,
        id("caller")
    );
    mesh.write_policies(&[("revoke.cedar", &kill_switch)]);
    let written = Instant::now();
    let conn = tokio::sync::Mutex::new(conn);
    let refused = eventually(
        Duration::from_secs(5),
        format_args!(
            "{proto:?}: the open connection was still admitted 5 s after the forbid was written"
        ),
        || async {
            let reply = match conn.lock().await.try_get("/poll", &[]).await {
                Ok(reply) => reply,
                // A request in flight as the forbid lands is cut like any open one (RVK-02):
                // its HTTP/2 stream is reset, and the connection goes on.
                Err(err) if proto == Proto::H2 && err.to_string().contains("CANCEL") => {
                    return None;
                }
                Err(err) => panic!("{proto:?}: {err}"),
            };
            if reply.status == StatusCode::FORBIDDEN {
                return Some(reply);
            }
            assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
            None
        },
    )
    .await;
    let latency = written.elapsed();
    assert_forbidden(&refused);
    let mut conn = conn.into_inner();
    // Still the same connection: the next request on it is refused too.
    assert_forbidden(&conn.get("/after", &[]).await);
    let status = policy_status(&proxy).await;
    assert!(
        status["policy_ids"]
            .as_array()
            .unwrap()
            .contains(&"revoke-caller".into()),
        "{status}"
    );
    latency
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_forbid_revokes_an_open_http1_connection_within_a_second() {
    let latency = revocation_latency(Proto::H1).await;
    eprintln!("revocation latency on an open HTTP/1.1 connection: {latency:?}");
    assert!(latency <= Duration::from_secs(1), "took {latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_forbid_revokes_an_open_http2_connection_within_a_second() {
    let latency = revocation_latency(Proto::H2).await;
    eprintln!("revocation latency on an open HTTP/2 connection: {latency:?}");
    assert!(latency <= Duration::from_secs(1), "took {latency:?}");
}

/// Sends requests on `conn` until `stop`; returns (ok, failures described).
async fn hammer(mut conn: Conn, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    let (mut ok, mut failures) = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        match conn.send("/load", &[]).await {
            Ok(rsp) => {
                let status = rsp.status();
                let body = rsp.into_body().collect().await.map(|b| b.to_bytes());
                match body {
                    Ok(_) if status == StatusCode::OK => ok += 1,
                    Ok(body) => {
                        failures.push(format!("{status}: {}", String::from_utf8_lossy(&body)))
                    }
                    Err(e) => failures.push(format!("{status}, body: {e}")),
                }
            }
            Err(e) => {
                failures.push(format!("transport: {e}"));
                // The connection is gone; counting the same broken connection again adds nothing.
                break;
            }
        }
    }
    (ok, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_policy_set_twenty_times_under_load_fails_no_request() {
    const SWAPS: usize = 20;
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", PERMIT_EXAMPLE_ORG)]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (i, proto) in [Proto::H1, Proto::H2, Proto::H1, Proto::H2]
        .into_iter()
        .enumerate()
    {
        let conn = mesh
            .client(&format!("load-{i}"), proto)
            .open(proxy.inbound)
            .await
            .unwrap();
        workers.push(tokio::spawn(hammer(conn, Arc::clone(&stop))));
    }

    let started = Instant::now();
    let mut digest = policy_status(&proxy).await["digest"].clone();
    for swap in 0..SWAPS {
        // Every set still admits the load callers; what changes is unrelated to them.
        if swap % 2 == 0 {
            let extra = format!(
                r#"@id("unrelated-{swap}")
forbid (principal == Hop::Workload::"{}", action, resource);
"#,
                id(&format!("nobody-{swap}"))
            );
            mesh.write_policies(&[("extra.cedar", &extra)]);
        } else {
            mesh.remove_policy("extra.cedar");
            mesh.write_policies(&[(
                "mesh.cedar",
                &format!("// revision {swap}\n{PERMIT_EXAMPLE_ORG}"),
            )]);
        }
        // The watcher debounces for ~100 ms: wait for each swap to apply, so every swap is a
        // reload of its own rather than one coalesced burst.
        let previous = digest.clone();
        digest = wait_for_policy(&proxy, "reload", |s| {
            s["digest"] != previous && s["last_reload"]["result"] == "ok"
        })
        .await["digest"]
            .clone();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let swapping = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failures) = (0, Vec::new());
    for worker in workers {
        let (n, f) = worker.await.unwrap();
        ok += n;
        failures.extend(f);
    }
    let (ok_reloads, error_reloads) = (reloads(&proxy, "ok").await, reloads(&proxy, "error").await);
    eprintln!(
        "reload under load: {SWAPS} swaps in {swapping:?}, {ok} requests ok, {} failed, \
         reloads ok={ok_reloads} error={error_reloads}",
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(ok >= 100, "too little load to mean anything: {ok} requests");
    assert!(
        ok_reloads >= SWAPS as f64,
        "{ok_reloads} successful reloads"
    );
    assert_eq!(error_reloads, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syntax_error_on_reload_keeps_the_last_good_set_until_the_file_is_fixed() {
    // CED-07: a careless edit drops the forbid and leaves a broken policy behind. Loading what
    // parses would admit the intruder; the last good set must stay.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let good = format!(
        r#"{PERMIT_EXAMPLE_ORG}
@id("no-intruders")
forbid (principal == Hop::Workload::"{}", action, resource);
"#,
        id("intruder")
    );
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", &good)]).await;
    let intruder = mesh.client("intruder", Proto::H2);
    let caller = mesh.client("caller", Proto::H1);
    assert_forbidden(&intruder.get(proxy.inbound, "/", &[]).await.unwrap());
    let before = policy_status(&proxy).await;

    mesh.write_policies(&[(
        "mesh.cedar",
        &format!("{PERMIT_EXAMPLE_ORG}\n@id(\"no-intruders\")\nforbid (principal ==\n"),
    )]);
    let status = wait_for_policy(&proxy, "failed reload", |s| {
        s["last_reload"]["result"] == "error"
    })
    .await;
    let error = status["last_reload"]["error"].as_str().unwrap();
    assert!(
        error.contains("mesh.cedar"),
        "the error must name the file: {error}"
    );
    assert_eq!(status["digest"], before["digest"], "{status}");
    assert_eq!(status["policy_ids"], before["policy_ids"], "{status}");
    assert_eq!(status["loaded_at"], before["loaded_at"], "{status}");
    assert!(reloads(&proxy, "error").await >= 1.0);
    // Decided as before.
    assert_forbidden(&intruder.get(proxy.inbound, "/", &[]).await.unwrap());
    assert_eq!(
        caller.get(proxy.inbound, "/", &[]).await.unwrap().status,
        StatusCode::OK
    );

    // Fixing the file recovers, and the fix is what now decides.
    mesh.write_policies(&[("mesh.cedar", PERMIT_EXAMPLE_ORG)]);
    let status = wait_for_policy(&proxy, "recovery", |s| s["last_reload"]["result"] == "ok").await;
    assert!(status["last_reload"]["error"].is_null(), "{status}");
    assert_eq!(
        status["policy_ids"],
        serde_json::json!(["example-org-callers"])
    );
    assert_eq!(
        intruder.get(proxy.inbound, "/", &[]).await.unwrap().status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_violation_on_reload_keeps_the_last_good_set_until_the_file_is_fixed() {
    // CED-07 for a file that parses but fails strict validation: it would admit everyone.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let only_caller = format!(
        r#"@id("caller-only")
permit (principal == Hop::Workload::"{}", action, resource);
"#,
        id("caller")
    );
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", &only_caller)]).await;
    let other = mesh.client("other", Proto::H1);
    assert_forbidden(&other.get(proxy.inbound, "/", &[]).await.unwrap());
    let before = policy_status(&proxy).await;

    let unknown_attribute = r#"@id("get-for-all")
permit (principal, action, resource) when { context.http.verb == "GET" };
"#;
    mesh.write_policies(&[("wide.cedar", unknown_attribute)]);
    let status = wait_for_policy(&proxy, "failed reload", |s| {
        s["last_reload"]["result"] == "error"
    })
    .await;
    let error = status["last_reload"]["error"].as_str().unwrap();
    assert!(
        error.contains("wide.cedar"),
        "the error must name the file: {error}"
    );
    assert!(
        error.contains("verb"),
        "the error must name the attribute: {error}"
    );
    assert_eq!(status["digest"], before["digest"], "{status}");
    assert_eq!(status["policy_ids"], serde_json::json!(["caller-only"]));
    assert_forbidden(&other.get(proxy.inbound, "/", &[]).await.unwrap());
    assert_eq!(
        mesh.client("caller", Proto::H2)
            .get(proxy.inbound, "/", &[])
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );

    let fixed = r#"@id("get-for-example-org")
permit (principal in Hop::TrustDomain::"example.org", action, resource)
when { context.http.method == "GET" };
"#;
    mesh.write_policies(&[("wide.cedar", fixed)]);
    let status = wait_for_policy(&proxy, "recovery", |s| s["last_reload"]["result"] == "ok").await;
    assert_eq!(
        status["policy_ids"],
        serde_json::json!(["caller-only", "get-for-example-org"])
    );
    assert_eq!(
        other.get(proxy.inbound, "/", &[]).await.unwrap().status,
        StatusCode::OK
    );
    assert!(reloads(&proxy, "ok").await >= 1.0);
    assert!(reloads(&proxy, "error").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_schema_on_reload_keeps_the_last_good_set_until_it_is_back() {
    // CED-07: hopgate validates every policy against a schema; without one nothing loads.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, &[("mesh.cedar", PERMIT_EXAMPLE_ORG)]).await;
    let before = policy_status(&proxy).await;
    mesh.remove_policy("schema.cedarschema");
    let status = wait_for_policy(&proxy, "failed reload", |s| {
        s["last_reload"]["result"] == "error"
    })
    .await;
    let error = status["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains("schema.cedarschema"), "{error}");
    assert_eq!(status["digest"], before["digest"], "{status}");
    let caller = mesh.client("caller", Proto::H2);
    assert_eq!(
        caller.get(proxy.inbound, "/", &[]).await.unwrap().status,
        StatusCode::OK
    );

    mesh.write_policies(&[("schema.cedarschema", crate::support::proxy::POLICY_SCHEMA)]);
    let status = wait_for_policy(&proxy, "recovery", |s| s["last_reload"]["result"] == "ok").await;
    assert_eq!(
        status["digest"], before["digest"],
        "the same files again: {status}"
    );
    assert_eq!(
        caller.get(proxy.inbound, "/", &[]).await.unwrap().status,
        StatusCode::OK
    );
}
