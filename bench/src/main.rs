//! `sgbench`: load generator, relay sink and side-by-side comparison for streamgate.
//! See BENCHMARKS.md for the figures and the commands that produced them.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use streamgate_bench::flv_source::FlvSource;
use streamgate_bench::publisher::GeneratorStats;
use streamgate_bench::servers::{self, Server};
use streamgate_bench::sink::Sink;
use streamgate_bench::{
    media_path, parse_servers, print_table, relay_run, start_publishers, stats, Profile,
};

#[derive(Parser)]
#[command(
    name = "sgbench",
    about = "streamgate load generator and comparison harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The workload of servers relaying at the same time (`ab`, `pair`).
#[derive(clap::Args, Debug, Clone, Copy)]
struct Together {
    /// Publishers per server.
    #[arg(long, default_value_t = 500)]
    streams: usize,
    #[arg(long, value_enum, default_value_t = Profile::P360)]
    profile: Profile,
    #[arg(long, default_value_t = 200.0)]
    ramp: f64,
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 20)]
    tick_ms: u64,
}

impl Together {
    /// The media every publisher sends, read once.
    fn source(&self) -> anyhow::Result<Arc<FlvSource>> {
        Ok(Arc::new(FlvSource::load(&media_path(self.profile)?)?))
    }

    /// One round: every contender relaying at the same time; the CPU per
    /// stream-second of each, in ms.
    async fn round(
        &self,
        contenders: &[streamgate_bench::Contender],
        source: &Arc<FlvSource>,
    ) -> anyhow::Result<Vec<f64>> {
        streamgate_bench::side_by_side(
            contenders,
            self.streams,
            source.clone(),
            self.ramp,
            Duration::from_secs(self.seconds),
            Duration::from_millis(self.tick_ms),
        )
        .await
    }
}

