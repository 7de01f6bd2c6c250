//! A caller presenting an SVID: a real rustls client over loopback, speaking HTTP/1.1 or HTTP/2.
//!
//! The client does not check the server's certificate: these tests are about what the inbound
//! side admits, and the server's identity is the outbound side's business.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Which HTTP version to speak (offered by ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    H1,
    H2,
}

/// A response, read in full.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A client holding one SVID (or none).
#[derive(Clone)]
pub(crate) struct Client {
    config: Arc<ClientConfig>,
}

impl Client {
    pub(crate) fn with_svid(chain_pem: &str, key_pem: &str, proto: Proto) -> Self {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let mut config = builder().with_client_auth_cert(chain, key).unwrap();
        config.alpn_protocols = alpn(proto);
        Self {
            config: Arc::new(config),
        }
    }

    pub(crate) fn without_cert(proto: Proto) -> Self {
        let mut config = builder().with_no_client_auth();
        config.alpn_protocols = alpn(proto);
        Self {
            config: Arc::new(config),
        }
    }

    pub(crate) async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(Arc::clone(&self.config))
            .connect(ServerName::try_from("hopgate.test").unwrap(), tcp)
            .await
    }

    /// One GET on a fresh connection.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Reply> {
        let mut conn = self.open(addr).await?;
        // With TLS 1.3 a refused client certificate surfaces on the first request, not in the
        // handshake: that is an error here too.
        let rsp = conn
            .send(path, headers)
            .await
            .map_err(std::io::Error::other)?;
        let status = rsp.status();
        let headers = rsp.headers().clone();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// A connection for several requests.
    pub(crate) async fn open(&self, addr: SocketAddr) -> std::io::Result<Conn> {
        let tls = self.connect(addr).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let sender = if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Conn { sender })
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// An open connection.
pub(crate) struct Conn {
    sender: Sender,
}

impl Conn {
    pub(crate) async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.try_get(path, headers).await.unwrap()
    }

    /// As [`get`](Self::get), but a request reset on its way (a stream cut by a reload) is an
    /// error to look at, not a panic.
    pub(crate) async fn try_get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> hyper::Result<Reply> {
        let rsp = self.send(path, headers).await?;
        let status = rsp.status();
        let headers = rsp.headers().clone();
        let body = rsp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends a GET and returns the response with its body unread (for streaming tests).
    pub(crate) async fn send(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        let uri = format!("https://hopgate.test{path}");
        let mut req = Request::get(uri);
        if matches!(self.sender, Sender::H1(_)) {
            req = req.header("host", "hopgate.test");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).unwrap();
        match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the test caller does not check the server: these tests are about what the inbound side admits"
)]
fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
}

fn alpn(proto: Proto) -> Vec<Vec<u8>> {
    match proto {
        Proto::H1 => vec![b"http/1.1".to_vec()],
        Proto::H2 => vec![b"h2".to_vec()],
    }
}

#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
