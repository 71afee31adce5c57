//! Thumbnails end to end: real ffmpeg publishes and decodes, ffprobe checks the JPEGs;
//! HEVC arrives as Enhanced RTMP tags built from real x265 output; corrupt frames, a
//! hanging decoder and a missing ffmpeg are survived.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn thumb_path(node: &Node, channel_id: &str) -> PathBuf {
    use md5::{Digest, Md5};
    node.dir.0.join("thumbs").join(format!(
        "{}.jpg",
        hex::encode(Md5::digest(channel_id.as_bytes()))
    ))
}

fn thumbs_config(extra: &str) -> String {
    format!("[thumbnails]\ndir = \"thumbs\"\nwidth = 320\ninterval = \"2s\"\n{extra}")
}

fn md5_of(path: &std::path::Path) -> Option<String> {
    use md5::{Digest, Md5};
    std::fs::read(path)
        .ok()
        .map(|b| hex::encode(Md5::digest(&b)))
}

#[test]
fn worker_thumbnail_follows_the_first_keyframe_is_a_jpeg_of_the_width_and_refreshes() {
    thumbnail_cycle("worker");
}

#[test]
fn ffmpeg_thumbnail_follows_the_first_keyframe_is_a_jpeg_of_the_width_and_refreshes() {
    thumbnail_cycle("ffmpeg");
}

fn thumbnail_cycle(decoder: &str) {
    let node = Node::start(&thumbs_config(&format!("decoder = \"{decoder}\"\n")));
    let (id, key) = node.create_channel("thumbed");
    let path = thumb_path(&node, &id);
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "1280x720", 10);
    wait_listed(&node, &id, Duration::from_secs(10));
    // Within a scheduler tick of the first keyframe on an idle machine; a loaded CI
    // machine running the encoder too gets more room.
    wait_for(Duration::from_secs(15), || path.exists().then_some(())).unwrap_or_else(|| {
        panic!(
            "no thumbnail within 15 s of the first keyframe:\n{}",
            node.transcript.text()
        )
    });

    let streams = ffprobe_streams(&path);
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(
        (streams[0].1.as_str(), streams[0].2, streams[0].3),
        ("mjpeg", Some(320), Some(180))
    );

    // The test pattern moves: the next interval's image differs.
    let first = md5_of(&path).unwrap();
    let second = wait_for(Duration::from_secs(15), || {
        md5_of(&path).filter(|h| *h != first)
    })
    .expect("thumbnail content changes across intervals");
    assert_ne!(first, second);
    let s = node.stream(&id).unwrap();
    assert_eq!(
        s["thumbnail_url"],
        format!("/thumbs/{}", path.file_name().unwrap().to_string_lossy())
    );
    assert!(s["thumbnail_updated_at"].is_string(), "{s}");

    // Served over HTTP with the headers a website needs.
    let url = s["thumbnail_url"].as_str().unwrap().to_string();
    let (status, head, body) = node.http_get(&url);
    assert_eq!(status, 200);
    let head = head.to_ascii_lowercase();
    for h in [
        "content-type: image/jpeg",
        "cache-control: no-store, no-cache, must-revalidate, max-age=0",
        "access-control-allow-origin: *",
        "etag: \"",
        "last-modified: ",
    ] {
        assert!(head.contains(h), "missing {h:?} in:\n{head}");
    }
    assert_eq!(&body[..2], &[0xFF, 0xD8]);

    assert!(
        ff.wait(Duration::from_secs(20)).expect("done").success(),
        "{}",
        ff.stderr()
    );
    wait_for(Duration::from_secs(5), || {
        node.stream(&id).is_none().then_some(())
    })
    .expect("offline");
    assert!(
        path.exists(),
        "the last thumbnail stays after the stream ends"
    );
    node.assert_never_printed(&key);
}

