//! RTMPS: the certificate and key the TLS listener presents, loaded at start and
//! reloaded on SIGHUP. A reload swaps what new handshakes get; connections already
//! established keep theirs, so live streams are not dropped. A reload that fails
//! (missing file, bad PEM, key not matching) keeps the previous certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The listener's TLS identity.
pub struct TlsIdentity {
    cert_file: PathBuf,
    key_file: PathBuf,
    acceptor: RwLock<TlsAcceptor>,
}

/// Why the certificate could not be loaded; names the file and what to check.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate and key do not form a usable TLS identity: {0}")]
    Config(String),
}

fn load(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert_file.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no PEM certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
        path: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl TlsIdentity {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<TlsIdentity>, TlsError> {
        Ok(Arc::new(TlsIdentity {
            acceptor: RwLock::new(load(cert_file, key_file)?),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        }))
    }

    /// Re-reads the files; on failure the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert_file, &self.key_file)?;
        *self.acceptor.write() = fresh;
        Ok(())
    }

    /// What a new handshake uses.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().clone()
    }
}
