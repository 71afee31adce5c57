//! Thumbnail capacity: how many channels one decoder worker keeps fresh at a given
//! interval. streamgate runs with `thumbnails.workers = 1`; each of N publishers sends
//! its stream's sequence header and then one of the file's real keyframes every GOP
//! (what the thumbnailer reads; the frames between keyframes never reach it, so they
//! are left out to keep the generator's own load small). The API's
//! `thumbnail_updated_at` of every channel is read once a second; the gaps between a
//! channel's successive thumbnails show whether it is kept fresh.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtmp::message::MSG_VIDEO;
use rtmp::ClientConfig;
use rtmp_io::{Publisher, PublisherOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::flv_source::FlvSource;
use crate::servers::Server;
use crate::stats;

/// Keyframe spacing the publishers keep (the generated media's GOP: 60 frames at 30 fps).
const GOP: Duration = Duration::from_secs(2);

/// Result of one run.
#[derive(Debug, serde::Serialize)]
pub struct ThumbOutcome {
    pub channels: usize,
    pub interval_s: f64,
    pub window_s: f64,
    /// Channels that got at least one thumbnail before the window started.
    pub with_thumbnail: usize,
    /// Thumbnails written per second during the window.
    pub thumbnails_per_s: f64,
    /// Gaps between a channel's successive thumbnails in the window, seconds.
    pub gap_p50_s: f64,
    pub gap_p95_s: f64,
    pub gap_max_s: f64,
    /// Channels whose every gap in the window (and the time since their last
    /// thumbnail at its end) was within the interval plus one second. While the worker
    /// keeps up, turns stay on the interval's grid whatever the keyframe spacing.
    pub fresh_channels: usize,
    /// CPU of the worker process and of the node, percent of one core.
    pub worker_cpu_percent: f64,
    pub node_cpu_percent: f64,
    /// Worker CPU per thumbnail, milliseconds.
    pub worker_ms_per_thumbnail: f64,
}

/// The tags a thumbnail needs: the AVC sequence header and the file's keyframes.
fn keyframe_tags(source: &FlvSource) -> anyhow::Result<(Bytes, Vec<Bytes>)> {
    let is_avc = |b: &Bytes| b.first().is_some_and(|f| f & 0x0f == 7) && b.len() > 1;
    let seq = source
        .tags
        .iter()
        .find(|t| t.type_id == MSG_VIDEO && is_avc(&t.body) && t.body[1] == 0)
        .map(|t| t.body.clone())
        .ok_or_else(|| anyhow::anyhow!("the media has no AVC sequence header"))?;
    let keyframes: Vec<Bytes> = source
        .tags
        .iter()
        .filter(|t| t.keyframe && is_avc(&t.body) && t.body[1] == 1)
        .map(|t| t.body.clone())
        .collect();
    anyhow::ensure!(!keyframes.is_empty(), "the media has no keyframes");
    Ok((seq, keyframes))
}

/// One channel's publisher: sequence header, then a keyframe every GOP until `stop`.
async fn publish_keyframes(
    addr: SocketAddr,
    key: String,
    seq: Bytes,
    keyframes: Arc<Vec<Bytes>>,
    offset: usize,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let config = ClientConfig::new("live", &format!("rtmp://{addr}/live"), &key);
    let mut p = Publisher::publish(sock, config, PublisherOptions::default()).await?;
    p.send_media(MSG_VIDEO, 0, seq);
    let mut tick = tokio::time::interval(GOP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u32.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let frame = keyframes[(offset + n as usize) % keyframes.len()].clone();
        p.send_media(MSG_VIDEO, n * GOP.as_millis() as u32, frame);
        p.flush().await?;
        p.poll_incoming().await?;
    }
    p.finish().await?;
    Ok(())
}

/// `thumbnail_updated_at` of every listed stream, by channel id.
async fn thumbnail_times(http: SocketAddr) -> anyhow::Result<HashMap<String, String>> {
    let mut s = TcpStream::connect(http).await?;
    s.write_all(b"GET /api/v1/streams HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP head"))?;
    let v: serde_json::Value = serde_json::from_slice(&raw[split + 4..])?;
    let mut out = HashMap::new();
    for st in v["streams"].as_array().into_iter().flatten() {
        if let (Some(id), Some(at)) = (
            st["channel_id"].as_str(),
            st["thumbnail_updated_at"].as_str(),
        ) {
            out.insert(id.to_string(), at.to_string());
        }
    }
    Ok(out)
}

/// CPU seconds of the node's thumbnail worker processes.
fn worker_cpu_seconds(node_pid: u32) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent pid is the 4th field, after the parenthesised command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(node_pid) && String::from_utf8_lossy(&cmdline).contains("thumbnail-worker")
        })
        .map(stats::cpu_seconds)
        .sum()
}

