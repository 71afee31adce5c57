//! Several nodes on one Postgres, behind the real nginx `stream` balancer of
//! `deploy/nginx-stream.conf` (PROXY protocol), relaying to a real nginx-rtmp: a
//! reconnect landing on the other node takes the channel over without an offline in
//! the table, a second encoder is refused while the first sends, a killed node's
//! channels are marked offline by the others (by exactly one of them), and the nodes
//! see the real client addresses through the balancer.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use streamgate::store::FleetRegistry;

const ADMIN_TOKEN: &str = "fleet-admin-token-0123456789";
const HEARTBEAT: Duration = Duration::from_secs(1);
const DEAD_AFTER_BEATS: u32 = 3;
const RECHECK: Duration = Duration::from_secs(5);
const SILENCE: Duration = Duration::from_secs(3);

fn second_client() -> IpAddr {
    [127, 0, 0, 2].into()
}

/// A private Postgres with the schema `streamgate migrate` creates, a log of every
/// live/session change of the channels table (a trigger), two nodes, the balancer in
/// front of them and nginx-rtmp behind them.
struct Fleet {
    pg: Postgres,
    db: String,
    upstream: Nginx,
    a: Node,
    b: Node,
    balancer: StreamProxy,
}

impl Fleet {
    fn start(db: &str, rtmp_extra: &str) -> Fleet {
        let pg = Postgres::start();
        let db = pg.create_db(db);
        let out = run_ok(
            std::process::Command::new(bin())
                .arg("migrate")
                .env("STREAMGATE_DATABASE_URL", pg.url(&db)),
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("nodes table streamgate_nodes ready"),
            "{said}"
        );
        pg.psql(
            &db,
            "CREATE TABLE status_log (n bigserial PRIMARY KEY, is_live boolean, session text, node text); \
             CREATE FUNCTION log_status() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               INSERT INTO status_log (is_live, session, node) VALUES (NEW.is_live, NEW.live_session::text, NEW.live_node); \
               RETURN NEW; END $$; \
             CREATE TRIGGER log_status AFTER UPDATE OF is_live, live_session ON channels \
               FOR EACH ROW EXECUTE FUNCTION log_status()",
        );
        let upstream = Nginx::start(&["live"], None);
        let node = |name: &str| {
            Node::start(&format!(
                "[database]\nurl = \"{url}\"\n\n\
                 [rtmp]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"{BALANCER_SOURCE}\"]\n{rtmp_extra}\n\n\
                 [status]\nnode_id = \"{name}\"\nheartbeat_interval = \"{hb}s\"\ndead_after_beats = {DEAD_AFTER_BEATS}\n\n\
                 [http]\nlisten = \"127.0.0.1:0\"\nshow_node = true\n\n\
                 [relay]\ntargets = [\"rtmp://127.0.0.1:{up}/live/{{channel_id}}\"]\n\n\
                 [admin]\ntoken = \"{ADMIN_TOKEN}\"\n",
                url = pg.url(&db),
                hb = HEARTBEAT.as_secs(),
                up = upstream.port,
            ))
        };
        let a = node("node-a");
        let b = node("node-b");
        let balancer = StreamProxy::balance(
            (a.rtmp_port, b.rtmp_port),
            (a.srt_port.expect("SRT"), b.srt_port.expect("SRT")),
        );
        Fleet {
            pg,
            db,
            upstream,
            a,
            b,
            balancer,
        }
    }

    /// (is_live, live_session, live_node) in the table.
    fn row(&self, id: &str) -> (bool, String, String) {
        let row = self.pg.psql(
            &self.db,
            &format!("SELECT is_live, coalesce(live_session::text, ''), coalesce(live_node, '') FROM channels WHERE id = '{id}'"),
        );
        let mut parts = row.split('|');
        (
            parts.next() == Some("t"),
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        )
    }

    fn wait_row(&self, id: &str, within: Duration, want: impl Fn(&(bool, String, String)) -> bool) {
        wait_for(within, || Some(self.row(id)).filter(&want)).unwrap_or_else(|| {
            panic!(
                "the table never showed the expected state of {id}: {:?}\nnode-a:\n{}\nnode-b:\n{}",
                self.row(id),
                self.a.transcript.text(),
                self.b.transcript.text()
            )
        });
    }

