//! What the operator watches and does: Prometheus metrics that move with a publish and
//! never carry a key, on a private address when asked; the admin API behind its token:
//! sessions with their peer, and a kick that can keep the key out for a while.

mod common;

use std::time::Duration;

use common::*;

/// The value of the first series whose line starts with `series`, 0 when absent.
/// The value of `series` (a name, or a name with its labels) in a scrape; 0 when it is
/// absent. The name must end where the series does: `streamgate_live_streams` is not
/// `streamgate_live_streams_by_protocol{...}` (the exporter's order of families varies).
/// A series' value (name alone: its unlabelled series), 0 when absent.
fn value(scrape: &str, series: &str) -> f64 {
    metric_value(scrape, series).unwrap_or(0.0)
}

fn scrape(node: &Node, port: u16) -> String {
    let (status, head, body) = node.http_request(port, "GET", "/metrics", "");
    assert_eq!(status, 200, "{head}");
    String::from_utf8(body).unwrap()
}

#[test]
fn metrics_move_with_a_publish_and_never_carry_a_key() {
    let node = Node::start(
        "[thumbnails]\ndir = \"thumbs\"\ninterval = \"2s\"\nwidth = 160\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nper_channel_metrics = false\n",
    );
    let admin = node.admin_port.expect("admin listening");
    // Only on the private address, with the dashboard, which reads the public API
    // from its own origin there.
    assert_eq!(node.http_get("/metrics").0, 404);
    assert_eq!(node.http_get("/dashboard").0, 404);
    let (status, head, page) = node.http_request(admin, "GET", "/dashboard", "");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&page).contains("/dashboard/app.js"));
    for asset in [
        "/dashboard/app.js",
        "/dashboard/style.css",
        "/api/v1/streams",
    ] {
        assert_eq!(node.http_request(admin, "GET", asset, "").0, 200, "{asset}");
    }
    let before = scrape(&node, admin);
    assert_eq!(value(&before, "streamgate_live_streams"), 0.0, "{before}");
    assert!(before.contains("process_resident_memory_bytes"), "{before}");
    assert!(before.contains("process_open_fds"), "{before}");

    let (id, key) = node.create_channel("watched");
    let _bad = RawPublisher::publish(node.rtmp_port, "live", "sg_not_a_key").err();
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 8);
    wait_listed(&node, &id, Duration::from_secs(10));
    let during = wait_for(Duration::from_secs(15), || {
        let s = scrape(&node, admin);
        (value(&s, "streamgate_thumbnails_total{result=\"written\"}") >= 1.0).then_some(s)
    })
    .expect("a thumbnail counted");
    assert_eq!(value(&during, "streamgate_live_streams"), 1.0, "{during}");
    // The publisher's connection is on one of the ingest threads.
    let on_threads: f64 = during
        .lines()
        .filter(|l| l.starts_with("streamgate_ingest_thread_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(on_threads, 1.0, "{during}");
    // Publishing on plain TCP, it is served by its thread's pump.
    let pumped = |s: &str| -> f64 {
        s.lines()
            .filter(|l| l.starts_with("streamgate_ingest_thread_pumped_connections{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let in_pump = wait_for(Duration::from_secs(5), || {
        let s = scrape(&node, admin);
        (pumped(&s) == 1.0).then_some(s)
    });
    assert!(in_pump.is_some(), "{during}");
    assert!(during.contains("streamgate_ingest_thread_busy_seconds_total{thread=\"0\"}"));
    assert!(during.contains("streamgate_ingest_thread_paused_seconds_total{thread=\"0\"}"));
    // One publisher is far from busy: its threads are not paced.
    assert_eq!(value(&during, "streamgate_ingest_pacing"), 0.0, "{during}");
    assert!(
        value(
            &during,
            "streamgate_connections_accepted_total{listener=\"rtmp\"}"
        ) >= 2.0
    );
    assert_eq!(
        value(
            &during,
            "streamgate_auth_decisions_total{result=\"accepted\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &during,
            "streamgate_auth_decisions_total{result=\"unknown_key\"}"
        ),
        1.0
    );
    assert!(
        value(&during, "streamgate_status_write_seconds_count") >= 1.0,
        "{during}"
    );
    assert!(
        during.contains("streamgate_auth_seconds_bucket"),
        "latency histogram"
    );
    assert!(
        !during.contains("channel_id"),
        "per-channel series are opt-in"
    );
    assert!(ff.wait(Duration::from_secs(20)).expect("done").success());
    let after = wait_for(Duration::from_secs(10), || {
        let s = scrape(&node, admin);
        (value(&s, "streamgate_live_streams") == 0.0).then_some(s)
    })
    .expect("live streams back to 0");
    // Byte counters reach the series in 64 KiB steps and in full when the connection
    // ends.
    assert!(
        value(&after, "streamgate_ingest_bytes_total") > 100_000.0,
        "{after}"
    );
    for s in [&before, &during, &after] {
        assert!(
            !s.contains(&key) && !s.contains("sg_not_a_key"),
            "no key in a scrape"
        );
    }
    node.assert_never_printed(&key);
}

#[test]
fn per_channel_series_when_asked() {
    let node = Node::start("[admin]\nper_channel_metrics = true\n");
    let (id, key) = node.create_channel("itemised");
    let _ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 10);
    wait_listed(&node, &id, Duration::from_secs(10));
    // Beside the public routes when no admin address is set.
    let s = wait_for(Duration::from_secs(10), || {
        let s = scrape(&node, node.http_port);
        s.contains(&format!(
            "streamgate_channel_bitrate_bits_per_second{{channel_id=\"{id}\"}}"
        ))
        .then_some(s)
    })
    .expect("a per-channel series");
    assert!(s.contains(&format!(
        "streamgate_channel_frames_per_second{{channel_id=\"{id}\"}}"
    )));
    assert!(!s.contains(&key));
}

#[test]
fn the_admin_api_lists_sessions_and_kicks_with_its_token_only() {
    let token = "0123456789abcdef0123456789abcdef";
    let node = Node::start(&format!("[admin]\ntoken = \"{token}\"\n"));
    let (id, key) = node.create_channel("moderated");
    let mut p = RawPublisher::publish(node.rtmp_port, "live", &key).expect("publish");
    p.send(9, 0, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
    wait_listed(&node, &id, Duration::from_secs(5));
    let port = node.http_port;
    let bearer = format!("Authorization: Bearer {token}\r\n");
    for headers in [
        "",
        "Authorization: Bearer wrong-token-wrong-token-wrong\r\n",
    ] {
        let (status, head, _) = node.http_request(port, "GET", "/admin/v1/sessions", headers);
        assert_eq!(status, 401, "{head}");
        assert!(head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"));
        let (status, _, _) = node.http_request(
            port,
            "POST",
            &format!("/admin/v1/channels/{id}/kick"),
            headers,
        );
        assert_eq!(status, 401);
    }
    let (status, _, body) = node.http_request(port, "GET", "/admin/v1/sessions", &bearer);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let session = &v["sessions"][0];
    assert_eq!(session["channel_id"], id.as_str());
    assert!(
        session["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{session}"
    );
    assert!(session["media_bytes"].as_u64().unwrap() >= 10, "{session}");
    // Kick, keeping the key out for 3 s.
    let (status, _, body) = node.http_request(
        port,
        "POST",
        &format!("/admin/v1/channels/{id}/kick?refuse_for=3s"),
        &bearer,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(p.wait_closed(Duration::from_secs(5)).is_some(), "kicked");
    let refused = RawPublisher::publish(node.rtmp_port, "live", &key)
        .err()
        .expect("refused while suspended");
    assert!(
        refused.contains("NetStream.Publish.Unauthorized"),
        "{refused}"
    );
    assert!(refused.contains("suspended"), "{refused}");
    // Once the time is up, the same key goes live again.
    let back = wait_for(Duration::from_secs(10), || {
        RawPublisher::publish(node.rtmp_port, "live", &key).ok()
    });
    assert!(back.is_some(), "the key works again after refuse_for");
    assert!(node.transcript.contains("publish ended by the operator"));
    node.assert_never_printed(&key);
    node.assert_never_printed(token);
}

/// Every wrong admin token makes its address wait longer before its next admin
/// requests are answered (the right token too, so the speed of an answer tells a
/// guesser nothing), as a wrong stream key does on the RTMP side; other addresses,
/// and requests without a token, are not slowed down. Before, wrong tokens were
/// answered at once, as fast as they came.
#[test]
fn wrong_admin_tokens_slow_their_address_down() {
    let token = "0123456789abcdef0123456789abcdef";
    let node = Node::start(&format!(
        "[admin]\ntoken = \"{token}\"\n[auth]\nfailure_delay = \"1s\"\nmax_failure_delay = \"3s\"\n"
    ));
    let guesser: std::net::IpAddr = [127, 0, 0, 2].into();
    let ask = |from: std::net::IpAddr, given: &str| {
        let headers = if given.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {given}\r\n")
        };
        let (status, _, took) = http_request_from(
            from,
            node.http_port,
            "GET",
            "/admin/v1/sessions",
            &headers,
            Duration::from_secs(10),
        )
        .unwrap();
        (status, took)
    };
    // Token lengths from 1 to 40 bytes: the first answered at once, then 1 s, 2 s...
    let (status, took) = ask(guesser, "x");
    assert_eq!(status, 401);
    assert!(took < Duration::from_millis(500), "{took:?}");
    let (status, took) = ask(guesser, "0123456789abcdef0123456789abcdeX");
    assert_eq!(status, 401);
    assert!(
        took >= Duration::from_secs(1),
        "second wrong token waited {took:?}"
    );
    let (status, took) = ask(guesser, &"y".repeat(40));
    assert_eq!(status, 401);
    assert!(
        took >= Duration::from_secs(2),
        "third wrong token waited {took:?}"
    );
    // The right token from the guessing address waits too (3 s, the longest).
    let (status, took) = ask(guesser, token);
    assert_eq!(status, 200);
    assert!(took >= Duration::from_secs(3), "{took:?}");
    // Another address is not slowed down, nor is a request without a token.
    let (status, took) = ask([127, 0, 0, 3].into(), token);
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "{took:?}");
    for _ in 0..3 {
        let (status, took) = ask([127, 0, 0, 4].into(), "");
        assert_eq!(status, 401);
        assert!(took < Duration::from_millis(500), "{took:?}");
    }
    let metrics = scrape(&node, node.http_port);
    assert_eq!(
        value(&metrics, "streamgate_admin_token_failures_total"),
        3.0
    );
    assert!(node.transcript.contains("admin API: wrong token"));
    node.assert_never_printed(token);
}

/// `kick?refuse_for` suspends the channel's key on this node whether or not it is live
/// here, and says so (scope: this node, until it restarts); `refuse_for=0s` lifts it.
#[test]
fn a_suspension_says_what_it_covers_and_can_be_lifted() {
    let token = "0123456789abcdef0123456789abcdef";
    let node = Node::start(&format!("[admin]\ntoken = \"{token}\"\n"));
    let (id, key) = node.create_channel("suspended");
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let kick = |query: &str| {
        let (status, _, body) = node.http_request(
            node.http_port,
            "POST",
            &format!("/admin/v1/channels/{id}/kick{query}"),
            &bearer,
        );
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        )
    };
    let (status, v) = kick("");
    assert_eq!(status, 404, "nothing to kick, nothing to suspend: {v}");
    let (status, v) = kick("?refuse_for=1h");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kicked"], false, "{v}");
    assert_eq!(v["suspension"]["refused_for_s"], 3600, "{v}");
    assert_eq!(
        v["suspension"]["scope"], "this node, until it restarts",
        "{v}"
    );
    let refused = RawPublisher::publish(node.rtmp_port, "live", &key)
        .err()
        .expect("refused while suspended");
    assert!(refused.contains("suspended"), "{refused}");
    let (status, v) = kick("?refuse_for=0s");
    assert_eq!(status, 200, "{v}");
    assert!(v["suspension"].is_null(), "{v}");
    let _p = RawPublisher::publish(node.rtmp_port, "live", &key).expect("lifted");
    wait_listed(&node, &id, Duration::from_secs(5));
    node.assert_never_printed(&key);
}

#[test]
fn without_a_token_there_is_no_admin_api() {
    let node = Node::start("");
    let (status, _, _) = node.http_request(
        node.http_port,
        "GET",
        "/admin/v1/sessions",
        "Authorization: Bearer anything-anything-anything\r\n",
    );
    assert_eq!(status, 404);
}

/// A website without Supabase Realtime follows the channels through server-sent events:
/// live, thumbnail updated, offline, by public id only.
#[test]
fn the_events_stream_sees_live_thumbnail_and_offline() {
    use std::io::{BufRead, BufReader, Write};

    let node = Node::start("[thumbnails]\ndir = \"thumbs\"\ninterval = \"2s\"\nwidth = 160\n");
    let (id, key) = node.create_channel("followed");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).unwrap();
    write!(
        s,
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let seen = seen.clone();
        let s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                seen.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let has = |needle: &str| seen.lock().unwrap().contains(needle);
    wait_for(Duration::from_secs(5), || {
        has("text/event-stream").then_some(())
    })
    .expect("an event stream");
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 5);
    let event = |name: &str| {
        let needle = format!("event: {name}\ndata: {{\"type\":\"{name}\",\"channel_id\":\"{id}\"");
        wait_for(Duration::from_secs(20), || has(&needle).then_some(()))
            .unwrap_or_else(|| panic!("no {name} event:\n{}", seen.lock().unwrap()));
    };
    event("live");
    event("thumbnail");
    assert!(ff.wait(Duration::from_secs(20)).expect("done").success());
    event("offline");
    let text = seen.lock().unwrap().clone();
    assert!(text.contains("\"name\":\"followed\""), "{text}");
    assert!(!text.contains(&key));
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// A website on another origin reads the public API, the events and the thumbnails
/// (CORS); with a list of origins only those may; the admin routes never answer
/// another origin.
#[test]
fn websites_on_other_origins_read_the_public_api_and_only_that() {
    let header = |head: &str, name: &str| -> Option<String> {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.trim().to_string())
    };
    let node = Node::start("");
    let from = "Origin: https://site.example\r\n";
    let (status, head, _) = node.http_request(node.http_port, "GET", "/api/v1/streams", from);
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("*"),
        "{head}"
    );
    // The browser's preflight (what a fetch with extra headers sends first).
    let (status, head, _) = node.http_request(
        node.http_port,
        "OPTIONS",
        "/api/v1/events",
        &format!("{from}Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\n"),
    );
    assert_eq!(status, 204, "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(header(&head, "access-control-allow-methods")
        .unwrap()
        .contains("GET"));
    assert!(header(&head, "access-control-allow-headers")
        .unwrap()
        .contains("Last-Event-ID"));
    // Never on the operator's routes.
    let (_, head, _) = node.http_request(node.http_port, "GET", "/metrics", from);
    assert_eq!(header(&head, "access-control-allow-origin"), None, "{head}");
    drop(node);

    let node = Node::start(
        "[http]\nlisten = \"127.0.0.1:0\"\ncors_origins = [\"https://site.example\"]\n",
    );
    let (_, head, _) = node.http_request(node.http_port, "GET", "/api/v1/streams", from);
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("https://site.example")
    );
    assert!(header(&head, "vary").unwrap().contains("Origin"), "{head}");
    let (status, head, _) = node.http_request(
        node.http_port,
        "GET",
        "/api/v1/streams",
        "Origin: https://elsewhere.example\r\n",
    );
    assert_eq!(
        status, 200,
        "the answer is served; the browser keeps it from the page"
    );
    assert_eq!(header(&head, "access-control-allow-origin"), None, "{head}");
}