#[test]
fn http_serves_no_traversal_and_answers_conditional_requests() {
    let node = Node::start(&thumbs_config(""));
    let (id, key) = node.create_channel("cond");
    let path = thumb_path(&node, &id);
    let _ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 20);
    wait_for(Duration::from_secs(10), || path.exists().then_some(())).expect("thumbnail");
    std::fs::write(node.dir.0.join("thumbs").join("secret.txt"), "do not serve").unwrap();
    for bad in [
        "/thumbs/../streamgate.toml",
        "/thumbs/..%2fstreamgate.toml",
        "/thumbs/%2e%2e/streamgate.toml",
        "/thumbs/secret.txt",
        "/thumbs/..%2f..%2f..%2fetc%2fpasswd",
        "/thumbs/",
    ] {
        let (status, _, body) = node.http_get(bad);
        assert!(status == 404 || status == 400, "{bad} -> {status}");
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("do not serve") && !body.contains("[database]"),
            "{bad} leaked: {body}"
        );
    }
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let (_, head, _) = node.http_get(&format!("/thumbs/{name}"));
    let etag = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("etag:")
                .then(|| l[5..].trim().to_string())
        })
        .expect("etag");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).unwrap();
    use std::io::{Read, Write};
    write!(s, "GET /thumbs/{name} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    // The file may have been refreshed in between; then a 200 with a new ETag is right.
    assert!(
        answer.starts_with("HTTP/1.1 304") || !answer.contains(&etag),
        "{answer}"
    );
}

#[test]
fn hevc_over_enhanced_rtmp_gets_a_thumbnail() {
    let (seq, key_frame) = hevc_tags("640x360");
    let node = Node::start(&thumbs_config(""));
    let (id, key) = node.create_channel("hevc");
    let mut p = RawPublisher::publish(node.rtmp_port, "live", &key).expect("publish");
    p.send(9, 0, &seq);
    for i in 0..6u32 {
        p.send(9, i * 500, &key_frame);
        std::thread::sleep(Duration::from_millis(500));
    }
    let path = thumb_path(&node, &id);
    wait_for(Duration::from_secs(5), || path.exists().then_some(()))
        .unwrap_or_else(|| panic!("no HEVC thumbnail:\n{}", node.transcript.text()));
    let streams = ffprobe_streams(&path);
    assert_eq!(
        (streams[0].1.as_str(), streams[0].2, streams[0].3),
        ("mjpeg", Some(320), Some(180))
    );
    let s = node.stream(&id).unwrap();
    assert_eq!(s["video_codec"], "hevc");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(640), Some(360)),
        "size from the HEVC SPS"
    );
    node.assert_never_printed(&key);
}

/// The FLV video tags of one real x264 keyframe: the sequence header (avcC) and the
/// keyframe, plus the keyframe's IDR slice (for tests that damage it).
fn h264_tags(size: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let annexb = encode_one_frame("libx264", "h264", size);
    let nals = nal_units(&annexb);
    let sps = nals.iter().find(|n| n[0] & 0x1f == 7).unwrap();
    let pps = nals.iter().find(|n| n[0] & 0x1f == 8).unwrap();
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    let mut seq = vec![0x17, 0, 0, 0, 0];
    seq.extend_from_slice(&avcc);
    let idr = nals.iter().find(|n| n[0] & 0x1f == 5).unwrap().clone();
    let mut frame = vec![0x17, 1, 0, 0, 0];
    frame.extend_from_slice(&length_prefixed(&[&idr]));
    (seq, frame, idr)
}

#[test]
fn a_corrupt_keyframe_is_a_logged_failure_not_a_crash() {
    let (seq, _, mut idr) = h264_tags("320x240");
    // The IDR slice with every byte after its header flipped.
    for b in idr.iter_mut().skip(1) {
        *b = !*b;
    }
    let mut frame = vec![0x17, 1, 0, 0, 0];
    frame.extend_from_slice(&length_prefixed(&[&idr]));

    let node = Node::start(&thumbs_config(""));
    let (id, key) = node.create_channel("corrupt");
    let mut p = RawPublisher::publish(node.rtmp_port, "live", &key).expect("publish");
    p.send(9, 0, &seq);
    p.send(9, 0, &frame);
    wait_for(Duration::from_secs(8), || {
        node.transcript.contains("thumbnail failed").then_some(())
    })
    .unwrap_or_else(|| panic!("failure not logged:\n{}", node.transcript.text()));
    let line = node
        .transcript
        .text()
        .lines()
        .find(|l| l.contains("thumbnail failed"))
        .unwrap()
        .to_string();
    assert!(line.contains(&id), "logged with the channel id: {line}");
    assert!(!thumb_path(&node, &id).exists());
    // The node and this publish are fine.
    assert_eq!(node.http_get("/healthz").0, 200);
    assert!(node.stream(&id).is_some());
    p.send(9, 40, &frame);
    assert!(node.stream(&id).is_some());
    node.assert_never_printed(&key);
}

