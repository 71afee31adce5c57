//! Webhooks against a real receiver: every delivery verified with the Standard
//! Webhooks reference library (and with docs/website.md's Python example), every event seen in
//! order, retried after 500s and after the receiver was down for 20 s, nothing lost,
//! never the key.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwXXXXXXXXXXXX";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// What the receiver answered.
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A backend: answers 200 (or 500 while `fail_next` > 0), can go down (closes its
/// port and every connection) and come back on the same port.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    fail_next: Arc<AtomicUsize>,
    up: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Receiver {
            port: listener.local_addr().unwrap().port(),
            got: Arc::default(),
            fail_next: Arc::default(),
            up: Arc::new(AtomicBool::new(true)),
        };
        r.serve(listener);
        r
    }

    fn serve(&self, listener: TcpListener) {
        let (got, fail, up) = (self.got.clone(), self.fail_next.clone(), self.up.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (got, fail, up) = (got.clone(), fail.clone(), up.clone());
                        std::thread::spawn(move || connection(s, got, fail, up));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }

    fn back(&self) {
        self.up.store(true, Ordering::SeqCst);
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("the port again");
        self.serve(listener);
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Reads requests off one kept-alive connection until it closes or the receiver
/// goes down.
fn connection(
    s: TcpStream,
    got: Arc<Mutex<Vec<Received>>>,
    fail: Arc<AtomicUsize>,
    up: Arc<AtomicBool>,
) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) if up.load(Ordering::SeqCst) => continue,
            Err(_) => return,
        }
        if !up.load(Ordering::SeqCst) {
            return;
        }
        assert!(
            line.starts_with("POST /hooks?token=t0ken HTTP/1.1"),
            "{line}"
        );
        r.get_mut()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .expect("a content-length");
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        r.get_mut()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let status = if fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            500
        } else {
            200
        };
        got.lock().unwrap().push(Received {
            headers,
            body,
            status,
        });
        let reason = if status == 200 {
            "OK"
        } else {
            "Internal Server Error"
        };
        let _ = write!(
            w,
            "HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\n\r\nok"
        );
    }
}

