//! Signed audit logs from the real binary (`telemetry.audit.sign: true`): its stdout, written
//! to a file, verifies with the real `hopgate audit verify`, and a copy with one record
//! deleted, altered, moved or added does not, naming the line.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::policy::PERMIT_EXAMPLE_ORG;
use crate::support::client::Proto;
use crate::support::eventually::eventually;
use crate::support::proxy::{Mesh, POLICY_SCHEMA, POLICY_YAML};
use crate::support::sidecar::Sidecar;
use crate::support::upstream::Upstream;

fn verify(file: &Path, bundle: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(["audit", "verify"])
        .arg(file)
        .arg("--bundle")
        .arg(bundle)
        .output()
        .unwrap()
}

fn target(line: &str) -> Option<String> {
    let json: Value = serde_json::from_str(line).ok()?;
    json["target"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_log_verifies_and_one_changed_record_is_named_by_its_line() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    mesh.write_policies(&[
        ("schema.cedarschema", POLICY_SCHEMA),
        ("mesh.cedar", PERMIT_EXAMPLE_ORG),
    ]);
    let top = format!("{POLICY_YAML}telemetry:\n  audit: {{ sign: true }}\n");
    let config = mesh.write_config(app.addr, "", &top);
    let mut sidecar = Sidecar::start(&config).await;
    let client = mesh.client("caller", Proto::H2);
    let call = |path: &'static str| {
        let client = client.clone();
        let inbound = sidecar.inbound;
        async move {
            let reply = client.get(inbound, path, &[]).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK);
        }
    };
    for path in ["/a", "/b", "/c"] {
        call(path).await;
    }
    // A quiet log is sealed within about a second, without a stop.
    eventually(
        Duration::from_secs(5),
        format_args!("no seal within 5 s: {}", sidecar.printed()),
        || async {
            sidecar
                .stdout()
                .contains("\"target\":\"hopgate::audit.seal\"")
                .then_some(())
        },
    )
    .await;
    for path in ["/d", "/e", "/f"] {
        call(path).await;
    }
    sidecar.signal("TERM");
    let status = sidecar.wait_for_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", sidecar.output());
    // The graceful stop ends the log with a seal (read until the reader has it all).
    let stdout = eventually(
        Duration::from_secs(5),
        format_args!("the log does not end with a seal: {}", sidecar.printed()),
        || async {
            let stdout = sidecar.stdout();
            let last = stdout.lines().rev().find_map(target);
            (last.as_deref() == Some("hopgate::audit.seal")).then_some(stdout)
        },
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let bundle = mesh.dir.path().join("bundle.pem");
    let file = dir.path().join("hopgate.log");
    std::fs::write(&file, &stdout).unwrap();
    let out = verify(&file, &bundle);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{printed}{stdout}");
    assert!(
        printed.contains("intact: 6 records in ")
            && printed.contains("signed by spiffe://example.org/ns/test/sa/server (1 SVID)"),
        "{printed}"
    );

    // Without a bundle the chain and signatures hold, but who signed is not known: exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(["audit", "verify"])
        .arg(&file)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("who signed is not verified"), "{printed}");

    // Two records in a row under one seal: the mutations' targets (line numbers are 1-based).
    let lines: Vec<&str> = stdout.lines().collect();
    let kinds: Vec<Option<String>> = lines.iter().map(|l| target(l)).collect();
    let audit = Some("hopgate::audit".to_owned());
    let first = (0..lines.len() - 1)
        .find(|&i| kinds[i] == audit && kinds[i + 1] == audit)
        .unwrap_or_else(|| panic!("no two records in a row: {stdout}"));
    let (a, b) = (first, first + 1);
    let broken = |name: &str, edited: Vec<String>| {
        let copy = dir.path().join(name);
        let text: String = edited.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&copy, text).unwrap();
        let out = verify(&copy, &bundle);
        assert_eq!(out.status.code(), Some(1), "{name}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let owned = || lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();

    let mut deleted = owned();
    deleted.remove(a);
    let said = broken("deleted.log", deleted);
    assert!(
        said.contains(&format!(":{}: record missing", a + 1)),
        "{said}"
    );

    let mut altered = owned();
    altered[b] = altered[b].replace("\"effect\":\"allow\"", "\"effect\":\"deny\"");
    assert_ne!(altered[b], lines[b]);
    let said = broken("altered.log", altered);
    assert!(
        said.contains(&format!(":{}: record altered", b + 1)),
        "{said}"
    );

    let mut reordered = owned();
    reordered.swap(a, b);
    let said = broken("reordered.log", reordered);
    assert!(
        said.contains(&format!(":{}: records reordered", a + 1)),
        "{said}"
    );

    let mut inserted = owned();
    let forged = lines[a].replacen("\"decision_id\":\"", "\"decision_id\":\"f", 1);
    assert_ne!(forged, lines[a]);
    inserted.insert(b, forged);
    let said = broken("inserted.log", inserted);
    assert!(
        said.contains(&format!(":{}: record inserted", b + 1)),
        "{said}"
    );
}
