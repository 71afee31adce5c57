//! SRT ingest under load: the same media as the RTMP workload, remuxed to MPEG-TS
//! (ffmpeg, `-c copy`), sent by generated SRT callers, one UDP socket each, to
//! streamgate (relaying to the sink as RTMP), SRS (`srt_server`, `srt_to_rtmp`, then
//! `forward` to the sink) and the floor: `srt-live-transmit`, SRT in and UDP out,
//! one process per stream (it takes one caller).
//!
//! The callers are not libsrt: a generator of 2000 libsrt sockets would run two
//! threads per socket on the machine that also runs the server. Each is a minimal
//! sender built on `crates/srt`'s packet codec: the HSv5 caller handshake (induction,
//! conclusion with the stream id), data packets of 7 TS packets paced by the video's
//! decoding times, ACKACK for every ACK (so the server measures the round trip), and
//! retransmission of what a NAK lists. The suite's tests show the server with
//! libsrt's own callers (ffmpeg, OBS, GStreamer, srt-live-transmit).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use srt::handshake::{self, cmd, ext_flags, options, Handshake, HsType, SrtOptions};
use srt::packet::{self, AckInfo, ControlHeader, ControlType, DataHeader, Header, HEADER_LEN};
use srt::SeqNo;
use tokio::net::UdpSocket;

use crate::publisher::{GeneratorStats, SendLog};
use crate::servers::{free_port, Server};
use crate::sink::Sink;
use crate::{stats, Outcome};

/// TS packets per SRT data packet (1316 bytes: what every SRT sender uses).
const TS_PER_PACKET: usize = 7;

/// One SRT payload of the source and when it is due.
#[derive(Debug, Clone)]
pub struct TsChunk {
    pub bytes: Bytes,
    /// Milliseconds from the start: the decoding time of the latest video frame begun
    /// in or before this chunk.
    pub due_ms: u32,
    /// The video frame that begins in this chunk, as the server will time it (its
    /// decoding time from the first time stamp of the file), for the delay.
    pub video_ms: Option<u32>,
    /// The same frame's decoding time in ms from 0 on the 90 kHz clock (not from the
    /// file's first time stamp): what SRS hands on.
    pub video_abs_ms: Option<u32>,
}

/// The workload's MPEG-TS in memory, cut into SRT payloads.
#[derive(Debug)]
pub struct TsSource {
    pub chunks: Vec<TsChunk>,
    pub bitrate: u64,
}

/// PTS or DTS of a PES header field (33 bits in 5 bytes).
fn pes_time(b: &[u8]) -> u64 {
    ((b[0] as u64 >> 1) & 0x07) << 30
        | (b[1] as u64) << 22
        | ((b[2] as u64) >> 1) << 15
        | (b[3] as u64) << 7
        | (b[4] as u64) >> 1
}

impl TsSource {
    /// `flv` remuxed to MPEG-TS for `seconds` (looped: time stamps run on).
    pub fn from_flv(flv: &Path, seconds: u64) -> anyhow::Result<TsSource> {
        let ts: PathBuf = flv.with_extension(format!("{seconds}s.ts"));
        if !ts.is_file() {
            let status = Command::new("ffmpeg")
                .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
                .args(["-stream_loop", "-1", "-i"])
                .arg(flv)
                .args(["-t", &seconds.to_string(), "-c", "copy", "-f", "mpegts"])
                .arg(&ts)
                .status()?;
            anyhow::ensure!(status.success(), "ffmpeg could not remux {}", flv.display());
        }
        Self::load(&ts)
    }

