//! SRT ingest end to end with real clients (Debian's ffmpeg and GStreamer linked with
//! libsrt, libsrt's own srt-live-transmit), a real nginx-rtmp writing HLS as the
//! relay upstream, ffprobe reading it back, and everything the node printed checked
//! for the key.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ASSET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/media/tests/assets/h264_aac_bframes.ts"
);

fn srt_port(node: &Node) -> u16 {
    node.srt_port.expect("the node listens for SRT")
}

/// Waits until the channel is listed, then checks that it came in over SRT.
fn wait_srt_live(node: &Node, id: &str) -> serde_json::Value {
    let s = wait_listed(node, id, Duration::from_secs(15));
    assert_eq!(s["protocol"], "srt", "{s}");
    s
}

#[test]
fn ffmpeg_h264_over_srt_is_live_relayed_to_hls_thumbnailed_then_offline() {
    let mut nginx = Nginx::start(&["live"], None);
    let node = Node::start(&format!(
        "[relay]\ntargets = [\"rtmp://127.0.0.1:{}/live/{{channel_id}}\"]\n[thumbnails]\ninterval = \"2s\"\n\
         [admin]\nper_channel_metrics = true\n",
        nginx.port
    ));
    let (id, key) = node.create_channel("srt-h264");
    let url = srt_url(srt_port(&node), &format!("#!::r=live/{key},m=publish"), "");
    let mut ff = ffmpeg_srt(&url, "libx264", "640x360", 12);

    wait_srt_live(&node, &id);
    wait_for(Duration::from_secs(10), || {
        node.stream(&id).filter(|s| s["video_codec"] == "h264")
    })
    .unwrap_or_else(|| panic!("no H.264 seen: {:?}", node.stream(&id)));
    wait_db_live(&node, &id);
    let playlist = nginx.wait_playlist("live", &id, Duration::from_secs(20));
    // The link's health, from the receiver's statistics.
    let s = wait_for(Duration::from_secs(5), || {
        node.stream(&id)
            .filter(|s| s["link"]["packets_received"].as_u64().unwrap_or(0) > 100)
    })
    .unwrap_or_else(|| panic!("no link statistics: {:?}", node.stream(&id)));
    assert_eq!(s["link"]["latency_ms"], 120, "{s}");
    assert_eq!(s["link"]["encrypted"], false, "{s}");
    assert!(s["link"]["rtt_ms"].as_f64().unwrap() < 50.0, "{s}");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(640), Some(360)),
        "{s}"
    );
    // The link in the metrics: the channel's own series (opt-in), the node's totals.
    let scrape = || String::from_utf8_lossy(&node.http_get("/metrics").2).into_owned();
    let value = metric_value;
    let m = wait_for(Duration::from_secs(5), || {
        let m = scrape();
        (value(&m, "streamgate_srt_packets_total{kind=\"received\"}")? > 100.0).then_some(m)
    })
    .unwrap_or_else(|| panic!("no SRT packet totals:\n{}", scrape()));
    assert_eq!(
        value(&m, "streamgate_live_streams_by_protocol{protocol=\"srt\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "streamgate_live_streams_by_protocol{protocol=\"rtmp\"}"),
        Some(0.0),
        "{m}"
    );
    let rtt = value(
        &m,
        &format!("streamgate_channel_srt_rtt_seconds{{channel_id=\"{id}\"}}"),
    )
    .unwrap_or_else(|| panic!("no RTT series:\n{m}"));
    assert!((0.0..0.05).contains(&rtt), "{rtt}");
    assert!(
        value(
            &m,
            &format!(
                "streamgate_channel_srt_packets_total{{channel_id=\"{id}\",kind=\"received\"}}"
            )
        )
        .unwrap_or(0.0)
            > 100.0,
        "{m}"
    );
    let thumb = node
        .dir
        .0
        .join("data/thumbs")
        .join(s["thumbnail"].as_str().unwrap());
    wait_for(Duration::from_secs(10), || thumb.exists().then_some(()))
        .unwrap_or_else(|| panic!("no thumbnail at {}", thumb.display()));

    assert!(
        ff.wait(Duration::from_secs(30))
            .expect("ffmpeg done")
            .success(),
        "{}",
        ff.stderr()
    );
    // Offline once the publisher is gone, in the API and the table.
    wait_for(Duration::from_secs(10), || {
        (node.stream(&id).is_none() && !node.db_live(&id).0).then_some(())
    })
    .expect("offline after the publisher left");
    nginx.stop();
    let streams = ffprobe_streams(&playlist);
    assert!(
        streams
            .iter()
            .any(|s| s.0 == "video" && s.1 == "h264" && s.2 == Some(640) && s.3 == Some(360)),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|s| s.0 == "audio" && s.1 == "aac"),
        "{streams:?}"
    );
    assert_continuous(&playlist, 0.5);
    assert!(!nginx.access_log().contains(&key) && !nginx.error_log().contains(&key));
    node.assert_never_printed(&key);
}

