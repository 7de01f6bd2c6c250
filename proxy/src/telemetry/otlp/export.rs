//! Where OTLP batches go: a collector over gRPC (tonic, unary `TraceService/Export`) or
//! HTTP/protobuf (`POST {endpoint}/v1/traces`).

use std::time::Duration;

use bytes::{Buf, BufMut as _};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::ExportRequest;

/// The gRPC method of OTLP trace export.
const EXPORT_METHOD: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// How much of a collector's answer is read (and dropped) so its connection can be reused.
const ANSWER_LIMIT: usize = 64 * 1024;

/// Where batches go.
#[expect(
    clippy::large_enum_variant,
    reason = "one per sidecar, made once and never moved on the request path"
)]
pub(in crate::telemetry) enum Exporter {
    /// `POST` to this URI with `content-type: application/x-protobuf`.
    Http {
        client: Client<HttpConnector, Full<ExportRequest>>,
        uri: http::Uri,
    },
    /// Unary `TraceService/Export` on a lazily connected channel.
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
}

impl Exporter {
    /// An HTTP/protobuf exporter to `{endpoint}/v1/traces`.
    pub(in crate::telemetry) fn http(endpoint: &str) -> Result<Self, String> {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let uri = url
            .parse::<http::Uri>()
            .map_err(|err| format!("endpoint `{url}`: {err}"))?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Self::Http { client, uri })
    }

    /// A gRPC exporter; connects on first use and reconnects after failures. Must be called
    /// inside a tokio runtime.
    pub(in crate::telemetry) fn grpc(endpoint: &str, timeout: Duration) -> Result<Self, String> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .map_err(|err| format!("endpoint `{endpoint}`: {err}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_lazy();
        Ok(Self::Grpc(tonic::client::Grpc::new(channel)))
    }

    /// Sends one encoded `ExportTraceServiceRequest`.
    pub(in crate::telemetry) async fn export(
        &mut self,
        request: ExportRequest,
    ) -> Result<(), String> {
        match self {
            Self::Http { client, uri } => {
                let request = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(request))
                    .map_err(|err| err.to_string())?;
                let response = client
                    .request(request)
                    .await
                    .map_err(|err| error_chain(&err))?;
                let status = response.status();
                // Read the answer to its end so the connection goes back to the pool.
                let _ = Limited::new(response.into_body(), ANSWER_LIMIT)
                    .collect()
                    .await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the collector answered HTTP {status}"))
                }
            }
            Self::Grpc(grpc) => {
                grpc.ready()
                    .await
                    .map_err(|err| format!("collector unavailable: {err}"))?;
                let path = http::uri::PathAndQuery::from_static(EXPORT_METHOD);
                grpc.unary(tonic::Request::new(request), path, Raw)
                    .await
                    .map(drop)
                    .map_err(|status| status.to_string())
            }
        }
    }
}

/// A codec for messages that are already encoded: the request goes out as it is, the answer
/// (an `ExportTraceServiceResponse`, whose partial-success counts we do not act on) is skipped.
#[derive(Clone, Copy, Debug, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = ExportRequest;
    type Decode = ();
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        Self
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self
    }
}

impl Encoder for Raw {
    type Item = ExportRequest;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: ExportRequest,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

/// An error and its sources as one line (`client error (Connect): tcp connect error: ...`):
/// hyper's own message alone hides the cause, and its `Debug` text is not for logs.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
