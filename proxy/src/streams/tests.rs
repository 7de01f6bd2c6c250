use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hopgate_config::SpiffeId;
use hopgate_policy::{Direction, TokenFacts};
use http_body::Body as _;
use http_body_util::{BodyExt as _, StreamBody};
use tokio::sync::Notify;

use super::{
    CutReason, Guarded, OpenFacts, OpenParties, OpenText, OpenToken, Registration, Streams,
};
use crate::hop::test_support::Fixture;
use crate::http::BoxError;
use crate::identity::Derived;

const PEER: &str = "spiffe://example.org/ns/a/sa/caller";
const OWN: &str = "spiffe://example.org/ns/b/sa/server";

fn streams(yaml: &str) -> Arc<Streams> {
    let fx = Fixture::new(
        OWN,
        &format!("inbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:9\n{yaml}"),
        None,
    );
    let inbound = fx.config.inbound().unwrap();
    let identity = fx.identity(Derived {
        allowed: inbound.allowed_trust_domains().to_vec(),
        limits: fx.limits(),
        mint_ttl: None,
        routes: Vec::new(),
    });
    Arc::new(Streams::new(
        inbound.streams(),
        Duration::from_secs(5),
        identity,
        Arc::new(Notify::new()),
    ))
}

fn facts(expires_at: Option<SystemTime>) -> OpenFacts {
    let id = |s: &str| SpiffeId::parse(s).unwrap();
    let jti = expires_at.map(|_| "jti-1");
    OpenFacts {
        direction: Direction::Inbound,
        parties: Arc::new(OpenParties {
            peer: Some(id(PEER)),
            own: id(OWN),
            dest: None,
            peer_chain: None,
        }),
        method: http::Method::GET,
        text: OpenText::new(
            [
                Some("/events"),
                Some("server"),
                None,
                None,
                None,
                None,
                None,
                jti,
                None,
            ],
            &[],
        ),
        token: expires_at.map(|expires_at| OpenToken {
            facts: TokenFacts {
                sub: "alice".into(),
                iss: PEER.into(),
                txn: Some("txn-1".into()),
                scope: Vec::new(),
                actors: Vec::new(),
                tctx: Vec::new(),
            },
            hash: [0; 32],
            depth: 0,
            expires_at,
        }),
        client_addr: None,
        trace_id: None,
        decision_id: Arc::from("d-1"),
    }
}

fn register(streams: &Arc<Streams>, facts: OpenFacts) -> Registration {
    streams.register(streams.open(facts, 0, Instant::now()))
}

/// A body that never ends by itself: an SSE stream the app keeps open.
fn endless() -> impl http_body::Body<Data = Bytes, Error = BoxError> {
    StreamBody::new(futures_util::stream::pending::<
        Result<http_body::Frame<Bytes>, BoxError>,
    >())
}

struct Flag(std::sync::atomic::AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_request_leaves_the_registry_when_its_body_is_dropped() {
    let streams = streams("");
    let body = Guarded::new(endless(), register(&streams, facts(None)));
    let other = Guarded::new(endless(), register(&streams, facts(None)));
    assert_eq!(streams.len(), 2);
    drop(body);
    assert_eq!(streams.len(), 1);
    drop(other);
    assert_eq!(streams.len(), 0);
}

#[tokio::test]
async fn an_ended_request_entry_is_written_over_by_the_next_and_starts_uncut() {
    let streams = streams("");
    let first = register(&streams, facts(None));
    assert!(first.open().cut(CutReason::Policy));
    let entry: *const super::Open = first.open();
    drop(first);
    let exp = SystemTime::now() + Duration::from_secs(60);
    let next = register(&streams, facts(Some(exp)));
    assert!(std::ptr::eq(entry, next.open()), "the entry was reused");
    assert_eq!(next.open().cut_reason(), None);
    assert!(
        next.open().facts.token.is_some(),
        "it holds the new request's facts"
    );
    assert_eq!(streams.len(), 1);
}

#[tokio::test]
async fn rvk_a_cut_wakes_the_pending_body_and_ends_it_with_cancel() {
    let streams = streams("");
    let registration = register(&streams, facts(None));
    let open = Arc::clone(&registration.open);
    let mut body = Guarded::new(endless(), registration);
    let flag = Arc::new(Flag(Default::default()));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());

    assert!(open.cut(CutReason::Revoked));
    assert!(
        flag.0.load(std::sync::atomic::Ordering::SeqCst),
        "not woken"
    );
    let Poll::Ready(Some(Err(err))) = Pin::new(&mut body).poll_frame(&mut cx) else {
        panic!("a cut body must end with an error");
    };
    let reason = err.downcast_ref::<h2::Error>().and_then(h2::Error::reason);
    assert_eq!(reason, Some(h2::Reason::CANCEL));
}

