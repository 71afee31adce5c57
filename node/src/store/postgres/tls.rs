//! `sslmode` with libpq's meanings, on rustls: `disable`, `prefer` (default), `require`
//! (encrypted, certificate not checked), `verify-ca`/`verify-full` (checked against the
//! public roots plus `database.ca_file`).

use std::sync::Arc;

/// How the URL's `sslmode` is honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    Verify,
}

/// Splits `sslmode` off a Postgres URL (tokio-postgres knows only some of libpq's
/// values). Returns the URL without it and the mode.
pub fn split_sslmode(url: &str) -> Result<(String, TlsMode), String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = TlsMode::Prefer;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => {
                mode = match v {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" | "verify-full" => TlsMode::Verify,
                    other => return Err(format!("unknown sslmode {other:?} (use disable, prefer, require, verify-ca or verify-full)")),
                }
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, mode))
}

/// Accepts any server certificate but still checks the handshake signatures: libpq's
/// `sslmode=require` (encryption without authentication of the server).
#[derive(Debug)]
struct NoServerVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub(super) fn tls_config(mode: TlsMode, ca_file: &str) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    if mode != TlsMode::Verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if !ca_file.is_empty() {
        for cert in CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| anyhow::anyhow!("database.ca_file {ca_file:?}: {e}"))?
        {
            roots
                .add(cert.map_err(|e| anyhow::anyhow!("database.ca_file {ca_file:?}: {e}"))?)
                .map_err(|e| anyhow::anyhow!("database.ca_file {ca_file:?}: {e}"))?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_split_off_with_libpq_meanings() {
        let (u, m) =
            split_sslmode("postgres://u:p@h:5432/db?sslmode=verify-full&application_name=x")
                .unwrap();
        assert_eq!(
            (u.as_str(), m),
            (
                "postgres://u:p@h:5432/db?application_name=x",
                TlsMode::Verify
            )
        );
        assert_eq!(split_sslmode("postgres://h/db").unwrap().1, TlsMode::Prefer);
        assert_eq!(
            split_sslmode("postgres://h/db?sslmode=require").unwrap(),
            ("postgres://h/db".into(), TlsMode::Require)
        );
        assert_eq!(
            split_sslmode("postgres://h/db?sslmode=disable").unwrap().1,
            TlsMode::Disable
        );
        assert!(split_sslmode("postgres://h/db?sslmode=bogus")
            .unwrap_err()
            .contains("bogus"));
    }
}
