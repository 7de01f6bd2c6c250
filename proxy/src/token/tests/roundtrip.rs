//! Mint → verify round trips (ACT-01, ACT-03, CNF-01, JWT-20, CNF-07, TEL-01).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::{ClientConnection, Connection, ServerConnection};
use rustls_pki_types::ServerName;

use super::{Mesh, alice, request, scopes, spiffe};
use crate::tls::{Identity, PeerIdentity, inbound_server_config, outbound_client_config};
use crate::token::test_support::{
    AGENT, CRM, INFERENCE, TestCa, claims_for, forge, header_for, leaf_hash, now, present, secs,
};
use crate::token::{Minter, RejectReason, TokenError};

#[test]
fn a_token_minted_at_the_origin_verifies_at_its_audience_bound_to_the_minter_act_01_cnf_01() {
    let mesh = Mesh::new();
    let aud = spiffe(INFERENCE);
    let route = scopes(&["generate", "embed"]);
    let token = Mesh::minter(&mesh.agent)
        .mint_at(request(&aud, &route), now())
        .unwrap();
    let verified = present(
        &mesh.verifier(INFERENCE),
        token.compact(),
        &mesh.agent,
        now(),
    )
    .unwrap();
    assert_eq!(verified.iss(), AGENT);
    assert_eq!(
        verified.sub(),
        AGENT,
        "no parent, no origin: the workload acts for itself"
    );
    assert_eq!(verified.aud(), INFERENCE);
    assert!(
        verified.act().is_none() && verified.actors().is_empty(),
        "ACT-03"
    );
    assert_eq!(verified.scopes().collect::<Vec<_>>(), ["generate", "embed"]);
    assert_eq!(verified.prv(), None);
    let claims = verified.claims();
    assert_eq!(
        claims.cnf_x5t_s256(),
        URL_SAFE_NO_PAD.encode(leaf_hash(&mesh.agent))
    );
    assert_eq!(claims.exp() - claims.iat(), 60);
    assert_eq!(claims.nbf(), claims.iat());
    assert_eq!(URL_SAFE_NO_PAD.decode(claims.jti()).unwrap().len(), 16);
    assert_eq!(URL_SAFE_NO_PAD.decode(claims.txn()).unwrap().len(), 16);
    assert_eq!(verified.hash(), token.hash());
    // The minter hashes the header once and continues from there: the hash is still the
    // SHA-256 of the whole compact form, as a child's `prv` and the audit's `token_hash` say.
    assert_eq!(
        *token.hash(),
        crate::token::sha256(token.compact().as_bytes())
    );
}

#[test]
fn tokens_of_every_key_type_round_trip_with_the_algorithm_their_key_dictates() {
    let ca = TestCa::new("example.org");
    let verifier = super::verifier(CRM, &[&ca]);
    for (alg, name) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, "ES256"),
        (&rcgen::PKCS_ECDSA_P384_SHA384, "ES384"),
        (&rcgen::PKCS_ED25519, "EdDSA"),
        (&rcgen::PKCS_RSA_SHA256, "PS256"),
    ] {
        let svid = ca.svid_with(AGENT, alg, |_| {});
        assert_eq!(header_for(&svid)["alg"], name);
        let token = Mesh::minter(&svid)
            .mint_at(request(&spiffe(CRM), &[]), now())
            .unwrap();
        let header = token.compact().split('.').next().unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header["alg"], name);
        assert_eq!(header["typ"], "hop+jwt");
        present(&verifier, token.compact(), &svid, now()).unwrap_or_else(|r| panic!("{name}: {r}"));
    }
}

#[test]
fn a_chain_with_an_intermediate_travels_in_x5c_and_verifies() {
    let root = TestCa::new("example.org");
    let svid = root.intermediate().svid(AGENT);
    assert_eq!(svid.chain().len(), 2);
    let token = Mesh::minter(&svid)
        .mint_at(request(&spiffe(CRM), &[]), now())
        .unwrap();
    present(
        &super::verifier(CRM, &[&root]),
        token.compact(),
        &svid,
        now(),
    )
    .unwrap();
}

#[test]
fn the_minted_lifetime_is_capped_by_the_svid_not_after_jwt_20_cnf_07() {
    let ca = TestCa::new("example.org");
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
    let svid = ca.svid_with(AGENT, &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.not_after = not_after
    });
    let minter = Mesh::minter(&svid);
    let token = minter.mint_at(request(&spiffe(CRM), &[]), now()).unwrap();
    assert_eq!(token.claims().exp(), secs(svid.not_after()));
    assert!(token.claims().exp() - token.claims().iat() <= 30);
    let err = minter
        .mint_at(request(&spiffe(CRM), &[]), svid.not_after())
        .unwrap_err();
    assert!(matches!(err, TokenError::NoLifetime(_)), "{err:?}");
}

#[test]
fn a_token_outliving_its_signer_certificate_is_refused_jwt_20() {
    let ca = TestCa::new("example.org");
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(20);
    let svid = ca.svid_with(AGENT, &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.not_after = not_after
    });
    let claims = claims_for(&svid, CRM, now());
    let token = forge(&svid, &header_for(&svid), &claims);
    let result = present(&super::verifier(CRM, &[&ca]), &token, &svid, now());
    assert_eq!(result.err(), Some(RejectReason::Lifetime));
}

