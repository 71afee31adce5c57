//! The receiver and the listener on exact packets and times: a simulated caller's
//! handshake, delivery in sequence, holes reported and filled, too-late drop, drop
//! requests, ACK/ACKACK, keep-alive and idle timeout; property tests over arbitrary
//! arrival orders and over arbitrary bytes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::crypto::{Decrypter, Encrypter, KeyMaterial};
use crate::handshake::{self, cmd, ext_flags, options, Handshake, HsType, SrtOptions};
use crate::packet::{self, AckInfo, ControlHeader, ControlType, DataHeader, Header, HEADER_LEN};
use crate::receiver::{Receiver, ReceiverConfig};
use crate::{Closed, Handshaking, Listener, ListenerConfig, Outgoing, RejectCode, SeqNo};

const CFG: ReceiverConfig = ReceiverConfig {
    latency: Duration::from_millis(120),
    capacity: 64,
    peer_idle: Duration::from_secs(5),
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A receiver from #100, and what it delivers.
struct Rx {
    r: Receiver,
    got: Vec<u32>,
    out: Outgoing,
    t0: Instant,
}

impl Rx {
    fn new() -> Rx {
        let t0 = Instant::now();
        Rx {
            r: Receiver::new(CFG, SeqNo::new(100), 7, t0),
            got: Vec::new(),
            out: Outgoing::new(),
            t0,
        }
    }

    fn data(&mut self, at: u64, seq: u32) {
        let got = &mut self.got;
        self.r.on_data(
            self.t0 + ms(at),
            SeqNo::new(seq),
            false,
            &seq.to_be_bytes(),
            &mut self.out,
            &mut |p| got.push(u32::from_be_bytes(p.try_into().unwrap())),
        );
    }

    fn tick(&mut self, at: u64) -> bool {
        let got = &mut self.got;
        self.r.tick(self.t0 + ms(at), &mut self.out, &mut |p| {
            got.push(u32::from_be_bytes(p.try_into().unwrap()))
        })
    }

    /// The control packets sent since the last call.
    fn sent(&mut self) -> Vec<(ControlType, u32, Vec<u8>)> {
        let v = self
            .out
            .iter()
            .map(|d| match packet::parse_header(d).unwrap() {
                Header::Control(h) => {
                    assert_eq!(h.dest, 7);
                    (h.kind, h.info, d[HEADER_LEN..].to_vec())
                }
                Header::Data(_) => panic!("a receiver sends no data"),
            })
            .collect();
        self.out.clear();
        v
    }
}

#[test]
fn packets_in_sequence_are_handed_on_at_once() {
    let mut rx = Rx::new();
    for (i, s) in (100..110).enumerate() {
        rx.data(i as u64, s);
    }
    assert_eq!(rx.got, (100..110).collect::<Vec<_>>());
    assert!(rx.sent().is_empty(), "no NAK, nothing held");
    assert_eq!(rx.r.stats().held, 0);
}

#[test]
fn a_hole_is_reported_at_once_and_filled_by_the_retransmission() {
    let mut rx = Rx::new();
    rx.data(0, 100);
    rx.data(1, 103);
    rx.data(2, 104);
    assert_eq!(rx.got, [100]);
    let sent = rx.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, ControlType::Nak);
    assert_eq!(
        packet::parse_loss_list(&sent[0].2).unwrap(),
        [(SeqNo::new(101), SeqNo::new(102))]
    );
    // A periodic report while it stays open (after max(RTT+4var)/2, 20 ms): the
    // initial 100 ms / 50 ms make 150 ms.
    rx.tick(100);
    assert!(!rx.sent().iter().any(|s| s.0 == ControlType::Nak));
    rx.data(110, 102);
    rx.tick(160);
    let naks: Vec<_> = rx
        .sent()
        .into_iter()
        .filter(|s| s.0 == ControlType::Nak)
        .collect();
    assert_eq!(naks.len(), 1);
    assert_eq!(
        packet::parse_loss_list(&naks[0].2).unwrap(),
        [(SeqNo::new(101), SeqNo::new(101))]
    );
    rx.data(170, 101);
    assert_eq!(rx.got, [100, 101, 102, 103, 104]);
    let s = rx.r.stats();
    assert_eq!((s.lost, s.dropped, s.held), (2, 0, 0));
}