#[test]
fn a_hanging_ffmpeg_is_killed_at_the_deadline() {
    let dir = TempDir::new("fake-ffmpeg");
    let pid_file = dir.0.join("pid");
    let fake = write_file(
        &dir.0,
        "ffmpeg",
        &format!(
            "#!/bin/sh\nif [ \"$1\" = \"-version\" ]; then echo 'ffmpeg version fake'; exit 0; fi\n\
             env > {env}\ncat /proc/$$/limits > {limits}\necho $$ >> {pid}\nexec sleep 60\n",
            env = dir.0.join("env").display(),
            limits = dir.0.join("limits").display(),
            pid = pid_file.display()
        ),
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let node = Node::start(&thumbs_config(&format!(
        "decoder = \"ffmpeg\"\nffmpeg = \"{}\"\ntimeout = \"1s\"\n",
        fake.display()
    )));
    let (id, key) = node.create_channel("hang");
    let _ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 20);
    wait_listed(&node, &id, Duration::from_secs(10));
    wait_for(Duration::from_secs(8), || {
        node.transcript.contains("was killed").then_some(())
    })
    .unwrap_or_else(|| panic!("no deadline kill logged:\n{}", node.transcript.text()));
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    // Killed and reaped: the process is gone, not a zombie.
    wait_for(Duration::from_secs(3), || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .unwrap_or_else(|| panic!("decoder {pid} still exists"));
    assert!(node.stream(&id).is_some(), "ingest unaffected");
    // It ran with nothing of the node's environment (which has the test runner's
    // CARGO_* variables), and under the decoder limits.
    let env = std::fs::read_to_string(dir.0.join("env")).unwrap();
    assert!(env.contains("PATH="), "{env}");
    assert!(
        !env.contains("CARGO"),
        "the environment was not cleared:\n{env}"
    );
    let limits = std::fs::read_to_string(dir.0.join("limits")).unwrap();
    let limit = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| w.parse::<u64>().is_ok())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    assert_eq!(
        limit("Max address space"),
        "1073741824 1073741824",
        "{limits}"
    );
    assert_eq!(limit("Max cpu time"), "1 2", "{limits}");
    node.assert_never_printed(&key);
}

#[test]
fn without_ffmpeg_the_node_still_ingests_and_relays() {
    let nginx = Nginx::start(&["live"], None);
    let node = Node::start(&format!(
        "{}\n[relay]\ntargets = [\"rtmp://127.0.0.1:{}/live/{{channel_id}}\"]\n",
        thumbs_config("decoder = \"ffmpeg\"\nffmpeg = \"/nonexistent/bin/ffmpeg\"\n"),
        nginx.port
    ));
    let warnings = node
        .transcript
        .text()
        .matches("thumbnails disabled")
        .count();
    assert_eq!(
        warnings,
        1,
        "one clear warning at start:\n{}",
        node.transcript.text()
    );
    let (id, key) = node.create_channel("no-thumbs");
    let _ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 10);
    wait_listed(&node, &id, Duration::from_secs(10));
    nginx.wait_playlist("live", &id, Duration::from_secs(15));
    assert!(!thumb_path(&node, &id).exists());
    assert_eq!(
        node.transcript
            .text()
            .matches("thumbnails disabled")
            .count(),
        1,
        "warned once only"
    );
    node.assert_never_printed(&key);
}

