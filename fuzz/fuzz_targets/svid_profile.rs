//! Fuzzes the X.509-SVID profile checks (docs/security.md, "Inbound: the SVID on the handshake",
//! steps 1–3 and 6), which see every certificate a peer presents before path validation: they
//! must never panic, whatever the bytes. A leaf they accept carries one canonical SPIFFE ID with
//! a path; our own SVID's check (both usages) accepts exactly what both the client and the
//! server check accept, with the same ID; and no certificate is both an acceptable leaf and an
//! acceptable signing certificate (`keyCertSign` decides).
//!
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run svid_profile

#![no_main]

use std::sync::LazyLock;

use hopgate_config::{SpiffeId, TrustDomain};
use hopgate_proxy::fuzzing::{
    check_client_leaf, check_own_leaf, check_server_leaf, check_signing_cert,
};
use libfuzzer_sys::fuzz_target;

static EXAMPLE_ORG: LazyLock<TrustDomain> =
    LazyLock::new(|| TrustDomain::parse("example.org").expect("a valid trust domain"));

fuzz_target!(|der: &[u8]| {
    let client = check_client_leaf(der);
    let server = check_server_leaf(der);
    let own = check_own_leaf(der);
    for (id, _, _) in [&client, &server, &own].into_iter().flatten() {
        assert!(!id.is_root(), "a workload SVID names a path: {id}");
        assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(id));
    }
    assert_eq!(
        own.is_ok(),
        client.is_ok() && server.is_ok(),
        "own: {own:?}, client: {client:?}, server: {server:?}"
    );
    if let (Ok(own), Ok(client), Ok(server)) = (&own, &client, &server) {
        assert!(own == client && own == server);
    }
    let leaf_ok = client.is_ok() || server.is_ok();
    let domain = match [&client, &server].into_iter().flatten().next() {
        Some((id, _, _)) => id.trust_domain(),
        None => EXAMPLE_ORG.clone(),
    };
    let signing = check_signing_cert(der, &domain);
    assert!(
        !(leaf_ok && signing.is_ok()),
        "accepted both as a leaf and as a signing certificate"
    );
    if let Err(err) = &signing {
        let _ = (err.to_string(), err.failure_reason());
    }
    for err in [&client, &server, &own]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
    {
        let _ = (err.to_string(), err.failure_reason());
    }
});
