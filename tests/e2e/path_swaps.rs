//! Configured paths that change under a running sidecar: a symlinked `policy.dir` re-pointed to
//! a new release, a new folder renamed over the policy folder (and edited afterwards), and SVID
//! files behind a re-pointed directory symlink. Each is shipped under continuous load: no
//! request may fail, and the new content must be in force within a second, with `/policy` and
//! `/identity` telling the truth.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt;
use rustls::pki_types::CertificateDer;

use crate::policy::{PERMIT_EXAMPLE_ORG, id};
use crate::support::client::Proto;
use crate::support::eventually::eventually;
use crate::support::proxy::{Mesh, POLICY_SCHEMA, POLICY_YAML, SERVER_ID, TestProxy};
use crate::support::upstream::Upstream;

/// How soon shipped content must be in force.
const IN_FORCE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_pointing_a_symlinked_policy_dir_enforces_the_new_release_within_a_second() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let root = mesh.dir.path();
    release(root, "rel-v1", &[]);
    symlink("rel-v1", &root.join("policies"));
    let proxy = mesh.proxy(app.addr).top_yaml(POLICY_YAML).start().await;
    let before = policy_json(&proxy).await;
    let load = Load::start(&mesh, &proxy, 4).await;

    release(root, "rel-v2", &[&forbid("intruder")]);
    repoint(&root.join("policies"), "rel-v2");
    let took = wait_until_refused(&mesh, &proxy, "intruder").await;
    eprintln!("re-pointed policy.dir in force after {took:?}");
    assert!(took <= IN_FORCE, "took {took:?}");
    let after = policy_json(&proxy).await;
    assert_ne!(after["digest"], before["digest"], "{after}");
    assert_eq!(after["last_reload"]["result"], "ok", "{after}");
    assert!(ids(&after).contains(&"no-intruder".to_owned()), "{after}");

    // The release the link left is nobody's business any more.
    std::fs::write(root.join("rel-v1/stale.cedar"), "not cedar").unwrap();
    // And a second release after the first works the same way.
    release(root, "rel-v3", &[&forbid("intruder"), &forbid("other")]);
    repoint(&root.join("policies"), "rel-v3");
    let took = wait_until_refused(&mesh, &proxy, "other").await;
    assert!(took <= IN_FORCE, "the second re-point took {took:?}");
    assert_eq!(policy_json(&proxy).await["last_reload"]["result"], "ok");
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_renamed_over_the_policy_dir_and_edited_later_is_enforced_each_time() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let root = mesh.dir.path();
    release(root, "policies", &[]);
    let proxy = mesh.proxy(app.addr).top_yaml(POLICY_YAML).start().await;
    let load = Load::start(&mesh, &proxy, 4).await;

    release(root, "policies.new", &[&forbid("intruder")]);
    std::fs::rename(root.join("policies"), root.join("policies.old")).unwrap();
    std::fs::rename(root.join("policies.new"), root.join("policies")).unwrap();
    std::fs::remove_dir_all(root.join("policies.old")).unwrap();
    let took = wait_until_refused(&mesh, &proxy, "intruder").await;
    eprintln!("renamed-over policy folder in force after {took:?}");
    assert!(took <= IN_FORCE, "took {took:?}");

    // A later edit inside the folder that replaced the watched one.
    let second = format!("{}\n{}", forbid("intruder"), forbid("other"));
    mesh.write_policies(&[("revoke.cedar", &second)]);
    let took = wait_until_refused(&mesh, &proxy, "other").await;
    eprintln!("edit inside the new folder in force after {took:?}");
    assert!(took <= IN_FORCE, "the edit took {took:?}");
    let status = policy_json(&proxy).await;
    assert_eq!(status["last_reload"]["result"], "ok", "{status}");
    assert!(ids(&status).contains(&"no-other".to_owned()), "{status}");
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_files_behind_a_re_pointed_directory_symlink_are_served_within_a_second() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let root = mesh.dir.path();
    std::fs::create_dir(root.join("svid-v1")).unwrap();
    // The sidecar's SVID folder is a link; the mesh writes its first SVID through it.
    symlink("svid-v1", &mesh.svid_dir());
    let proxy = mesh.proxy(app.addr).start().await;
    let load = Load::start(&mesh, &proxy, 4).await;

    let v2 = mesh.ca.leaf(SERVER_ID).build();
    std::fs::create_dir(root.join("svid-v2")).unwrap();
    v2.write(&root.join("svid-v2"));
    repoint(&mesh.svid_dir(), "svid-v2");
    let took = wait_until_served(&mesh, &proxy, &v2.cert_der).await;
    eprintln!("re-pointed SVID folder served after {took:?}");
    assert!(took <= IN_FORCE, "took {took:?}");

    // A rotation written inside the new folder afterwards: the watch moved with the link.
    let v3 = mesh.ca.leaf(SERVER_ID).build();
    let staged = root.join("staged");
    std::fs::create_dir(&staged).unwrap();
    v3.write(&staged);
    for file in ["svid_key.pem", "svid.pem"] {
        std::fs::rename(staged.join(file), root.join("svid-v2").join(file)).unwrap();
    }
    let took = wait_until_served(&mesh, &proxy, &v3.cert_der).await;
    eprintln!("rotation inside the new SVID folder served after {took:?}");
    assert!(took <= IN_FORCE, "took {took:?}");
    let (_, identity) = proxy.admin_get("/identity").await;
    let identity: serde_json::Value = serde_json::from_str(&identity).unwrap();
    assert_eq!(identity["last_reload"]["result"], "ok", "{identity}");
    load.finish().await;
}

