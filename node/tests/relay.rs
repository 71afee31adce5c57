//! Relay end to end, with a real nginx-rtmp (Debian's nginx + libnginx-mod-rtmp)
//! writing HLS as the upstream, ffprobe reading it back, and the upstream's own logs
//! and `on_publish` hook checked for the key.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use rtmp::handshake::ServerHandshake;
use rtmp::{ServerConfig, ServerEvent, ServerSession};

fn relay_of(stream: &serde_json::Value, url_part: &str) -> serde_json::Value {
    stream["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["url"].as_str().unwrap().contains(url_part))
        .unwrap_or_else(|| panic!("no relay matching {url_part} in {stream}"))
        .clone()
}

fn assert_h264_aac(path: &std::path::Path, w: u64, h: u64) {
    let streams = ffprobe_streams(path);
    assert!(
        streams
            .iter()
            .any(|s| s.0 == "video" && s.1 == "h264" && s.2 == Some(w) && s.3 == Some(h)),
        "{}: {streams:?}",
        path.display()
    );
    assert!(
        streams.iter().any(|s| s.0 == "audio" && s.1 == "aac"),
        "{}: {streams:?}",
        path.display()
    );
}

#[test]
fn relays_to_nginx_hls_under_the_public_name_only() {
    let hook = HookServer::start();
    let mut nginx = Nginx::start(&["live"], Some(&hook.url()));
    let node = Node::start(&format!(
        "[relay]\ntargets = [\"rtmp://127.0.0.1:{}/live/{{channel_id}}\"]\n",
        nginx.port
    ));
    let (id, key) = node.create_channel("relayed");
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "640x360", 8);

    let playlist = nginx.wait_playlist("live", &id, Duration::from_secs(15));
    assert_h264_aac(&playlist, 640, 360);
    let s = wait_for(Duration::from_secs(5), || {
        node.stream(&id)
            .filter(|s| relay_of(s, &id)["bytes_sent"].as_u64().unwrap_or(0) > 0)
    })
    .expect("relay state in the API");
    let r = relay_of(&s, &id);
    assert_eq!(
        r["url"],
        format!("rtmp://127.0.0.1:{}/live/{id}", nginx.port)
    );
    assert_eq!(r["connected"], true);
    assert_eq!(r["dropped_messages"], 0, "{r}");

    assert!(
        ff.wait(Duration::from_secs(20))
            .expect("ffmpeg done")
            .success(),
        "{}",
        ff.stderr()
    );
    // The relay unpublishes when the publisher leaves: nginx logs the finished PUBLISH.
    wait_for(Duration::from_secs(10), || {
        nginx.access_log().contains("PUBLISH").then_some(())
    })
    .unwrap_or_else(|| panic!("nginx never saw the publish end; {}", nginx.error_log()));
    nginx.stop();

    let seen_by_upstream = format!(
        "{}\n{}\n{}",
        hook.all(),
        nginx.access_log(),
        nginx.error_log()
    );
    assert!(
        hook.all().contains(&format!("name={id}")),
        "on_publish got the UUID: {}",
        hook.all()
    );
    assert!(
        !seen_by_upstream.contains(&key),
        "the upstream saw the key:\n{seen_by_upstream}"
    );
    let hls_names: Vec<String> = std::fs::read_dir(nginx.hls_dir("live"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        hls_names
            .iter()
            .all(|n| n.starts_with(&id) && !n.contains(&key)),
        "{hls_names:?}"
    );
    node.assert_never_printed(&key);
}

#[test]
fn relay_reconnects_when_the_upstream_comes_back() {
    let mut nginx = Nginx::start(&["live"], None);
    let node = Node::start(&format!(
        "[relay]\ntargets = [\"rtmp://127.0.0.1:{}/live/{{channel_id}}\"]\nreconnect_min = \"500ms\"\nreconnect_max = \"2s\"\n",
        nginx.port
    ));
    let (id, key) = node.create_channel("resilient");
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 40);
    nginx.wait_playlist("live", &id, Duration::from_secs(15));

    nginx.kill();
    let hls = nginx.hls_dir("live");
    for e in std::fs::read_dir(&hls).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let s = wait_for(Duration::from_secs(10), || {
        node.stream(&id)
            .filter(|s| relay_of(s, &id)["connected"] == false)
    })
    .expect("relay noticed the upstream is gone");
    assert!(relay_of(&s, &id)["last_error"].is_string(), "{s}");
    // Ingest and the API stayed up.
    assert!(
        ff.child.try_wait().unwrap().is_none(),
        "publisher unaffected: {}",
        ff.stderr()
    );
    assert!(node.db_live(&id).0);

    nginx.spawn();
    let playlist = nginx.wait_playlist("live", &id, Duration::from_secs(20));
    let s = wait_for(Duration::from_secs(10), || {
        node.stream(&id)
            .filter(|s| relay_of(s, &id)["connected"] == true)
    })
    .expect("relay reconnected");
    assert!(
        relay_of(&s, &id)["reconnects"].as_u64().unwrap() >= 1,
        "{s}"
    );
    let streams = ffprobe_streams(&playlist);
    assert!(
        streams.iter().any(|s| s.1 == "h264" && s.2 == Some(320)),
        "{streams:?}"
    );
    assert!(
        ff.child.try_wait().unwrap().is_none(),
        "publisher unaffected: {}",
        ff.stderr()
    );
    node.assert_never_printed(&key);
}