#[test]
fn every_stream_id_form_publishes_and_other_requests_are_refused() {
    let node = Node::start("");
    let (id, key) = node.create_channel("forms");
    let port = srt_port(&node);
    for form in [
        key.clone(),
        format!("live/{key}"),
        format!("#!::m=publish,r=live/{key}"),
    ] {
        let mut ff = ffmpeg_srt(&srt_url(port, &form, ""), "libx264", "320x240", 2);
        wait_srt_live(&node, &id);
        assert!(
            ff.wait(Duration::from_secs(20))
                .expect("ffmpeg done")
                .success(),
            "{}",
            ff.stderr()
        );
        wait_for(Duration::from_secs(10), || {
            node.stream(&id).is_none().then_some(())
        })
        .expect("offline between forms");
    }
    // A player's request, another app: refused, with the codes logged by reason.
    for (form, reason) in [
        (
            format!("#!::r=live/{key},m=request"),
            "only takes publishes",
        ),
        (format!("other/{key}"), "not this node's"),
    ] {
        let mut ff = ffmpeg_srt(&srt_url(port, &form, ""), "libx264", "320x240", 2);
        let status = ff.wait(Duration::from_secs(10)).expect("ffmpeg gives up");
        assert!(!status.success());
        assert!(ff.stderr().contains("rejection reason"), "{}", ff.stderr());
        wait_logged(&node, reason, Duration::from_secs(5));
    }
    node.assert_never_printed(&key);
}

#[test]
fn a_wrong_key_is_refused_within_a_second_with_a_reason_ffmpeg_prints() {
    let node = Node::start("");
    let (_id, key) = node.create_channel("wrong");
    let wrong = format!("{key}x");
    let started = Instant::now();
    let mut ff = ffmpeg_srt(
        &srt_url(srt_port(&node), &format!("live/{wrong}"), ""),
        "libx264",
        "320x240",
        5,
    );
    let status = ff.wait(Duration::from_secs(10)).expect("ffmpeg gives up");
    let took = started.elapsed();
    assert!(!status.success());
    // ffmpeg's libsrt prints the rejection (an application's code: 1401 here).
    assert!(
        ff.stderr().contains("REJECT") && ff.stderr().contains("rejection reason"),
        "{}",
        ff.stderr()
    );
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    wait_logged(&node, "no channel has this key", Duration::from_secs(5));
    node.assert_never_printed(&wrong);
    node.assert_never_printed(&key);
}

#[test]
fn hevc_over_srt_is_live_and_thumbnailed() {
    let node = Node::start("[thumbnails]\ninterval = \"2s\"\n");
    let (id, key) = node.create_channel("srt-hevc");
    let mut ff = ffmpeg_srt(
        &srt_url(srt_port(&node), &format!("live/{key}"), ""),
        "libx265",
        "640x360",
        10,
    );
    let s = wait_srt_live(&node, &id);
    let s = wait_for(Duration::from_secs(10), || {
        node.stream(&id)
            .filter(|s| s["video_codec"] == "hevc" && s["width"] == 640)
    })
    .unwrap_or_else(|| panic!("HEVC not recognised: {s}"));
    let thumb = node
        .dir
        .0
        .join("data/thumbs")
        .join(s["thumbnail"].as_str().unwrap());
    wait_for(Duration::from_secs(15), || thumb.exists().then_some(()))
        .unwrap_or_else(|| panic!("no thumbnail; {}", node.transcript.text()));
    let _ = ff.wait(Duration::from_secs(30));
    node.assert_never_printed(&key);
}

/// A TS file through a pipe, paced (srt-live-transmit and GStreamer read it as a live
/// source): a packet of 1316 bytes every 4 ms.
fn feed_paced(mut to: impl Write + Send + 'static) -> std::thread::JoinHandle<()> {
    let data = std::fs::read(ASSET).unwrap();
    std::thread::spawn(move || {
        for _ in 0..3 {
            for chunk in data.chunks(1316) {
                if to.write_all(chunk).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(4));
            }
        }
    })
}