/// Writes a policy release folder `root/name`: the schema, the example-org permit, `extra`.
fn release(root: &Path, name: &str, extra: &[&str]) {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("schema.cedarschema"), POLICY_SCHEMA).unwrap();
    std::fs::write(dir.join("mesh.cedar"), PERMIT_EXAMPLE_ORG).unwrap();
    if !extra.is_empty() {
        std::fs::write(dir.join("revoke.cedar"), extra.join("\n")).unwrap();
    }
}

fn forbid(name: &str) -> String {
    format!(
        "@id(\"no-{name}\")\nforbid (principal == Hop::Workload::\"{}\", action, resource);\n",
        id(name)
    )
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Points `link` at `target` atomically, as deploy tools do: a new link renamed over the old.
fn repoint(link: &Path, target: &str) {
    let tmp = link.with_file_name(".link.tmp");
    symlink(target, &tmp);
    std::fs::rename(&tmp, link).unwrap();
}

async fn policy_json(proxy: &TestProxy) -> serde_json::Value {
    let (status, body) = proxy.admin_get("/policy").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn ids(status: &serde_json::Value) -> Vec<String> {
    status["policy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(ToOwned::to_owned))
        .collect()
}

/// Polls with new connections from `caller` until it is refused; returns how long that took.
async fn wait_until_refused(mesh: &Mesh, proxy: &TestProxy, caller: &str) -> Duration {
    let started = Instant::now();
    let client = &mesh.client(caller, Proto::H2);
    let what = format!("`{caller}` still admitted");
    eventually(Duration::from_secs(15), what, || async move {
        let reply = client.get(proxy.inbound, "/probe", &[]).await.unwrap();
        if reply.status != StatusCode::FORBIDDEN {
            assert_eq!(reply.status, StatusCode::OK);
        }
        (reply.status == StatusCode::FORBIDDEN).then_some(())
    })
    .await;
    started.elapsed()
}

/// Polls new handshakes until the sidecar presents `leaf`; returns how long that took.
async fn wait_until_served(mesh: &Mesh, proxy: &TestProxy, leaf: &[u8]) -> Duration {
    let started = Instant::now();
    let probe = &mesh.client("probe", Proto::H1);
    eventually(
        Duration::from_secs(15),
        "the new SVID was not served",
        || async move {
            let tls = probe.connect(proxy.inbound).await.unwrap();
            let presented: CertificateDer<'_> =
                tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            (presented.as_ref() == leaf).then_some(())
        },
    )
    .await;
    started.elapsed()
}

/// Callers the policies always admit, each on a connection of its own that it replaces every
/// 20 requests (so new handshakes run throughout), recording every failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    async fn start(mesh: &Mesh, proxy: &TestProxy, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let workers = (0..workers)
            .map(|i| {
                let proto = if i % 2 == 0 { Proto::H1 } else { Proto::H2 };
                let client = mesh.client(&format!("load-{i}"), proto);
                let (stop, ok, addr) = (Arc::clone(&stop), Arc::clone(&ok), proxy.inbound);
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let mut conn = match client.open(addr).await {
                            Ok(conn) => conn,
                            Err(e) => {
                                failures.push(format!("connect: {e}"));
                                continue;
                            }
                        };
                        for _ in 0..20 {
                            match conn.send("/load", &[]).await {
                                Ok(rsp) if rsp.status() == StatusCode::OK => {
                                    match rsp.into_body().collect().await {
                                        Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                                        Err(e) => {
                                            failures.push(format!("body: {e}"));
                                            break;
                                        }
                                    };
                                }
                                Ok(rsp) => failures.push(format!("status {}", rsp.status())),
                                Err(e) => {
                                    failures.push(format!("send: {e}"));
                                    break;
                                }
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        let load = Self { stop, ok, workers };
        load.wait_for(20).await;
        load
    }

    async fn wait_for(&self, n: usize) {
        eventually(
            Duration::from_secs(20),
            "the load made no progress",
            || async { (self.ok.load(Ordering::SeqCst) >= n).then_some(()) },
        )
        .await;
    }

    async fn finish(self) {
        self.wait_for(self.ok.load(Ordering::SeqCst) + 20).await;
        self.stop.store(true, Ordering::SeqCst);
        let mut failures = Vec::new();
        for worker in self.workers {
            failures.extend(worker.await.unwrap());
        }
        let ok = self.ok.load(Ordering::SeqCst);
        eprintln!("{ok} requests succeeded, {} failed", failures.len());
        assert!(failures.is_empty(), "failed requests: {failures:#?}");
    }
}