#[test]
fn a_hole_is_given_up_when_the_packet_after_it_waited_the_latency() {
    let mut rx = Rx::new();
    rx.data(0, 100);
    rx.data(10, 102);
    rx.data(20, 103);
    rx.tick(129);
    assert_eq!(rx.got, [100]);
    rx.tick(130);
    assert_eq!(rx.got, [100, 102, 103]);
    assert_eq!(rx.r.stats().dropped, 1);
    // The late one is a duplicate now.
    rx.data(140, 101);
    assert_eq!(rx.got, [100, 102, 103]);
    assert_eq!(rx.r.stats().duplicates, 1);
}

#[test]
fn a_drop_request_skips_what_the_sender_will_not_send() {
    let mut rx = Rx::new();
    rx.data(0, 100);
    rx.data(1, 104);
    let mut got = Vec::new();
    rx.r.on_drop_request(SeqNo::new(101), SeqNo::new(102), &mut |p| {
        got.push(p.to_vec())
    });
    assert!(got.is_empty(), "103 is still missing");
    rx.data(2, 103);
    assert_eq!(rx.got, [100, 103, 104]);
    // A drop request for packets not seen yet: the next one after it is in sequence.
    rx.r.on_drop_request(SeqNo::new(105), SeqNo::new(106), &mut |_| {});
    rx.data(3, 107);
    assert_eq!(rx.got, [100, 103, 104, 107]);
    assert_eq!(rx.r.stats().dropped, 4);
    assert!(!rx
        .sent()
        .iter()
        .any(|s| s.0 == ControlType::Nak && s.2.len() > 8));
}

/// Found by the fuzzer: a drop request wholly past the receive window indexed past
/// the held packets (a panic on what a caller sends).
#[test]
fn a_drop_request_past_the_window_is_ignored() {
    let mut rx = Rx::new();
    rx.data(0, 100);
    let far = 101 + CFG.capacity as u32 + 10;
    rx.r.on_drop_request(SeqNo::new(far), SeqNo::new(far + 5), &mut |_| {});
    assert_eq!(rx.r.stats().dropped, 0);
    rx.data(1, 101);
    assert_eq!(rx.got, [100, 101]);
    // Straddling the window's end: what is inside it is given up.
    let end = 102 + CFG.capacity as u32;
    rx.r.on_drop_request(SeqNo::new(102), SeqNo::new(end + 100), &mut |_| {});
    assert_eq!(rx.r.stats().dropped as usize, CFG.capacity);
}

#[test]
fn acks_carry_the_ack_point_and_ackacks_measure_the_round_trip() {
    let mut rx = Rx::new();
    rx.data(0, 100);
    rx.data(1, 101);
    rx.tick(5);
    let acks: Vec<_> = rx
        .sent()
        .into_iter()
        .filter(|s| s.0 == ControlType::Ack)
        .collect();
    assert_eq!(acks.len(), 1);
    let (number, info) = (acks[0].1, AckInfo::parse(&acks[0].2).unwrap());
    assert_eq!(info.next, 102);
    assert_eq!((info.rtt, info.rtt_var), (100_000, 50_000));
    assert_eq!(info.available, 64);
    // Nothing new within 10 ms: no ACK.
    rx.tick(9);
    assert!(rx.sent().is_empty());
    rx.r.on_ackack(rx.t0 + ms(25), number);
    assert_eq!(rx.r.stats().rtt_us, 20_000);
    // Confirmed, nothing new: no ACK again.
    rx.tick(40);
    assert!(rx.sent().is_empty());
    rx.data(41, 102);
    rx.tick(50);
    let acks: Vec<_> = rx
        .sent()
        .into_iter()
        .filter(|s| s.0 == ControlType::Ack)
        .collect();
    assert_eq!(acks.len(), 1);
    assert_eq!(AckInfo::parse(&acks[0].2).unwrap().next, 103);
    assert!(acks[0].1 > number);
    // A hole holds the ACK point.
    rx.data(60, 105);
    rx.tick(70);
    let acks: Vec<_> = rx
        .sent()
        .into_iter()
        .filter(|s| s.0 == ControlType::Ack)
        .collect();
    assert!(acks.is_empty() || AckInfo::parse(&acks[0].2).unwrap().next == 103);
}