/// `streamgate check` with `config_text`: (exit success, stdout).
fn check(dir: &std::path::Path, config_text: &str) -> (bool, String) {
    let cfg = write_file(dir, "check.toml", config_text);
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_passes_a_good_setup_and_says_what_to_fix_in_a_broken_one() {
    let nginx = Nginx::start(&["live"], None);
    let dir = TempDir::new("check");
    let db = format!("[database]\nurl = \"sqlite:{}/sg.db\"\n", dir.0.display());
    let good = format!(
        "{db}[thumbnails]\ndir = \"{}/thumbs\"\n[relay]\ntargets = [\"rtmp://127.0.0.1:{}/live/{{channel_id}}\"]\n",
        dir.0.display(),
        nginx.port
    );
    let (ok, out) = check(&dir.0, &good);
    assert!(ok, "{out}");
    assert!(out.contains("ok    database sqlite:"), "{out}");
    assert!(out.contains("ok    thumbnail folder"), "{out}");
    assert!(
        out.contains(&format!(
            "ok    relay target rtmp://127.0.0.1:{}/live/{{channel_id}}: connected",
            nginx.port
        )),
        "{out}"
    );
    assert!(out.contains("net.core.somaxconn"), "{out}");
    assert!(out.contains("open files"), "{out}");

    // A thumbnail folder that cannot exist: its parent is a file.
    write_file(&dir.0, "a-file", "x");
    let (ok, out) = check(
        &dir.0,
        &format!(
            "{db}[thumbnails]\ndir = \"{}/a-file/thumbs\"\n",
            dir.0.display()
        ),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  thumbnail folder") && out.contains("thumbnails.dir"),
        "{out}"
    );

    // A relay target nobody listens on.
    let closed = free_port();
    let (ok, out) = check(
        &dir.0,
        &format!("{db}[relay]\ntargets = [\"rtmp://127.0.0.1:{closed}/live/{{channel_id}}\"]\n"),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  relay target rtmp://127.0.0.1:{closed}/live/{{channel_id}}"
        )) && out.contains("refused"),
        "{out}"
    );

    // A database that cannot be reached.
    let (ok, out) = check(
        &dir.0,
        &format!("[database]\nurl = \"postgres://postgres:hunter2@127.0.0.1:{closed}/db?sslmode=disable\"\nconnect_timeout = \"2s\"\n"),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  database") && out.contains("cannot reach Postgres"),
        "{out}"
    );
    assert!(
        out.contains("Connection refused"),
        "the cause, not a bare error: {out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
}