#[derive(Subcommand)]
enum Command {
    /// Relay workload against each server, one after the other.
    Compare {
        #[arg(long, default_value_t = 100)]
        streams: usize,
        #[arg(long, value_enum, default_value_t = Profile::P360)]
        profile: Profile,
        /// Publishers started per second.
        #[arg(long, default_value_t = 200.0)]
        ramp: f64,
        /// Measuring window after all publishers are up and a warm-up.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Comma-separated: streamgate, streamgate-thumbs (thumbnails on),
        /// streamgate-wN (rtmp.workers = N), streamgate-spread (rtmp.placement =
        /// "spread"), streamgate-nohealth (health.enabled = false), nginx, srs (SRS_BIN, or the binary in
        /// ../shared/peers/srs), floor (a byte pipe: nginx stream proxy to the sink).
        #[arg(long, default_value = "streamgate,nginx,srs,floor")]
        servers: String,
        /// Sending granularity of the generator (an encoder sends each frame as it is
        /// made: about every 14 ms for 30 fps video plus AAC audio).
        #[arg(long, default_value_t = 20)]
        tick_ms: u64,
        /// Print one JSON line per server too.
        #[arg(long)]
        json: bool,
        /// Run the servers this many times, one after the other in each round (each
        /// round starting one server later); report each server's median round and
        /// the ratios taken within each round.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Pin the generator and the sink to core 0 and the server (with everything it
        /// starts) to core 1; streamgate then runs one ingest thread.
        #[arg(long)]
        pin: bool,
    },
    /// SRT ingest under load against each server, one after the other: the same
    /// media as `compare`, as MPEG-TS over SRT (one UDP socket per publisher),
    /// relayed to the sink as RTMP (the floor, srt-live-transmit, sends UDP).
    CompareSrt {
        #[arg(long, default_value_t = 100)]
        streams: usize,
        #[arg(long, value_enum, default_value_t = Profile::P360)]
        profile: Profile,
        #[arg(long, default_value_t = 200.0)]
        ramp: f64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Comma-separated: streamgate, srs (SRS_SRT_BIN: SRS built with --srt=on),
        /// floor (srt-live-transmit, one per stream).
        #[arg(long, default_value = "streamgate,srs,floor")]
        servers: String,
        #[arg(long, default_value_t = 10)]
        tick_ms: u64,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        #[arg(long)]
        json: bool,
        /// Pin the generator and the sink to core 0 and the server (with everything it
        /// starts) to core 1; streamgate then runs one ingest thread.
        #[arg(long)]
        pin: bool,
        /// The SRT callers: native (crates/srt's codec, no thread per publisher) or
        /// libsrt (the system's libsrt.so.1.5, its threads per socket).
        #[arg(long, value_enum, default_value_t = streamgate_bench::srt_bench::Generator::Native)]
        generator: streamgate_bench::srt_bench::Generator,
    },
    /// Two streamgate builds relaying at the same time (N publishers each, one
    /// generator, one sink), in rounds that alternate which starts first: the CPU per
    /// stream-second of each and their ratio, to measure a change to the node.
    Ab {
        /// The build to compare against.
        #[arg(long)]
        base: PathBuf,
        /// The changed build.
        #[arg(long)]
        new: PathBuf,
        #[command(flatten)]
        run: Together,
    },
    /// Servers relaying at the same time (N publishers each, one generator, one
    /// sink), in rounds that rotate their start order: the CPU per stream-second of
    /// each and the ratios of streamgate to each peer within each round. Running them
    /// together, the drift of the machine's load affects them alike.
    Pair {
        /// Comma-separated, as for compare.
        #[arg(long, default_value = "streamgate,nginx")]
        servers: String,
        #[command(flatten)]
        run: Together,
    },
    /// Run only the sink: an RTMP server that accepts relayed publishes and prints
    /// bytes and messages per stream every few seconds (point a relay at it).
    Sink {
        #[arg(long, default_value = "127.0.0.1:19350")]
        listen: String,
        #[arg(long, default_value_t = 5)]
        every_s: u64,
    },
    /// Run only the generator against any RTMP server: one publisher per key.
    Publish {
        /// host:port of the server.
        #[arg(long)]
        addr: String,
        #[arg(long, default_value = "live")]
        app: String,
        /// File with one stream key per line.
        #[arg(long)]
        keys: PathBuf,
        /// FLV file to send (looped); default: the generated 360p media.
        #[arg(long)]
        flv: Option<PathBuf>,
        #[arg(long, default_value_t = 200.0)]
        ramp: f64,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 20)]
        tick_ms: u64,
    },
    /// Connection storm: publishers connecting within `within_ms`.
    Storm {
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        #[arg(long, default_value_t = 1000)]
        within_ms: u64,
        #[arg(long, default_value = "streamgate,nginx")]
        servers: String,
    },
    /// How many channels one thumbnail worker keeps fresh: one run per channel count.
    Thumbs {
        /// Comma-separated channel counts, e.g. 100,200,400.
        #[arg(long, default_value = "100,200")]
        streams: String,
        #[arg(long, value_enum, default_value_t = Profile::P360)]
        profile: Profile,
        /// The thumbnail interval.
        #[arg(long, default_value_t = 10)]
        interval_s: u64,
        /// Measuring window, after every channel has its first thumbnail.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// CPU the node's chunk reader spends per byte of media at each chunk size.
    ChunkCost {
        /// Comma-separated chunk sizes.
        #[arg(long, default_value = "1,16,128,512,4096,60000")]
        sizes: String,
        /// MiB of media read at each size.
        #[arg(long, default_value_t = 64)]
        mib: usize,
    },
    /// Publish-command-to-onStatus latency, cold then warm cache.
    Auth {
        #[arg(long, default_value_t = 300)]
        streams: usize,
        /// Use a private PostgreSQL server (Debian's binaries) instead of SQLite.
        #[arg(long)]
        postgres: bool,
    },
    /// The Postgres load of a fleet, simulated: N nodes x M live channels running the
    /// node's store code at its intervals against a private PostgreSQL.
    FleetLoad {
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Live channels per node.
        #[arg(long, default_value_t = 100)]
        channels: usize,
        #[arg(long, default_value = "10s")]
        heartbeat: humantime::Duration,
        #[arg(long, default_value = "5s")]
        recheck: humantime::Duration,
        #[arg(long, default_value_t = 3)]
        dead_after_beats: u32,
        /// Mean length of a publish session (sets how often channels end and start).
        #[arg(long, default_value = "60m")]
        session: humantime::Duration,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Thousands of publishers are thousands of sockets.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match cli.command {
        Command::ChunkCost { sizes, mib } => {
            let source = FlvSource::load(&media_path(Profile::P360)?)?;
            let sizes: Vec<u32> = sizes
                .split(',')
                .map(|s| s.trim().parse())
                .collect::<Result<_, _>>()?;
            let rows = streamgate_bench::chunk_cost::chunk_cost(&source, &sizes, mib);
            println!(
                "| chunk size | bytes on the wire per MiB of media | ns per media byte | vs 4096 |"
            );
            println!("|---|---|---|---|");
            for r in rows {
                println!(
                    "| {} | {:.0} | {:.3} | {:.2}x |",
                    r.chunk_size,
                    r.wire_bytes as f64 / mib as f64,
                    r.ns_per_media_byte,
                    r.vs_4096
                );
            }
        }
        Command::Thumbs {
            streams,
            profile,
            interval_s,
            seconds,
        } => {
            let source = FlvSource::load(&media_path(profile)?)?;
            let mut rows = Vec::new();
            for n in streams.split(',').filter(|s| !s.is_empty()) {
                let n: usize = n.trim().parse()?;
                eprintln!("{n} channels...");
                let r = streamgate_bench::thumbs::thumbs_run(
                    &source,
                    n,
                    Duration::from_secs(interval_s),
                    Duration::from_secs(seconds),
                )
                .await?;
                println!("{}", serde_json::to_string(&r)?);
                rows.push(r);
            }
            streamgate_bench::thumbs::print_thumbs_table(
                &format!(
                    "thumbnails, one worker, {:?}, interval {interval_s} s, {seconds} s window",
                    profile
                ),
                &rows,
            );
        }
        Command::Compare {
            streams,
            profile,
            ramp,
            seconds,
            servers,
            tick_ms,
            json,
            rounds,
            pin,
        } => {
            if pin {
                streamgate_bench::pin::enable()?;
            }
            let source = Arc::new(FlvSource::load(&media_path(profile)?)?);
            let title = format!(
                "relay, {streams} publishers of {:?} ({} kbps), {seconds} s window{}",
                profile,
                source.bitrate / 1000,
                if pin {
                    ", pinned (generator and sink on core 0, server on core 1)"
                } else {
                    ""
                }
            );
            let kinds = parse_servers(&servers)?;
            let mut all = Vec::new();
            for round in 0..rounds.max(1) {
                let mut rows = Vec::new();
                for i in 0..kinds.len() {
                    let kind = kinds[(i + round) % kinds.len()];
                    eprintln!("round {}: running {} ...", round + 1, kind.name());
                    let r = relay_run(
                        kind,
                        streams,
                        source.clone(),
                        ramp,
                        Duration::from_secs(seconds),
                        Duration::from_millis(tick_ms),
                    )
                    .await?;
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                    }
                    rows.push(r);
                }
                // Back in the order asked for.
                rows.sort_by_key(|r| kinds.iter().position(|k| k.name() == r.server));
                all.push(rows);
            }
            if all.len() == 1 {
                print_table(&title, &all[0]);
            } else {
                streamgate_bench::print_rounds(&title, &all);
            }
        }
        Command::CompareSrt {
            streams,
            profile,
            ramp,
            seconds,
            servers,
            tick_ms,
            rounds,
            json,
            pin,
            generator,
        } => {
            if pin {
                streamgate_bench::pin::enable()?;
            }
            let run = streamgate_bench::srt_bench::Comparison {
                servers: streamgate_bench::srt_bench::SrtServer::parse(&servers)?,
                generator,
                streams,
                media: media_path(profile)?,
                ramp,
                window: Duration::from_secs(seconds),
                tick: Duration::from_millis(tick_ms),
                rounds,
                json,
            };
            run.run(&format!("{profile:?}"), pin).await?;
        }
        Command::Ab { base, new, run } => {
            // The servers run in folders of their own: paths must not be relative.
            let (base, new) = (base.canonicalize()?, new.canonicalize()?);
            let source = run.source()?;
            println!("| round | base ms per stream-s | new ms per stream-s | new / base |");
            println!("|---|---|---|---|");
            let mut ratios = Vec::new();
            for round in 0..run.rounds {
                // Alternate which build starts first (and gets the first ports).
                let swap = round % 2 == 1;
                let bins = if swap { [&new, &base] } else { [&base, &new] };
                let contenders = bins.map(|b| streamgate_bench::Contender::Build(b.clone()));
                let r = run.round(&contenders, &source).await?;
                let (b, n) = if swap { (r[1], r[0]) } else { (r[0], r[1]) };
                ratios.push(n / b);
                println!("| {} | {b:.3} | {n:.3} | {:.3} |", round + 1, n / b);
            }
            let mean = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
            let (lo, hi) = ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
            println!(
                "new / base: mean {mean:.3} (from {lo:.3} to {hi:.3}) over {} rounds",
                run.rounds
            );
        }
        Command::Pair { servers, run } => {
            let source = run.source()?;
            let kinds = parse_servers(&servers)?;
            let names: Vec<String> = kinds.iter().map(|k| k.name()).collect();
            println!(
                "\nside by side, {} publishers of {:?} each ({} servers at once), {} s window",
                run.streams,
                run.profile,
                kinds.len(),
                run.seconds
            );
            println!(
                "| round | {} |",
                names
                    .iter()
                    .map(|n| format!("{n} ms per stream-s"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            println!("|---|{}", "---|".repeat(kinds.len()));
            let mut results: Vec<Vec<f64>> = Vec::new();
            for round in 0..run.rounds {
                // Rotate which server starts first (and gets the first ports).
                let order: Vec<usize> = (0..kinds.len())
                    .map(|i| (i + round) % kinds.len())
                    .collect();
                let contenders: Vec<streamgate_bench::Contender> = order
                    .iter()
                    .map(|&i| streamgate_bench::Contender::Kind(kinds[i]))
                    .collect();
                let r = run.round(&contenders, &source).await?;
                let mut by_kind = vec![0.0; kinds.len()];
                for (j, &i) in order.iter().enumerate() {
                    by_kind[i] = r[j];
                }
                println!(
                    "| {} | {} |",
                    round + 1,
                    by_kind
                        .iter()
                        .map(|v| format!("{v:.3}"))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
                results.push(by_kind);
            }
            for (a, an) in names.iter().enumerate() {
                if !an.starts_with("streamgate") {
                    continue;
                }
                for (b, bn) in names.iter().enumerate() {
                    if bn.starts_with("streamgate") {
                        continue;
                    }
                    let v = results.iter().map(|r| r[a] / r[b]).collect();
                    streamgate_bench::print_ratio("ratio", an, bn, v);
                }
            }
        }
        Command::Sink { listen, every_s } => {
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            let sink = Arc::new(Sink::default());
            eprintln!("sink listening on {}", listener.local_addr()?);
            tokio::spawn(sink.clone().serve(listener));
            let mut last = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(every_s)).await;
                let (streams, bytes) = sink.totals();
                println!(
                    "streams receiving: {streams}, total {:.1} MB, {:.1} Mbps over the last {every_s} s",
                    bytes as f64 / 1e6,
                    (bytes - last) as f64 * 8.0 / every_s as f64 / 1e6
                );
                last = bytes;
            }
        }
        Command::Publish {
            addr,
            app,
            keys,
            flv,
            ramp,
            seconds,
            tick_ms,
        } => {
            let path = match flv {
                Some(p) => p,
                None => media_path(Profile::P360)?,
            };
            let source = Arc::new(FlvSource::load(&path)?);
            let addr: std::net::SocketAddr = tokio::net::lookup_host(&addr)
                .await?
                .next()
                .ok_or_else(|| anyhow::anyhow!("{addr} does not resolve"))?;
            let keys: Vec<String> = std::fs::read_to_string(&keys)?
                .lines()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(String::from)
                .collect();
            let stats = Arc::new(GeneratorStats::default());
            let gap = Duration::from_secs_f64(1.0 / ramp.max(1.0));
            let stop_at = Instant::now() + gap * keys.len() as u32 + Duration::from_secs(seconds);
            let mut handles = Vec::new();
            for (i, key) in keys.into_iter().enumerate() {
                let spec = streamgate_bench::publisher::PublisherSpec {
                    addr,
                    app: app.clone(),
                    key,
                    tick: Duration::from_millis(tick_ms),
                    stop_at,
                };
                let (source, stats) = (source.clone(), stats.clone());
                let log = Arc::new(streamgate_bench::publisher::SendLog::default());
                handles.push(tokio::spawn(async move {
                    tokio::time::sleep(gap * i as u32).await;
                    streamgate_bench::publisher::run(spec, source, stats, log).await;
                }));
            }
            let me = std::process::id();
            let cpu0 = stats::cpu_seconds(me);
            let t0 = Instant::now();
            for h in handles {
                let _ = h.await;
            }
            let (_, a50, a99, _) = stats.auth_latency.summary();
            println!(
                "publishers ok {}, failed {}; sent {:.1} MB; auth p50 {a50:.1} ms p99 {a99:.1} ms; generator CPU {:.1} %",
                stats.connected.load(Ordering::Relaxed),
                stats.failed.load(Ordering::Relaxed),
                stats.bytes_sent.load(Ordering::Relaxed) as f64 / 1e6,
                (stats::cpu_seconds(me) - cpu0) / t0.elapsed().as_secs_f64() * 100.0
            );
        }
        Command::Storm {
            streams,
            within_ms,
            servers,
        } => {
            let source = Arc::new(FlvSource::load(&media_path(Profile::P360)?)?);
            println!("\nconnection storm: {streams} publishers within {within_ms} ms");
            println!("| server | publishing / failed | time until all publishing s | auth p50 / p99 ms | server RSS MiB after |");
            println!("|---|---|---|---|---|");
            for kind in parse_servers(&servers)? {
                let (listener, sink) = Sink::bind().await?;
                let sink_port = listener.local_addr()?.port();
                tokio::spawn(sink.clone().serve(listener));
                let server = Server::start(kind, streams, Some(sink_port)).await?;
                let stats = Arc::new(GeneratorStats::default());
                let rate = streams as f64 * 1000.0 / within_ms.max(1) as f64;
                let t0 = Instant::now();
                let stop_at = t0 + Duration::from_secs(15);
                let handles = start_publishers(
                    &server,
                    &source,
                    &sink,
                    &stats,
                    rate,
                    Duration::from_millis(100),
                    stop_at,
                );
                let mut all_up = None;
                while Instant::now() < stop_at {
                    let done = stats.connected.load(Ordering::Relaxed)
                        + stats.failed.load(Ordering::Relaxed);
                    if done as usize >= streams {
                        all_up = Some(t0.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let rss = stats::rss_kib(server.pid) as f64 / 1024.0;
                for h in handles {
                    let _ = h.await;
                }
                server.stop();
                let (_, a50, a99, _) = stats.auth_latency.summary();
                println!(
                    "| {} | {}/{} | {} | {:.1} / {:.1} | {:.1} |",
                    kind.name(),
                    stats.connected.load(Ordering::Relaxed),
                    stats.failed.load(Ordering::Relaxed),
                    all_up.map_or("not all".into(), |d| format!("{:.2}", d.as_secs_f64())),
                    a50,
                    a99,
                    rss
                );
            }
        }
        Command::FleetLoad {
            nodes,
            channels,
            heartbeat,
            recheck,
            dead_after_beats,
            session,
            seconds,
        } => {
            streamgate_bench::fleet::run(streamgate_bench::fleet::FleetLoad {
                nodes,
                channels_per_node: channels,
                heartbeat: heartbeat.into(),
                recheck: recheck.into(),
                dead_after_beats,
                session: session.into(),
                warmup: std::cmp::max(Duration::from(heartbeat), Duration::from(recheck)),
                window: Duration::from_secs(seconds),
            })
            .await?
            .print();
        }
        Command::Auth { streams, postgres } => {
            let source = Arc::new(FlvSource::load(&media_path(Profile::P360)?)?);
            let pg = if postgres {
                Some(servers::PrivatePostgres::start()?)
            } else {
                None
            };
            let server = Server::start_streamgate(streams, None, pg.as_ref(), None).await?;
            let (listener, sink) = Sink::bind().await?;
            tokio::spawn(sink.clone().serve(listener));
            println!(
                "\nauth latency, publish command to onStatus, {streams} publishers, {}",
                if postgres {
                    "Postgres on loopback"
                } else {
                    "SQLite"
                }
            );
            println!("| cache | samples | p50 ms | p99 ms | max ms |");
            println!("|---|---|---|---|---|");
            for round in ["cold (first use of each key)", "warm (same keys again)"] {
                let stats = Arc::new(GeneratorStats::default());
                let stop_at = Instant::now()
                    + Duration::from_secs(2)
                    + Duration::from_secs_f64(streams as f64 / 200.0);
                let handles = start_publishers(
                    &server,
                    &source,
                    &sink,
                    &stats,
                    200.0,
                    Duration::from_millis(100),
                    stop_at,
                );
                for h in handles {
                    let _ = h.await;
                }
                let (n, p50, p99, max) = stats.auth_latency.summary();
                println!("| {round} | {n} | {p50:.2} | {p99:.2} | {max:.2} |");
            }
            server.stop();
            drop(pg);
        }
    }
    Ok(())
}
