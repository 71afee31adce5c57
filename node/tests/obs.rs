//! OBS Studio itself publishes to the node over RTMPS: Debian's `obs-studio` under
//! `xvfb-run` with software GL, a profile written to `$HOME/.config/obs-studio`, and
//! `obs --startstreaming`. OBS verifies the server's certificate against
//! `/etc/ssl/certs` and nothing else, so the test shows it a CA it makes, together with
//! a host name for 127.0.0.1, in a private mount namespace: the machine's own trust
//! store and `/etc/hosts` are never touched.

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
         [Output]\nMode=Simple\n\
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