#[test]
fn keepalives_when_idle_and_broken_when_the_peer_is_silent() {
    let mut rx = Rx::new();
    rx.data(0, 100);
    rx.tick(10);
    let ack = rx
        .sent()
        .into_iter()
        .find(|s| s.0 == ControlType::Ack)
        .unwrap();
    // Confirmed: no more ACKs, so nothing is sent until the keep-alive.
    rx.r.on_ackack(rx.t0 + ms(11), ack.1);
    assert!(rx.tick(1009));
    assert!(rx.sent().is_empty());
    assert!(rx.tick(1011));
    assert!(rx.sent().iter().any(|s| s.0 == ControlType::KeepAlive));
    assert!(rx.tick(4999));
    assert!(!rx.tick(5000));
}

#[test]
fn the_buffer_refuses_what_is_beyond_it() {
    let mut rx = Rx::new();
    rx.data(0, 100 + 64);
    rx.data(0, 100 + 63);
    assert_eq!(rx.r.stats().overflow, 1);
    assert_eq!(rx.r.stats().held, 64);
}

proptest::proptest! {
    /// Whatever the order and whichever packets arrive twice, what is handed on is in
    /// sequence, without repeats; with none lost, it is all of them.
    #[test]
    fn any_arrival_order_is_handed_on_in_sequence(
        order in proptest::collection::vec(0u32..40, 0..120),
        lose in proptest::collection::vec(0u32..40, 0..4),
    ) {
        let mut rx = Rx::new();
        // Time moves on less than the latency over the whole test (nothing is given
        // up but what is lost).
        let mut t = 0;
        for (i, s) in order.iter().copied().chain(0..40).enumerate() {
            if lose.contains(&s) {
                continue;
            }
            t = i as u64 / 2;
            rx.data(t, 100 + s);
            rx.tick(t);
        }
        rx.tick(t + 1000);
        let got = rx.got.clone();
        proptest::prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "{:?}", got);
        let expected: Vec<u32> = (0..40).filter(|s| !lose.contains(s)).map(|s| 100 + s).collect();
        proptest::prop_assert_eq!(got, expected);
    }
}

// The listener, with a simulated caller.

const LCFG: ListenerConfig = ListenerConfig {
    latency_ms: 120,
    capacity: 64,
    peer_idle: Duration::from_secs(5),
};

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

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

fn induction() -> Handshake {
    Handshake {
        version: 4,
        encryption: 0,
        extension: 2,
        isn: SeqNo::new(5000),
        mss: 1500,
        flow_window: 8192,
        kind: HsType::Induction,
        socket_id: 0x0bad_cafe,
        cookie: 0,
        peer_ip: [0; 16],
    }
}