/// Runs `n` channels against a node with one thumbnail worker at `interval`; measures
/// for `window` once every channel has a first thumbnail (or a minute passed).
pub async fn thumbs_run(
    source: &FlvSource,
    n: usize,
    interval: Duration,
    window: Duration,
) -> anyhow::Result<ThumbOutcome> {
    let (seq, keyframes) = keyframe_tags(source)?;
    let keyframes = Arc::new(keyframes);
    let settings = format!(
        "dir = \"thumbs\"\ninterval = \"{}ms\"\nworkers = 1\n",
        interval.as_millis()
    );
    let server = Server::start_streamgate(n, None, None, Some(&settings)).await?;
    let http = server
        .http_addr
        .ok_or_else(|| anyhow::anyhow!("no HTTP address"))?;
    let stop = CancellationToken::new();
    let mut publishers = Vec::new();
    for (i, ch) in server.channels.iter().enumerate() {
        publishers.push(tokio::spawn(publish_keyframes(
            server.rtmp_addr,
            ch.key.clone(),
            seq.clone(),
            keyframes.clone(),
            i,
            stop.clone(),
        )));
        // Spread the starts (and so the keyframes) over one GOP.
        tokio::time::sleep(GOP / n.max(1) as u32).await;
    }
    // Warm-up: until every channel has a thumbnail, at most a minute.
    let warm = Instant::now();
    let mut times = thumbnail_times(http).await?;
    while times.len() < n && warm.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        times = thumbnail_times(http).await?;
    }
    let with_thumbnail = times.len();
    let (worker0, node0) = (
        worker_cpu_seconds(server.pid),
        stats::cpu_seconds(server.pid),
    );
    let t0 = Instant::now();
    let mut seen: HashMap<String, Vec<String>> =
        times.into_iter().map(|(id, at)| (id, vec![at])).collect();
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (id, at) in thumbnail_times(http).await? {
            let list = seen.entry(id).or_default();
            if list.last() != Some(&at) {
                list.push(at);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let window_end = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let (worker1, node1) = (
        worker_cpu_seconds(server.pid),
        stats::cpu_seconds(server.pid),
    );
    stop.cancel();
    for p in publishers {
        let _ = p.await;
    }
    server.stop();

    let parse = |s: &String| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis() as f64 / 1000.0)
            .unwrap_or(0.0)
    };
    let limit = (interval + Duration::from_secs(1)).as_secs_f64();
    let mut gaps = Vec::new();
    let mut fresh_channels = 0;
    let mut written = 0usize;
    for list in seen.values() {
        let t: Vec<f64> = list.iter().map(parse).collect();
        // The first entry is the thumbnail seen when the window opened.
        written += t.len().saturating_sub(1);
        let mine: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        // Since its last thumbnail: a channel that stopped being refreshed is stale.
        let tail = t.last().map_or(f64::INFINITY, |last| window_end - last);
        if !mine.is_empty() && mine.iter().all(|g| *g <= limit) && tail <= limit {
            fresh_channels += 1;
        }
        gaps.extend(mine);
    }
    gaps.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if gaps.is_empty() {
            f64::NAN
        } else {
            gaps[((gaps.len() - 1) as f64 * p).round() as usize]
        }
    };
    let worker_cpu = worker1 - worker0;
    Ok(ThumbOutcome {
        channels: n,
        interval_s: interval.as_secs_f64(),
        window_s: secs,
        with_thumbnail,
        thumbnails_per_s: written as f64 / secs,
        gap_p50_s: pct(0.5),
        gap_p95_s: pct(0.95),
        gap_max_s: gaps.last().copied().unwrap_or(f64::NAN),
        fresh_channels,
        worker_cpu_percent: worker_cpu / secs * 100.0,
        node_cpu_percent: (node1 - node0) / secs * 100.0,
        worker_ms_per_thumbnail: worker_cpu * 1000.0 / written.max(1) as f64,
    })
}

pub fn print_thumbs_table(title: &str, rows: &[ThumbOutcome]) {
    println!("\n{title}");
    println!(
        "| channels | with a thumbnail | fresh (every gap ≤ interval + 1 s) | thumbnails/s | gap p50 / p95 / max s | worker CPU % | worker ms per thumbnail | node CPU % |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} / {:.1} / {:.1} | {:.1} | {:.2} | {:.1} |",
            r.channels,
            r.with_thumbnail,
            r.fresh_channels,
            r.thumbnails_per_s,
            r.gap_p50_s,
            r.gap_p95_s,
            r.gap_max_s,
            r.worker_cpu_percent,
            r.worker_ms_per_thumbnail,
            r.node_cpu_percent
        );
    }
}
