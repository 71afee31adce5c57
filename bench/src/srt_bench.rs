//! SRT ingest under load: the same media as the RTMP workload as MPEG-TS
//! ([`crate::ts_source`]), sent by generated SRT callers ([`crate::srt_caller`]: our
//! own, or libsrt), one UDP socket each, to streamgate (relaying to the sink as RTMP),
//! SRS (`srt_server`, `srt_to_rtmp`, then `forward` to the sink) and the floor:
//! `srt-live-transmit`, SRT in and UDP out, one process per stream (it takes one
//! caller).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::srt_caller::{run_libsrt_publisher, run_publisher, Generator};
pub use crate::ts_source::{TsChunk, TsSource};

use crate::publisher::{GeneratorStats, SendLog};
use crate::servers::{free_port, Server};
use crate::sink::Sink;
use crate::{stats, Outcome};
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
                crate::servers::SRT_SECTION,
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

/// `sgbench compare-srt`: each server in turn, in rounds that rotate the order.
pub struct Comparison {
    pub servers: Vec<SrtServer>,
    pub generator: Generator,
    pub streams: usize,
    /// The workload's FLV (remuxed to MPEG-TS once).
    pub media: PathBuf,
    pub ramp: f64,
    pub window: Duration,
    pub tick: Duration,
    pub rounds: usize,
    pub json: bool,
}

impl Comparison {
    /// Runs every round and prints the table (`profile`: the media's name, for it).
    pub async fn run(&self, profile: &str, pinned: bool) -> anyhow::Result<()> {
        // Long enough for the ramp, the warm-up and the window, without a loop.
        let length = (self.streams as f64 / self.ramp) as u64 + self.window.as_secs() + 60;
        let source = Arc::new(TsSource::from_flv(&self.media, length)?);
        let title = format!(
            "SRT ingest, {} {:?} publishers of {profile} as MPEG-TS ({} kbps), {} s window{}",
            self.streams,
            self.generator,
            source.bitrate / 1000,
            self.window.as_secs(),
            if pinned {
                ", pinned (generator and sink on core 0, server on core 1)"
            } else {
                ""
            }
        );
        let kinds = &self.servers;
        let mut all = Vec::new();
        for round in 0..self.rounds.max(1) {
            let mut rows = Vec::new();
            for i in 0..kinds.len() {
                let kind = kinds[(i + round) % kinds.len()];
                eprintln!("round {}: running {} ...", round + 1, kind.name());
                let r = srt_run(
                    kind,
                    self.generator,
                    self.streams,
                    source.clone(),
                    self.ramp,
                    self.window,
                    self.tick,
                )
                .await?;
                if self.json {
                    println!("{}", serde_json::to_string(&r)?);
                }
                rows.push(r);
            }
            rows.sort_by_key(|r| kinds.iter().position(|k| k.name() == r.server));
            all.push(rows);
        }
        if all.len() == 1 {
            crate::print_table(&title, &all[0]);
        } else {
            crate::print_rounds(&title, &all);
        }
        Ok(())
    }
}
