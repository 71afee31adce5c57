//! Load generator, relay sink and side-by-side comparison for streamgate (the
//! `sgbench` binary is a thin command line over this library).
//!
//! - `sgbench compare`: the same publishers, relayed to our sink, against streamgate,
//!   nginx-rtmp and (with `SRS_BIN`) SRS, one after the other; one table of server CPU,
//!   RSS, connection success, bytes relayed and relay delay.
//! - `sgbench ab`: two streamgate builds relaying at the same time, to measure a change.
//! - `sgbench pair`: servers relaying at the same time, for ratios the machine's drift
//!   does not move.
//! - `sgbench storm`: many publishers connecting within a second.
//! - `sgbench auth`: publish-to-onStatus latency, cold and warm cache, SQLite or Postgres.
//! - `sgbench thumbs`: how many channels one thumbnail worker keeps fresh.
//! - `sgbench fleet-load`: the Postgres load of N nodes x M channels, simulated.
//!
//! Everything runs on 127.0.0.1. See BENCHMARKS.md for the figures and commands.

pub mod chunk_cost;
pub mod fleet;
pub mod flv_source;
pub mod libsrt;
pub mod pin;
pub mod publisher;
pub mod servers;
pub mod sink;
pub mod srt_bench;
pub mod srt_caller;
pub mod stats;
pub mod thumbs;
pub mod ts_source;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flv_source::FlvSource;
use publisher::{GeneratorStats, PublisherSpec, SendLog};
use servers::{Server, ServerKind};
use sink::Sink;

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum Profile {
    /// 640x360 30 fps, about 600 kbps.
    P360,
    /// 1280x720 30 fps, about 2.5 Mbps.
    P720,
    /// 1920x1080 30 fps, about 6 Mbps.
    P1080,
}

/// Where generated media is cached between runs.
pub fn media_path(profile: Profile) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("sgbench-media");
    std::fs::create_dir_all(&dir)?;
    let (name, args): (&str, &[&str]) = match profile {
        Profile::P360 => (
            "360p-600k.flv",
            &[
                "-s", "640x360", "-b:v", "536k", "-maxrate", "536k", "-bufsize", "1072k",
                "-preset", "veryfast",
            ],
        ),
        Profile::P720 => (
            "720p-2500k.flv",
            &[
                "-s", "1280x720", "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "5000k",
                "-preset", "veryfast",
            ],
        ),
        Profile::P1080 => (
            "1080p-6m.flv",
            &[
                "-s",
                "1920x1080",
                "-b:v",
                "5800k",
                "-maxrate",
                "5800k",
                "-bufsize",
                "11600k",
                "-preset",
                "ultrafast",
            ],
        ),
    };
    let path = dir.join(name);
    if !path.exists() {
        eprintln!("generating {} with ffmpeg...", path.display());
        encode_flv(&path, "1920x1080", 30, 60, args, "64k")?;
    }
    Ok(path)
}

/// Encodes a moving test pattern (`source_size`, 30 fps) with a tone as FLV: H.264
/// High, a keyframe every `gop` frames, plus `video_args`; AAC at `audio_bitrate`.
pub fn encode_flv(
    path: &std::path::Path,
    source_size: &str,
    seconds: u32,
    gop: u32,
    video_args: &[&str],
    audio_bitrate: &str,
) -> anyhow::Result<()> {
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=rate=30:size={source_size}"))
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
        ])
        .arg(seconds.to_string())
        .args(["-c:v", "libx264", "-profile:v", "high", "-g"])
        .arg(gop.to_string())
        .args(["-pix_fmt", "yuv420p"])
        .args(video_args)
        .args(["-c:a", "aac", "-b:a", audio_bitrate, "-f", "flv"])
        .arg(path)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run ffmpeg ({e}): apt-get install -y ffmpeg"))?;
    anyhow::ensure!(
        status.success(),
        "ffmpeg could not generate {}",
        path.display()
    );
    Ok(())
}

/// Result of one server under one workload.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    pub server: String,
    pub publishers: usize,
    pub connected: u64,
    pub failed: u64,
    pub window_s: f64,
    pub cpu_percent: f64,
    pub cpu_ms_per_stream_second: f64,
    pub rss_mib: f64,
    pub rss_kib_per_publisher: f64,
    pub relayed_streams: usize,
    pub relayed_mbps: f64,
    pub delay_ms_p50: f64,
    pub delay_ms_p99: f64,
    pub delay_samples: usize,
    pub generator_cpu_percent: f64,
    pub auth_ms_p50: f64,
    pub auth_ms_p99: f64,
}

