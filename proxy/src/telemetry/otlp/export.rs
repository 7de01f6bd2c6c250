//! Where OTLP batches go: a collector over gRPC (tonic, unary `TraceService/Export`) or
//! HTTP/protobuf (`POST` to [`OtlpConfig::http_url`]), plain or TLS (`tls.rs`, `connect.rs`),
//! with the configured headers and compression, retried as `retry.rs` says.
//!
//! With `tls.client_svid`, connections are made again once the SVID has rotated: a pooled
//! connection keeps the certificate it was made with, and the collector should see the
//! current one.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut as _};
use hopgate_config::{OtlpCompression, OtlpConfig, OtlpProtocol};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use rustls::sign::CertifiedKey;
use tokio::time::Instant;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;

use super::ExportRequest;
use super::connect::Connector;
use super::retry::{self, Failure, Retry};
use super::tls::{self, ALPN_GRPC, ALPN_HTTP, CurrentSvid};

/// The gRPC method of OTLP trace export.
const EXPORT_METHOD: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// How much of a collector's answer is read (and dropped) so its connection can be reused.
const ANSWER_LIMIT: usize = 64 * 1024;

/// Where batches go, and the connections to it.
pub(in crate::telemetry) struct Exporter {
    target: Target,
    transport: Transport,
    /// The SVID presented on the current connections (with `tls.client_svid`).
    svid: Option<Arc<CertifiedKey>>,
}

/// Everything a new set of connections is made from.
struct Target {
    protocol: OtlpProtocol,
    /// gRPC: the endpoint; HTTP: the full URL spans are posted to.
    uri: http::Uri,
    tls: Option<Arc<ClientConfig>>,
    svid: Option<CurrentSvid>,
    /// The configured headers, values marked sensitive (never indexed by HPACK).
    headers: HeaderMap,
    gzip: bool,
    timeout: Duration,
}

enum Transport {
    /// `POST` with `content-type: application/x-protobuf`.
    Http(Client<Connector, Full<ExportRequest>>),
    /// Unary `TraceService/Export` on a lazily connected channel.
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
}

impl Exporter {
    /// An exporter for `config`, presenting `svid` when `tls.client_svid` asks for it;
    /// connects on first use and reconnects after failures. Must be called inside a tokio
    /// runtime (the gRPC channel's worker is spawned).
    ///
    /// # Errors
    /// The endpoint is not a URI, the CA file is unusable, or `tls.client_svid` is set and
    /// there is no `svid`; the message names the key.
    pub(in crate::telemetry) fn new(
        config: &OtlpConfig,
        svid: Option<CurrentSvid>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let target = Target::new(config, svid, timeout)?;
        let svid = target.svid.as_ref().and_then(|current| current());
        let transport = target.connect()?;
        Ok(Self {
            target,
            transport,
            svid,
        })
    }

    /// Sends one encoded `ExportTraceServiceRequest`, trying again on a retryable failure,
    /// until `deadline`. The error says why the last try failed, and after how many.
    pub(in crate::telemetry) async fn export(
        &mut self,
        request: ExportRequest,
        deadline: Instant,
    ) -> Result<(), String> {
        let request = if self.target.gzip && self.target.protocol == OtlpProtocol::Http {
            gzip(request)?
        } else {
            request
        };
        let mut attempt = 1;
        loop {
            self.follow_rotation()?;
            let sent = tokio::time::timeout_at(deadline, self.send(request.clone())).await;
            let failure = match sent {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(failure)) => failure,
                Err(_) => return Err(tries("export timed out", attempt)),
            };
            let Retry::Yes(asked) = failure.retry else {
                return Err(tries(&failure.message, attempt));
            };
            match retry::wait(attempt, asked) {
                Some(wait) if Instant::now() + wait < deadline => {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => return Err(tries(&failure.message, attempt)),
            }
        }
    }

    /// New connections when the SVID has changed since the current ones were made.
    fn follow_rotation(&mut self) -> Result<(), String> {
        let Some(current) = &self.target.svid else {
            return Ok(());
        };
        let now = current();
        let same = match (&now, &self.svid) {
            (Some(now), Some(before)) => Arc::ptr_eq(now, before),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.transport = self.target.connect()?;
            self.svid = now;
        }
        Ok(())
    }