    pub fn load(path: &Path) -> anyhow::Result<TsSource> {
        let data = Bytes::from(std::fs::read(path)?);
        anyhow::ensure!(
            data.len() >= 188 && data[0] == 0x47,
            "{} is not MPEG-TS",
            path.display()
        );
        // Every PES start: (packet index, stream id, DTS or PTS). And the server's
        // zero: the time stamp of the first PES to be complete (the demuxer hands a
        // PES on when its length is reached or, without a length, when the next one
        // on its PID begins), as the server's clock starts there.
        let mut starts = Vec::new();
        // PID -> (time stamp, bytes still to come: None when unbounded).
        let mut open: std::collections::HashMap<u16, (u64, Option<i64>)> = Default::default();
        let mut zero = None;
        for (i, p) in data.chunks_exact(188).enumerate() {
            let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
            let afc = (p[3] >> 4) & 3;
            let at = match afc {
                1 => 4,
                3 => 5 + p[4] as usize,
                _ => continue,
            };
            let Some(payload) = p.get(at..) else { continue };
            let pusi = p[1] & 0x40 != 0;
            if pusi {
                if let Some((t, _)) = open.remove(&pid) {
                    zero.get_or_insert(t);
                }
                if payload.len() < 19 || payload[..3] != [0, 0, 1] {
                    continue;
                }
                let sid = payload[3];
                let flags = payload[7] >> 6;
                let t = match flags {
                    3 => pes_time(&payload[14..19]),
                    2 => pes_time(&payload[9..14]),
                    _ => continue,
                };
                starts.push((i, sid, t));
                let len = u16::from_be_bytes([payload[4], payload[5]]) as i64;
                let left = (len > 0).then(|| len + 6 - payload.len() as i64);
                if left.is_some_and(|l| l <= 0) {
                    zero.get_or_insert(t);
                } else {
                    open.insert(pid, (t, left));
                }
            } else if let Some((t, Some(left))) = open.get_mut(&pid) {
                *left -= payload.len() as i64;
                if *left <= 0 {
                    let t = *t;
                    open.remove(&pid);
                    zero.get_or_insert(t);
                }
            }
        }
        let zero = zero.ok_or_else(|| anyhow::anyhow!("no PES in {}", path.display()))?;
        let video = |sid: u8| (0xe0..=0xef).contains(&sid);
        let packets = data.len() / 188;
        let mut chunks = Vec::with_capacity(packets / TS_PER_PACKET + 1);
        let mut next_start = 0;
        let mut due = 0u32;
        for first in (0..packets).step_by(TS_PER_PACKET) {
            let last = (first + TS_PER_PACKET).min(packets);
            let (mut video_ms, mut video_abs_ms) = (None, None);
            while next_start < starts.len() && starts[next_start].0 < last {
                let (_, sid, t) = starts[next_start];
                if video(sid) {
                    let ms = (t.saturating_sub(zero) / 90) as u32;
                    due = due.max(ms);
                    video_ms.get_or_insert(ms);
                    video_abs_ms.get_or_insert((t / 90) as u32);
                }
                next_start += 1;
            }
            chunks.push(TsChunk {
                bytes: data.slice(first * 188..last * 188),
                due_ms: due,
                video_ms,
                video_abs_ms,
            });
        }
        let seconds = (due as f64 / 1000.0).max(1.0);
        Ok(TsSource {
            bitrate: (data.len() as f64 * 8.0 / seconds) as u64,
            chunks,
        })
    }
}

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
        let elapsed = now.duration_since(start).as_millis() as u32;
        let mut sent_video = Vec::new();
        while next < source.chunks.len() && source.chunks[next].due_ms <= elapsed {
            let chunk = &source.chunks[next];
            data(&mut out, seq, msgno, chunk, false, now);
            if sock.try_send(&out).is_ok() {
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
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back((seq, next));
            seq = seq.add(1);
            msgno = (msgno + 1) & 0x03ff_ffff;
            next += 1;
        }
        let sent = Instant::now();
        for v in sent_video {
            log.record(v, sent);
        }
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
        let elapsed = now.duration_since(start).as_millis() as u32;
        let mut sent_video = Vec::new();
        while next < source.chunks.len() && source.chunks[next].due_ms <= elapsed {
            let chunk = &source.chunks[next];
            if caller.send(&chunk.bytes) {
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
            next += 1;
        }
        let sent = Instant::now();
        for v in sent_video {
            log.record(v, sent);
        }
    }
    let _ = tokio::task::spawn_blocking(move || drop(caller)).await;
}

/// The servers an SRT comparison runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtServer {
    Streamgate,
    /// SRS built with SRT (`SRS_SRT_BIN`).
    Srs,
    /// srt-live-transmit per stream, SRT in, UDP out.
    Floor,
}

impl SrtServer {
    pub fn name(self) -> &'static str {
        match self {
            SrtServer::Streamgate => "streamgate",
            SrtServer::Srs => "srs",
            SrtServer::Floor => "srt-live-transmit",
        }
    }

    pub fn parse(list: &str) -> anyhow::Result<Vec<SrtServer>> {
        list.split(',')
            .map(|s| match s.trim() {
                "streamgate" => Ok(SrtServer::Streamgate),
                "srs" => Ok(SrtServer::Srs),
                "floor" | "srt-live-transmit" => Ok(SrtServer::Floor),
                other => anyhow::bail!("unknown SRT server {other:?} (streamgate, srs, floor)"),
            })
            .collect()
    }
}