#[test]
fn srt_live_transmit_and_gstreamer_publish_a_ts_file() {
    require("srt-live-transmit", "srt-tools");
    require(
        "gst-launch-1.0",
        "gstreamer1.0-tools gstreamer1.0-plugins-bad",
    );
    let node = Node::start("");
    let port = srt_port(&node);
    let (id, key) = node.create_channel("tools");

    // libsrt's own tool, stdin to SRT (1456-byte payloads: TS packets cut anywhere).
    let mut slt = Command::new("srt-live-transmit")
        .args(["file://con", &srt_url(port, &format!("live/{key}"), "")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("srt-live-transmit");
    let feeder = feed_paced(slt.stdin.take().unwrap());
    let s = wait_srt_live(&node, &id);
    let s = wait_for(Duration::from_secs(10), || {
        node.stream(&id)
            .filter(|s| s["video_codec"] == "h264" && s["audio_codec"] == "aac")
    })
    .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(s["width"], 160, "the capture is 160x120: {s}");
    feeder.join().unwrap();
    let _ = slt.kill();
    let _ = slt.wait();
    wait_for(Duration::from_secs(10), || {
        node.stream(&id).is_none().then_some(())
    })
    .expect("offline after srt-live-transmit");

    // GStreamer's srtsink in caller mode.
    let mut gst = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "fdsrc",
            "fd=0",
            "!",
            "tsparse",
            "set-timestamps=true",
            "!",
            "srtsink",
            &format!("uri=srt://127.0.0.1:{port}?mode=caller"),
            &format!("streamid=live/{key}"),
            "latency=200",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0");
    let feeder = feed_paced(gst.stdin.take().unwrap());
    let s = wait_srt_live(&node, &id);
    let s = wait_for(Duration::from_secs(10), || {
        node.stream(&id)
            .filter(|s| s["video_codec"] == "h264" && s["link"]["latency_ms"] == 200)
    })
    .unwrap_or_else(|| panic!("the publisher's latency is taken when larger: {s}"));
    assert_eq!(s["audio_codec"], "aac");
    feeder.join().unwrap();
    let _ = gst.kill();
    let _ = gst.wait();
    node.assert_never_printed(&key);
}

#[test]
fn a_channel_with_a_passphrase_takes_only_publishers_that_encrypt_with_it() {
    let node = Node::start("");
    let (id, key) = node.create_channel("secret");
    let passphrase = "correct-horse-battery-staple";
    let (ok, out, err) = node.cli_stdin(
        &["channel", "set-srt-passphrase", &id],
        &format!("{passphrase}\n"),
    );
    assert!(ok, "{out}{err}");
    let (ok, _, err) = node.cli_stdin(&["channel", "set-srt-passphrase", &id], "short\n");
    assert!(!ok && err.contains("10 to 79"), "{err}");
    let port = srt_port(&node);

    // Without, or with another passphrase: refused, and ffmpeg says why (libsrt's
    // own words for SRT's codes).
    for (extra, says) in [
        (String::new(), "password required or unexpected"),
        (
            "&passphrase=not-the-right-one".to_string(),
            "incorrect passphrase",
        ),
    ] {
        let mut ff = ffmpeg_srt(
            &srt_url(port, &format!("live/{key}"), &extra),
            "libx264",
            "320x240",
            3,
        );
        let status = ff.wait(Duration::from_secs(10)).expect("refused");
        assert!(!status.success());
        assert!(
            ff.stderr().to_lowercase().contains(says),
            "{extra}: {}",
            ff.stderr()
        );
        assert!(node.stream(&id).is_none());
    }
    // With it, AES-256: live, and decrypted (the video is recognised).
    let url = srt_url(
        port,
        &format!("live/{key}"),
        "&passphrase=correct-horse-battery-staple&pbkeylen=32",
    );
    let mut ff = ffmpeg_srt(&url, "libx264", "320x240", 6);
    wait_srt_live(&node, &id);
    let s = wait_for(Duration::from_secs(10), || {
        node.stream(&id)
            .filter(|s| s["video_codec"] == "h264" && s["link"]["encrypted"] == true)
    })
    .unwrap_or_else(|| panic!("{:?}", node.stream(&id)));
    assert_eq!(s["width"], 320);
    let _ = ff.wait(Duration::from_secs(20));
    node.assert_never_printed(passphrase);
    node.assert_never_printed(&key);
}

#[test]
fn a_lossy_path_keeps_the_stream_live_and_relayed() {
    let mut nginx = Nginx::start(&["live"], None);
    let node = Node::start(&format!(
        "[relay]\ntargets = [\"rtmp://127.0.0.1:{}/live/{{channel_id}}\"]\n",
        nginx.port
    ));
    let (id, key) = node.create_channel("lossy");
    // One datagram in 50 lost each way: 2 %.
    let path = LossyPath::start(srt_port(&node), 50);
    let url = srt_url(path.port, &format!("live/{key}"), "&latency=300000");
    let mut ff = ffmpeg_srt(&url, "libx264", "640x360", 14);
    wait_srt_live(&node, &id);
    let playlist = nginx.wait_playlist("live", &id, Duration::from_secs(20));
    let s = wait_for(Duration::from_secs(15), || {
        node.stream(&id)
            .filter(|s| s["link"]["packets_retransmitted"].as_u64().unwrap_or(0) > 5)
    })
    .unwrap_or_else(|| panic!("no retransmissions seen: {:?}", node.stream(&id)));
    let link = &s["link"];
    assert!(link["packets_lost"].as_u64().unwrap() > 5, "{link}");
    assert_eq!(link["latency_ms"], 300, "{link}");
    assert!(
        ff.wait(Duration::from_secs(40))
            .expect("ffmpeg done")
            .success(),
        "{}",
        ff.stderr()
    );
    assert!(path.dropped.load(std::sync::atomic::Ordering::Relaxed) > 20);
    let last = node.transcript.text();
    let ended = last
        .lines()
        .find(|l| l.contains("SRT publish ended"))
        .expect("the end is logged with the link's totals");
    assert!(ended.contains("dropped=0"), "every loss recovered: {ended}");
    nginx.stop();
    assert_continuous(&playlist, 0.5);
    node.assert_never_printed(&key);
}

/// ffmpeg over SRT with `args` (inputs and codecs) for `seconds`.
fn ffmpeg_srt_with(url: &str, args: &[&str], seconds: u32) -> Proc {
    require("ffmpeg", "ffmpeg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "warning", "-re"])
        .args(args)
        .args(["-t", &seconds.to_string(), "-f", "mpegts", url]);
    Proc::spawn(&mut cmd)
}

/// What the node does not relay is said once, and the rest goes on: H.264 with MP2
/// audio is live with its video; AAC alone is live with its audio, told it has no
/// video (and so no thumbnail).
#[test]
fn an_unsupported_track_or_no_video_is_logged_and_the_rest_is_relayed() {
    let node = Node::start("[thumbnails]\ninterval = \"2s\"\n");
    let port = srt_port(&node);
    let (id, key) = node.create_channel("mp2-audio");
    let mut ff = ffmpeg_srt_with(
        &srt_url(port, &key, ""),
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "mp2",
        ],
        6,
    );
    let s = wait_for(Duration::from_secs(15), || {
        node.stream(&id).filter(|s| s["video_codec"] == "h264")
    })
    .unwrap_or_else(|| {
        panic!(
            "the video of an H.264 + MP2 stream is not live: {}",
            ff.stderr()
        )
    });
    assert!(s["audio_codec"].is_null(), "MP2 is not relayed: {s}");
    wait_logged(
        &node,
        "carries a codec the node does not relay",
        Duration::from_secs(5),
    );
    wait_for(Duration::from_secs(15), || {
        node.stream(&id)?["thumbnail_updated_at"]
            .as_str()
            .map(|_| ())
    })
    .expect("the video is thumbnailed");
    let _ = ff.wait(Duration::from_secs(20));

    let (id2, key2) = node.create_channel("audio-only");
    let mut ff = ffmpeg_srt_with(
        &srt_url(port, &key2, ""),
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-c:a",
            "aac",
        ],
        6,
    );
    let s = wait_for(Duration::from_secs(15), || {
        node.stream(&id2).filter(|s| s["audio_codec"] == "aac")
    })
    .unwrap_or_else(|| panic!("an AAC-only stream is not live: {}", ff.stderr()));
    assert!(s["video_codec"].is_null(), "{s}");
    wait_logged(&node, "has no H.264 or H.265 video", Duration::from_secs(5));
    let _ = ff.wait(Duration::from_secs(20));
    node.assert_never_printed(&key);
    node.assert_never_printed(&key2);
}