/// Starts `n` publishers against `server`, ramped; returns their handles.
pub fn start_publishers(
    server: &Server,
    source: &Arc<FlvSource>,
    sink: &Arc<Sink>,
    stats: &Arc<GeneratorStats>,
    ramp_per_s: f64,
    tick: Duration,
    stop_at: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    let gap = Duration::from_secs_f64(1.0 / ramp_per_s.max(1.0));
    let begin = Instant::now();
    for (i, ch) in server.channels.iter().enumerate() {
        let log = Arc::new(SendLog::default());
        sink.logs
            .lock()
            .expect("sink")
            .insert(ch.sink_name.clone(), log.clone());
        let spec = PublisherSpec {
            addr: server.rtmp_addr,
            app: "live".into(),
            key: ch.key.clone(),
            tick,
            stop_at,
        };
        let (source, stats) = (source.clone(), stats.clone());
        let start = begin + gap * i as u32;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
            publisher::run(spec, source, stats, log).await;
        }));
    }
    handles
}

pub async fn relay_run(
    kind: ServerKind,
    n: usize,
    source: Arc<FlvSource>,
    ramp: f64,
    window: Duration,
    tick: Duration,
) -> anyhow::Result<Outcome> {
    let (listener, sink) = Sink::bind().await?;
    let sink_port = listener.local_addr()?.port();
    tokio::spawn(sink.clone().serve(listener));
    let server = Server::start(kind, n, Some(sink_port)).await?;
    pin::server(&[server.pid])?;
    let rss_idle = stats::rss_kib(server.pid);
    let stats = Arc::new(GeneratorStats::default());
    let ramp_time = Duration::from_secs_f64(n as f64 / ramp);
    let warmup = Duration::from_secs(5);
    let stop_at = Instant::now() + ramp_time + warmup + window + Duration::from_secs(2);
    let handles = start_publishers(&server, &source, &sink, &stats, ramp, tick, stop_at);
    tokio::time::sleep(ramp_time + warmup).await;

    let me = std::process::id();
    let (cpu0, gen0, bytes0) = (
        stats::cpu_seconds(server.pid),
        stats::cpu_seconds(me),
        sink.totals().1,
    );
    sink.delay.clear();
    sink.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut rss_peak = 0;
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(stats::rss_kib(server.pid));
    }
    let secs = t0.elapsed().as_secs_f64();
    sink.measuring.store(false, Ordering::Relaxed);
    let (cpu1, gen1) = (stats::cpu_seconds(server.pid), stats::cpu_seconds(me));
    let (relayed_streams, bytes1) = sink.totals();
    for h in handles {
        let _ = h.await;
    }
    server.stop();
    let connected = stats.connected.load(Ordering::Relaxed);
    let (count, p50, p99, _) = sink.delay.summary();
    let (_, a50, a99, _) = stats.auth_latency.summary();
    let cpu = cpu1 - cpu0;
    Ok(Outcome {
        server: kind.name(),
        publishers: n,
        connected,
        failed: stats.failed.load(Ordering::Relaxed),
        window_s: secs,
        cpu_percent: cpu / secs * 100.0,
        cpu_ms_per_stream_second: cpu * 1000.0 / (secs * connected.max(1) as f64),
        rss_mib: rss_peak as f64 / 1024.0,
        rss_kib_per_publisher: rss_peak.saturating_sub(rss_idle) as f64 / connected.max(1) as f64,
        relayed_streams,
        relayed_mbps: (bytes1 - bytes0) as f64 * 8.0 / secs / 1e6,
        delay_ms_p50: p50,
        delay_ms_p99: p99,
        delay_samples: count,
        generator_cpu_percent: (gen1 - gen0) / secs * 100.0,
        auth_ms_p50: a50,
        auth_ms_p99: a99,
    })
}

/// What `sgbench ab` and `sgbench pair` run side by side: a streamgate build, or any
/// server kind.
#[derive(Debug, Clone)]
pub enum Contender {
    Build(PathBuf),
    Kind(ServerKind),
}

