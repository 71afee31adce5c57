//! The SRT callers of the benchmark.
//!
//! - [`run_publisher`], the native caller: a minimal sender on `crates/srt`'s packet
//!   codec, one UDP socket and no thread per publisher. The HSv5 caller handshake
//!   (induction, conclusion with the stream id), data packets paced by the video's
//!   decoding times, ACKACK for every ACK (so the server measures the round trip),
//!   retransmission of what a NAK lists. 2000 libsrt sockets would run two threads
//!   each on the machine that also runs the server.
//! - [`run_libsrt_publisher`]: libsrt itself ([`crate::libsrt`]), to check the native
//!   caller against what streamers run.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use srt::handshake::{self, cmd, ext_flags, options, Handshake, HsType, SrtOptions};
use srt::packet::{self, AckInfo, ControlHeader, ControlType, DataHeader, Header, HEADER_LEN};
use srt::SeqNo;
use tokio::net::UdpSocket;

use crate::publisher::{GeneratorStats, SendLog};
use crate::ts_source::{TsChunk, TsSource};

fn control(kind: ControlType, info: u32, dest: u32, at: Instant, start: Instant) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    packet::write_control(
        &mut b,
        &ControlHeader {
            kind,
            subtype: 0,
            info,
            timestamp: at.duration_since(start).as_micros() as u32,
            dest,
        },
    );
    b
}

/// The caller's handshake: the server's socket id, or why not.
async fn connect(sock: &UdpSocket, key: &str, me: u32, isn: SeqNo) -> anyhow::Result<u32> {
    let start = Instant::now();
    let mut hs = Handshake {
        version: 4,
        encryption: 0,
        extension: 2,
        isn,
        mss: 1500,
        flow_window: 8192,
        kind: HsType::Induction,
        socket_id: me,
        cookie: 0,
        peer_ip: [0; 16],
    };
    let mut buf = [0u8; 1500];
    let deadline = start + Duration::from_secs(10);
    loop {
        anyhow::ensure!(Instant::now() < deadline, "no answer to the handshake");
        let mut b = control(ControlType::Handshake, 0, 0, Instant::now(), start);
        hs.write(&mut b);
        if hs.kind == HsType::Conclusion {
            SrtOptions {
                version: 0x010501,
                flags: options::TSBPDSND
                    | options::TSBPDRCV
                    | options::CRYPT
                    | options::TLPKTDROP
                    | options::NAKREPORT
                    | options::REXMITFLG,
                recv_latency: 120,
                send_latency: 120,
            }
            .write(&mut b, cmd::HSREQ);
            if !key.is_empty() {
                handshake::write_string(&mut b, cmd::SID, key);
            }
        }
        sock.send(&b).await?;
        let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(250), sock.recv(&mut buf)).await
        else {
            continue; // SRT repeats its handshake every 250 ms
        };
        let Ok(Header::Control(h)) = packet::parse_header(&buf[..n]) else {
            continue;
        };
        if h.kind != ControlType::Handshake {
            continue;
        }
        let Ok((answer, _)) = Handshake::parse(&buf[HEADER_LEN..n]) else {
            continue;
        };
        match (hs.kind, answer.kind) {
            (HsType::Induction, HsType::Induction) => {
                hs = Handshake {
                    version: 5,
                    extension: ext_flags::HSREQ | ext_flags::CONFIG,
                    kind: HsType::Conclusion,
                    cookie: answer.cookie,
                    ..hs
                };
            }
            (HsType::Conclusion, HsType::Conclusion) => return Ok(answer.socket_id),
            (_, HsType::Rejection(code)) => anyhow::bail!("rejected: {}", code.wire()),
            _ => {}
        }
    }
}

/// Hands `send` every chunk due by `now` (its index and the chunk), from `*next` on;
/// counts the bytes of those it took (`send` says whether it did) and logs when each
/// video frame left, for the delay (`absolute`: in SRS's time stamps).
#[allow(clippy::too_many_arguments)]
fn send_due(
    source: &TsSource,
    start: Instant,
    now: Instant,
    next: &mut usize,
    absolute: bool,
    stats: &GeneratorStats,
    log: &SendLog,
    mut send: impl FnMut(usize, &TsChunk) -> bool,
) {
    let elapsed = now.duration_since(start).as_millis() as u32;
    let mut sent_video = Vec::new();
    while *next < source.chunks.len() && source.chunks[*next].due_ms <= elapsed {
        let chunk = &source.chunks[*next];
        if send(*next, chunk) {
            stats
                .bytes_sent
                .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        }
        if let Some(v) = if absolute {
            chunk.video_abs_ms
        } else {
            chunk.video_ms
        } {
            sent_video.push(v);
        }
        *next += 1;
    }
    let sent = Instant::now();
    for v in sent_video {
        log.record(v, sent);
    }
}

/// Packets kept for retransmission (about 10 s of a 600 kbps stream).
const KEPT: usize = 8192;