/// What an upstream does once it has accepted the relay's publish.
#[derive(Clone, Copy)]
enum Upstream {
    /// Never reads again, keeps the socket open: a stall at the protocol level.
    Stalls,
    /// Never reads again, but sends a small message (an acknowledgement) every 300 ms.
    PingsWithoutReading,
    /// Announces 8 MB messages on 60 chunk streams and sends about 256 KiB of each,
    /// never finishing them, while it reads (and drops) everything sent to it.
    PinsMemory,
}

/// An RTMP server that accepts the publish, then does what `behaviour` says; it has a
/// tiny receive buffer, so a stall shows at once. The sockets it keeps are in the
/// returned list.
fn hostile_upstream(behaviour: Upstream) -> (u16, Arc<Mutex<Vec<TcpStream>>>) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(16).unwrap();
    let listener: std::net::TcpListener = sock.into();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut hs = ServerHandshake::new();
                let mut session = ServerSession::new(ServerConfig::default());
                let (mut buf, mut out) = (BytesMut::new(), BytesMut::new());
                let mut tmp = [0u8; 4096];
                let mut handshaken = false;
                loop {
                    let Ok(n) = s.read(&mut tmp) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if !handshaken {
                        handshaken = hs.read(&mut buf, &mut out).unwrap_or(false);
                        let _ = s.write_all(&out);
                        out.clear();
                        if !handshaken {
                            continue;
                        }
                    }
                    let mut events = Vec::new();
                    loop {
                        if session.handle_bytes(&mut buf, &mut events).is_err() {
                            return;
                        }
                        if events.is_empty() {
                            break;
                        }
                        for e in events.drain(..) {
                            match e {
                                ServerEvent::ConnectRequested { .. } => session.accept_connect(),
                                ServerEvent::PublishRequested { stream_id, .. } => {
                                    session.accept_publish(stream_id);
                                    let _ = s.write_all(&session.output().take_contiguous());
                                    after_publish(behaviour, s, &keep);
                                    return;
                                }
                                _ => {}
                            }
                        }
                    }
                    let _ = s.write_all(&session.output().take_contiguous());
                }
            });
        }
    });
    (port, held)
}

