//! A SPIFFE Workload API server for the tests, built from the spec's `workload.proto`
//! (`FetchX509SVID` only) and served by tonic on a unix socket. It produces on demand the
//! faults a real SPIRE agent cannot: a dropped stream, a withdrawn SVID, `PermissionDenied`, an
//! expired SVID, federated bundles added and removed. Like every conforming server it refuses
//! a call without the `workload.spiffe.io: true` metadata.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::support::pki::{Ca, Leaf};

/// `X509SVIDRequest` (workload.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct X509SvidRequest {}

/// `X509SVIDResponse` (workload.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct X509SvidResponse {
    #[prost(message, repeated, tag = "1")]
    pub(crate) svids: Vec<X509Svid>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub(crate) crl: Vec<Vec<u8>>,
    #[prost(map = "string, bytes", tag = "3")]
    pub(crate) federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID` (workload.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct X509Svid {
    #[prost(string, tag = "1")]
    pub(crate) spiffe_id: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) x509_svid: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) x509_svid_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub(crate) bundle: Vec<u8>,
    #[prost(string, tag = "5")]
    pub(crate) hint: String,
}

/// What the server answers with, now and on every open stream.
#[derive(Clone)]
pub(crate) enum Answer {
    /// A response.
    Svid(X509SvidResponse),
    /// `PermissionDenied`: no registration entry selects the caller. Ends open streams.
    Denied,
}

#[derive(Default)]
struct State {
    answer: Option<Answer>,
    streams: Vec<mpsc::Sender<Result<X509SvidResponse, Status>>>,
    calls: usize,
    refused_without_metadata: usize,
}

/// The server; dropping it stops serving.
pub(crate) struct WorkloadApiServer {
    socket: PathBuf,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl WorkloadApiServer {
    /// Serves `answer` on a fresh unix socket.
    pub(crate) async fn start(answer: Answer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let state = Arc::new(Mutex::new(State {
            answer: Some(answer),
            ..State::default()
        }));
        let service = FetchX509Svid(Arc::clone(&state));
        let incoming = futures_util::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _)| stream);
            Some((accepted, listener))
        });
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(service, incoming)
                .await;
        });
        Self {
            socket,
            state,
            task,
            _dir: dir,
        }
    }

    /// The address for `identity.workload_api.socket`.
    pub(crate) fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Answers every open stream, and every new call, with `answer`.
    pub(crate) fn push(&self, answer: Answer) {
        let mut state = self.state.lock().unwrap();
        state.answer = Some(answer.clone());
        let item = match answer {
            Answer::Svid(response) => Ok(response),
            Answer::Denied => Err(Status::permission_denied("no identity issued")),
        };
        state
            .streams
            .retain(|stream| stream.try_send(item.clone()).is_ok() && item.is_ok());
    }

    /// Ends every open stream without a status, as an agent restart does.
    pub(crate) fn drop_streams(&self) {
        self.state.lock().unwrap().streams.clear();
    }

    /// `FetchX509SVID` calls so far (with the metadata).
    pub(crate) fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }

    /// Calls refused for lacking `workload.spiffe.io: true`.
    pub(crate) fn refused_without_metadata(&self) -> usize {
        self.state.lock().unwrap().refused_without_metadata
    }
}

impl Drop for WorkloadApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response carrying `leaf` as the workload's SVID, `ca`'s root as its bundle, and each of
/// `federated` as a federated bundle.
pub(crate) fn response(leaf: &Leaf, id: &str, ca: &Ca, federated: &[&Ca]) -> X509SvidResponse {
    X509SvidResponse {
        svids: vec![X509Svid {
            spiffe_id: id.to_owned(),
            x509_svid: leaf.chain_der.iter().flat_map(|c| c.to_vec()).collect(),
            x509_svid_key: leaf.key_der.secret_pkcs8_der().to_vec(),
            bundle: ca.root_der().to_vec(),
            hint: String::new(),
        }],
        crl: Vec::new(),
        federated_bundles: federated
            .iter()
            .map(|ca| {
                (
                    format!("spiffe://{}", ca.trust_domain()),
                    ca.root_der().to_vec(),
                )
            })
            .collect(),
    }
}

// === the gRPC service, as tonic's generated code would have it ===

#[derive(Clone)]
struct FetchX509Svid(Arc<Mutex<State>>);

impl tonic::server::NamedService for FetchX509Svid {
    const NAME: &'static str = "SpiffeWorkloadAPI";
}

impl tonic::server::ServerStreamingService<X509SvidRequest> for FetchX509Svid {
    type Response = X509SvidResponse;
    type ResponseStream = ReceiverStream<Result<X509SvidResponse, Status>>;
    type Future = BoxFuture<'static, Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<X509SvidRequest>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move {
            let mut state = state.lock().unwrap();
            let metadata = request.metadata().get("workload.spiffe.io");
            if metadata.and_then(|v| v.to_str().ok()) != Some("true") {
                state.refused_without_metadata += 1;
                return Err(Status::invalid_argument(
                    "security header missing from request",
                ));
            }
            state.calls += 1;
            let first = match state.answer.clone() {
                Some(Answer::Svid(response)) => response,
                Some(Answer::Denied) | None => {
                    return Err(Status::permission_denied("no identity issued"));
                }
            };
            let (tx, rx) = mpsc::channel(16);
            tx.try_send(Ok(first)).unwrap();
            state.streams.push(tx);
            Ok(Response::new(ReceiverStream::new(rx)))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for FetchX509Svid
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            if req.uri().path() != "/SpiffeWorkloadAPI/FetchX509SVID" {
                return Ok(Status::unimplemented("only FetchX509SVID").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.server_streaming(service, req).await)
        })
    }
}