/// One SRT publisher until `stop_at`.
#[allow(clippy::too_many_arguments)]
pub async fn run_publisher(
    addr: SocketAddr,
    key: String,
    absolute: bool,
    tick: Duration,
    stop_at: Instant,
    source: Arc<TsSource>,
    stats: Arc<GeneratorStats>,
    log: Arc<SendLog>,
) {
    let fail = || {
        stats.failed.fetch_add(1, Ordering::Relaxed);
    };
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else {
        return fail();
    };
    if sock.connect(addr).await.is_err() {
        return fail();
    }
    let me = (rand_u32() & 0x3fff_ffff) | 1;
    let isn = SeqNo::new(rand_u32() & 0x7fff_ffff);
    let asked = Instant::now();
    let Ok(peer) = connect(&sock, &key, me, isn).await else {
        return fail();
    };
    stats.auth_latency.record(asked.elapsed());
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let mut seq = isn;
    let mut msgno = 1u32;
    // (sequence number, chunk index) of what the server has not acknowledged.
    let mut kept: VecDeque<(SeqNo, usize)> = VecDeque::with_capacity(KEPT);
    let mut next = 0usize;
    let mut tick = tokio::time::interval(tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = [0u8; 1500];
    let mut out = Vec::with_capacity(1500);
    let data = |out: &mut Vec<u8>, s: SeqNo, m: u32, chunk: &TsChunk, again: bool, now: Instant| {
        out.clear();
        packet::write_data(
            out,
            &DataHeader {
                seq: s,
                position: 3,
                in_order: false,
                key: 0,
                retransmitted: again,
                msgno: m,
                timestamp: now.duration_since(start).as_micros() as u32,
                dest: peer,
            },
        );
        out.extend_from_slice(&chunk.bytes);
    };
    'run: loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= stop_at || next >= source.chunks.len() {
            break;
        }
        send_due(
            &source,
            start,
            now,
            &mut next,
            absolute,
            &stats,
            &log,
            |i, chunk| {
                data(&mut out, seq, msgno, chunk, false, now);
                let taken = sock.try_send(&out).is_ok();
                if kept.len() == KEPT {
                    kept.pop_front();
                }
                kept.push_back((seq, i));
                seq = seq.add(1);
                msgno = (msgno + 1) & 0x03ff_ffff;
                taken
            },
        );
        // What the server said meanwhile: never wait for it.
        while let Ok(n) = sock.try_recv(&mut buf) {
            let Ok(Header::Control(h)) = packet::parse_header(&buf[..n]) else {
                continue;
            };
            let cif = &buf[HEADER_LEN..n];
            match h.kind {
                ControlType::Ack => {
                    if let Ok(info) = AckInfo::parse(cif) {
                        let acked = SeqNo::new(info.next);
                        while kept.front().is_some_and(|(s, _)| s.offset_to(acked) > 0) {
                            kept.pop_front();
                        }
                    }
                    if h.info != 0 {
                        let b = control(ControlType::AckAck, h.info, peer, Instant::now(), start);
                        let _ = sock.try_send(&b);
                    }
                }
                ControlType::Nak => {
                    for (first, last) in packet::parse_loss_list(cif).unwrap_or_default() {
                        for (s, i) in kept.iter() {
                            if first.offset_to(*s) >= 0 && s.offset_to(last) >= 0 {
                                data(&mut out, *s, 1, &source.chunks[*i], true, Instant::now());
                                let _ = sock.try_send(&out);
                            }
                        }
                    }
                }
                ControlType::Shutdown => break 'run,
                _ => {}
            }
        }
    }
    let _ = sock
        .send(&control(
            ControlType::Shutdown,
            0,
            peer,
            Instant::now(),
            start,
        ))
        .await;
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let x = t ^ (std::process::id() as u64).rotate_left(32) ^ uuid::Uuid::new_v4().as_u64_pair().0;
    (x ^ (x >> 29)) as u32
}

/// Who sends: the minimal caller above, or libsrt itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    /// The caller on crates/srt's codec: one UDP socket, no thread, per publisher.
    Native,
    /// libsrt (the system's libsrt.so.1.5): one socket per publisher, with libsrt's
    /// own threads (two per socket: each has a port of its own).
    Libsrt,
}

/// One publisher through libsrt until `stop_at`: connected on a blocking thread, then
/// paced like the native caller; libsrt answers ACKs and NAKs itself.
#[allow(clippy::too_many_arguments)]
pub async fn run_libsrt_publisher(
    addr: SocketAddr,
    key: String,
    absolute: bool,
    tick: Duration,
    stop_at: Instant,
    source: Arc<TsSource>,
    stats: Arc<GeneratorStats>,
    log: Arc<SendLog>,
) {
    let SocketAddr::V4(to) = addr else {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let asked = Instant::now();
    let caller =
        tokio::task::spawn_blocking(move || crate::libsrt::Caller::connect(to, &key)).await;
    let Ok(Ok(caller)) = caller else {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    stats.auth_latency.record(asked.elapsed());
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let mut next = 0usize;
    let mut tick = tokio::time::interval(tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= stop_at || next >= source.chunks.len() {
            break;
        }
        send_due(
            &source,
            start,
            now,
            &mut next,
            absolute,
            &stats,
            &log,
            |_, chunk| caller.send(&chunk.bytes),
        );
    }
    let _ = tokio::task::spawn_blocking(move || drop(caller)).await;
}
