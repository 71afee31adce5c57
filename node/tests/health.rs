//! Stream health with real encoders: ffmpeg with B-frames, with a 16-second keyframe
//! interval, with a bitrate that swings, and with clean settings, all at once on one
//! node. Each gets the verdicts its settings deserve (the clean one none), on the
//! health API, in `/api/v1/streams`, in `health` events (only when a verdict changes)
//! and in the metrics; the key never shows.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The server-sent events the node sends, as text, collected on a thread.
fn follow_events(node: &Node) -> (std::net::TcpStream, Arc<Mutex<String>>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).unwrap();
    write!(
        s,
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let (r, into) = (s.try_clone().unwrap(), seen.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            into.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    wait_for(Duration::from_secs(5), || {
        seen.lock()
            .unwrap()
            .contains("text/event-stream")
            .then_some(())
    })
    .expect("an event stream");
    (s, seen)
}

/// `health` events of one channel, parsed.
fn health_events(seen: &Mutex<String>, id: &str) -> Vec<serde_json::Value> {
    seen.lock()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter(|v| v["type"] == "health" && v["channel_id"] == id)
        .collect()
}

fn health(node: &Node, id: &str) -> serde_json::Value {
    let (status, _, body) = node.http_get(&format!("/api/v1/streams/{id}/health"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// A check's (verdict, reason) in a health answer.
fn check(h: &serde_json::Value, name: &str) -> Option<(String, String)> {
    h["checks"]
        .as_array()?
        .iter()
        .find(|c| c["check"] == name)
        .map(|c| {
            (
                c["verdict"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
}

/// Polls the health of `id` until `pred` holds; returns how long after `since` it did.
fn wait_health(
    node: &Node,
    id: &str,
    since: Instant,
    limit: Duration,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let mut last = serde_json::Value::Null;
    while since.elapsed() < limit {
        last = health(node, id);
        if pred(&last) {
            return since.elapsed();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: not within {limit:?}; last answer: {last:#}");
}

#[test]
fn real_encoders_get_the_verdicts_their_settings_deserve() {
    let node = Node::start("[admin]\nper_channel_metrics = true\n");
    let (_events_socket, seen) = follow_events(&node);
    let (clean, clean_key) = node.create_channel("clean");
    let (bframes, bframes_key) = node.create_channel("bframes");
    let (long_gop, long_gop_key) = node.create_channel("long gop");
    let (swing, swing_key) = node.create_channel("swing");
    const SECONDS: u32 = 42;
    // A 2 s GOP, constant bitrate, no B-frames: what every platform asks for.
    let cbr = ["-b:v", "600k", "-maxrate", "600k", "-bufsize", "600k"];
    let mut clean_args = vec!["-preset", "veryfast", "-tune", "zerolatency", "-g", "60"];
    clean_args.extend(cbr);
    let mut bf_args = vec!["-preset", "veryfast", "-bf", "3", "-g", "60"];
    bf_args.extend(cbr);
    let mut gop_args = vec![
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-g",
        "480",
        "-keyint_min",
        "480",
        "-sc_threshold",
        "0",
    ];
    gop_args.extend(cbr);
    // Quality-based rate control on a picture that is noise for 2 s, clean for 2 s:
    // the bitrate follows the picture.
    let swing_args = [
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-g",
        "60",
        "-crf",
        "20",
    ];
    let noise = "noise=alls=100:allf=t:enable='lt(mod(t,4),2)'";
    let started = Instant::now();
    let mut encoders = vec![
        ffmpeg_publish_with(&node.publish_url(&clean_key), &clean_args, None, SECONDS),
        ffmpeg_publish_with(&node.publish_url(&bframes_key), &bf_args, None, SECONDS),
        ffmpeg_publish_with(&node.publish_url(&long_gop_key), &gop_args, None, SECONDS),
        ffmpeg_publish_with(
            &node.publish_url(&swing_key),
            &swing_args,
            Some(noise),
            SECONDS,
        ),
    ];
    for id in [&clean, &bframes, &long_gop, &swing] {
        wait_listed(&node, id, Duration::from_secs(10));
    }

    // B-frames: told within two keyframe intervals (2 × 2 s) and a judgement.
    let t = wait_health(
        &node,
        &bframes,
        started,
        Duration::from_secs(6),
        "B-frames",
        |h| check(h, "b_frames").is_some_and(|(v, _)| v == "warn"),
    );
    eprintln!("B-frames told after {t:?}");
    // The 16 s GOP: bad as soon as the wait passes 4 s, and the interval itself once
    // the second keyframe came (within two intervals).
    let t = wait_health(
        &node,
        &long_gop,
        started,
        Duration::from_secs(8),
        "long GOP, early",
        |h| {
            check(h, "keyframes")
                .is_some_and(|(v, r)| v == "bad" && r.starts_with("no keyframe for"))
        },
    );
    eprintln!("a 16 s keyframe wait told after {t:?}");
    // Bitrate swing: two 2-second windows of stream are the least it needs.
    let t = wait_health(
        &node,
        &swing,
        started,
        Duration::from_secs(12),
        "swing",
        |h| {
            check(h, "video_bitrate")
                .is_some_and(|(v, r)| v != "good" && r.starts_with("video bitrate swings between"))
        },
    );
    eprintln!("bitrate swing told after {t:?}");
    let t = wait_health(
        &node,
        &long_gop,
        started,
        Duration::from_secs(34),
        "long GOP interval",
        |h| {
            check(h, "keyframes").is_some_and(|(v, r)| {
                v == "bad"
                    && r.starts_with("keyframe every 16.0 s: set the keyframe interval to 2 s")
            })
        },
    );
    eprintln!("the 16 s keyframe interval measured after {t:?}");

    // The clean stream, now 30 s in: every check judged, all good.
    let h = health(&node, &clean);
    eprintln!("clean stream measures: {}", h["measures"]);
    assert_eq!(h["verdict"], "good", "{h:#}");
    for name in [
        "keyframes",
        "b_frames",
        "frame_rate",
        "video_bitrate",
        "audio_bitrate",
        "av_sync",
        "timestamps",
        "upload",
    ] {
        let (v, r) = check(&h, name).unwrap_or_else(|| panic!("{name} not judged: {h:#}"));
        assert_eq!(v, "good", "{name}: {r}\n{h:#}");
    }
    assert_eq!(h["measures"]["keyframe_interval_s"], 2.0, "{h:#}");
    assert_eq!(h["measures"]["b_frames"], false);
    // Each bad stream is bad for its own reason only.
    let problems = |id: &str| -> Vec<String> {
        let h = health(&node, id);
        h["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["verdict"] != "good")
            .map(|c| c["check"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(problems(&bframes), ["b_frames"]);
    assert_eq!(problems(&long_gop), ["keyframes"]);
    assert_eq!(problems(&swing), ["video_bitrate"]);

    // The streams list carries the verdict and the problems (the dashboard's badge).
    let listed = node.stream(&long_gop).unwrap();
    assert_eq!(listed["health"]["verdict"], "bad", "{listed:#}");
    assert_eq!(listed["health"]["problems"][0]["check"], "keyframes");
    assert!(listed["health"]["problems"][0]["fix"]
        .as_str()
        .unwrap()
        .contains("Keyframe Interval"));
    assert_eq!(
        node.stream(&clean).unwrap()["health"]["problems"],
        serde_json::json!([])
    );

    // Events: none for the clean stream; for the others, the change to their verdict,
    // and no storm (a verdict on the edge does not flap).
    assert_eq!(
        health_events(&seen, &clean),
        Vec::<serde_json::Value>::new()
    );
    for (id, check) in [
        (&bframes, "b_frames"),
        (&long_gop, "keyframes"),
        (&swing, "video_bitrate"),
    ] {
        let events = health_events(&seen, id);
        assert!(
            events.iter().any(|e| e["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["check"] == check)),
            "{check}: {events:#?}"
        );
        assert!(
            events.len() <= 3,
            "{check}: {} events: {events:#?}",
            events.len()
        );
    }

    // Metrics: streams by verdict, and each channel's checks (opt-in).
    let (_, _, metrics) = node.http_get("/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("streamgate_streams_by_health{verdict=\"good\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "streamgate_channel_health{{channel_id=\"{long_gop}\",check=\"keyframes\"}} 2"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("streamgate_health_changes_total{check=\"b_frames\",verdict=\"warn\"}")
    );

    for e in &mut encoders {
        let _ = e.wait(Duration::from_secs(30));
    }
    let text = seen.lock().unwrap().clone();
    node.transcript.push(text);
    for key in [&clean_key, &bframes_key, &long_gop_key, &swing_key] {
        node.assert_never_printed(key);
    }
}

/// With `health.enabled = false` nothing is tracked: the API says health is off and
/// the streams list carries none.
#[test]
fn health_can_be_turned_off() {
    let node = Node::start("[health]\nenabled = false\n");
    let (id, key) = node.create_channel("untracked");
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "160x90", 4);
    wait_listed(&node, &id, Duration::from_secs(10));
    let (status, _, body) = node.http_get(&format!("/api/v1/streams/{id}/health"));
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("health.enabled = false"));
    assert!(node.stream(&id).unwrap()["health"].is_null());
    let _ = ff.wait(Duration::from_secs(15));
}