    /// One try.
    async fn send(&mut self, request: ExportRequest) -> Result<(), Failure> {
        match &mut self.transport {
            Transport::Http(client) => {
                let mut builder = http::Request::post(self.target.uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf");
                if self.target.gzip {
                    builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
                }
                let mut req = builder
                    .body(Full::new(request))
                    .map_err(|err| Failure::fatal(err.to_string()))?;
                for (name, value) in &self.target.headers {
                    req.headers_mut().insert(name, value.clone());
                }
                let response = client
                    .request(req)
                    .await
                    .map_err(|err| Failure::connection(&err))?;
                let status = response.status();
                let asked = retry::retry_after(response.headers());
                // Read the answer to its end so the connection goes back to the pool.
                let _ = Limited::new(response.into_body(), ANSWER_LIMIT)
                    .collect()
                    .await;
                let message = format!("the collector answered HTTP {status}");
                if status.is_success() {
                    Ok(())
                } else if retry::http_retryable(status) {
                    Err(Failure::retryable(message, asked))
                } else {
                    Err(Failure::fatal(message))
                }
            }
            Transport::Grpc(grpc) => {
                grpc.ready()
                    .await
                    .map_err(|err| Failure::connection(&err))?;
                let path = http::uri::PathAndQuery::from_static(EXPORT_METHOD);
                let mut req = tonic::Request::new(request);
                *req.metadata_mut() = MetadataMap::from_headers(self.target.headers.clone());
                grpc.unary(req, path, Raw)
                    .await
                    .map(drop)
                    .map_err(|status| retry::grpc(&status))
            }
        }
    }
}

impl Target {
    fn new(
        config: &OtlpConfig,
        svid: Option<CurrentSvid>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let (url, alpn) = match config.protocol() {
            OtlpProtocol::Grpc => (config.endpoint().to_owned(), ALPN_GRPC),
            OtlpProtocol::Http => (config.http_url(), ALPN_HTTP),
        };
        let uri = url
            .parse::<http::Uri>()
            .map_err(|err| format!("endpoint `{url}`: {err}"))?;
        let svid = match config.tls() {
            Some(tls) if tls.client_svid() => Some(svid.ok_or_else(|| {
                "tls.client_svid: this sidecar has no SVID to present".to_owned()
            })?),
            _ => None,
        };
        let tls = config
            .tls()
            .map(|tls| tls::client_config(tls, svid.clone(), alpn))
            .transpose()?;
        let mut headers = HeaderMap::new();
        for (name, value) in config.headers() {
            // Checked when the config was loaded; the message never shows the value.
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: `{name}` is not a header name"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("headers.{name}: the value is not a header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self {
            protocol: config.protocol(),
            uri,
            tls,
            svid,
            headers,
            gzip: config.compression() == OtlpCompression::Gzip,
            timeout,
        })
    }

    /// Connections of their own (none is made before the first export).
    fn connect(&self) -> Result<Transport, String> {
        let connector = Connector::new(self.tls.clone(), self.timeout);
        match self.protocol {
            OtlpProtocol::Http => Ok(Transport::Http(
                Client::builder(TokioExecutor::new()).build(connector),
            )),
            OtlpProtocol::Grpc => {
                let channel = tonic::transport::Endpoint::from(self.uri.clone())
                    .connect_timeout(self.timeout)
                    .timeout(self.timeout)
                    .connect_with_connector_lazy(connector);
                let mut grpc = tonic::client::Grpc::new(channel);
                if self.gzip {
                    grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                }
                Ok(Transport::Grpc(grpc))
            }
        }
    }
}

/// The request gzipped, as one piece.
fn gzip(mut request: ExportRequest) -> Result<ExportRequest, String> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(request.remaining() / 4),
        flate2::Compression::fast(),
    );
    while request.has_remaining() {
        let chunk = request.chunk();
        encoder
            .write_all(chunk)
            .map_err(|err| format!("gzip: {err}"))?;
        let n = chunk.len();
        request.advance(n);
    }
    let mut gzipped = ExportRequest::default();
    gzipped.push(encoder.finish().map_err(|err| format!("gzip: {err}"))?);
    Ok(gzipped)
}

/// `message`, saying how many tries it took when more than one.
fn tries(message: &str, attempts: u32) -> String {
    if attempts > 1 {
        format!("{message} (after {attempts} tries)")
    } else {
        message.to_owned()
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

/// Whether `config`'s TLS material can be used: the CA file holds certificates that can be
/// roots (`hopgate check-config`; startup checks the same when it builds the exporter).
///
/// # Errors
/// What is wrong, naming the key and the file.
pub(in crate::telemetry) fn check(config: &OtlpConfig) -> Result<(), String> {
    match config.tls() {
        Some(tls) => tls::roots(tls.ca()).map(drop),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