/// The upstream's behaviour once the publish is accepted, on its socket `s`.
fn after_publish(behaviour: Upstream, mut s: TcpStream, keep: &Mutex<Vec<TcpStream>>) {
    keep.lock().unwrap().push(s.try_clone().unwrap());
    match behaviour {
        Upstream::Stalls => {}
        Upstream::PingsWithoutReading => {
            let mut writer = rtmp::chunk::ChunkWriter::new();
            let mut n = 0;
            while s
                .write_all(&chunks(&mut writer, acknowledgement(n)))
                .is_ok()
            {
                n += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        Upstream::PinsMemory => {
            // Reads and drops what the node sends, so the connection stays up.
            let mut reader = s.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut sink = [0u8; 65536];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            });
            let mut writer = rtmp::chunk::ChunkWriter::new();
            let mut bytes = chunks(&mut writer, rtmp::message::set_chunk_size(0x7FFF_FFFF));
            let len: u32 = 8_000_000;
            for csid in 3..63u8 {
                // A type-0 header: an 8 MB video message on chunk stream `csid`...
                bytes.extend_from_slice(&[csid, 0, 0, 0]);
                bytes.extend_from_slice(&len.to_be_bytes()[1..]);
                bytes.extend_from_slice(&[9, 1, 0, 0, 0]);
                // ... of which 256 KiB come, in its one chunk.
                bytes.extend(std::iter::repeat_n(0u8, 256 * 1024));
            }
            let _ = s.write_all(&bytes);
        }
    }
}

#[test]
fn a_stalled_upstream_slows_neither_the_publisher_nor_other_targets() {
    let (stall_port, _held) = hostile_upstream(Upstream::Stalls);
    let nginx = Nginx::start(&["live"], None);
    let node = Node::start(&format!(
        "[relay]\ntargets = [\"rtmp://127.0.0.1:{stall_port}/stall/{{channel_id}}\", \"rtmp://127.0.0.1:{}/live/{{channel_id}}\"]\n\
         queue_max_bytes = 262144\nqueue_max_delay = \"1s\"\nwrite_timeout = \"2s\"\nconnect_timeout = \"2s\"\nsend_buffer = 65536\n",
        nginx.port
    ));
    let (id, key) = node.create_channel("one");
    let (id2, key2) = node.create_channel("two");
    let start = Instant::now();
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "640x360", 10);
    let mut ff2 = ffmpeg_publish(&node.publish_url(&key2), "320x240", 10);
    // Both publishers run in real time (ffmpeg -re would fall behind if ingest waited).
    assert!(
        ff.wait(Duration::from_secs(25))
            .expect("ffmpeg done")
            .success(),
        "{}",
        ff.stderr()
    );
    assert!(
        ff2.wait(Duration::from_secs(25))
            .expect("ffmpeg done")
            .success(),
        "{}",
        ff2.stderr()
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(14),
        "publishing 10 s took {took:?}"
    );
    // The healthy target got both streams.
    for (i, w) in [(&id, 640), (&id2, 320)] {
        let p = nginx.wait_playlist("live", i, Duration::from_secs(5));
        let streams = ffprobe_streams(&p);
        assert!(
            streams.iter().any(|s| s.1 == "h264" && s.2 == Some(w)),
            "{streams:?}"
        );
        let playlist = std::fs::read_to_string(&p).unwrap();
        let seconds: f64 = playlist
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|l| l.trim_end_matches(',').parse::<f64>().unwrap_or(0.0))
            .sum();
        assert!(
            seconds >= 7.0,
            "healthy target got {seconds} s of 10 s:\n{playlist}"
        );
    }
    // The stalled target dropped and said why.
    let text = node.transcript.text();
    assert!(
        text.contains("stalled") || text.contains("did not read"),
        "stall reported:\n{text}"
    );
    node.assert_never_printed(&key);
    node.assert_never_printed(&key2);
}

