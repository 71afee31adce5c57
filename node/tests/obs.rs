//! OBS Studio itself publishes to the node: Debian's `obs-studio` (29) under
//! `xvfb-run` with software GL, a profile written to `$HOME/.config/obs-studio`, and
//! `obs --startstreaming`.
//!
//! Over RTMPS: OBS verifies the server's certificate against `/etc/ssl/certs` and
//! nothing else, so the test shows it a CA it makes, together with a host name for
//! 127.0.0.1, in a private mount namespace: the machine's own trust store and
//! `/etc/hosts` are never touched.
//!
//! With ffmpeg on the same key from another address: the two do not take the channel
//! from each other, OBS's automatic reconnection (every 2 s) included.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const HOST: &str = "ingest.test";

/// A CA (its certificate alone in `ca/`) and a certificate for [`HOST`] it signed
/// (`cert.pem`, `key.pem`).
fn write_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "streamgate test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![HOST.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    std::fs::create_dir_all(dir.join("ca")).unwrap();
    std::fs::write(dir.join("ca/test-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
}

/// An OBS profile and scene collection (a 640x360 canvas with a colour source, x264,
/// a custom RTMPS server) under `home/.config/obs-studio`.
fn write_obs_profile(home: &Path, server: &str, key: &str) {
    let c = home.join(".config/obs-studio");
    std::fs::create_dir_all(c.join("basic/profiles/sg")).unwrap();
    std::fs::create_dir_all(c.join("basic/scenes")).unwrap();
    // FirstRun: no auto-configuration wizard.
    std::fs::write(
        c.join("global.ini"),
        "[General]\nFirstRun=true\nEnableAutoUpdates=false\n\
         [BasicWindow]\nSysTrayEnabled=false\n\
         [Basic]\nProfile=sg\nProfileDir=sg\nSceneCollection=sg\nSceneCollectionFile=sg\n",
    )
    .unwrap();
    std::fs::write(
        c.join("basic/profiles/sg/basic.ini"),
        "[General]\nName=sg\n\
         [Video]\nBaseCX=640\nBaseCY=360\nOutputCX=640\nOutputCY=360\nFPSType=0\nFPSCommon=30\n\
         [Output]\nMode=Simple\nReconnect=true\nRetryDelay=2\nMaxRetries=25\n\
         [SimpleOutput]\nVBitrate=800\nABitrate=128\nStreamEncoder=x264\nPreset=ultrafast\n",
    )
    .unwrap();
    let service = serde_json::json!({
        "type": "rtmp_custom",
        "settings": { "server": server, "key": key, "use_auth": false, "bwtest": false },
    });
    std::fs::write(
        c.join("basic/profiles/sg/service.json"),
        service.to_string(),
    )
    .unwrap();
    let scenes = serde_json::json!({
        "name": "sg",
        "current_scene": "Scene",
        "current_program_scene": "Scene",
        "scene_order": [{ "name": "Scene" }],
        "sources": [
            {
                "id": "scene", "versioned_id": "scene", "name": "Scene",
                "settings": { "id_counter": 1, "items": [{
                    "name": "Colour", "id": 1, "visible": true,
                    "pos": { "x": 0, "y": 0 }, "scale": { "x": 1, "y": 1 },
                    "bounds": { "x": 0, "y": 0 }, "bounds_type": 0, "rot": 0, "align": 5,
                }]},
            },
            {
                "id": "color_source", "versioned_id": "color_source_v3", "name": "Colour",
                "settings": { "color": 4278255360u32, "width": 640, "height": 360 },
            },
        ],
    });
    std::fs::write(c.join("basic/scenes/sg.json"), scenes.to_string()).unwrap();
}

/// OBS and everything it started (xvfb-run, Xvfb) are one process group.
struct Obs(Proc);

impl Obs {
    /// OBS on a virtual display, streaming with the profile under `home` at once.
    fn start(home: &Path) -> Obs {
        let script = format!(
            "exec 1>&2 && exec env HOME={home} LIBGL_ALWAYS_SOFTWARE=1 xvfb-run -a -s '-screen 0 1280x800x24' \
             obs --startstreaming --multi --disable-missing-files-check --profile sg --collection sg",
            home = home.display(),
        );
        Obs(Proc::spawn(
            Command::new("sh").args(["-c", &script]).process_group(0),
        ))
    }

    fn said(&self) -> String {
        self.0.stderr.lock().unwrap().clone()
    }
}

impl Drop for Obs {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.0.child.id()))
            .status();
    }
}