#[test]
fn a_token_from_an_end_user_carries_the_minter_as_its_only_actor() {
    let mesh = Mesh::new();
    let origin = alice(&["generate", "admin"], secs(now()) + 3600);
    let route = scopes(&["generate"]);
    let aud = spiffe(INFERENCE);
    let mut req = request(&aud, &route);
    req.origin = Some(&origin);
    req.tctx = Some(super::tctx("support"));
    let token = Mesh::minter(&mesh.agent).mint_at(req, now()).unwrap();
    let verified = present(
        &mesh.verifier(INFERENCE),
        token.compact(),
        &mesh.agent,
        now(),
    )
    .unwrap();
    assert_eq!(verified.sub(), "alice");
    assert_eq!(verified.actors(), [AGENT]);
    assert_eq!(verified.scopes().collect::<Vec<_>>(), ["generate"]);
    assert_eq!(verified.tctx(), Some(&super::tctx("support")));
    let facts = verified.facts();
    assert_eq!(facts.sub, "alice");
    assert_eq!(facts.iss, AGENT);
    assert_eq!(facts.txn.as_deref(), Some(verified.txn()));
    assert_eq!(facts.scope, ["generate"]);
    assert_eq!(facts.actors, [AGENT]);
    assert_eq!(facts.origin(), Some(AGENT));
}

#[test]
fn an_origin_token_caps_the_chain_lifetime() {
    let mesh = Mesh::new();
    let at = now();
    let origin = alice(&[], secs(at) + 10);
    let aud = spiffe(INFERENCE);
    let mut req = request(&aud, &[]);
    req.origin = Some(&origin);
    let token = Mesh::minter(&mesh.agent).mint_at(req, at).unwrap();
    assert_eq!(token.claims().exp(), secs(at) + 10);
}

#[test]
fn debug_output_never_shows_the_compact_token_or_the_key_tel_01() {
    let mesh = Mesh::new();
    let minter = Mesh::minter(&mesh.agent);
    let token = minter
        .mint_at(request(&spiffe(INFERENCE), &[]), now())
        .unwrap();
    let verified = present(
        &mesh.verifier(INFERENCE),
        token.compact(),
        &mesh.agent,
        now(),
    )
    .unwrap();
    let signature = token.compact().rsplit('.').next().unwrap();
    for debug in [
        format!("{token:?}"),
        format!("{verified:?}"),
        format!("{minter:?}"),
        format!("{:?}", mesh.verifier(INFERENCE)),
    ] {
        assert!(!debug.contains(token.compact()), "{debug}");
        assert!(!debug.contains(signature), "{debug}");
    }
    assert!(format!("{token:?}").contains("<redacted>"));
    assert!(format!("{minter:?}").contains("<redacted>"));
}

#[test]
fn every_reason_has_a_distinct_stable_code() {
    let codes: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        codes,
        [
            "too_large",
            "malformed",
            "typ",
            "alg",
            "signature",
            "chain",
            "binding",
            "audience",
            "expired",
            "not_yet_valid",
            "lifetime",
            "actor",
            "depth",
            "issuer"
        ]
    );
    assert_eq!(RejectReason::NotYetValid.to_string(), "not_yet_valid");
}

#[test]
fn a_token_is_bound_to_the_peer_identity_of_a_real_handshake_act_01_cnf_01() {
    let ca = TestCa::new("example.org");
    let server = identity(&ca, CRM);
    let client = identity(&ca, AGENT);
    let server_cfg = inbound_server_config(&server, &[ca.td()]).unwrap();
    let client_cfg = outbound_client_config(&client, spiffe(CRM)).unwrap();
    let conn = handshake(client_cfg, server_cfg);
    let peer = PeerIdentity::from_server_connection(&conn).unwrap();

    let token = Minter::new(client.svid(), Duration::from_secs(60))
        .unwrap()
        .mint_at(request(&spiffe(CRM), &[]), now())
        .unwrap();
    let verifier = super::verifier(CRM, &[&ca]);
    let verified = verifier
        .verify_inbound(token.compact(), &peer, now())
        .unwrap();
    assert_eq!(verified.iss(), peer.id().as_str());
    let other = Minter::new(&ca.svid(AGENT), Duration::from_secs(60))
        .unwrap()
        .mint_at(request(&spiffe(CRM), &[]), now())
        .unwrap();
    let result = verifier.verify_inbound(other.compact(), &peer, now());
    assert_eq!(
        result.err(),
        Some(RejectReason::Binding),
        "same ID, other certificate: CNF-02"
    );
}

fn identity(ca: &TestCa, id: &str) -> Identity {
    Identity::new(ca.svid(id), TestCa::bundles(&[ca]))
}

fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
) -> ServerConnection {
    let name = ServerName::try_from("hopgate.test").unwrap();
    let mut client = Connection::Client(ClientConnection::new(client, name).unwrap());
    let mut server = Connection::Server(ServerConnection::new(server).unwrap());
    for _ in 0..16 {
        transfer(&mut client, &mut server);
        transfer(&mut server, &mut client);
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
    }
    match server {
        Connection::Server(server) => server,
        Connection::Client(_) => panic!("the connections swapped sides"),
    }
}

fn transfer(from: &mut Connection, to: &mut Connection) {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
    }
}