#[test]
fn a_stalled_upstream_counts_its_drops() {
    let (stall_port, _held) = hostile_upstream(Upstream::Stalls);
    let node = Node::start(&format!(
        "[relay]\ntargets = [\"rtmp://127.0.0.1:{stall_port}/stall/{{channel_id}}\"]\n\
         queue_max_bytes = 262144\nqueue_max_delay = \"1s\"\nwrite_timeout = \"3s\"\nsend_buffer = 65536\n"
    ));
    let (id, key) = node.create_channel("dropping");
    let _ff = ffmpeg_publish(&node.publish_url(&key), "640x360", 30);
    let s = wait_for(Duration::from_secs(20), || {
        node.stream(&id).filter(|s| {
            relay_of(s, "stall")["dropped_messages"]
                .as_u64()
                .unwrap_or(0)
                > 0
        })
    })
    .unwrap_or_else(|| panic!("no drops counted: {:?}", node.stream(&id)));
    let r = relay_of(&s, "stall");
    assert!(r["dropped_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["bytes_sent"].as_u64().unwrap() > 0,
        "it did publish before stalling: {r}"
    );
    node.assert_never_printed(&key);
}

/// A TLS terminator in front of `upstream_port` (as a CDN's RTMPS edge is): returns
/// its port and the PEM of its self-signed certificate for `localhost`.
fn tls_terminator(upstream_port: u16) -> (u16, String, tokio::runtime::Runtime) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = cert.cert.pem();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (port, pem, rt)
}

#[test]
fn two_targets_rtmps_and_per_channel_targets() {
    let nginx = Nginx::start(&["live", "live2", "restream"], None);
    let (tls_port, ca_pem, _rt) = tls_terminator(nginx.port);
    let dir = TempDir::new("ca");
    let ca_file = write_file(&dir.0, "ca.pem", &ca_pem);
    let node = Node::start(&format!(
        "[relay]\ntargets = [\"rtmp://127.0.0.1:{p}/live/{{channel_id}}\", \"rtmps://localhost:{tls_port}/live2/{{thumb_id}}\"]\n\
         per_channel_targets = true\nallow_private_targets = true\nca_file = \"{}\"\n",
        ca_file.display(),
        p = nginx.port
    ));
    let (id, key) = node.create_channel("multi");
    let third_party = "third-party-secret-name";
    let extra = format!("rtmp://127.0.0.1:{}/restream/{third_party}", nginx.port);
    // From standard input: a third party's key never stands on a command line.
    let (ok, _, err) = node.cli_stdin(&["channel", "set-relay-targets", &id], &extra);
    assert!(ok, "{err}");
    let thumb_id = {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(id.as_bytes()))
    };
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 8);

    let plain = nginx.wait_playlist("live", &id, Duration::from_secs(15));
    let tls = nginx.wait_playlist("live2", &thumb_id, Duration::from_secs(15));
    let restream = nginx.wait_playlist("restream", third_party, Duration::from_secs(15));
    for p in [&plain, &tls, &restream] {
        assert_h264_aac(p, 320, 240);
    }
    let s = node.stream(&id).expect("listed");
    assert_eq!(s["relays"].as_array().unwrap().len(), 3, "{s}");
    assert_eq!(
        relay_of(&s, "rtmps://")["url"],
        format!("rtmps://localhost:{tls_port}/live2/{thumb_id}")
    );
    assert_eq!(
        relay_of(&s, "restream")["url"],
        format!("rtmp://127.0.0.1:{}/restream/***", nginx.port)
    );
    assert!(
        ff.wait(Duration::from_secs(20)).expect("done").success(),
        "{}",
        ff.stderr()
    );
    node.assert_never_printed(&key);
    node.assert_never_printed(third_party);
}