#[test]
fn obs_studio_publishes_over_rtmps_and_verifies_the_certificate() {
    require("obs", "obs-studio");
    require("xvfb-run", "xvfb");
    require("xauth", "xauth");
    require("unshare", "util-linux");
    let dir = TempDir::new("obs");
    write_pki(&dir.0);
    let node = Node::start(&format!(
        "[rtmps]\nenabled = true\nlisten = \"127.0.0.1:0\"\ncert_file = \"{d}/cert.pem\"\n\
         key_file = \"{d}/key.pem\"\n[thumbnails]\ndir = \"thumbs\"\n",
        d = dir.0.display()
    ));
    let port = node.rtmps_port.expect("RTMPS listening");
    let (id, key) = node.create_channel("obs");
    let home = dir.0.join("home");
    write_obs_profile(&home, &format!("rtmps://{HOST}:{port}/live"), &key);
    let hosts = write_file(&dir.0, "hosts", &format!("127.0.0.1 localhost {HOST}\n"));

    // Inside its own mount namespace: the test CA as the whole trust store, the test
    // host name, then OBS on a virtual display.
    let script = format!(
        "exec 1>&2 && mount --bind {ca} /etc/ssl/certs && mount --bind {hosts} /etc/hosts && \
         exec env HOME={home} LIBGL_ALWAYS_SOFTWARE=1 xvfb-run -a -s '-screen 0 1280x800x24' \
         obs --startstreaming --multi --disable-missing-files-check --profile sg --collection sg",
        ca = dir.0.join("ca").display(),
        hosts = hosts.display(),
        home = home.display(),
    );
    let obs = Obs(Proc::spawn(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .process_group(0),
    ));
    let stream = wait_for(Duration::from_secs(60), || {
        node.stream(&id)
            .filter(|s| s["video_codec"].is_string() && s["audio_codec"].is_string())
    })
    .unwrap_or_else(|| {
        panic!(
            "OBS did not go live within 60 s; OBS said:\n{}",
            obs.0.stderr.lock().unwrap()
        )
    });
    // OBS's own word that the TLS connection (certificate verified) and publish worked.
    let success = format!("Connection to rtmps://{HOST}:{port}/live successful");
    wait_for(Duration::from_secs(10), || {
        obs.0
            .stderr
            .lock()
            .unwrap()
            .contains(&success)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", obs.0.stderr.lock().unwrap()));
    assert_eq!(stream["video_codec"], "h264", "{stream}");
    assert_eq!(stream["audio_codec"], "aac", "{stream}");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(640), Some(360))
    );
    // Over the TLS listener, and OBS's pictures decode into a thumbnail.
    let (_, _, metrics) = node.http_get("/metrics");
    assert!(
        String::from_utf8_lossy(&metrics)
            .contains("streamgate_connections_accepted_total{listener=\"rtmps\"} 1"),
        "{}",
        String::from_utf8_lossy(&metrics)
    );
    wait_for(Duration::from_secs(20), || {
        node.stream(&id)?["thumbnail_updated_at"]
            .as_str()
            .map(|_| ())
    })
    .expect("a thumbnail of OBS's stream");
    wait_db_live(&node, &id);

    // OBS goes away: the channel goes offline.
    drop(obs);
    wait_for(Duration::from_secs(15), || {
        (!node.db_live(&id).0 && node.stream(&id).is_none()).then_some(())
    })
    .expect("offline after OBS stopped");
    node.assert_never_printed(&key);
}

const ADMIN_TOKEN: &str = "obs-ffmpeg-admin-token-0123";