/// SRS with its SRT server, remuxing to RTMP and forwarding to the sink.
fn start_srs(n: usize, sink_port: u16) -> anyhow::Result<(Server, SocketAddr)> {
    let bin: PathBuf = std::env::var_os("SRS_SRT_BIN")
        .map(Into::into)
        .ok_or_else(|| anyhow::anyhow!("set SRS_SRT_BIN to an SRS built with --srt=on"))?;
    let (nofile, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let max_connections = nofile.saturating_sub(256).min(20000);
    let dir =
        std::env::temp_dir().join(format!("sgbench-srs-srt-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let (rtmp, srt) = (free_port()?, free_udp_port()?);
    // SRS's SRT settings as its own trunk/conf/srt.conf ships them (no TSBPD, no
    // latency of its own: packets handed on as they arrive, as streamgate does).
    std::fs::write(
        dir.join("srs.conf"),
        format!(
            "listen {rtmp}; max_connections {max_connections}; daemon off; srs_log_tank console; srs_log_level warn;\n\
             pid {d}/srs.pid;\n\
             srt_server {{ enabled on; listen {srt}; maxbw 1000000000; connect_timeout 4000; peerlatency 0; \
             recvlatency 0; latency 0; tsbpdmode off; tlpktdrop off; sendbuf 2000000; recvbuf 2000000; }}\n\
             vhost __defaultVhost__ {{ srt {{ enabled on; srt_to_rtmp on; }} \
             forward {{ enabled on; destination 127.0.0.1:{sink_port}; }} }}\n",
            d = dir.display()
        ),
    )?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(dir.join("srs.conf"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server::keyless_child(child, rtmp, n, dir)?;
    Ok((server, ([127, 0, 0, 1], srt).into()))
}

pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// srt-live-transmit processes, one per stream, each on its own port, sending what
/// it receives to a UDP socket that counts the bytes.
struct Floor {
    children: Vec<Child>,
    ports: Vec<u16>,
    received: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Floor {
    fn start(n: usize) -> anyhow::Result<Floor> {
        let sink = std::net::UdpSocket::bind("127.0.0.1:0")?;
        sink.set_read_timeout(Some(Duration::from_millis(100)))?;
        let sink_port = sink.local_addr()?.port();
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = sink.recv(&mut buf) {
                        received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            });
        }
        let mut floor = Floor {
            children: Vec::with_capacity(n),
            ports: Vec::with_capacity(n),
            received,
            stop,
        };
        for _ in 0..n {
            let port = free_udp_port()?;
            let child = Command::new("srt-live-transmit")
                .arg("-q")
                .arg(format!("srt://127.0.0.1:{port}?mode=listener&latency=120"))
                .arg(format!("udp://127.0.0.1:{sink_port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    anyhow::anyhow!("srt-live-transmit (apt-get install srt-tools): {e}")
                })?;
            floor.children.push(child);
            floor.ports.push(port);
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(floor)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One server under `n` SRT publishers.
#[allow(clippy::too_many_arguments)]
pub async fn srt_run(
    kind: SrtServer,
    generator: Generator,
    n: usize,
    source: Arc<TsSource>,
    ramp: f64,
    window: Duration,
    tick: Duration,
) -> anyhow::Result<Outcome> {
    let (listener, sink) = Sink::bind().await?;
    let sink_port = listener.local_addr()?.port();
    tokio::spawn(sink.clone().serve(listener));
    // (server, the processes measured, where each publisher sends, its key, the
    // name at the sink)
    let mut floor = None;
    let mut server = None;
    let targets: Vec<(SocketAddr, String, String)> = match kind {
        SrtServer::Streamgate => {
            let bin = crate::servers::sibling_binary("streamgate")?;
            let s = Server::start_streamgate_config(
                &bin,
                n,
                Some(sink_port),
                None,
                None,
                if crate::pin::enabled() { 1 } else { 0 },
                "pack",
                true,
            )
            .await?;
            let addr = s
                .srt_addr
                .ok_or_else(|| anyhow::anyhow!("streamgate has no SRT"))?;
            let t = s
                .channels
                .iter()
                .map(|c| (addr, c.key.clone(), c.sink_name.clone()))
                .collect();
            server = Some(s);
            t
        }
        SrtServer::Srs => {
            let (s, addr) = start_srs(n, sink_port)?;
            // SRS's stream id: #!::r=live/<name>,m=publish; the name reaches the sink.
            let t = s
                .channels
                .iter()
                .map(|c| {
                    (
                        addr,
                        format!("#!::r=live/{},m=publish", c.key),
                        c.sink_name.clone(),
                    )
                })
                .collect();
            server = Some(s);
            t
        }
        SrtServer::Floor => {
            let f = Floor::start(n)?;
            let t = f
                .ports
                .iter()
                .map(|p| {
                    (
                        SocketAddr::from(([127, 0, 0, 1], *p)),
                        String::new(),
                        String::new(),
                    )
                })
                .collect();
            floor = Some(f);
            t
        }
    };
    let pids: Vec<u32> = match (&server, &floor) {
        (Some(s), _) => vec![s.pid],
        (_, Some(f)) => f.children.iter().map(|c| c.id()).collect(),
        _ => unreachable!(),
    };
    crate::pin::server(&pids)?;
    let rss = |pids: &[u32]| pids.iter().map(|p| stats::rss_kib(*p)).sum::<u64>();
    let cpu = |pids: &[u32]| pids.iter().map(|p| stats::cpu_seconds(*p)).sum::<f64>();
    let rss_idle = rss(&pids);
    let gstats = Arc::new(GeneratorStats::default());
    let ramp_time = Duration::from_secs_f64(n as f64 / ramp);
    let warmup = Duration::from_secs(5);
    let stop_at = Instant::now() + ramp_time + warmup + window + Duration::from_secs(2);
    let gap = Duration::from_secs_f64(1.0 / ramp.max(1.0));
    let begin = Instant::now();
    let mut handles = Vec::new();
    let absolute = kind == SrtServer::Srs;
    for (i, (addr, key, sink_name)) in targets.into_iter().enumerate() {
        let log = Arc::new(SendLog::default());
        sink.logs
            .lock()
            .expect("sink")
            .insert(sink_name, log.clone());
        let (source, gstats) = (source.clone(), gstats.clone());
        let start = begin + gap * i as u32;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
            match generator {
                Generator::Native => {
                    run_publisher(addr, key, absolute, tick, stop_at, source, gstats, log).await
                }
                Generator::Libsrt => {
                    run_libsrt_publisher(addr, key, absolute, tick, stop_at, source, gstats, log)
                        .await
                }
            }
        }));
    }
    tokio::time::sleep(ramp_time + warmup).await;
    let me = std::process::id();
    let floor_bytes = |f: &Option<Floor>| f.as_ref().map(|f| f.received.load(Ordering::Relaxed));
    let (cpu0, gen0, bytes0) = (
        cpu(&pids),
        stats::cpu_seconds(me),
        floor_bytes(&floor).unwrap_or(sink.totals().1),
    );
    sink.delay.clear();
    sink.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut rss_peak = 0;
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(rss(&pids));
    }
    let secs = t0.elapsed().as_secs_f64();
    sink.measuring.store(false, Ordering::Relaxed);
    let (cpu1, gen1) = (cpu(&pids), stats::cpu_seconds(me));
    let (relayed_streams, sink_bytes) = sink.totals();
    let bytes1 = floor_bytes(&floor).unwrap_or(sink_bytes);
    for h in handles {
        let _ = h.await;
    }
    if let Some(s) = server {
        s.stop();
    }
    drop(floor);
    let connected = gstats.connected.load(Ordering::Relaxed);
    let (count, p50, p99, _) = sink.delay.summary();
    let (_, a50, a99, _) = gstats.auth_latency.summary();
    let used = cpu1 - cpu0;
    Ok(Outcome {
        server: kind.name().to_string(),
        publishers: n,
        connected,
        failed: gstats.failed.load(Ordering::Relaxed),
        window_s: secs,
        cpu_percent: used / secs * 100.0,
        cpu_ms_per_stream_second: used * 1000.0 / (secs * connected.max(1) as f64),
        rss_mib: rss_peak as f64 / 1024.0,
        rss_kib_per_publisher: rss_peak.saturating_sub(rss_idle) as f64 / connected.max(1) as f64,
        relayed_streams: if kind == SrtServer::Floor {
            connected as usize
        } else {
            relayed_streams
        },
        relayed_mbps: bytes1.saturating_sub(bytes0) as f64 * 8.0 / secs / 1e6,
        delay_ms_p50: p50,
        delay_ms_p99: p99,
        delay_samples: count,
        generator_cpu_percent: (gen1 - gen0) / secs * 100.0,
        auth_ms_p50: a50,
        auth_ms_p99: a99,
    })
}
