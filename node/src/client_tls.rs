//! TLS to the node's upstreams (rtmps:// relay targets, https:// webhooks): the
//! public web roots, plus an operator's own CA certificates.

use std::sync::Arc;

use tokio_rustls::TlsConnector;

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