#[tokio::test]
async fn a_request_is_cut_once_and_keeps_its_first_reason() {
    let streams = streams("");
    let registration = register(&streams, facts(None));
    assert!(registration.open().cut(CutReason::Policy));
    assert!(!registration.open().cut(CutReason::Revoked));
    assert_eq!(registration.open().cut_reason(), Some(CutReason::Policy));
}

#[tokio::test]
async fn an_open_request_is_due_at_its_token_exp_plus_leeway() {
    let streams = streams("");
    let exp = SystemTime::now() + Duration::from_secs(60);
    let now = Instant::now();
    let registration = streams.register(streams.open(facts(Some(exp)), 0, now));
    let deadlines = registration.open.deadlines;
    // 60 s of token and 5 s of leeway.
    assert_eq!(
        deadlines.wall,
        Some((exp + Duration::from_secs(5), CutReason::TokenExpired))
    );
    let far = now + Duration::from_secs(3600);
    assert_eq!(deadlines.due(far, exp + Duration::from_secs(4)), None);
    assert_eq!(
        deadlines.due(far, exp + Duration::from_secs(5)),
        Some(CutReason::TokenExpired)
    );
}

#[tokio::test]
async fn max_age_comes_first_when_it_is_earlier_than_the_token() {
    let streams = streams("  streams: { max_age: 10s }\n");
    let wall = SystemTime::now();
    let now = Instant::now();
    let exp = wall + Duration::from_secs(60);
    let deadlines = streams
        .register(streams.open(facts(Some(exp)), 0, now))
        .open
        .deadlines;
    let at = |secs| {
        (
            now + Duration::from_secs(secs),
            wall + Duration::from_secs(secs),
        )
    };
    let (mono, clock) = at(9);
    assert_eq!(deadlines.due(mono, clock), None);
    let (mono, clock) = at(10);
    assert_eq!(deadlines.due(mono, clock), Some(CutReason::MaxAge));
    // Looked at only once both have passed: the age limit passed first.
    let (mono, clock) = at(120);
    assert_eq!(deadlines.due(mono, clock), Some(CutReason::MaxAge));
}

#[tokio::test]
async fn without_reauthorization_only_the_age_limit_is_kept() {
    let unlimited = streams("  streams: { reauthorize: false }\n");
    assert!(
        !unlimited.enabled(),
        "nothing to cut for: nothing is registered"
    );
    let aged = streams("  streams: { reauthorize: false, max_age: 1h }\n");
    let now = Instant::now();
    let soon = SystemTime::now() + Duration::from_secs(1);
    let deadlines = aged
        .register(aged.open(facts(Some(soon)), 0, now))
        .open
        .deadlines;
    assert_eq!(
        deadlines.wall, None,
        "the token's exp is not enforced on open requests"
    );
    assert_eq!(deadlines.age, Some(now + Duration::from_secs(3600)));
}

#[test]
fn cut_reasons_are_the_documented_codes() {
    let codes: Vec<_> = [
        CutReason::Revoked,
        CutReason::Policy,
        CutReason::Trust,
        CutReason::TokenExpired,
        CutReason::MaxAge,
    ]
    .into_iter()
    .map(CutReason::as_str)
    .collect();
    assert_eq!(
        codes,
        ["revoked", "policy", "trust", "token_expired", "max_age"]
    );
}

#[tokio::test]
async fn a_body_that_ends_by_itself_passes_through_whole() {
    let streams = streams("");
    let full = http_body_util::Full::new(Bytes::from_static(b"done"))
        .map_err(|never| -> BoxError { match never {} });
    let body = Guarded::new(full, register(&streams, facts(None)));
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"done");
    assert_eq!(streams.len(), 0);
}