/// The caller's side up to the listener's decision.
fn conclude(
    l: &Listener,
    now: Instant,
    stream_id: &str,
    flags: u32,
    km: Option<&[u8]>,
) -> Box<crate::Conclusion> {
    let mut out = Outgoing::new();
    let Handshaking::Answered = l.on_handshake(
        now,
        peer(),
        &handshake_packet(&induction(), |_| {}),
        &mut out,
    ) else {
        panic!("induction not answered")
    };
    let (h, rest) = Handshake::parse(&out.get(0)[HEADER_LEN..]).unwrap();
    assert_eq!(
        (h.version, h.extension, h.kind),
        (5, handshake::SRT_MAGIC, HsType::Induction)
    );
    assert!(rest.is_empty());
    let conclusion = Handshake {
        version: 5,
        extension: ext_flags::HSREQ
            | ext_flags::CONFIG
            | if km.is_some() { ext_flags::KMREQ } else { 0 },
        kind: HsType::Conclusion,
        cookie: h.cookie,
        ..induction()
    };
    let bytes = handshake_packet(&conclusion, |b| {
        SrtOptions {
            version: 0x010501,
            flags,
            recv_latency: 120,
            send_latency: 300,
        }
        .write(b, cmd::HSREQ);
        if let Some(km) = km {
            handshake::write_block(b, cmd::KMREQ, km);
        }
        handshake::write_string(b, cmd::SID, stream_id);
    });
    // A wrong cookie is not answered.
    let mut forged = bytes.clone();
    forged[HEADER_LEN + 28] ^= 1;
    assert!(matches!(
        l.on_handshake(now, peer(), &forged, &mut out),
        Handshaking::Ignored(_)
    ));
    match l.on_handshake(now, peer(), &bytes, &mut out) {
        Handshaking::Conclusion(c) => c,
        other => panic!("{other:?}"),
    }
}

const LIVE: u32 = options::TSBPDSND
    | options::TSBPDRCV
    | options::CRYPT
    | options::TLPKTDROP
    | options::NAKREPORT
    | options::REXMITFLG;

#[test]
fn a_caller_is_accepted_with_the_larger_latency_and_its_data_flows() {
    let now = Instant::now();
    let l = Listener::new(LCFG, [1; 32], now);
    let c = conclude(&l, now, "#!::r=live/key,m=publish", LIVE, None);
    assert_eq!(c.stream_id.as_deref(), Some("#!::r=live/key,m=publish"));
    assert_eq!(c.unacceptable, None);
    let mut out = Outgoing::new();
    let mut conn = c.accept(now, 77, &LCFG, None, &mut out);
    let (h, rest) = Handshake::parse(&out.get(0)[HEADER_LEN..]).unwrap();
    assert_eq!(
        (h.kind, h.socket_id, h.isn, h.flow_window),
        (HsType::Conclusion, 77, SeqNo::new(5000), 64)
    );
    let e = handshake::parse_extensions(rest).unwrap();
    let o = e.options.unwrap();
    assert_eq!(o.recv_latency, 300, "the caller asked for more");
    assert!(o.flags & options::TSBPDRCV != 0 && o.flags & options::NAKREPORT != 0);
    assert_eq!(conn.stats().latency_ms, 300);
    // The caller repeats its conclusion: the same answer.
    let mut again = Outgoing::new();
    conn.repeat_response(&mut again);
    assert_eq!(again.get(0), out.get(0));

    let mut got = Vec::new();
    for (i, s) in [5000u32, 5001].into_iter().enumerate() {
        let mut d = Vec::new();
        packet::write_data(
            &mut d,
            &DataHeader {
                seq: SeqNo::new(s),
                position: 3,
                in_order: false,
                key: 0,
                retransmitted: false,
                msgno: i as u32 + 1,
                timestamp: 1000 * i as u32,
                dest: 77,
            },
        );
        d.extend_from_slice(b"payload");
        assert_eq!(
            conn.on_packet(now, &mut d, &mut out, &mut |p| got.push(p.to_vec())),
            None
        );
    }
    assert_eq!(got, [b"payload".to_vec(), b"payload".to_vec()]);
    let mut shut = Vec::new();
    packet::write_control(
        &mut shut,
        &ControlHeader {
            kind: ControlType::Shutdown,
            subtype: 0,
            info: 0,
            timestamp: 0,
            dest: 77,
        },
    );
    assert_eq!(
        conn.on_packet(now, &mut shut, &mut out, &mut |_| {}),
        Some(Closed::Shutdown)
    );
}

