//! `streamgate healthcheck`: asks this node's own `GET /healthz`, for a container's
//! `HEALTHCHECK` or a supervisor, with nothing but the binary (no curl in the image).
//!
//! It reads the same configuration as `serve` (file and `STREAMGATE_*`), so it follows
//! the listener wherever the operator moved it: `admin.listen` when set (plain HTTP),
//! else `http.listen`, over TLS when `http.tls` is on. Over TLS the node's answer must
//! carry the node's own certificate (the first of `http.cert_file`, or RTMPS's): a
//! loopback check of a certificate made for a public name cannot verify that name, so
//! it checks that it is talking to this node instead. A wildcard address is asked on
//! loopback. Everything happens within [`DEADLINE`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Empty;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use crate::client_tls::http1;
use crate::config::Config;

/// The whole check: connect, TLS, request and status line. Under Docker's usual 3 s.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// Asks `/healthz`; `Ok` with a line to print when it answered 200.
pub async fn run(config: &Config) -> anyhow::Result<String> {
    let (addr, tls) = match config.admin.listen {
        Some(addr) => (loopback(addr), false),
        None => (loopback(config.http.listen), config.http.tls),
    };
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/healthz");
    let started = Instant::now();
    let status = tokio::time::timeout(DEADLINE, ask(config, addr, tls))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {DEADLINE:?}"))?
        .with_context(|| url.clone())?;
    anyhow::ensure!(
        status == "200",
        "{url} answered {status} (200 when the node serves)"
    );
    Ok(format!(
        "ok: {url} answered 200 in {} ms",
        started.elapsed().as_millis()
    ))
}

/// A wildcard listen address is asked on the loopback of its family.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

async fn ask(config: &Config, addr: SocketAddr, tls: bool) -> anyhow::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = if tls {
        let (cert_file, _) = config.http.tls_files(&config.rtmps);
        let cert = CertificateDer::from_pem_file(&cert_file)
            .with_context(|| format!("the node's certificate {cert_file:?}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ThisNode { cert, provider }))
            .with_no_client_auth();
        Some(tokio_rustls::TlsConnector::from(Arc::new(client)))
    } else {
        None
    };
    let request = hyper::Request::get("/healthz")
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let answer = http1(tcp, &addr.ip().to_string(), connector.as_ref())
        .await?
        .send_request(request)
        .await?;
    Ok(answer.status().as_str().to_string())
}

/// Accepts exactly the node's own certificate; the handshake's signatures are still
/// verified, so only the holder of its key passes.
#[derive(Debug)]
struct ThisNode {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ThisNode {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the listener's certificate is not the node's own (http.cert_file)".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