#[test]
fn without_ffmpeg_the_worker_still_makes_h264_thumbnails() {
    let node = Node::start(&thumbs_config("ffmpeg = \"/nonexistent/bin/ffmpeg\"\n"));
    assert!(
        node.transcript.contains("thumbnails only for H.264"),
        "{}",
        node.transcript.text()
    );
    let (id, key) = node.create_channel("worker-only");
    let path = thumb_path(&node, &id);
    let _ff = ffmpeg_publish(&node.publish_url(&key), "640x480", 10);
    wait_for(Duration::from_secs(10), || path.exists().then_some(()))
        .expect("thumbnail by the worker");
    let streams = ffprobe_streams(&path);
    assert_eq!(
        (streams[0].1.as_str(), streams[0].2, streams[0].3),
        ("mjpeg", Some(320), Some(240))
    );
    node.assert_never_printed(&key);
}

#[test]
fn deleting_a_channel_removes_its_thumbnail() {
    let node = Node::start(&(thumbs_config("") + "\n[auth]\nrecheck_interval = \"1s\"\n"));
    let (id, key) = node.create_channel("doomed");
    let path = thumb_path(&node, &id);
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 30);
    wait_for(Duration::from_secs(10), || path.exists().then_some(())).expect("thumbnail");
    node.cli(&["channel", "delete", &id]);
    ff.wait(Duration::from_secs(6))
        .expect("publish of a deleted channel ended");
    wait_for(Duration::from_secs(10), || (!path.exists()).then_some(()))
        .expect("thumbnail of a deleted channel removed");
    node.assert_never_printed(&key);
}