/// (session id, peer) of the channel's live publish, from the admin API.
fn holder(node: &Node, id: &str) -> Option<(String, String)> {
    let (status, _, body) = node.http_request(
        node.http_port,
        "GET",
        "/admin/v1/sessions",
        &format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"),
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["sessions"]
        .as_array()?
        .iter()
        .find(|s| s["channel_id"] == id)
        .map(|s| {
            (
                s["session_id"].as_str().unwrap().to_string(),
                s["peer"].as_str().unwrap().to_string(),
            )
        })
}

/// The flapping the issue reports, OBS 29 (auto-reconnect on, 2 s) and ffmpeg on one
/// key from two places: each used to take the channel from the other every couple of
/// seconds, forever, neither told why. Now the one that is sending keeps it, and the
/// other is refused with a status that says why.
#[test]
fn obs_and_ffmpeg_on_one_key_do_not_take_the_channel_from_each_other() {
    require("obs", "obs-studio");
    require("xvfb-run", "xvfb");
    require("xauth", "xauth");
    let dir = TempDir::new("obs-ffmpeg");
    let node = Node::start(&format!("[admin]\ntoken = \"{ADMIN_TOKEN}\"\n"));
    let (id, key) = node.create_channel("obs-and-ffmpeg");
    let home = dir.0.join("home");
    write_obs_profile(
        &home,
        &format!("rtmp://127.0.0.1:{}/live", node.rtmp_port),
        &key,
    );
    let obs = Obs::start(&home);
    let (obs_session, obs_peer) = wait_for(Duration::from_secs(60), || {
        node.stream(&id)
            .filter(|s| s["video_codec"].is_string())
            .and_then(|_| holder(&node, &id))
    })
    .unwrap_or_else(|| panic!("OBS did not go live within 60 s:\n{}", obs.said()));
    assert!(obs_peer.starts_with("127.0.0.1:"), "{obs_peer}");

    // ffmpeg on the same key from another address, retried as a script would: refused
    // each time with the reason, and OBS keeps the channel.
    let elsewhere = SourceForwarder::start([127, 0, 0, 2].into(), node.rtmp_port);
    let ffmpeg_url = format!("rtmp://127.0.0.1:{}/live/{key}", elsewhere.port);
    for _ in 0..3 {
        let mut ffmpeg = ffmpeg_publish(&ffmpeg_url, "320x240", 30);
        ffmpeg
            .wait(Duration::from_secs(20))
            .expect("ffmpeg gives up when refused");
        assert!(
            ffmpeg
                .stderr()
                .contains("already live from another encoder"),
            "ffmpeg said: {}",
            ffmpeg.stderr()
        );
        assert_eq!(
            holder(&node, &id).map(|h| h.0),
            Some(obs_session.clone()),
            "OBS lost the channel"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // OBS loses its connection (the operator ends it) and reconnects by itself two
    // seconds later; ffmpeg, started at once, is live by then...
    let (status, _, body) = node.http_request(
        node.http_port,
        "POST",
        &format!("/admin/v1/channels/{id}/kick"),
        &format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut ffmpeg = ffmpeg_publish(&ffmpeg_url, "320x240", 40);
    let (ffmpeg_session, ffmpeg_peer) = wait_for(Duration::from_secs(10), || {
        holder(&node, &id).filter(|h| h.0 != obs_session)
    })
    .expect("someone took the channel after the kick");
    assert!(
        ffmpeg_peer.starts_with("127.0.0.2:"),
        "OBS reconnected before ffmpeg went live ({ffmpeg_peer}): ffmpeg said {}",
        ffmpeg.stderr()
    );
    // ...and OBS's reconnections are refused while ffmpeg sends: the channel stays
    // ffmpeg's, no back and forth.
    let refused_before = refusals_of_obs(&node);
    let watch = std::time::Instant::now();
    while watch.elapsed() < Duration::from_secs(12) {
        assert_eq!(
            holder(&node, &id).map(|h| h.0),
            Some(ffmpeg_session.clone()),
            "the channel changed hands:\n{}",
            node.transcript.text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let refused = refusals_of_obs(&node) - refused_before;
    assert!(
        refused >= 2,
        "OBS retried {refused} times in 12 s; OBS said:\n{}",
        obs.said()
    );
    assert!(
        ffmpeg.wait(Duration::from_millis(10)).is_none(),
        "ffmpeg still streams"
    );
    node.assert_never_printed(&key);
}

/// How many publishes from 127.0.0.1 (OBS) the node refused as "already live".
fn refusals_of_obs(node: &Node) -> usize {
    node.transcript
        .text()
        .lines()
        .filter(|l| {
            l.contains("publish refused: the channel is live from another encoder")
                && l.contains("peer=127.0.0.1:")
        })
        .count()
}

/// OBS publishing over SRT (Server `srt://HOST:PORT?streamid=<key>`, written by its
/// FFmpeg MPEG-TS output with libsrt): live, thumbnailed, relayed to nginx-rtmp's HLS,
/// offline when it stops.
#[test]
fn obs_studio_publishes_over_srt() {
    require("obs", "obs-studio");
    require("xvfb-run", "xvfb");
    require("xauth", "xauth");
    let dir = TempDir::new("obs-srt");
    let mut nginx = Nginx::start(&["live"], None);
    let node = Node::start(&format!(
        "[relay]\ntargets = [\"rtmp://127.0.0.1:{}/live/{{channel_id}}\"]\n[thumbnails]\ninterval = \"2s\"\n",
        nginx.port
    ));
    let port = node.srt_port.expect("SRT listening");
    let (id, key) = node.create_channel("obs-srt");
    let home = dir.0.join("home");
    write_obs_profile(&home, &format!("srt://127.0.0.1:{port}?streamid={key}"), "");
    let obs = Obs::start(&home);
    let stream = wait_for(Duration::from_secs(60), || {
        node.stream(&id)
            .filter(|s| s["video_codec"].is_string() && s["audio_codec"].is_string())
    })
    .unwrap_or_else(|| panic!("OBS did not go live over SRT within 60 s:\n{}", obs.said()));
    assert_eq!(stream["protocol"], "srt", "{stream}");
    assert_eq!(stream["video_codec"], "h264", "{stream}");
    assert_eq!(stream["audio_codec"], "aac", "{stream}");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(640), Some(360)),
        "{stream}"
    );
    wait_for(Duration::from_secs(20), || {
        node.stream(&id)?["thumbnail_updated_at"]
            .as_str()
            .map(|_| ())
    })
    .expect("a thumbnail of OBS's SRT stream");
    wait_db_live(&node, &id);
    let playlist = nginx.wait_playlist("live", &id, Duration::from_secs(20));

    drop(obs);
    wait_for(Duration::from_secs(15), || {
        (!node.db_live(&id).0 && node.stream(&id).is_none()).then_some(())
    })
    .expect("offline after OBS stopped");
    nginx.stop();
    let streams = ffprobe_streams(&playlist);
    assert!(
        streams
            .iter()
            .any(|s| s.0 == "video" && s.1 == "h264" && s.2 == Some(640)),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|s| s.0 == "audio" && s.1 == "aac"),
        "{streams:?}"
    );
    node.assert_never_printed(&key);
}