/// A channel's own targets come from the database, not the operator's file: by default
/// they may not reach the node's own network, the CLI takes at most
/// `relay.max_channel_targets` of them, and an upstream's refusal text never reaches
/// the API.
#[test]
fn a_channels_own_targets_may_not_reach_internal_addresses() {
    let nginx = Nginx::start(&["restream"], None);
    let node = Node::start("[relay]\nper_channel_targets = true\nmax_channel_targets = 2\n");
    let (id, key) = node.create_channel("contained");
    let third_party = "third-party-secret-name";
    let extra = format!("rtmp://127.0.0.1:{}/restream/{third_party}\n", nginx.port);
    let (ok, out, err) = node.cli_stdin(&["channel", "set-relay-targets", &id], &extra.repeat(3));
    assert!(!ok, "three targets refused: {out}");
    assert!(err.contains("relay.max_channel_targets"), "{err}");
    assert!(!err.contains(third_party) && !out.contains(third_party));
    let (ok, _, err) = node.cli_stdin(&["channel", "set-relay-targets", &id], &extra);
    assert!(ok, "{err}");
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 6);
    let s = wait_for(Duration::from_secs(15), || {
        node.stream(&id)
            .filter(|s| relay_of(s, "restream")["last_error"].is_string())
    })
    .expect("the relay reports why it does not connect");
    assert_eq!(
        relay_of(&s, "restream")["last_error"],
        "destination not allowed"
    );
    assert_eq!(relay_of(&s, "restream")["connected"], false);
    assert!(ff.wait(Duration::from_secs(20)).expect("done").success());
    assert!(
        !nginx
            .hls_dir("restream")
            .join(format!("{third_party}.m3u8"))
            .exists(),
        "nothing reached the internal address"
    );
    node.assert_never_printed(&key);
    node.assert_never_printed(third_party);
}

/// An upstream that, once the publish starts, announces 8 MB messages on 60 chunk
/// streams and sends 256 KiB of each without finishing them, on each of four targets.
/// What an upstream may send is now limited to what a server answers a publisher
/// (small control and status messages), so the relay connection is dropped at the
/// first oversized message; the node grows by little. Before, it held all of it for as
/// long as the publish lasted: about 60 MiB.
#[test]
fn a_hostile_upstream_cannot_pin_memory() {
    let (port, _held) = hostile_upstream(Upstream::PinsMemory);
    let targets: Vec<String> = (0..4)
        .map(|i| format!("\"rtmp://127.0.0.1:{port}/t{i}/{{channel_id}}\""))
        .collect();
    let node = Node::start(&format!("[relay]\ntargets = [{}]\n", targets.join(", ")));
    let (id, key) = node.create_channel("relayed");
    let before = rss_kib(node.pid());
    let _p = Streaming::start(node.rtmp_port, &key).expect("publish");
    wait_listed(&node, &id, Duration::from_secs(5));
    let peak = peak_rss_kib(node.pid(), Duration::from_secs(6));
    let grown = peak.saturating_sub(before);
    eprintln!("four hostile upstreams grew the node by {grown} KiB ({before} KiB before)");
    assert!(
        grown < 16 * 1024,
        "four hostile upstreams grew the node by {grown} KiB"
    );
    wait_logged(
        &node,
        "exceeds the limit of 16384 bytes",
        Duration::from_secs(5),
    );
    node.assert_never_printed(&key);
}

/// An upstream that takes nothing but sends a small message every 300 ms has stalled
/// all the same: the write deadline runs from the last byte it took, not from its last
/// message, and the relay reconnects. Before, each of its messages restarted the
/// deadline, so it was never reached.
#[test]
fn an_upstream_that_pings_but_never_reads_is_dropped_at_the_write_deadline() {
    let (port, _held) = hostile_upstream(Upstream::PingsWithoutReading);
    let node = Node::start(&format!(
        "[relay]\ntargets = [\"rtmp://127.0.0.1:{port}/pinger/{{channel_id}}\"]\n\
         write_timeout = \"2s\"\nsend_buffer = 65536\n"
    ));
    let (id, key) = node.create_channel("pinged");
    let mut p = RawPublisher::publish(node.rtmp_port, "live", &key).expect("publish");
    wait_listed(&node, &id, Duration::from_secs(5));
    // 60 kB frames, ten a second: the upstream's buffers are full within a second.
    let mut frame = vec![0x17u8, 1, 0, 0, 0];
    frame.resize(60_000, 0x42);
    let started = Instant::now();
    let mut ts = 0;
    let dropped = wait_for(Duration::from_secs(20), || {
        p.send(9, ts, &frame);
        ts += 100;
        node.transcript
            .contains("upstream stalled")
            .then(|| started.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "the relay never gave up on the upstream:\n{}",
            node.transcript.text()
        )
    });
    eprintln!("relay reconnected {dropped:?} after the publish started");
    node.assert_never_printed(&key);
}