/// PSNR (average over planes, dB) of two images, by ffmpeg.
fn psnr(a: &std::path::Path, b: &std::path::Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-i"])
        .arg(a)
        .arg("-i")
        .arg(b)
        .args(["-lavfi", "psnr", "-f", "null", "-"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let avg = text
        .split("average:")
        .nth(1)
        .unwrap_or_else(|| panic!("no PSNR in: {text}"));
    avg.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn worker_pictures_match_ffmpeg_reference() {
    use std::io::Write;
    let dir = TempDir::new("quality");
    for size in ["1280x720", "1366x768", "640x480"] {
        // x264's default High profile (CABAC, 8x8 transforms), as OBS sends.
        let frame = encode_one_frame("libx264", "h264", size);
        let mut req = b"SGT1".to_vec();
        req.extend_from_slice(&((frame.len() + 3) as u32).to_be_bytes());
        req.extend_from_slice(&320u16.to_be_bytes());
        req.push(90);
        req.extend_from_slice(&frame);
        let mut worker = Command::new(bin())
            .arg("thumbnail-worker")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        worker.stdin.take().unwrap().write_all(&req).unwrap();
        let out = worker.wait_with_output().unwrap();
        assert_eq!(
            out.stdout[0],
            0,
            "worker error: {}",
            String::from_utf8_lossy(&out.stdout[5..])
        );
        let ours = dir.0.join(format!("worker-{size}.jpg"));
        std::fs::write(&ours, &out.stdout[5..]).unwrap();
        let raw = dir.0.join(format!("{size}.h264"));
        std::fs::write(&raw, &frame).unwrap();
        let reference = dir.0.join(format!("ffmpeg-{size}.jpg"));
        let (w, h) = size.split_once('x').unwrap();
        let (w, h): (f64, f64) = (w.parse().unwrap(), h.parse().unwrap());
        let expect_h = ((h * 320.0 / w).round() as u64) & !1;
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&raw)
            .args([
                "-frames:v",
                "1",
                "-vf",
                &format!("scale=320:{expect_h}"),
                "-q:v",
                "2",
            ])
            .arg(&reference)
            .status()
            .unwrap();
        assert!(status.success());
        let streams = ffprobe_streams(&ours);
        assert_eq!(
            (streams[0].2, streams[0].3),
            (Some(320), Some(expect_h)),
            "{size}"
        );
        let db = psnr(&ours, &reference);
        assert!(
            db > 30.0,
            "{size}: worker thumbnail differs from ffmpeg's: PSNR {db:.1} dB"
        );
    }
}

#[test]
fn what_the_worker_cannot_decode_falls_back_to_ffmpeg() {
    // 10-bit H.264 (High 10): outside openh264, within ffmpeg.
    let node = Node::start(&thumbs_config(""));
    let (id, key) = node.create_channel("ten-bit");
    let path = thumb_path(&node, &id);
    let _ff = ffmpeg_publish_pix(&node.publish_url(&key), "640x360", 10, "yuv420p10le");
    wait_for(Duration::from_secs(10), || path.exists().then_some(())).unwrap_or_else(|| {
        panic!(
            "no thumbnail for a 10-bit stream:\n{}",
            node.transcript.text()
        )
    });
    let streams = ffprobe_streams(&path);
    assert_eq!(
        (streams[0].1.as_str(), streams[0].2, streams[0].3),
        ("mjpeg", Some(320), Some(180))
    );
    assert!(
        node.transcript.contains("trying ffmpeg"),
        "the worker declined first:\n{}",
        node.transcript.text()
    );
    node.assert_never_printed(&key);
}

/// Channels in the many-channels test.
const MANY: usize = 300;

/// Every one of a few hundred live channels gets its first thumbnail, and then a fresh
/// one every interval: no channel starves behind the others. (The old scheduler
/// started at most `workers` decodes per 500 ms tick, always walking the streams in
/// the same order: most channels never got a thumbnail.)
#[test]
fn hundreds_of_channels_each_get_a_thumbnail_and_a_fresh_one_every_interval() {
    let interval = Duration::from_secs(4);
    // Every publisher comes from 127.0.0.1: the per-address caps must let them in.
    let node = Node::start(&format!(
        "[thumbnails]\ndir = \"thumbs\"\nwidth = 160\ninterval = \"{}s\"\nworkers = 2\n\
         [rtmp]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_address = 400\nmax_pending_per_address = 400\n",
        interval.as_secs()
    ));
    let (seq, frame, _) = h264_tags("160x96");
    // Channels straight into the node's SQLite file (the CLI once per channel is slow).
    let keys: Vec<(String, String)> = {
        let db = rusqlite::Connection::open(node.db_path()).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        (0..MANY)
            .map(|i| {
                let id = uuid::Uuid::new_v4().to_string();
                let key = streamgate::key::StreamKey::generate();
                db.execute(
                    "INSERT INTO channels (id, name, stream_key_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                    (&id, format!("many-{i:03}"), key.sha256_hex(), "2026-01-01T00:00:00Z"),
                )
                .unwrap();
                (id, key.expose().to_string())
            })
            .collect()
    };
    // One publisher task per channel: the sequence header, then a keyframe a second.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let port = node.rtmp_port;
    let publishers: Vec<_> = keys
        .iter()
        .map(|(_, key)| {
            let (key, seq, frame, stop) = (key.clone(), seq.clone(), frame.clone(), stop.clone());
            runtime.spawn(async move {
                let sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let tc_url = format!("rtmp://127.0.0.1:{port}/live");
                let config = rtmp::ClientConfig::new("live", &tc_url, &key);
                let mut p = rtmp_io::Publisher::publish(sock, config, Default::default()).await?;
                p.send_media(9, 0, bytes::Bytes::from(seq));
                let frame = bytes::Bytes::from(frame);
                let mut ts = 0u32;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return p.finish().await,
                        _ = tick.tick() => {}
                    }
                    p.send_media(9, ts, frame.clone());
                    p.flush().await?;
                    p.poll_incoming().await?;
                    ts += 1000;
                }
            })
        })
        .collect();

    // Watch the API: every refresh of every channel's thumbnail, as first seen.
    let started = Instant::now();
    let mut seen: std::collections::HashMap<String, Vec<(String, Instant)>> = Default::default();
    let deadline = started + Duration::from_secs(40) + interval * 4;
    let mut all_first_at = None;
    while Instant::now() < deadline {
        for s in node.streams() {
            let id = s["channel_id"].as_str().unwrap().to_string();
            if let Some(at) = s["thumbnail_updated_at"].as_str() {
                let refreshes = seen.entry(id).or_default();
                if refreshes.last().is_none_or(|(last, _)| last != at) {
                    refreshes.push((at.to_string(), Instant::now()));
                }
            }
        }
        if all_first_at.is_none() && seen.len() == MANY {
            all_first_at = Some(Instant::now());
        }
        // Observe four intervals once everyone has a first thumbnail.
        if all_first_at.is_some_and(|t| t.elapsed() > interval * 4) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.cancel();
    for p in publishers {
        runtime
            .block_on(p)
            .unwrap()
            .unwrap_or_else(|e| panic!("a publisher failed: {e}"));
    }
    let first_all = all_first_at.unwrap_or_else(|| {
        panic!(
            "only {} of {MANY} channels got a thumbnail in {:?}",
            seen.len(),
            started.elapsed()
        )
    });
    let window_start = first_all;
    let window_end = first_all + interval * 4;
    for (id, _) in &keys {
        let refreshes = &seen[id];
        let in_window: Vec<Instant> = refreshes
            .iter()
            .map(|(_, t)| *t)
            .filter(|t| *t > window_start && *t <= window_end)
            .collect();
        assert!(
            in_window.len() >= 3,
            "channel {id}: {} refreshes in four intervals: {refreshes:?}",
            in_window.len()
        );
        let times: Vec<Instant> = refreshes.iter().map(|(_, t)| *t).collect();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            // One interval, plus the API polling period, plus slack for a loaded CI.
            assert!(
                gap <= interval * 2,
                "channel {id}: {gap:?} between two thumbnails"
            );
        }
        assert!(thumb_path(&node, id).exists());
    }
}

