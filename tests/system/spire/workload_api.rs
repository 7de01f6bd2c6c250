//! The Workload API as a workload of some uid sees it: `spire-agent api fetch x509 -write`, run
//! under `setpriv` as that uid, and what it wrote.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use super::process::{Failure, output_text, run};
use super::{STARTUP, bin_dir};
use crate::support::eventually::eventually;

/// What the Workload API gave one uid: its X.509-SVIDs and the federated bundles.
#[derive(Debug)]
pub(crate) struct X509Fetch {
    /// In the order the agent sent them (`svid.0.pem`, `svid.1.pem`, ...).
    pub(crate) svids: Vec<Svid>,
    /// The bundles of the federated trust domains, as PEM, by trust domain SPIFFE ID
    /// (`spiffe://other.org`).
    pub(crate) federated_bundles: BTreeMap<String, String>,
}

/// One X.509-SVID, as PEM.
#[derive(Debug)]
pub(crate) struct Svid {
    /// The URI SAN of the leaf.
    pub(crate) spiffe_id: String,
    /// The leaf, then any intermediates.
    pub(crate) chain_pem: String,
    /// The private key (PKCS#8).
    pub(crate) key_pem: String,
    /// The bundle of the SVID's own trust domain.
    pub(crate) bundle_pem: String,
}

/// Fetches the X.509-SVIDs the agent at `socket` gives `uid`, once, as that uid
/// (`setpriv ... spire-agent api fetch x509 -write`); `Err` holds the command's output, e.g.
/// `PermissionDenied desc = no identity issued` for a uid no entry selects.
pub(crate) async fn fetch_x509(socket: &Path, uid: u32) -> Result<X509Fetch, String> {
    let out_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(out_dir.path(), Some(uid), Some(uid)).unwrap();
    let id = uid.to_string();
    let out = run(Command::new("setpriv")
        .args(["--reuid", &id, "--regid", &id, "--clear-groups"])
        .arg(bin_dir().join("spire-agent"))
        .args(["api", "fetch", "x509", "-socketPath"])
        .arg(socket)
        .arg("-write")
        .arg(out_dir.path()))
    .await;
    if !out.status.success() {
        return Err(format!("{}: {}", out.status, output_text(&out)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let read = |name: &str| fs::read_to_string(out_dir.path().join(name));
    let mut svids = Vec::new();
    while let Ok(chain_pem) = read(&format!("svid.{}.pem", svids.len())) {
        let i = svids.len();
        svids.push(Svid {
            spiffe_id: uri_san(&chain_pem),
            chain_pem,
            key_pem: read(&format!("svid.{i}.key")).unwrap(),
            bundle_pem: read(&format!("bundle.{i}.pem")).unwrap(),
        });
    }
    // "Writing federated bundle #0 for trust domain spiffe://other.org to file <path>."
    let federated_bundles = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Writing federated bundle #"))
        .filter_map(|l| l.split_once(" for trust domain "))
        .filter_map(|(_, l)| l.split_once(" to file "))
        .map(|(td, file)| {
            let file = file.strip_suffix('.').unwrap_or(file);
            (td.to_owned(), fs::read_to_string(file).unwrap())
        })
        .collect();
    Ok(X509Fetch {
        svids,
        federated_bundles,
    })
}

/// Waits (30 s at most) until the agent at `socket` gives `uid` an SVID for `spiffe_id`, and
/// returns that fetch. A failure shows the last fetch and the tail of the agent's log (the
/// `agent.log` beside the socket, where [`SpireAgent`] keeps it).
pub(crate) async fn wait_for_svid(socket: &Path, uid: u32, spiffe_id: &str) -> X509Fetch {
    let last = RefCell::new(String::from("no fetch yet"));
    let failure = Failure {
        what: format!(
            "uid {uid} got no SVID for {spiffe_id} from {}",
            socket.display()
        ),
        last: &last,
        log: socket.with_file_name("agent.log"),
    };
    let last = &last;
    eventually(STARTUP, failure, || async move {
        match fetch_x509(socket, uid).await {
            Ok(fetch) if fetch.svids.iter().any(|s| s.spiffe_id == spiffe_id) => Some(fetch),
            Ok(fetch) => {
                let ids: Vec<&str> = fetch.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
                *last.borrow_mut() = format!("got SVIDs for {ids:?}");
                None
            }
            Err(e) => {
                *last.borrow_mut() = e;
                None
            }
        }
    })
    .await
}

/// The URI SAN of the first certificate in `pem`.
pub(crate) fn uri_san(pem: &str) -> String {
    let block = Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let cert = block.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no URI SAN in {pem}"))
}

/// The validity of the first certificate in `pem`: notBefore and notAfter, in Unix seconds.
pub(crate) fn validity(pem: &str) -> (i64, i64) {
    let block = Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let cert = block.parse_x509().unwrap();
    let v = cert.validity();
    (v.not_before.timestamp(), v.not_after.timestamp())
}

/// The DER of every certificate in `pem`.
pub(crate) fn certs_der(pem: &str) -> Vec<Vec<u8>> {
    Pem::iter_from_buffer(pem.as_bytes())
        .map(|block| block.unwrap().contents)
        .collect()
}