    /// Every (is_live, session, node) the channels table went through, in order.
    fn status_log(&self) -> Vec<(bool, String, String)> {
        self.pg
            .psql(
                &self.db,
                "SELECT is_live, coalesce(session, ''), coalesce(node, '') FROM status_log ORDER BY n",
            )
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut p = l.split('|');
                (
                    p.next() == Some("t"),
                    p.next().unwrap_or_default().to_string(),
                    p.next().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn balanced_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.balancer.port)
    }
}

/// The admin API's sessions of a node.
fn sessions(node: &Node) -> Vec<serde_json::Value> {
    admin_get(node, "/admin/v1/sessions")["sessions"]
        .as_array()
        .unwrap()
        .clone()
}

fn admin_get(node: &Node, path: &str) -> serde_json::Value {
    let (status, _, body) = node.http_request(
        node.http_port,
        "GET",
        path,
        &format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn session_of(node: &Node, id: &str) -> Option<serde_json::Value> {
    sessions(node).into_iter().find(|s| s["channel_id"] == id)
}

fn relay_connected(node: &Node, id: &str) -> bool {
    node.stream(id)
        .is_some_and(|s| s["relays"][0]["connected"] == true)
}

/// A keyframe-shaped video message (the node relays what it cannot interpret).
const VIDEO: &[u8] = &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65];

#[test]
fn a_reconnect_on_the_other_node_takes_over_and_a_second_encoder_is_refused() {
    let f = Fleet::start("sg_fleet_takeover", "");
    let (id, key) = f.a.create_channel("fleet-takeover");

    // Through the balancer: it lands on one node, which relays it upstream.
    let _first = ffmpeg_publish(&f.balanced_url(&key), "320x240", 60);
    let (x, y) = wait_for(Duration::from_secs(15), || {
        if f.a.stream(&id).is_some() {
            Some((&f.a, &f.b))
        } else if f.b.stream(&id).is_some() {
            Some((&f.b, &f.a))
        } else {
            None
        }
    })
    .expect("the publish through the balancer went live on a node");
    let x_name = if std::ptr::eq(x, &f.a) {
        "node-a"
    } else {
        "node-b"
    };
    let y_name = if x_name == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    // The node saw the client, not the balancer.
    let peer = session_of(x, &id).unwrap()["peer"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    let first_session = session_of(x, &id).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    f.wait_row(&id, Duration::from_secs(5), |r| {
        r.0 && r.1 == first_session && r.2 == x_name
    });
    wait_for(Duration::from_secs(15), || {
        relay_connected(x, &id).then_some(())
    })
    .expect("the first node relays upstream");

    // The encoder reconnects and lands on the other node (pointed there directly, as
    // the balancer's choice cannot be forced): same address, so it takes over.
    let mut second = ffmpeg_publish(&y.publish_url(&key), "320x240", 60);
    wait_listed(y, &id, Duration::from_secs(15));
    let accepted = Instant::now();
    let second_session = session_of(y, &id).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The first node ends its publish, and with it its relay, within the re-check.
    wait_for(RECHECK + Duration::from_secs(1), || {
        x.stream(&id).is_none().then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{x_name} still carries the channel {:?} after the takeover:\n{}",
            accepted.elapsed(),
            x.transcript.text()
        )
    });
    wait_logged(
        x,
        "a newer publish of this channel went live on another node",
        Duration::from_secs(1),
    );
    f.wait_row(&id, Duration::from_secs(5), |r| {
        r.0 && r.1 == second_session && r.2 == y_name
    });
    // The upstream gets the second node's stream (nginx-rtmp took the first one's
    // relay until it ended).
    wait_for(Duration::from_secs(20), || {
        relay_connected(y, &id).then_some(())
    })
    .unwrap_or_else(|| panic!("{y_name} never relayed:\n{}", y.transcript.text()));
    assert!(x.stream(&id).is_none());
    // The table went from the first session to the second without an offline.
    let log = f.status_log();
    let first_at = log
        .iter()
        .position(|r| r.1 == first_session)
        .expect("first session logged");
    let second_at = log
        .iter()
        .position(|r| r.1 == second_session)
        .expect("second session logged");
    assert!(first_at < second_at, "{log:?}");
    assert!(
        log[first_at..].iter().all(|r| r.0),
        "the channel showed offline during the switch: {log:?}"
    );

    // A second encoder from another address while the current one sends: refused,
    // on the other node (from what the table knows) and on the same node.
    for node in [x, y] {
        let refused = RawPublisher::publish_from(second_client(), node.rtmp_port, "live", &key)
            .err()
            .expect("a second encoder is refused");
        assert!(
            refused.starts_with("NetStream.Publish.BadName")
                && refused.contains("already live from another encoder"),
            "{refused}"
        );
    }
    assert_eq!(f.row(&id).1, second_session, "nothing changed hands");

    // The current encoder's connection goes half-dead (stopped: the socket stays
    // open, nothing arrives). Once it has been silent for rtmp.takeover_silence, a
    // publish from another address on the other node takes over: before the idle
    // timeout (10 s) would have ended it.
    signal(second.child.id(), "STOP");
    let stopped = Instant::now();
    let mut third = wait_for(Duration::from_secs(12), || {
        std::thread::sleep(Duration::from_millis(250));
        RawPublisher::publish_from(second_client(), x.rtmp_port, "live", &key).ok()
    })
    .unwrap_or_else(|| panic!("never taken over:\n{}", x.transcript.text()));
    let waited = stopped.elapsed();
    third.send(9, 0, VIDEO);
    assert!(
        waited >= SILENCE && waited < Duration::from_secs(9),
        "taken over {waited:?} after the encoder went silent"
    );
    wait_for(RECHECK + Duration::from_secs(1), || {
        y.stream(&id).is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("{y_name} kept the silent publish:\n{}", y.transcript.text()));
    signal(second.child.id(), "CONT");
    let _ = second.wait(Duration::from_secs(10));

    // ffmpeg shows why it cannot go live while that one sends.
    third.send(9, 40, VIDEO);
    let mut refused = ffmpeg_publish(&x.publish_url(&key), "320x240", 10);
    refused
        .wait(Duration::from_secs(20))
        .expect("ffmpeg gives up on a refusal");
    assert!(
        refused
            .stderr()
            .contains("already live from another encoder"),
        "{}",
        refused.stderr()
    );
    third.send(9, 80, VIDEO);
    assert!(x.stream(&id).is_some());

    for n in [&f.a, &f.b] {
        n.assert_never_printed(&key);
    }
    drop(f.upstream);
}

#[test]
fn a_killed_nodes_channels_are_marked_offline_by_the_others() {
    let mut f = Fleet::start("sg_fleet_dead", "");
    let (id, key) = f.a.create_channel("fleet-dead");
    let mut publisher = RawPublisher::publish(f.a.rtmp_port, "live", &key).unwrap();
    publisher.send(9, 0, VIDEO);
    f.wait_row(&id, Duration::from_secs(5), |r| r.0 && r.2 == "node-a");

    // Any node's admin API shows the whole fleet.
    let fleet = admin_get(&f.b, "/admin/v1/fleet");
    let nodes: Vec<&str> = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["node-a", "node-b"], "{fleet}");
    assert!(fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["alive"] == true));
    let carried = &fleet["channels"].as_array().unwrap()[0];
    assert_eq!(carried["channel_id"], id.as_str());
    assert_eq!(carried["node"], "node-a");
    // Each node's public API still lists its own streams, saying which node it is
    // (http.show_node).
    assert_eq!(f.a.stream(&id).unwrap()["node"], "node-a");
    assert!(f.b.stream(&id).is_none());

    // Swept while it lives (as if cut off from the database for dead_after): it
    // registers again at its next beat and marks its channel live again at its next
    // re-check.
    f.pg.psql(
        &f.db,
        "DELETE FROM streamgate_nodes WHERE id = 'node-a'; \
         UPDATE channels SET is_live = false, live_session = NULL WHERE live_node = 'node-a'",
    );
    let swept = Instant::now();
    let mut t = 40;
    let restored = loop {
        publisher.send(9, t, VIDEO);
        t += 40;
        let back = f.pg.psql(
            &f.db,
            "SELECT count(*) FROM streamgate_nodes WHERE id = 'node-a'",
        ) == "1";
        if back && f.row(&id).0 {
            break true;
        }
        if swept.elapsed() > RECHECK + Duration::from_secs(2) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(restored, "{:?}\n{}", f.row(&id), f.a.transcript.text());
    wait_logged(&f.a, "marking it live again", Duration::from_secs(1));
    let offline_before = f.status_log().iter().filter(|r| !r.0).count();

    f.a.kill();
    let killed = Instant::now();
    let dead_after = HEARTBEAT * DEAD_AFTER_BEATS;
    // Declared dead once it missed dead_after_beats heartbeats (its last one came up to
    // a beat before the kill), at the next beat of the survivor.
    f.wait_row(&id, dead_after + HEARTBEAT * 2, |r| !r.0);
    let offline_after = killed.elapsed();
    assert!(
        offline_after >= dead_after - HEARTBEAT,
        "marked offline {offline_after:?} after the kill: before the node was dead"
    );
    wait_logged(&f.b, "declared dead", Duration::from_secs(1));
    assert_eq!(
        f.pg.psql(
            &f.db,
            "SELECT string_agg(id, ',' ORDER BY id) FROM streamgate_nodes"
        ),
        "node-b"
    );
    let fleet = admin_get(&f.b, "/admin/v1/fleet");
    assert!(fleet["channels"].as_array().unwrap().is_empty(), "{fleet}");
    // The sweep marked it offline once.
    let log = f.status_log();
    assert_eq!(
        log.iter().filter(|r| !r.0).count(),
        offline_before + 1,
        "{log:?}"
    );
    drop(publisher);
}

#[test]
fn the_nodes_see_the_real_client_addresses_through_the_balancer() {
    let f = Fleet::start(
        "sg_fleet_addresses",
        "max_connections_per_address = 1\nmax_pending_per_address = 1",
    );
    let (c1, k1) = f.a.create_channel("fleet-addr-1");
    let (c2, k2) = f.a.create_channel("fleet-addr-2");
    let mut from_second =
        RawPublisher::publish_from(second_client(), f.balancer.port, "live", &k1).unwrap();
    from_second.send(9, 0, VIDEO);
    let carrier = wait_for(Duration::from_secs(5), || {
        [&f.a, &f.b]
            .into_iter()
            .find(|n| session_of(n, &c1).is_some())
    })
    .expect("listed");
    let peer = session_of(carrier, &c1).unwrap()["peer"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(peer.starts_with("127.0.0.2:"), "{peer}");
    // The same client again lands on the same node (hash on the client address), and
    // its per-address limit of one connection counts the client, not the balancer...
    let again = RawPublisher::publish_from(second_client(), f.balancer.port, "live", &k2);
    assert!(
        again.is_err(),
        "a second connection from 127.0.0.2 was let in"
    );
    // ...so another client behind the same balancer still gets in.
    let mut from_first = RawPublisher::publish(f.balancer.port, "live", &k2).unwrap();
    from_first.send(9, 0, VIDEO);
    let carrier = wait_for(Duration::from_secs(5), || {
        [&f.a, &f.b]
            .into_iter()
            .find(|n| session_of(n, &c2).is_some())
    })
    .expect("listed");
    let peer = session_of(carrier, &c2).unwrap()["peer"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    for n in [&f.a, &f.b] {
        assert!(
            !n.transcript.contains(&format!("peer={BALANCER_SOURCE}")),
            "a node took the balancer for a client"
        );
    }
}

/// Several nodes sweep the same dead nodes at the same moment: every channel is
/// marked offline once, and each dead node is reported by one sweeper.
#[test]
fn a_dead_node_is_swept_exactly_once_by_concurrent_sweepers() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_fleet_sweep");
    let mut config = streamgate::config::Config::default();
    config.database.url = serde_json::from_value(serde_json::Value::String(pg.url(&db))).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(streamgate::store::migrate(&config))
        .unwrap();
    pg.psql(
        &db,
        "CREATE TABLE offline_log (channel uuid); \
         CREATE FUNCTION log_offline() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF OLD.is_live AND NOT NEW.is_live THEN INSERT INTO offline_log VALUES (NEW.id); END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER log_offline AFTER UPDATE ON channels FOR EACH ROW EXECUTE FUNCTION log_offline(); \
         INSERT INTO streamgate_nodes (id, address, version, started_at, last_heartbeat) \
           SELECT 'dead-' || i, 'x', 'x', now(), now() - interval '1 hour' FROM generate_series(1, 5) i; \
         INSERT INTO streamgate_nodes (id, address, version, started_at, last_heartbeat) \
           VALUES ('alive', 'x', 'x', now(), now()); \
         INSERT INTO channels (name, stream_key_hash, is_live, live_node, live_session, last_seen) \
           SELECT 'c' || i, md5(i::text), true, CASE WHEN i <= 100 THEN 'dead-' || (i % 5 + 1) ELSE 'alive' END, \
                  gen_random_uuid(), now() FROM generate_series(1, 120) i",
    );
    let sweepers: Vec<_> = (0..8)
        .map(|i| {
            let config = config.clone();
            runtime.spawn(async move {
                let store = streamgate::store::postgres::PgStore::open(
                    &config.database.url.to_string(),
                    &config.database,
                    format!("sweeper-{i}"),
                )
                .await
                .unwrap();
                store
                    .sweep_dead_nodes(Duration::from_secs(30))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let results: Vec<_> = runtime.block_on(async {
        let mut all = Vec::new();
        for s in sweepers {
            all.push(s.await.unwrap());
        }
        all
    });
    let mut nodes: Vec<String> = results.iter().flatten().map(|s| s.node.clone()).collect();
    nodes.sort();
    assert_eq!(nodes, ["dead-1", "dead-2", "dead-3", "dead-4", "dead-5"]);
    let channels: usize = results.iter().flatten().map(|s| s.channels.len()).sum();
    assert_eq!(channels, 100, "{results:?}");
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*), count(DISTINCT channel) FROM offline_log"
        ),
        "100|100"
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM channels WHERE is_live"),
        "20",
        "the live node's channels stay live"
    );
    assert_eq!(pg.psql(&db, "SELECT id FROM streamgate_nodes"), "alive");
}

/// SRT publishes follow the fleet's rules as RTMP ones do: while an RTMP encoder
/// sends on one node, an SRT publish of its key from another address on the other
/// node is refused (1409, conflict); once the encoder has been silent for
/// `rtmp.takeover_silence`, the SRT publish takes the channel over and the first node
/// lets it go; then an RTMP publish from elsewhere is refused while SRT sends.
#[test]
fn srt_publishes_take_over_and_are_refused_across_nodes_as_rtmp_ones() {
    let f = Fleet::start("sg_fleet_srt", "");
    let (id, key) = f.a.create_channel("fleet-srt");
    // RTMP on node a, from 127.0.0.1.
    let mut rtmp = ffmpeg_publish(&f.a.publish_url(&key), "320x240", 60);
    wait_listed(&f.a, &id, Duration::from_secs(15));
    f.wait_row(&id, Duration::from_secs(5), |r| r.0 && r.2 == "node-a");

    // SRT on node b from 127.0.0.2 while it sends: refused, told why.
    let b_srt = f.b.srt_port.expect("SRT on node b");
    let elsewhere = LossyPath::start_from(second_client(), b_srt, u64::MAX);
    let url = srt_url(elsewhere.port, &format!("live/{key}"), "");
    let mut refused = ffmpeg_srt(&url, "libx264", "320x240", 5);
    let status = refused
        .wait(Duration::from_secs(10))
        .expect("ffmpeg gives up on a refusal");
    assert!(!status.success());
    assert!(
        refused.stderr().contains("REJECT") || refused.stderr().contains("reject"),
        "{}",
        refused.stderr()
    );
    wait_logged(
        &f.b,
        "live on another node from another encoder",
        Duration::from_secs(5),
    );
    assert!(f.b.stream(&id).is_none() && f.a.stream(&id).is_some());

    // The RTMP encoder goes half-dead: the SRT publish takes over after the silence.
    signal(rtmp.child.id(), "STOP");
    let stopped = Instant::now();
    let mut srt = None;
    let taken = wait_for(Duration::from_secs(15), || {
        if srt.is_none() {
            srt = Some(ffmpeg_srt(&url, "libx264", "320x240", 40));
        }
        if let Some(s) = f.b.stream(&id) {
            return Some(s);
        }
        // Refused for now: ffmpeg gives up; try again.
        if srt
            .as_mut()
            .unwrap()
            .wait(Duration::from_millis(300))
            .is_some()
        {
            srt = None;
        }
        None
    })
    .unwrap_or_else(|| panic!("never taken over over SRT:\n{}", f.b.transcript.text()));
    let waited = stopped.elapsed();
    assert_eq!(taken["protocol"], "srt", "{taken}");
    assert!(
        waited >= SILENCE && waited < Duration::from_secs(12),
        "taken over {waited:?} after the encoder went silent"
    );
    wait_for(RECHECK + Duration::from_secs(1), || {
        f.a.stream(&id).is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("node a kept the silent publish:\n{}", f.a.transcript.text()));
    f.wait_row(&id, Duration::from_secs(5), |r| r.0 && r.2 == "node-b");
    signal(rtmp.child.id(), "CONT");
    let _ = rtmp.wait(Duration::from_secs(10));

    // While SRT sends, RTMP from another address is refused, on either node.
    for node in [&f.a, &f.b] {
        let refused =
            RawPublisher::publish_from([127, 0, 0, 1].into(), node.rtmp_port, "live", &key)
                .err()
                .expect("an RTMP encoder from elsewhere is refused");
        assert!(
            refused.contains("already live from another encoder"),
            "{refused}"
        );
    }
    assert!(f.b.stream(&id).is_some());
    drop(srt);

    // Through the balancer's UDP port (deploy/nginx-stream.conf): an SRT publish of
    // another channel lands on one node and goes live there.
    let (other, other_key) = f.a.create_channel("fleet-srt-balanced");
    let balanced = srt_url(f.balancer.srt_port.unwrap(), &other_key, "");
    let _through = ffmpeg_srt(&balanced, "libx264", "320x240", 20);
    let on = wait_for(Duration::from_secs(15), || {
        if f.a.stream(&other).is_some() {
            Some("node-a")
        } else if f.b.stream(&other).is_some() {
            Some("node-b")
        } else {
            None
        }
    })
    .expect("an SRT publish through the balancer went live on a node");
    f.wait_row(&other, Duration::from_secs(5), |r| r.0 && r.2 == on);
    for n in [&f.a, &f.b] {
        n.assert_never_printed(&key);
        n.assert_never_printed(&other_key);
    }
    drop(f.upstream);
}

/// `/thumbs/<md5>.jpg` of a channel live on node A, asked of node B: B fetches it from
/// A (found through the registry), serves it with A's validators, answers 304 to them,
/// never forwards a forwarded request, and says 404 at once for a channel live
/// nowhere and within the fetch deadline for a node that died.
#[test]
fn any_node_serves_the_thumbnail_of_a_channel_live_on_another() {
    let pg = Postgres::start();
    let db = pg.create_db("fleetthumbs");
    run_ok(
        std::process::Command::new(bin())
            .arg("migrate")
            .env("STREAMGATE_DATABASE_URL", pg.url(&db)),
    );
    let node = |name: &str| {
        Node::start(&format!(
            "[database]\nurl = \"{url}\"\n\n\
             [status]\nnode_id = \"{name}\"\nheartbeat_interval = \"1s\"\ndead_after_beats = 3\n\n\
             [thumbnails]\ndir = \"thumbs\"\nwidth = 320\ninterval = \"2s\"\n\n\
             [admin]\ntoken = \"{ADMIN_TOKEN}\"\n",
            url = pg.url(&db),
        ))
    };
    let mut a = node("node-a");
    let b = node("node-b");
    // Each node announces where its thumbnails are (from its next beat on: the first
    // one goes before the HTTP listener is bound).
    let want = format!("node-a=http://127.0.0.1:{}", a.http_port);
    wait_for(Duration::from_secs(5), || {
        let urls = pg.psql(
            &db,
            "SELECT id || '=' || http_url FROM streamgate_nodes ORDER BY id",
        );
        urls.contains(&want).then_some(())
    })
    .unwrap_or_else(|| panic!("node-a never announced {want}"));
    let (id, key) = a.create_channel("fleetthumb");
    let _publisher = ffmpeg_publish(&a.publish_url(&key), "640x360", 60);
    let path = format!("/thumbs/{}", {
        use md5::{Digest, Md5};
        format!("{}.jpg", hex::encode(Md5::digest(id.as_bytes())))
    });
    let etag_of = |head: &str| {
        head.lines()
            .find_map(|l| {
                l.strip_prefix("etag: ")
                    .or_else(|| l.strip_prefix("ETag: "))
            })
            .map(|v| v.trim().to_string())
    };
    wait_for(Duration::from_secs(20), || {
        (a.http_get(&path).0 == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("no thumbnail on A:\n{}", a.transcript.text()));
    // B serves A's current thumbnail: the same bytes under the same ETag (asked
    // between two of A's answers that agree, as A writes a new one every 2 s).
    let (body, etag) = wait_for(Duration::from_secs(15), || {
        let (_, head1, body1) = a.http_get(&path);
        let (status, head, body) = b.http_get(&path);
        let (_, head2, _) = a.http_get(&path);
        let etag = etag_of(&head)?;
        (status == 200
            && Some(&etag) == etag_of(&head1).as_ref()
            && Some(&etag) == etag_of(&head2).as_ref()
            && body == body1
            && head.contains("image/jpeg"))
        .then_some((body, etag))
    })
    .unwrap_or_else(|| panic!("B never served A's thumbnail:\n{}", b.transcript.text()));
    assert!(body.starts_with(&[0xff, 0xd8]));
    // Its validator works on B too (within A's 2 s).
    let (status, _, _) = b.http_request(
        b.http_port,
        "GET",
        &path,
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert!(status == 304 || status == 200, "{status}");
    // A node's own fetch is never forwarded again.
    let (status, _, _) = b.http_request(b.http_port, "GET", &path, "x-streamgate-fleet: 1\r\n");
    assert_eq!(status, 404);
    // A channel live nowhere: 404 at once.
    let started = Instant::now();
    let (status, _, _) = b.http_get(&format!("/thumbs/{}.jpg", "0".repeat(32)));
    assert_eq!(status, 404);
    assert!(started.elapsed() < Duration::from_secs(1));
    let scrape = String::from_utf8(b.http_get("/metrics").2).unwrap();
    let fetched = metric_value(
        &scrape,
        "streamgate_fleet_thumbnails_total{result=\"fetched\"}",
    );
    assert!(fetched.is_some_and(|n| n >= 1.0), "{scrape}");
    // `streamgate check` on B says it reaches A's HTTP listener, and says it cannot
    // as soon as A is gone.
    let check = |node: &Node| {
        let out = std::process::Command::new(bin())
            .arg("--config")
            .arg(&node.config)
            .arg("check")
            .current_dir(&node.dir.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let said = check(&b);
    let line = |said: &str| {
        said.lines()
            .find(|l| l.contains("fleet node node-a"))
            .unwrap_or_else(|| panic!("check says nothing of node-a:\n{said}"))
            .to_string()
    };
    assert!(
        line(&said).contains(&format!("reached at http://127.0.0.1:{}", a.http_port)),
        "{said}"
    );
    // A dies: B answers 404 within the fetch deadline (once its cache expires), not
    // a hung request, until the sweep marks the channel offline.
    a.kill();
    let said = check(&b);
    assert!(
        line(&said).contains("WARN") && line(&said).contains("cannot reach"),
        "{said}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    let (status, _, _) = b.http_get(&path);
    assert_eq!(status, 404);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    a.assert_never_printed(&key);
    b.assert_never_printed(&key);
}
