//! The exporter's connector: TCP to the endpoint's host and port (resolved at each connect),
//! then, for `https://`, the TLS handshake of `tls.rs`. A handshake that fails is an error,
//! never a fall back to plain text: there is no plain path for an `https://` endpoint.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Dials the collector; TLS when it has a client config.
#[derive(Clone)]
pub(super) struct Connector {
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
}

/// A connection to the collector, plain or TLS.
#[derive(Debug)]
pub(super) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why a connection could not be made.
#[derive(Debug, Error)]
pub(super) enum ConnectError {
    /// The URI has no host.
    #[error("the endpoint has no host")]
    NoHost,
    /// DNS or TCP failed.
    #[error("cannot connect to `{addr}`: {source}")]
    Tcp {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to `{addr}` timed out")]
    Timeout { addr: String },
    /// The TLS handshake failed: a certificate that does not verify, an alert from the
    /// collector, or the connection lost during the handshake.
    #[error("TLS with `{addr}` failed: {source}")]
    Tls {
        addr: String,
        #[source]
        source: io::Error,
    },
}

impl Connector {
    pub(super) fn new(tls: Option<Arc<ClientConfig>>, timeout: Duration) -> Self {
        Self { tls, timeout }
    }

    async fn connect(self, uri: http::Uri) -> Result<TokioIo<Conn>, ConnectError> {
        let host = uri.host().ok_or(ConnectError::NoHost)?;
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // `[::1]` as the URI writes it: `host:port` parses as a socket address either way.
        let addr = format!("{host}:{port}");
        let connect = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|source| ConnectError::Tcp {
                    addr: addr.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = self.tls else {
                return Ok(Conn::Plain(tcp));
            };
            let name = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(name.to_owned()).map_err(|err| ConnectError::Tls {
                addr: addr.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, err),
            })?;
            let stream = TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|source| ConnectError::Tls {
                    addr: addr.clone(),
                    source,
                })?;
            Ok(Conn::Tls(Box::new(stream)))
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(conn) => conn.map(TokioIo::new),
            Err(_) => Err(ConnectError::Timeout { addr }),
        }
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<Conn>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
