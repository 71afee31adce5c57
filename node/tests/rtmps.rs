//! RTMPS ingest: ffmpeg publishes over TLS to a certificate the test makes, and
//! SIGHUP swaps the certificate for new handshakes while the live stream goes on.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// A self-signed certificate for 127.0.0.1, written as `cert.pem` and `key.pem`.
fn write_identity(dir: &Path) -> Vec<u8> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    cert.cert.der().to_vec()
}

/// Accepts any certificate, remembering the one presented.
#[derive(Debug)]
struct Recorder(
    Arc<Mutex<Option<Vec<u8>>>>,
    Arc<rustls::crypto::CryptoProvider>,
);

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate a new TLS handshake with the node gets.
fn presented_certificate(port: u16) -> Vec<u8> {
    let seen = Arc::new(Mutex::new(None));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Recorder(seen.clone(), provider)))
        .with_no_client_auth();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
    });
    let der = seen.lock().unwrap().take().expect("a certificate");
    der
}

#[test]
fn ffmpeg_publishes_over_rtmps_and_sighup_swaps_the_certificate() {
    let dir = TempDir::new("rtmps");
    let first = write_identity(&dir.0);
    let mut node = Node::start(&format!(
        "[rtmps]\nenabled = true\nlisten = \"127.0.0.1:0\"\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n",
        d = dir.0.display()
    ));
    let port = node.rtmps_port.expect("RTMPS listening");
    let (id, key) = node.create_channel("secure");
    let mut ff = ffmpeg_publish(
        &format!("rtmps://127.0.0.1:{port}/live/{key}"),
        "320x240",
        20,
    );
    let s = wait_listed(&node, &id, Duration::from_secs(15));
    assert_eq!(s["name"], "secure");
    assert_eq!(presented_certificate(port), first);

    // A new certificate on disk, then SIGHUP: new handshakes get it ...
    let second = write_identity(&dir.0);
    assert_ne!(first, second);
    signal(node.pid(), "HUP");
    wait_logged(&node, "RTMPS certificate reloaded", Duration::from_secs(10));
    assert_eq!(presented_certificate(port), second);
    // ... and the live stream was not dropped.
    assert!(ff.child.try_wait().unwrap().is_none(), "{}", ff.stderr());
    assert!(node.stream(&id).is_some());

    // A broken file is not loaded: the current certificate stays.
    std::fs::write(dir.0.join("cert.pem"), "not a certificate").unwrap();
    signal(node.pid(), "HUP");
    wait_logged(
        &node,
        "RTMPS certificate not reloaded",
        Duration::from_secs(10),
    );
    assert_eq!(presented_certificate(port), second);

    assert!(
        ff.wait(Duration::from_secs(30)).expect("done").success(),
        "{}",
        ff.stderr()
    );
    assert!(node.terminate(), "clean exit");
    node.assert_never_printed(&key);
}