/// Verifies a delivery with the Standard Webhooks reference library.
fn verified(r: &Received) -> bool {
    let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
    let mut headers = axum::http::HeaderMap::new();
    for (k, v) in &r.headers {
        headers.insert(
            axum::http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    wh.verify(&r.body, &headers).is_ok()
}

/// The deliveries taken (answered 200), as (type, channel_id), in order.
fn delivered(rx: &Receiver) -> Vec<(String, String)> {
    rx.got()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            let v = r.json();
            (
                v["type"].as_str().unwrap().to_string(),
                v["data"]["channel_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn wait_delivered(rx: &Receiver, what: (&str, &str), timeout: Duration) -> Duration {
    let started = Instant::now();
    wait_for(timeout, || {
        delivered(rx)
            .iter()
            .any(|(t, c)| t == what.0 && c == what.1)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{what:?} never delivered: {:#?}", delivered(rx)));
    started.elapsed()
}

/// Deliveries of one channel, in order, without thumbnails (their number depends on
/// the run).
fn story(rx: &Receiver, id: &str) -> Vec<String> {
    delivered(rx)
        .into_iter()
        .filter(|(t, c)| c == id && t != "thumbnail" && t != "health")
        .map(|(t, _)| t)
        .collect()
}

#[test]
fn a_backend_gets_every_event_signed_in_order_through_500s_and_an_outage() {
    let rx = Receiver::start();
    let node = Node::start(&format!(
        "[webhooks]\nurls = [\"http://127.0.0.1:{}/hooks?token=t0ken\"]\nsecret = \"{SECRET}\"\n\
         events = [\"live\", \"offline\", \"thumbnail\", \"health\"]\nallow_private_targets = true\n\
         timeout = \"2s\"\nretry_max_backoff = \"2s\"\n\
         [thumbnails]\ndir = \"thumbs\"\ninterval = \"2s\"\nwidth = 160\n",
        rx.port
    ));
    wait_logged(&node, "webhook deliveries on", Duration::from_secs(5));

    // 1. A publish: live, thumbnails, offline, in that order, each signed.
    let (a, key_a) = node.create_channel("first");
    let mut ff = ffmpeg_publish(&node.publish_url(&key_a), "160x90", 5);
    wait_delivered(&rx, ("live", &a), Duration::from_secs(10));
    wait_delivered(&rx, ("thumbnail", &a), Duration::from_secs(15));
    assert!(ff.wait(Duration::from_secs(20)).unwrap().success());
    wait_delivered(&rx, ("offline", &a), Duration::from_secs(5));
    assert_eq!(story(&rx, &a), ["live", "offline"]);
    let all = delivered(&rx);
    let (first_thumb, offline) = (
        all.iter()
            .position(|(t, c)| t == "thumbnail" && c == &a)
            .unwrap(),
        all.iter()
            .position(|(t, c)| t == "offline" && c == &a)
            .unwrap(),
    );
    assert!(
        all[0] == ("live".to_string(), a.clone()) && first_thumb < offline,
        "{all:#?}"
    );

    // 2. The backend answers 500 three times: the same delivery comes again until
    //    taken.
    rx.fail_next.store(3, Ordering::SeqCst);
    let (b, key_b) = node.create_channel("second");
    let mut ff = ffmpeg_publish(&node.publish_url(&key_b), "160x90", 3);
    let t = wait_delivered(&rx, ("live", &b), Duration::from_secs(15));
    eprintln!("live taken after three 500s: {t:?}");
    let tries: Vec<Received> = rx
        .got()
        .into_iter()
        .filter(|r| r.json()["type"] == "live" && r.json()["data"]["channel_id"] == b.as_str())
        .collect();
    assert_eq!(
        tries.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 500, 200],
        "{tries:#?}"
    );
    let id = tries[0].header("webhook-id").to_string();
    assert!(
        tries.iter().all(|r| r.header("webhook-id") == id),
        "one id across retries"
    );
    assert!(ff.wait(Duration::from_secs(20)).unwrap().success());
    wait_delivered(&rx, ("offline", &b), Duration::from_secs(10));

    // 3. The backend is down for 20 s while a channel goes live and offline: both
    //    arrive once it is back, in order.
    rx.down();
    let down_at = Instant::now();
    let (c, key_c) = node.create_channel("during the outage");
    let mut ff = ffmpeg_publish(&node.publish_url(&key_c), "160x90", 4);
    wait_listed(&node, &c, Duration::from_secs(10));
    assert!(ff.wait(Duration::from_secs(20)).unwrap().success());
    std::thread::sleep(Duration::from_secs(20).saturating_sub(down_at.elapsed()));
    assert!(story(&rx, &c).is_empty());
    eprintln!("the backend was down for {:?}", down_at.elapsed());
    let back = Instant::now();
    rx.back();
    wait_delivered(&rx, ("offline", &c), Duration::from_secs(10));
    eprintln!("caught up {:?} after the backend came back", back.elapsed());
    assert_eq!(story(&rx, &c), ["live", "offline"]);
    let (_, _, metrics) = node.http_get("/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("streamgate_webhook_attempts_total{url=\"http://127.0.0.1:"),
        "{metrics}"
    );
    assert!(metrics.contains("result=\"failed\""), "{metrics}");
    assert!(!metrics.contains("t0ken"), "the URL's query never shows");

    // Every delivery: signed (the reference library agrees), a unique id per event,
    // public data only, the node's name, never a key.
    let got = rx.got();
    assert!(got.len() >= 10, "{got:#?}");
    let mut ids = std::collections::HashMap::new();
    for r in &got {
        assert!(verified(r), "signature: {r:?}");
        let v = r.json();
        assert_eq!(v["id"], r.header("webhook-id"));
        assert!(v["id"].as_str().unwrap().starts_with("msg_"));
        assert!(v["node"].as_str().is_some_and(|n| !n.is_empty()), "{v}");
        assert!(v["timestamp"].as_str().is_some(), "{v}");
        if r.status == 200 {
            assert!(
                ids.insert(v["id"].as_str().unwrap().to_string(), ())
                    .is_none(),
                "taken twice: {v}"
            );
        }
        let text = String::from_utf8_lossy(&r.body);
        for key in [&key_a, &key_b, &key_c] {
            assert!(!text.contains(key.as_str()), "a key in a delivery: {text}");
        }
        node.transcript.push(format!("{:?} {text}", r.headers));
    }
    // A tampered body fails the check (the verification can fail).
    let mut forged = got[0].clone();
    forged.body.push(b' ');
    assert!(!verified(&forged));

    // docs/website.md's Python example verifies a real delivery, and refuses the forged one.
    let code = common::source::doc_code_block("docs/website.md", "## Webhooks", "```python");
    for (r, expect) in [(&got[got.len() - 1], "True"), (&forged, "False")] {
        let headers: serde_json::Map<String, serde_json::Value> = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::from(v.as_str())))
            .collect();
        let dir = TempDir::new("pyverify");
        let body = write_file(&dir.0, "body", "");
        std::fs::write(&body, &r.body).unwrap();
        let script = format!(
            "{code}\nimport json, sys\nprint(verify({SECRET:?}, json.loads(sys.argv[1]), open(sys.argv[2], 'rb').read()))\n"
        );
        let out = run_ok(std::process::Command::new("python3").args([
            "-c",
            &script,
            &serde_json::Value::Object(headers).to_string(),
            body.to_str().unwrap(),
        ]));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expect);
    }
    for key in [&key_a, &key_b, &key_c] {
        node.assert_never_printed(key);
    }
}

/// A webhook URL on the node's own network is refused unless allowed, with the fix.
#[test]
fn private_webhook_targets_need_to_be_allowed() {
    let dir = TempDir::new("whpriv");
    let cfg = write_file(
        &dir.0,
        "sg.toml",
        &format!("[webhooks]\nurls = [\"http://10.0.0.5/hooks\"]\nsecret = \"{SECRET}\"\n"),
    );
    let out = std::process::Command::new(common::bin())
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("webhooks.urls") && text.contains("allow_private_targets = true"),
        "{text}"
    );
    assert!(!text.contains("MfKQ9r8"), "the secret never shows: {text}");

    // Allowed: `streamgate check` reaches a backend that listens, and warns (with what
    // happens meanwhile) about one that does not.
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free_port();
    let cfg = write_file(
        &dir.0,
        "sg2.toml",
        &format!(
            "[database]\nurl = \"sqlite:{}/sg.db\"\n[webhooks]\nallow_private_targets = true\nsecret = \"{SECRET}\"\n\
             urls = [\"http://127.0.0.1:{}/up?token=t0ken\", \"http://127.0.0.1:{closed}/down\"]\n",
            dir.0.display(),
            up.local_addr().unwrap().port()
        ),
    );
    let out = std::process::Command::new(common::bin())
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let port = up.local_addr().unwrap().port();
    assert!(
        text.contains(&format!(
            "ok    webhook http://127.0.0.1:{port}/up: connected in"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "WARN  webhook http://127.0.0.1:{closed}/down: cannot connect"
        )) && text.contains("retried until it answers"),
        "{text}"
    );
    assert!(
        !text.contains("t0ken") && !text.contains("MfKQ9r8"),
        "{text}"
    );
}
