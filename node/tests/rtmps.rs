//! RTMPS ingest: ffmpeg publishes over TLS to a certificate the test makes, and
//! SIGHUP swaps the certificate for new handshakes while the live stream goes on.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A TLS connection to 127.0.0.1:`port` from `source` that accepts any certificate,
/// its handshake done, with a 10 s read deadline; `delay` passes between the TCP
/// connect and the first TLS byte.
fn tls_connect(
    source: std::net::IpAddr,
    port: u16,
    delay: Duration,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let (config, _) = testkit::tls::AcceptAnyServer::client_config();
    let tcp = connect_from(source, port)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    std::thread::sleep(delay);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// A node with RTMPS on a certificate of its own; `extra` is more of the config.
fn rtmps_node(dir: &Path, extra: &str) -> Node {
    write_identity(dir);
    Node::start(&format!(
        "[rtmps]\nenabled = true\nlisten = \"127.0.0.1:0\"\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n{extra}",
        d = dir.display()
    ))
}

/// The certificate a new TLS handshake with the node gets.
fn presented_certificate(port: u16) -> Vec<u8> {
    let (config, seen) = testkit::tls::AcceptAnyServer::client_config();
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

/// The time from accept to an accepted publish is `rtmp.auth_deadline` for RTMPS too:
/// the TLS handshake counts. A client that takes most of the handshake deadline to
/// start TLS and then trickles RTMP messages is closed at the auth deadline from
/// accept. Before, the deadline started after TLS: handshake time plus auth deadline.
#[test]
fn an_rtmps_connection_gets_the_auth_deadline_from_accept() {
    use std::io::Write;
    let dir = TempDir::new("rtmps-deadline");
    let node = rtmps_node(
        &dir.0,
        "[rtmp]\nlisten = \"127.0.0.1:0\"\nauth_deadline = \"4s\"\nhandshake_timeout = \"3s\"\n\
         [auth]\ntimeout = \"1s\"\nmax_failure_delay = \"2s\"\n",
    );
    let port = node.rtmps_port.unwrap();
    let started = Instant::now();
    let mut tls =
        tls_connect([127, 0, 0, 1].into(), port, Duration::from_millis(2500)).expect("TLS");
    handshake_over(&mut tls).expect("RTMP handshake");
    let mut writer = rtmp::chunk::ChunkWriter::new();
    let mut n = 0;
    let closed = loop {
        n += 1;
        let sent = tls
            .write_all(&chunks(&mut writer, acknowledgement(n)))
            .and_then(|_| tls.flush());
        if sent.is_err() || started.elapsed() > Duration::from_secs(12) {
            break started.elapsed();
        }
        // The node's close shows as a read that ends (or fails).
        tls.sock
            .set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        let mut b = [0u8; 64];
        match std::io::Read::read(&mut tls, &mut b) {
            Ok(0) => break started.elapsed(),
            Err(e)
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break started.elapsed()
            }
            _ => {}
        }
    };
    assert!(
        closed >= Duration::from_millis(3500) && closed < Duration::from_millis(5500),
        "closed {closed:?} after accept (auth_deadline 4 s)"
    );
    wait_logged(&node, "no publish accepted within", Duration::from_secs(5));
}

/// What an unauthenticated RTMPS client can make the node hold, measured as for plain
/// RTMP: 100 TLS clients that stay inside the pre-publish limits (8 chunk streams of
/// unfinished messages) and 20 that try to send 1 MiB before publishing cost the node
/// little each (TLS keeps at most a record of ciphertext and a few records of
/// plaintext per connection).
#[test]
fn a_pending_rtmps_connection_costs_little_memory() {
    use std::io::Write;
    let dir = TempDir::new("rtmps-memory");
    let node = rtmps_node(
        &dir.0,
        "[rtmp]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_address = 500\nmax_pending_per_address = 500\n",
    );
    let port = node.rtmps_port.unwrap();
    let before = rss_kib(node.pid());
    let mut held = Vec::new();
    for _ in 0..100 {
        let Ok(mut tls) = tls_connect([127, 0, 0, 1].into(), port, Duration::ZERO) else {
            continue;
        };
        if handshake_over(&mut tls).is_err() {
            continue;
        }
        let mut bytes = Vec::new();
        for csid in 3..11u8 {
            bytes.extend_from_slice(&[csid, 0, 0, 0, 0, 0x0f, 0xff, 9, 1, 0, 0, 0]);
            bytes.extend(std::iter::repeat_n(0u8, 128));
        }
        if tls.write_all(&bytes).and_then(|_| tls.flush()).is_ok() {
            held.push(tls);
        }
    }
    let mut fat = 0;
    for _ in 0..20 {
        let Ok(mut tls) = tls_connect([127, 0, 0, 1].into(), port, Duration::ZERO) else {
            continue;
        };
        if handshake_over(&mut tls).is_err() {
            continue;
        }
        tls.sock
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let block = vec![0x45u8; 64 * 1024];
        for _ in 0..16 {
            if tls.write_all(&block).is_err() {
                break;
            }
        }
        fat += 1;
        held.push(tls);
    }
    let peak = peak_rss_kib(node.pid(), Duration::from_secs(2));
    let grown = peak.saturating_sub(before);
    let clients = held.len() as u64;
    eprintln!("{clients} pending RTMPS clients ({fat} sending 1 MiB) grew the node by {grown} KiB ({} KiB each)", grown / clients.max(1));
    assert!(clients >= 100, "the attack ran: {clients} clients");
    assert!(
        grown < clients * 128,
        "{clients} unauthenticated RTMPS clients grew the node by {grown} KiB ({before} KiB before)"
    );
}

/// HTTPS on the HTTP listener, on the RTMPS certificate: the API answers over TLS, a
/// plain request gets nothing, and SIGHUP swaps the certificate for both listeners.
#[test]
fn https_serves_the_api_on_the_rtmps_certificate_and_sighup_swaps_it() {
    use std::io::{Read, Write};
    let dir = TempDir::new("https");
    let first = write_identity(&dir.0);
    let node = Node::start(&format!(
        "[rtmps]\nenabled = true\nlisten = \"127.0.0.1:0\"\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\ntls = true\n",
        d = dir.0.display()
    ));
    assert_eq!(presented_certificate(node.http_port), first);
    let get = |path: &str| -> String {
        let mut tls = tls_connect("127.0.0.1".parse().unwrap(), node.http_port, Duration::ZERO)
            .expect("TLS to the HTTP port");
        write!(
            tls,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).to_string()
    };
    let health = get("/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("\"ok\""),
        "{health}"
    );
    let streams = get("/api/v1/streams");
    assert!(streams.contains("\"streams\""), "{streams}");
    // Plain HTTP on the HTTPS port: no answer a browser could take.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(plain, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("\"ok\""));

    // `streamgate healthcheck` (the image's HEALTHCHECK) speaks TLS to it, and takes
    // only the node's own certificate: a new one on disk but not yet loaded fails.
    let healthcheck = || {
        std::process::Command::new(bin())
            .arg("--config")
            .arg(&node.config)
            .arg("healthcheck")
            .env(
                "STREAMGATE_HTTP_LISTEN",
                format!("127.0.0.1:{}", node.http_port),
            )
            .current_dir(&node.dir.0)
            .output()
            .unwrap()
    };
    let ok = healthcheck();
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok: https://127.0.0.1:"));
    let second = write_identity(&dir.0);
    let refused = healthcheck();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not the node's own"),
        "{refused:?}"
    );
    signal(node.pid(), "HUP");
    wait_logged(&node, "RTMPS certificate reloaded", Duration::from_secs(10));
    assert!(healthcheck().status.success());
    assert_eq!(presented_certificate(node.http_port), second);
    assert_eq!(presented_certificate(node.rtmps_port.unwrap()), second);
    assert!(
        !node.transcript.contains("HTTPS certificate"),
        "one identity, reloaded once"
    );
}