/// Every contender relaying at the same time, `n` publishers each, from one generator
/// to one sink, so that all see the same machine at the same moment (a sequential
/// comparison drifts with the machine's load by more than a small change saves);
/// returns the CPU per stream-second of each, in ms.
pub async fn side_by_side(
    contenders: &[Contender],
    n: usize,
    source: Arc<FlvSource>,
    ramp: f64,
    window: Duration,
    tick: Duration,
) -> anyhow::Result<Vec<f64>> {
    let (listener, sink) = Sink::bind().await?;
    let sink_port = listener.local_addr()?.port();
    tokio::spawn(sink.clone().serve(listener));
    let mut servers = Vec::new();
    for c in contenders {
        servers.push(match c {
            Contender::Build(bin) => {
                Server::start_streamgate_config(bin, n, Some(sink_port), None, None, 0, "pack", "")
                    .await?
            }
            Contender::Kind(kind) => Server::start(*kind, n, Some(sink_port)).await?,
        });
    }
    let k = servers.len();
    let stats = Arc::new(GeneratorStats::default());
    let ramp_time = Duration::from_secs_f64(k as f64 * n as f64 / ramp);
    let warmup = Duration::from_secs(5);
    let stop_at = Instant::now() + ramp_time + warmup + window + Duration::from_secs(2);
    // The two sets of publishers ramp up together.
    let mut handles = Vec::new();
    for server in &servers {
        handles.extend(start_publishers(
            server,
            &source,
            &sink,
            &stats,
            ramp / k as f64,
            tick,
            stop_at,
        ));
    }
    tokio::time::sleep(ramp_time + warmup).await;
    let cpu0: Vec<f64> = servers.iter().map(|s| stats::cpu_seconds(s.pid)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu1: Vec<f64> = servers.iter().map(|s| stats::cpu_seconds(s.pid)).collect();
    let (relayed, _) = sink.totals();
    for h in handles {
        let _ = h.await;
    }
    for s in &servers {
        s.stop();
    }
    let connected = stats.connected.load(Ordering::Relaxed);
    anyhow::ensure!(
        connected as usize == k * n && relayed == k * n,
        "not every stream was relayed: {connected} publishing, {relayed} at the sink, of {}",
        k * n
    );
    Ok((0..k)
        .map(|i| (cpu1[i] - cpu0[i]) * 1000.0 / (secs * n as f64))
        .collect())
}

fn print_row(r: &Outcome) {
    println!(
        "| {} | {}/{} | {:.1} | {:.3} | {:.1} | {:.1} | {} | {:.1} | {:.1} / {:.1} | {:.1} |",
        r.server,
        r.connected,
        r.failed,
        r.cpu_percent,
        r.cpu_ms_per_stream_second,
        r.rss_mib,
        r.rss_kib_per_publisher,
        r.relayed_streams,
        r.relayed_mbps,
        r.delay_ms_p50,
        r.delay_ms_p99,
        r.generator_cpu_percent
    );
}

pub fn print_table(title: &str, rows: &[Outcome]) {
    println!("\n{title}");
    println!(
        "| server | publishers ok/failed | server CPU % | CPU ms per stream-s | RSS MiB | RSS KiB per publisher | streams at sink | relayed Mbps | relay delay p50 / p99 ms | bench process CPU % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        print_row(r);
    }
    // Every streamgate row against every peer, and every row against the floor.
    let floor = rows.iter().find(|r| r.server == "byte-pipe");
    for sg in rows.iter().filter(|r| r.server.starts_with("streamgate")) {
        for peer in rows.iter().filter(|r| !r.server.starts_with("streamgate")) {
            println!(
                "ratio {} / {}: CPU per stream {:.2}x, RSS per publisher {:.2}x, relay delay p99 {:.2}x",
                sg.server,
                peer.server,
                sg.cpu_ms_per_stream_second / peer.cpu_ms_per_stream_second,
                sg.rss_kib_per_publisher / peer.rss_kib_per_publisher.max(0.001),
                sg.delay_ms_p99 / peer.delay_ms_p99.max(0.001)
            );
        }
    }
    if let Some(f) = floor {
        for r in rows.iter().filter(|r| r.server != "byte-pipe") {
            println!(
                "distance to the floor, {}: CPU per stream {:.2}x the byte pipe's",
                r.server,
                r.cpu_ms_per_stream_second / f.cpu_ms_per_stream_second
            );
        }
    }
}

/// Several rounds of the same servers (each round one after the other): a table of
/// each server's median round, every round's CPU per stream-second, and the CPU ratios
/// taken within each round (servers measured minutes apart see a different machine:
/// a ratio of two runs next to each other drifts less than either run does), as the
/// median and the range over the rounds.
pub fn print_rounds(title: &str, rounds: &[Vec<Outcome>]) {
    let Some(first) = rounds.first() else {
        return;
    };
    let names: Vec<&str> = first.iter().map(|r| r.server.as_str()).collect();
    let of = |name: &str| -> Vec<&Outcome> {
        rounds
            .iter()
            .filter_map(|round| round.iter().find(|r| r.server == name))
            .collect()
    };
    // The median round of each server, shown whole.
    let mut rows = Vec::new();
    for name in &names {
        let mut runs = of(name);
        runs.sort_by(|a, b| {
            a.cpu_ms_per_stream_second
                .total_cmp(&b.cpu_ms_per_stream_second)
        });
        if let Some(mid) = runs.get(runs.len().saturating_sub(1) / 2) {
            rows.push(*mid);
        }
    }
    println!("\n{title}, median of {} rounds", rounds.len());
    println!(
        "| server | publishers ok/failed | server CPU % | CPU ms per stream-s | RSS MiB | RSS KiB per publisher | streams at sink | relayed Mbps | relay delay p50 / p99 ms | bench process CPU % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        print_row(r);
    }
    println!("\nCPU ms per stream-second, every round:");
    for name in &names {
        let v: Vec<String> = of(name)
            .iter()
            .map(|r| format!("{:.3}", r.cpu_ms_per_stream_second))
            .collect();
        println!("  {name}: {}", v.join(", "));
    }
    // Ratios within each round.
    let ratio = |a: &str, b: &str| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|round| {
                let x = round.iter().find(|r| r.server == a)?;
                let y = round.iter().find(|r| r.server == b)?;
                Some(x.cpu_ms_per_stream_second / y.cpu_ms_per_stream_second)
            })
            .collect()
    };
    for sg in names.iter().filter(|n| n.starts_with("streamgate")) {
        for peer in names.iter().filter(|n| !n.starts_with("streamgate")) {
            print_ratio("ratio", sg, peer, ratio(sg, peer));
        }
    }
    if names.contains(&"byte-pipe") {
        for r in names.iter().filter(|n| **n != "byte-pipe") {
            print_ratio(
                "distance to the floor,",
                r,
                "byte-pipe",
                ratio(r, "byte-pipe"),
            );
        }
    }
}

