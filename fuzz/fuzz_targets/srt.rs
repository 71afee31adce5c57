//! The SRT listener and a connection on arbitrary datagrams: never a panic, and
//! payloads are delivered at most once each.
//!
//! The input is a series of datagrams (a 2-byte length before each) with a time step
//! (one byte, milliseconds) after each. A real caller's induction and conclusion come
//! first, so the fuzzer starts from an accepted connection; a fuzzed handshake gets
//! the right cookie written in, so its extensions (options, key material, stream id)
//! are read too, and its key material is tried with a passphrase.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use srt::crypto::{Decrypter, KeyMaterial};
use srt::handshake::{self, cmd, ext_flags, options, Handshake, HsType, SrtOptions};
use srt::packet::{self, ControlHeader, ControlType, HEADER_LEN};
use srt::{Handshaking, Listener, ListenerConfig, Outgoing, SeqNo};

const CFG: ListenerConfig = ListenerConfig {
    latency_ms: 120,
    capacity: 64,
    peer_idle: Duration::from_secs(5),
};

fn handshake_packet(hs: &Handshake, ext: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = Vec::new();
    packet::write_control(
        &mut b,
        &ControlHeader {
            kind: ControlType::Handshake,
            subtype: 0,
            info: 0,
            timestamp: 0,
            dest: 0,
        },
    );
    hs.write(&mut b);
    ext(&mut b);
    b
}

fuzz_target!(|data: &[u8]| {
    let peer: SocketAddr = "198.51.100.1:4000".parse().unwrap();
    let mut now = Instant::now();
    let l = Listener::new(CFG, [7; 32], now);
    let mut out = Outgoing::new();
    let induction = Handshake {
        version: 4,
        encryption: 0,
        extension: 2,
        isn: SeqNo::new(1000),
        mss: 1500,
        flow_window: 8192,
        kind: HsType::Induction,
        socket_id: 99,
        cookie: 0,
        peer_ip: [0; 16],
    };
    assert!(matches!(
        l.on_handshake(now, peer, &handshake_packet(&induction, |_| {}), &mut out),
        Handshaking::Answered
    ));
    let (answer, _) = Handshake::parse(&out.get(0)[HEADER_LEN..]).unwrap();
    let cookie = answer.cookie;
    let conclusion = Handshake {
        version: 5,
        extension: ext_flags::HSREQ | ext_flags::CONFIG,
        kind: HsType::Conclusion,
        cookie,
        ..induction
    };
    let bytes = handshake_packet(&conclusion, |b| {
        SrtOptions {
            version: 0x010501,
            flags: options::TSBPDSND | options::TSBPDRCV | options::TLPKTDROP | options::NAKREPORT | options::REXMITFLG,
            recv_latency: 120,
            send_latency: 120,
        }
        .write(b, cmd::HSREQ);
        handshake::write_string(b, cmd::SID, "live/key");
    });
    let Handshaking::Conclusion(c) = l.on_handshake(now, peer, &bytes, &mut out) else {
        panic!("the caller's conclusion was not read");
    };
    let mut conn = c.accept(now, 5, &CFG, None, &mut out);

    let mut delivered = 0usize;
    let mut fed = 0usize;
    let mut rest = data;
    while rest.len() >= 2 {
        let n = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2).min(1500);
        let mut d = rest[2..2 + n].to_vec();
        rest = &rest[2 + n..];
        let step = rest.first().copied().unwrap_or(0);
        rest = rest.get(1..).unwrap_or(&[]);
        now += Duration::from_millis(step as u64);
        out = Outgoing::new();
        // A handshake for the listener, with the right cookie written in.
        if d.len() >= HEADER_LEN + handshake::HS_LEN && d[0] & 0x80 != 0 {
            let mut h = d.clone();
            h[8..12].copy_from_slice(&0u32.to_be_bytes());
            h[HEADER_LEN + 28..HEADER_LEN + 32].copy_from_slice(&cookie.to_be_bytes());
            if let Handshaking::Conclusion(c) = l.on_handshake(now, peer, &h, &mut out) {
                if let Some(km) = &c.key_material {
                    if let Ok(km) = KeyMaterial::parse(km) {
                        let _ = Decrypter::new(b"a passphrase of the channel", &km);
                    }
                }
                if step & 1 == 0 {
                    let _ = c.accept(now, 6, &CFG, None, &mut out);
                } else {
                    c.reject(srt::RejectCode::UNAUTHORIZED, &mut out);
                }
            }
        }
        fed += 1;
        let closed = conn.on_packet(now, &mut d, &mut out, &mut |_| delivered += 1);
        let _ = conn.tick(now, &mut out, &mut |_| delivered += 1);
        assert!(delivered <= fed, "{delivered} payloads from {fed} datagrams");
        if closed.is_some() {
            break;
        }
    }
});