/// The long-lived worker too: a cleared environment, and limits.
#[test]
fn the_worker_runs_with_a_cleared_environment_and_limits() {
    let node = Node::start(&thumbs_config("decoder_memory_mib = 512\n"));
    let (id, key) = node.create_channel("sandboxed");
    let path = thumb_path(&node, &id);
    let _ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 10);
    wait_for(Duration::from_secs(15), || path.exists().then_some(())).expect("thumbnail");
    let node_pid = node.pid();
    let worker = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(node_pid) && String::from_utf8_lossy(&cmd).contains("thumbnail-worker")
        })
        .expect("a worker process");
    // Only PATH and the worker's allocator tunables: nothing of the node's environment
    // (which has the test runner's CARGO_* variables).
    let environ =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{worker}/environ")).unwrap())
            .replace('\0', "\n");
    assert!(
        environ.contains("PATH=") && environ.contains("GLIBC_TUNABLES="),
        "{environ}"
    );
    assert!(!environ.contains("CARGO"), "{environ}");
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))
        .unwrap();
    assert!(line.contains("536870912"), "{line}");
    node.assert_never_printed(&key);
}

/// openh264's x86 kernels (motion compensation, SAD, IDCT, CPU detection) are assembled
/// by nasm when the build finds it and silently left out when not (2-3 % more CPU per
/// thumbnail; BENCHMARKS "Thumbnails: what nasm gains"), and a build made before nasm
/// was installed stays without them. The binary under test must carry them.
#[test]
fn the_h264_decoder_is_built_with_its_simd_assembly() {
    if !cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        eprintln!("not x86: openh264 has no nasm assembly here");
        return;
    }
    for symbol in [
        "WelsCPUId",
        "WelsSampleSad16x16_sse2",
        "McHorVer02WidthEq8_sse2",
    ] {
        let found = Command::new("grep")
            .args(["-q", "-a", "-F", symbol])
            .arg(bin())
            .status()
            .unwrap()
            .success();
        assert!(
            found,
            "{} lacks openh264's assembly ({symbol}): install nasm (bash scripts/build-deps.sh), \
             then `cargo clean -p openh264-sys2` and build again",
            bin()
        );
    }
}