#[test]
fn what_this_listener_does_not_do_is_refused_with_its_code() {
    let now = Instant::now();
    let l = Listener::new(LCFG, [1; 32], now);
    let c = conclude(&l, now, "k", LIVE | options::STREAM, None);
    assert_eq!(c.unacceptable, Some(RejectCode::MESSAGEAPI));
    let mut out = Outgoing::new();
    c.reject(RejectCode::FORBIDDEN, &mut out);
    let (h, _) = Handshake::parse(&out.get(0)[HEADER_LEN..]).unwrap();
    assert_eq!(h.kind, HsType::Rejection(RejectCode::FORBIDDEN));
    assert_eq!(
        u32::from_be_bytes(
            out.get(0)[HEADER_LEN + 20..HEADER_LEN + 24]
                .try_into()
                .unwrap()
        ),
        2403
    );
}

#[test]
fn an_encrypted_caller_is_decrypted_with_the_channels_passphrase() {
    let now = Instant::now();
    let l = Listener::new(LCFG, [1; 32], now);
    let (enc, km) = Encrypter::new(b"a passphrase", [5; 16], &[9; 16]);
    let c = conclude(&l, now, "k", LIVE, Some(&km));
    let km_back = c.key_material.clone().unwrap();
    let d = Decrypter::new(b"a passphrase", &KeyMaterial::parse(&km_back).unwrap()).unwrap();
    let mut out = Outgoing::new();
    let mut conn = c.accept(now, 9, &LCFG, Some(d), &mut out);
    let (h, rest) = Handshake::parse(&out.get(0)[HEADER_LEN..]).unwrap();
    assert_eq!(h.encryption, 2);
    assert_eq!(
        handshake::parse_extensions(rest).unwrap().key_material,
        Some(&km[..])
    );
    let mut d = Vec::new();
    packet::write_data(
        &mut d,
        &DataHeader {
            seq: SeqNo::new(5000),
            position: 3,
            in_order: false,
            key: 1,
            retransmitted: false,
            msgno: 1,
            timestamp: 0,
            dest: 9,
        },
    );
    let mut payload = b"secret video".to_vec();
    enc.encrypt(SeqNo::new(5000), &mut payload);
    d.extend_from_slice(&payload);
    let mut got = Vec::new();
    conn.on_packet(now, &mut d, &mut out, &mut |p| got.push(p.to_vec()));
    assert_eq!(got, [b"secret video".to_vec()]);
    // Plain data on an encrypted connection is not taken.
    let mut plain = Vec::new();
    packet::write_data(
        &mut plain,
        &DataHeader {
            seq: SeqNo::new(5001),
            position: 3,
            in_order: false,
            key: 0,
            retransmitted: false,
            msgno: 2,
            timestamp: 0,
            dest: 9,
        },
    );
    plain.extend_from_slice(b"injected");
    conn.on_packet(now, &mut plain, &mut out, &mut |p| got.push(p.to_vec()));
    assert_eq!(got.len(), 1);
    assert_eq!(conn.stats().undecrypted, 1);
}

proptest::proptest! {
    /// Arbitrary bytes, to the listener and to a connection: never a panic.
    #[test]
    fn arbitrary_datagrams_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..1600)) {
        let now = Instant::now();
        let l = Listener::new(LCFG, [1; 32], now);
        let mut out = Outgoing::new();
        let _ = l.on_handshake(now, peer(), &data, &mut out);
        let c = conclude(&l, now, "k", LIVE, None);
        let mut conn = c.accept(now, 1, &LCFG, None, &mut out);
        let mut d = data.clone();
        let _ = conn.on_packet(now, &mut d, &mut out, &mut |_| {});
        let _ = conn.tick(now + ms(50), &mut out, &mut |_| {});
    }
}
