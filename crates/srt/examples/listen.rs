//! A minimal SRT listener on the crate alone: accepts every caller (with the
//! passphrase given, if any) and writes what the first one sends to stdout. For
//! trying clients by hand:
//!
//!     cargo run -p streamgate-srt --example listen -- 127.0.0.1:9000 [passphrase] > out.ts
//!     ffmpeg -re -i in.ts -c copy -f mpegts 'srt://127.0.0.1:9000?streamid=x'

use std::collections::HashMap;
use std::io::Write;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use srt::crypto::{Decrypter, KeyMaterial};
use srt::packet::{parse_header, Header};
use srt::{Handshaking, Listener, ListenerConfig, Outgoing, RejectCode};

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let passphrase = args.next();
    let socket = UdpSocket::bind(&addr).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let cfg = ListenerConfig {
        latency_ms: 120,
        capacity: 8192,
        peer_idle: Duration::from_secs(5),
    };
    let listener = Listener::new(cfg, [42; 32], Instant::now());
    let mut conns = HashMap::new();
    let mut out = Outgoing::new();
    let mut buf = [0u8; 1500];
    let mut stdout = std::io::stdout().lock();
    let mut next_id = 1000u32;
    let mut last_tick = Instant::now();
    loop {
        out.clear();
        let mut dests = Vec::new();
        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let now = Instant::now();
            let d = &mut buf[..n];
            let dest = match parse_header(d) {
                Ok(Header::Data(h)) => h.dest,
                Ok(Header::Control(h)) => h.dest,
                Err(_) => continue,
            };
            if dest == 0 {
                match listener.on_handshake(now, peer, d, &mut out) {
                    Handshaking::Conclusion(c) => {
                        eprintln!("conclusion from {peer}: stream id {:?}", c.stream_id);
                        let asked = c
                            .stream_id
                            .as_deref()
                            .and_then(|s| s.strip_prefix("reject:"))
                            .and_then(|code| code.parse().ok())
                            .map(RejectCode);
                        if let Some(code) = c.unacceptable.or(asked) {
                            c.reject(code, &mut out);
                        } else {
                            let decrypter = match (&c.key_material, &passphrase) {
                                (Some(km), Some(p)) => {
                                    match KeyMaterial::parse(km)
                                        .and_then(|km| Decrypter::new(p.as_bytes(), &km))
                                    {
                                        Ok(d) => Some(d),
                                        Err(e) => {
                                            eprintln!("key material: {e}");
                                            c.reject(RejectCode::BADSECRET, &mut out);
                                            None
                                        }
                                    }
                                }
                                (None, None) => None,
                                _ => {
                                    c.reject(RejectCode::UNSECURE, &mut out);
                                    None
                                }
                            };
                            if out.is_empty() {
                                next_id += 1;
                                let conn = c.accept(now, next_id, &cfg, decrypter, &mut out);
                                conns.insert(next_id, conn);
                            }
                        }
                    }
                    Handshaking::Answered => {}
                    Handshaking::Ignored(why) => eprintln!("ignored: {why}"),
                }
                for _ in 0..out.len() {
                    dests.push(peer);
                }
            } else if let Some(c) = conns.get_mut(&dest) {
                let closed = c.on_packet(now, d, &mut out, &mut |p| {
                    stdout.write_all(p).unwrap();
                });
                for _ in dests.len()..out.len() {
                    dests.push(c.peer);
                }
                if closed.is_some() {
                    eprintln!("closed: {:?} {:?}", closed, c.stats());
                    conns.remove(&dest);
                }
            }
        }
        let now = Instant::now();
        if now - last_tick >= Duration::from_millis(10) {
            last_tick = now;
            let mut gone = Vec::new();
            for (id, c) in conns.iter_mut() {
                if c.tick(now, &mut out, &mut |p| stdout.write_all(p).unwrap())
                    .is_some()
                {
                    gone.push(*id);
                }
                for _ in dests.len()..out.len() {
                    dests.push(c.peer);
                }
            }
            for id in gone {
                let c = conns.remove(&id).unwrap();
                eprintln!("idle: {:?}", c.stats());
            }
        }
        for (i, d) in out.iter().enumerate() {
            let _ = socket.send_to(d, dests[i]);
        }
    }
}
