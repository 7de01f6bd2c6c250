//! TLS to the collector: its certificate checked against `telemetry.otlp.tls.ca` (never the
//! system's roots, never skipped), and, with `tls.client_svid: true`, this sidecar's current
//! X.509-SVID presented for mTLS, read from the identity store at every handshake so a rotation
//! reaches the next connection.
//!
//! The connector (`connect.rs`) dials TCP and, for `https://`, runs this config's handshake;
//! the same connector serves tonic (`Endpoint::connect_with_connector_lazy`) and hyper's client,
//! so neither pulls a TLS stack of its own: rustls with aws-lc-rs, as everywhere in hopgate.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use hopgate_config::OtlpTls;
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};

use crate::tls::{PROTOCOL_VERSIONS, provider, read_certificates};

/// This sidecar's certificate and key of the moment; `None` while it has none (a Workload API
/// that withdrew the SVID): the handshake then goes on without one, and the collector decides.
pub(crate) type CurrentSvid = Arc<dyn Fn() -> Option<Arc<CertifiedKey>> + Send + Sync>;

/// ALPN for gRPC: HTTP/2 only (gRPC servers refuse a connection without it).
pub(super) const ALPN_GRPC: &[u8] = b"h2";
/// ALPN for OTLP/HTTP: the exporter speaks HTTP/1.1.
pub(super) const ALPN_HTTP: &[u8] = b"http/1.1";

/// Presents the SVID current at each handshake.
struct SvidResolver(CurrentSvid);

/// A client config trusting `tls.ca` alone, offering `alpn`, presenting `svid` when given.
///
/// # Errors
/// The CA file cannot be read, holds no certificate, or one that cannot be a root; the message
/// names the file.
pub(super) fn client_config(
    tls: &OtlpTls,
    svid: Option<CurrentSvid>,
    alpn: &[u8],
) -> Result<Arc<ClientConfig>, String> {
    let roots = roots(tls.ca())?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots);
    let mut config = match svid {
        Some(svid) => builder.with_client_cert_resolver(Arc::new(SvidResolver(svid))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    // No resumption: a resumed session carries the certificate of the handshake it resumes,
    // and the collector would go on seeing the SVID of before a rotation. A handful of
    // connections a minute can afford full handshakes.
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Every certificate of the CA file, as trust anchors.
pub(super) fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let shown = ca.display();
    let certs = read_certificates(ca).map_err(|err| format!("tls.ca: {err}"))?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|err| {
            format!(
                "tls.ca: certificate {} of `{shown}` cannot be a root: {err}",
                i + 1
            )
        })?;
    }
    Ok(roots)
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        (self.0)()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl fmt::Debug for SvidResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SvidResolver")
    }
}