/// One line for the CPU ratios of `a` to `b` taken within each round: their median
/// and range. Nothing when there are none.
pub fn print_ratio(what: &str, a: &str, b: &str, mut ratios: Vec<f64>) {
    if ratios.is_empty() {
        return;
    }
    ratios.sort_by(|x, y| x.total_cmp(y));
    let n = ratios.len();
    let median = if n % 2 == 1 {
        ratios[n / 2]
    } else {
        (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
    };
    println!(
        "{what} {a} / {b}: CPU per stream {median:.2}x (median of {n} rounds; {:.2}x to {:.2}x)",
        ratios[0],
        ratios[n - 1]
    );
}

pub fn parse_servers(list: &str) -> anyhow::Result<Vec<ServerKind>> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| match s.trim() {
            "streamgate" => Ok(ServerKind::Streamgate),
            "streamgate-thumbs" => Ok(ServerKind::StreamgateThumbs),
            "nginx" => Ok(ServerKind::Nginx),
            "srs" => Ok(ServerKind::Srs),
            "floor" => Ok(ServerKind::BytePipe),
            "streamgate-spread" => Ok(ServerKind::StreamgateSpread),
            "streamgate-nohealth" => Ok(ServerKind::StreamgateNoHealth),
            other => match other.strip_prefix("streamgate-w").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(ServerKind::StreamgateWorkers(n)),
                _ => anyhow::bail!(
                    "unknown server {other:?} (streamgate, streamgate-thumbs, streamgate-wN, streamgate-spread, streamgate-nohealth, nginx, srs, floor)"
                ),
            },
        })
        .collect()
}
