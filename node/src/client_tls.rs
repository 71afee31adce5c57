//! TLS to the node's upstreams (rtmps:// relay targets, https:// webhooks, other
//! nodes' thumbnails): the public web roots, plus an operator's own CA certificates;
//! and the HTTP/1.1 client connection the webhooks and the fleet's thumbnails use.

use std::sync::Arc;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why an HTTP/1.1 client connection could not be set up on a TCP connection.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
}

/// An HTTP/1.1 client connection to `host` over `tcp`, inside TLS when `tls` is given
/// (the server's certificate verified for `host`). The connection's driver runs until
/// the connection ends (its sender dropped, or the server closed it).
pub async fn http1<B>(
    tcp: TcpStream,
    host: &str,
    tls: Option<&TlsConnector>,
) -> Result<SendRequest<B>, Http1Error>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        return Ok(sender);
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| Http1Error::Tls(std::io::Error::other(e)))?;
    let stream = tls.connect(name, tcp).await.map_err(Http1Error::Tls)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The TLS client configuration: public web roots plus the PEM certificates of
/// `ca_file` (named `key` in errors).
pub fn connector(ca_file: &str, key: &str) -> anyhow::Result<TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if !ca_file.is_empty() {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| anyhow::anyhow!("{key} {ca_file:?}: {e}"))?
        {
            let cert = cert.map_err(|e| anyhow::anyhow!("{key} {ca_file:?}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("{key} {ca_file:?}: {e}"))?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "{key} {ca_file:?} holds no PEM certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(tls)))
}
