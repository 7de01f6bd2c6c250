//! The exporter against local collectors: headers and gzip as they arrive, retries, TLS that
//! does not verify, and mTLS following an SVID rotation.

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rcgen::SanType;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::super::{CurrentSvid, ExportRequest};
use super::Exporter;
use crate::test_util::pki::{Ca, Leaf};
use crate::tls::provider;

const IDENTITY: &str = "identity:\n  svid: { cert: svid.pem, key: svid_key.pem }\n  bundles: { example.org: bundle.pem }\noutbound:\n  listen: 127.0.0.1:15001\n";

/// One request as the collector received it.
#[derive(Clone, Debug)]
struct Received {
    headers: http::HeaderMap,
    /// Decompressed when it came gzipped.
    body: Vec<u8>,
    /// The client certificate of the connection it came on.
    client_cert: Option<CertificateDer<'static>>,
    connection: usize,
}

/// An OTLP/HTTP collector on loopback answering each request with the next of `statuses`
/// (then 200), over TLS when given a server config.
struct Collector {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    /// The first bytes of each connection, as they came off the wire.
    first_bytes: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<usize>>,
}

impl Collector {
    async fn start(statuses: &[u16], tls: Option<Arc<ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let first_bytes = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let statuses = Arc::new(Mutex::new(statuses.to_vec()));
        let (rec, first, conns) = (received.clone(), first_bytes.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = {
                    let mut n = conns.lock().unwrap();
                    *n += 1;
                    *n
                };
                let mut peek = [0u8; 1];
                if let Ok(1) = stream.peek(&mut peek).await {
                    first.lock().unwrap().push(peek[0]);
                }
                let (rec, statuses, tls) = (rec.clone(), statuses.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(TokioIo::new(stream), None, connection, rec, statuses).await,
                        Some(config) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            else {
                                return;
                            };
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| c.clone().into_owned());
                            serve(TokioIo::new(stream), cert, connection, rec, statuses).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            received,
            first_bytes,
            connections,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

async fn serve<I>(
    io: TokioIo<I>,
    client_cert: Option<CertificateDer<'static>>,
    connection: usize,
    received: Arc<Mutex<Vec<Received>>>,
    statuses: Arc<Mutex<Vec<u16>>>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (received, statuses, client_cert) =
            (received.clone(), statuses.clone(), client_cert.clone());
        async move {
            let headers = req.headers().clone();
            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
            let body = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(body.as_slice())
                    .read_to_end(&mut out)
                    .unwrap();
                out
            } else {
                body
            };
            received.lock().unwrap().push(Received {
                headers,
                body,
                client_cert,
                connection,
            });
            let status = {
                let mut statuses = statuses.lock().unwrap();
                if statuses.is_empty() {
                    200
                } else {
                    statuses.remove(0)
                }
            };
            let mut rsp = http::Response::new(Full::new(Bytes::new()));
            *rsp.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, std::convert::Infallible>(rsp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

/// A config folder with placeholder identity files and `ca.pem`; the config for `otlp`.
fn config(otlp: &str, ca_pem: &str) -> (hopgate_config::Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for file in ["svid.pem", "svid_key.pem", "bundle.pem"] {
        std::fs::write(dir.path().join(file), "").unwrap();
    }
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    let yaml = format!("{IDENTITY}telemetry:\n  otlp: {otlp}\n");
    let config = hopgate_config::from_yaml_with_env(&yaml, dir.path(), |_| None).unwrap();
    (config, dir)
}

fn exporter(config: &hopgate_config::Config, svid: Option<CurrentSvid>) -> Exporter {
    let otlp = config.telemetry().otlp().unwrap();
    Exporter::new(otlp, svid, Duration::from_secs(2)).unwrap()
}

fn request(body: &[u8]) -> ExportRequest {
    let mut request = ExportRequest::default();
    request.push(body.to_vec());
    request
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// A collector certificate for 127.0.0.1, issued by `ca`.
fn server_leaf(ca: &Ca) -> Leaf {
    ca.leaf("spiffe://collector.test/otel")
        .edit(|p| {
            p.subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        })
        .build()
}

/// The collector's TLS: `leaf`, asking for a client certificate of `clients` when given.
fn server_config(leaf: &Leaf, clients: Option<&Ca>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.root_der()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::Pkcs8(leaf.key_der.clone_key());
    Arc::new(
        builder
            .with_single_cert(leaf.chain_der.clone(), key)
            .unwrap(),
    )
}

#[tokio::test]
async fn http_export_sends_the_configured_headers_and_a_gzip_body_that_decodes_to_the_request() {
    let collector = Collector::start(&[], None).await;
    let (config, _dir) = config(
        &format!(
            "{{ endpoint: 'http://{}', protocol: http, compression: gzip, headers: {{ x-tenant: ml, authorization: 'Bearer t0k' }} }}",
            collector.addr
        ),
        "",
    );
    let body = b"an ExportTraceServiceRequest, repeated ".repeat(50);
    exporter(&config, None)
        .export(request(&body), deadline())
        .await
        .unwrap();
    let [received] = collector.received().try_into().unwrap();
    assert_eq!(received.headers["content-encoding"], "gzip");
    assert_eq!(received.headers["content-type"], "application/x-protobuf");
    assert_eq!(received.headers["x-tenant"], "ml");
    assert_eq!(received.headers["authorization"], "Bearer t0k");
    assert_eq!(received.body, body);
}

#[tokio::test]
async fn an_http_503_is_retried_and_the_batch_arrives_when_the_collector_recovers() {
    let collector = Collector::start(&[503, 503], None).await;
    let (config, _dir) = config(
        &format!(
            "{{ endpoint: 'http://{}', protocol: http }}",
            collector.addr
        ),
        "",
    );
    let started = Instant::now();
    exporter(&config, None)
        .export(request(b"spans"), deadline())
        .await
        .unwrap();
    let received = collector.received();
    assert_eq!(received.len(), 3, "{received:?}");
    assert!(received.iter().all(|r| r.body == b"spans"));
    // Two waits: 50-100 ms, then 100-200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_collector_that_keeps_answering_503_costs_three_tries_and_a_400_one() {
    let collector = Collector::start(&[503, 503, 503, 503, 400], None).await;
    let (config, _dir) = config(
        &format!(
            "{{ endpoint: 'http://{}', protocol: http }}",
            collector.addr
        ),
        "",
    );
    let mut exporter = exporter(&config, None);
    let err = exporter
        .export(request(b"a"), deadline())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "the collector answered HTTP 503 Service Unavailable (after 3 tries)"
    );
    assert_eq!(collector.received().len(), 3);
    // The fourth answer is a 503 again, the fifth a 400: dropped at once.
    let err = exporter
        .export(request(b"b"), deadline())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "the collector answered HTTP 400 Bad Request (after 2 tries)"
    );
    assert_eq!(collector.received().len(), 5);
}

#[tokio::test]
async fn retries_never_run_past_the_batch_deadline() {
    let collector = Collector::start(&[503; 10], None).await;
    let (config, _dir) = config(
        &format!(
            "{{ endpoint: 'http://{}', protocol: http }}",
            collector.addr
        ),
        "",
    );
    let started = Instant::now();
    let err = exporter(&config, None)
        .export(request(b"a"), Instant::now() + Duration::from_millis(30))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("503"), "{err}");
    assert_eq!(collector.received().len(), 1);
}

#[tokio::test]
async fn export_over_https_is_refused_when_the_collector_certificate_does_not_verify() {
    let (collector_ca, other_ca) = (Ca::new("collector.test"), Ca::new("other.test"));
    let tls = server_config(&server_leaf(&collector_ca), None);
    for protocol in ["http", "grpc"] {
        let collector = Collector::start(&[], Some(Arc::clone(&tls))).await;
        let (config, _dir) = config(
            &format!(
                "{{ endpoint: 'https://{}', protocol: {protocol}, tls: {{ ca: ca.pem }} }}",
                collector.addr
            ),
            &other_ca.bundle_pem(),
        );
        let err = exporter(&config, None)
            .export(request(b"secret spans"), deadline())
            .await
            .unwrap_err();
        assert!(
            err.contains("invalid peer certificate") && !err.contains("tries"),
            "{protocol}: {err}"
        );
        // One handshake, begun with a ClientHello (0x16): nothing went out in plain text, and
        // nothing was tried again.
        assert_eq!(collector.connections(), 1, "{protocol}");
        assert_eq!(*collector.first_bytes.lock().unwrap(), [0x16], "{protocol}");
        assert!(collector.received().is_empty(), "{protocol}");
    }
}

#[tokio::test]
async fn export_over_https_reaches_a_collector_whose_certificate_chains_to_tls_ca() {
    let ca = Ca::new("collector.test");
    let collector = Collector::start(&[], Some(server_config(&server_leaf(&ca), None))).await;
    let (config, _dir) = config(
        &format!(
            "{{ endpoint: 'https://{}', protocol: http, tls: {{ ca: ca.pem }}, headers: {{ x-tenant: ml }} }}",
            collector.addr
        ),
        &ca.bundle_pem(),
    );
    exporter(&config, None)
        .export(request(b"spans"), deadline())
        .await
        .unwrap();
    let [received] = collector.received().try_into().unwrap();
    assert_eq!(received.body, b"spans");
    assert_eq!(received.headers["x-tenant"], "ml");
    assert_eq!(received.client_cert, None);
}

#[tokio::test]
async fn with_client_svid_the_svid_of_the_moment_is_presented_and_a_rotation_gets_a_new_connection()
{
    let (collector_ca, mesh) = (Ca::new("collector.test"), Ca::new("example.org"));
    let tls = server_config(&server_leaf(&collector_ca), Some(&mesh));
    let collector = Collector::start(&[], Some(tls)).await;
    let (config, _dir) = config(
        &format!(
            "{{ endpoint: 'https://{}', protocol: http, tls: {{ ca: ca.pem, client_svid: true }} }}",
            collector.addr
        ),
        &collector_ca.bundle_pem(),
    );
    let id = "spiffe://example.org/ns/test/sa/sidecar";
    let (old, new) = (mesh.leaf(id).build(), mesh.leaf(id).build());
    let current: Arc<Mutex<Arc<CertifiedKey>>> = Arc::new(Mutex::new(old.svid().certified_key()));
    let source = Arc::clone(&current);
    let svid: CurrentSvid = Arc::new(move || Some(Arc::clone(&source.lock().unwrap())));
    let mut exporter = exporter(&config, Some(svid));
    exporter.export(request(b"1"), deadline()).await.unwrap();
    exporter.export(request(b"2"), deadline()).await.unwrap();
    *current.lock().unwrap() = new.svid().certified_key();
    exporter.export(request(b"3"), deadline()).await.unwrap();
    exporter.export(request(b"4"), deadline()).await.unwrap();
    let received = collector.received();
    let certs: Vec<_> = received.iter().map(|r| r.client_cert.clone()).collect();
    assert_eq!(
        certs,
        [
            Some(old.cert_der.clone()),
            Some(old.cert_der.clone()),
            Some(new.cert_der.clone()),
            Some(new.cert_der.clone())
        ]
    );
    let connections: Vec<_> = received.iter().map(|r| r.connection).collect();
    assert_eq!(
        connections,
        [1, 1, 2, 2],
        "the old connection is not used after the rotation"
    );
}

#[tokio::test]
async fn a_ca_file_without_a_certificate_and_client_svid_without_an_svid_are_refused_naming_the_key()
 {
    let (empty, _dir) = config(
        "{ endpoint: 'https://127.0.0.1:1', tls: { ca: ca.pem } }",
        "",
    );
    let otlp = empty.telemetry().otlp().unwrap();
    let Err(err) = Exporter::new(otlp, None, Duration::from_secs(1)) else {
        panic!("an empty CA file was taken");
    };
    assert!(
        err.starts_with("tls.ca: ") && err.contains("ca.pem"),
        "{err}"
    );
    assert_eq!(super::check(otlp).unwrap_err(), err);
    let ca = Ca::new("collector.test");
    let (mtls, _dir) = config(
        "{ endpoint: 'https://127.0.0.1:1', tls: { ca: ca.pem, client_svid: true } }",
        &ca.bundle_pem(),
    );
    let otlp = mtls.telemetry().otlp().unwrap();
    let Err(err) = Exporter::new(otlp, None, Duration::from_secs(1)) else {
        panic!("client_svid without an SVID was taken");
    };
    assert_eq!(err, "tls.client_svid: this sidecar has no SVID to present");
    assert!(super::check(otlp).is_ok());
}

#[tokio::test]
async fn a_connection_refused_is_retried_then_reported() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (config, _dir) = config(
        &format!("{{ endpoint: 'http://{closed}', protocol: http }}"),
        "",
    );
    let err = exporter(&config, None)
        .export(request(b"a"), deadline())
        .await
        .unwrap_err();
    assert!(
        err.contains("Connection refused") && err.ends_with("(after 3 tries)"),
        "{err}"
    );
}
