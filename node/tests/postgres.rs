//! The Postgres store end to end, against a real PostgreSQL server started by the test
//! (Debian's binaries, a private cluster per test on a free port): live status, takeover,
//! outages, crashes, existing Supabase-shaped tables, deploy/supabase.sql and its
//! row-level security.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A node on `db`; `db_keys` go into `[database]`, `extra` are further sections.
fn pg_node(pg: &Postgres, db: &str, db_keys: &str, extra: &str) -> Node {
    Node::start(&format!(
        "[database]\nurl = \"{}\"\n{db_keys}\n{extra}",
        pg.url(db)
    ))
}

/// (is_live, live_session) of a channel in the default table.
fn live(pg: &Postgres, db: &str, id: &str) -> (bool, String) {
    let row = pg.psql(
        db,
        &format!(
            "SELECT is_live, coalesce(live_session::text, '') FROM channels WHERE id = '{id}'"
        ),
    );
    let (l, s) = row.split_once('|').unwrap();
    (l == "t", s.to_string())
}

fn wait_live(pg: &Postgres, db: &str, id: &str, want: bool, within: Duration) -> (bool, String) {
    wait_for(within, || {
        Some(live(pg, db, id)).filter(|(l, _)| *l == want)
    })
    .unwrap_or_else(|| {
        panic!(
            "channel {id} never became is_live={want}: {:?}",
            live(pg, db, id)
        )
    })
}

#[test]
fn live_status_follows_publish_takeover_and_stop() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_live");
    // Without the table the node refuses to start and says what to do.
    let out = std::process::Command::new(bin())
        .args(["channel", "list"])
        .env("STREAMGATE_DATABASE_URL", pg.url(&db))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("streamgate migrate"));
    let out = run_ok(
        std::process::Command::new(bin())
            .args(["migrate"])
            .env("STREAMGATE_DATABASE_URL", pg.url(&db)),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("table channels ready"));
    let node = pg_node(&pg, &db, "", "");
    let (id, key) = node.create_channel("pg-live");
    // Stored as SHA-256, never in clear.
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM channels WHERE stream_key_hash = encode(sha256(convert_to('x', 'UTF8')), 'hex')"), "0");
    assert_eq!(
        pg.psql(
            &db,
            &format!("SELECT count(*) FROM channels WHERE stream_key_hash = '{key}'")
        ),
        "0"
    );

    let mut first = ffmpeg_publish(&node.publish_url(&key), "320x240", 30);
    let listed_at = {
        wait_listed(&node, &id, Duration::from_secs(10));
        Instant::now()
    };
    // Written asynchronously, moments after the publish is accepted.
    let (_, first_session) = wait_live(&pg, &db, &id, true, Duration::from_secs(5));
    assert!(
        listed_at.elapsed() <= Duration::from_secs(5),
        "is_live true within 5 s"
    );
    assert!(!first_session.is_empty());

    let mut second = ffmpeg_publish(&node.publish_url(&key), "320x240", 30);
    first
        .wait(Duration::from_secs(8))
        .expect("first publisher replaced");
    let (l, s) = wait_for(Duration::from_secs(5), || {
        Some(live(&pg, &db, &id)).filter(|(_, s)| *s != first_session)
    })
    .expect("new session recorded");
    assert!(l, "takeover keeps the channel live");
    assert!(!s.is_empty());
    // The old connection's end has been handled and did not mark it offline.
    wait_logged(&node, "taken over", Duration::from_secs(5));
    assert_eq!(
        live(&pg, &db, &id),
        (true, s),
        "the old session's end did not mark it offline"
    );

    let _ = second.child.kill();
    let _ = second.child.wait();
    wait_live(&pg, &db, &id, false, Duration::from_secs(5));
    node.assert_never_printed(&key);
}

#[test]
fn an_outage_loses_nothing_and_known_keys_still_publish() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_outage");
    pg.psql(&db, streamgate_schema());
    let node = pg_node(
        &pg,
        &db,
        "query_timeout = \"1s\"\nconnect_timeout = \"1s\"\n",
        "[auth]\ncache_ttl = \"1s\"\ntimeout = \"1s\"\n[status]\nretry_max_backoff = \"1s\"\n",
    );
    let (id, key) = node.create_channel("pg-outage");
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 30);
    wait_live(&pg, &db, &id, true, Duration::from_secs(10));

    pg.stop_server();
    let _ = ff.child.kill();
    let _ = ff.child.wait();
    wait_for(Duration::from_secs(5), || {
        node.stream(&id).is_none().then_some(())
    })
    .expect("stream ended");
    // The key was seen valid a moment ago: admitted although the database is down.
    // (Waiting out auth.cache_ttl makes the node ask the database, which is down.)
    std::thread::sleep(Duration::from_millis(1200));
    let mut again = ffmpeg_publish(&node.publish_url(&key), "320x240", 4);
    wait_listed(&node, &id, Duration::from_secs(10));
    assert!(
        node.transcript
            .contains("database unavailable; admitting a key seen valid recently"),
        "admitted from the stale cache, not the fresh one:\n{}",
        node.transcript.text()
    );
    // An unknown key is refused.
    let mut unknown = ffmpeg_publish(
        &node.publish_url("sg_0000000000000000000000000000000000000000"),
        "320x240",
        4,
    );
    let status = unknown
        .wait(Duration::from_secs(6))
        .expect("unknown key refused");
    assert!(!status.success());
    assert!(
        again.wait(Duration::from_secs(15)).expect("done").success(),
        "{}",
        again.stderr()
    );

    pg.start_server().unwrap();
    // Everything that happened during the outage reaches the table: offline at the end.
    wait_live(&pg, &db, &id, false, Duration::from_secs(15));
    assert!(
        node.transcript.contains("status write failed"),
        "retries were logged"
    );
    node.assert_never_printed(&key);
}

#[test]
fn crash_recovery_is_per_node_and_sigterm_marks_offline() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_crash");
    pg.psql(&db, streamgate_schema());
    let mut node = pg_node(&pg, &db, "", "[status]\nnode_id = \"node-a\"\n");
    let (id, key) = node.create_channel("pg-crash");
    // Another node's live channel must survive our recovery.
    pg.psql(&db, "INSERT INTO channels (name, stream_key_hash, is_live, live_node) VALUES ('elsewhere', 'h', true, 'node-b')");
    let _ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 30);
    wait_live(&pg, &db, &id, true, Duration::from_secs(10));
    assert_eq!(
        pg.psql(
            &db,
            &format!("SELECT live_node FROM channels WHERE id = '{id}'")
        ),
        "node-a"
    );
    node.kill();
    assert!(live(&pg, &db, &id).0, "a crash leaves the row live");
    node.spawn();
    wait_live(&pg, &db, &id, false, Duration::from_secs(5));
    assert_eq!(
        pg.psql(&db, "SELECT is_live FROM channels WHERE name = 'elsewhere'"),
        "t",
        "only this node's channels"
    );

    let _ff2 = ffmpeg_publish(&node.publish_url(&key), "320x240", 30);
    wait_live(&pg, &db, &id, true, Duration::from_secs(10));
    assert!(node.terminate(), "clean exit:\n{}", node.transcript.text());
    assert!(!live(&pg, &db, &id).0, "offline before the process exited");
    node.assert_never_printed(&key);
}

#[test]
fn an_existing_supabase_table_with_plain_keys() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_existing");
    pg.psql(
        &db,
        "CREATE TABLE profiles (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), username text NOT NULL, \
         stream_id text UNIQUE, is_live boolean NOT NULL DEFAULT false, avatar_url text)",
    );
    let key = "live_8d1f0c2a9b7e4f31a6c5d2e9b0f7a4c3";
    let id = pg.psql(
        &db,
        &format!(
            "INSERT INTO profiles (username, stream_id) VALUES ('alice', '{key}') RETURNING id"
        ),
    );
    let mapping = "table = \"profiles\"\nname_column = \"username\"\nkey_column = \"stream_id\"\nkey_storage = \"plain\"\n\
                   live_since_column = \"\"\nlast_seen_column = \"\"\nsession_column = \"\"\nnode_column = \"\"\npeer_column = \"\"\nnodes_table = \"\"\nrelay_targets_column = \"\"\n";
    let node = Node::start(&format!("[database]\nurl = \"{}\"\n{mapping}", pg.url(&db)));
    let mut ff = ffmpeg_publish(&node.publish_url(key), "320x240", 6);
    let s = wait_listed(&node, &id, Duration::from_secs(10));
    assert_eq!(s["name"], "alice");
    let is_live = |pg: &Postgres| {
        pg.psql(
            &db,
            &format!("SELECT is_live FROM profiles WHERE id = '{id}'"),
        )
    };
    wait_for(Duration::from_secs(10), || {
        (is_live(&pg) == "t").then_some(())
    })
    .expect("live in profiles");
    assert!(ff.wait(Duration::from_secs(20)).expect("done").success());
    wait_for(Duration::from_secs(5), || {
        (is_live(&pg) == "f").then_some(())
    })
    .expect("offline in profiles");
    // A wrong key is still wrong.
    let mut bad = ffmpeg_publish(&node.publish_url("live_nope"), "320x240", 3);
    assert!(!bad.wait(Duration::from_secs(5)).expect("refused").success());
    // The table predates SRT passphrases: the node says so once, and SRT publishes
    // to it all the same.
    assert!(node
        .transcript
        .contains("the channels table has no SRT passphrase column"));
    let srt = node.srt_port.expect("SRT listening");
    let mut ff = ffmpeg_srt(&srt_url(srt, key, ""), "libx264", "320x240", 6);
    wait_for(Duration::from_secs(10), || {
        (is_live(&pg) == "t").then_some(())
    })
    .expect("live in profiles over SRT");
    assert_eq!(
        wait_listed(&node, &id, Duration::from_secs(5))["protocol"],
        "srt"
    );
    assert!(ff.wait(Duration::from_secs(20)).expect("done").success());
    wait_for(Duration::from_secs(5), || {
        (is_live(&pg) == "f").then_some(())
    })
    .expect("offline in profiles after SRT");
    node.assert_never_printed(key);
}

#[test]
fn an_existing_table_with_sha256_keys_and_a_clear_startup_check() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_sha");
    pg.psql(
        &db,
        "CREATE TABLE streams (uid uuid PRIMARY KEY DEFAULT gen_random_uuid(), title text, key_sha256 text, \
         online boolean NOT NULL DEFAULT false, went_live timestamptz, seen timestamptz)",
    );
    let key = "sg_tablekey0123456789abcdef0123456789abcd";
    let id = pg.psql(
        &db,
        &format!("INSERT INTO streams (title, key_sha256) VALUES ('bob', encode(sha256(convert_to('{key}', 'UTF8')), 'hex')) RETURNING uid"),
    );
    let mapping = "table = \"public.streams\"\nid_column = \"uid\"\nname_column = \"title\"\nkey_column = \"key_sha256\"\n\
                   live_column = \"online\"\nlive_since_column = \"went_live\"\nlast_seen_column = \"seen\"\n\
                   session_column = \"\"\nnode_column = \"\"\npeer_column = \"\"\nnodes_table = \"\"\nrelay_targets_column = \"\"\n";
    let node = Node::start(&format!("[database]\nurl = \"{}\"\n{mapping}", pg.url(&db)));
    let _ff = ffmpeg_publish(&node.publish_url(key), "320x240", 10);
    wait_listed(&node, &id, Duration::from_secs(10));
    wait_for(Duration::from_secs(10), || {
        (pg.psql(
            &db,
            &format!("SELECT online AND went_live IS NOT NULL FROM streams WHERE uid = '{id}'"),
        ) == "t")
            .then_some(())
    })
    .expect("live with live_since");
    node.assert_never_printed(key);
    drop(node);

    // A column that does not exist is named, with the setting that names it.
    let dir = TempDir::new("badmap");
    let cfg = write_file(
        &dir.0,
        "sg.toml",
        &format!(
            "[database]\nurl = \"{}\"\n{}",
            pg.url(&db),
            mapping.replace("\"seen\"", "\"last_heartbeat\"")
        ),
    );
    let out = streamgate(&cfg).args(["channel", "list"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("last_heartbeat")
            && err.contains("database.last_seen_column")
            && err.contains("does not exist"),
        "{err}"
    );
}

/// The default schema, as `migrate` creates it.
fn streamgate_schema() -> &'static str {
    "CREATE TABLE channels (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL UNIQUE, \
     stream_key_hash text NOT NULL UNIQUE, is_live boolean NOT NULL DEFAULT false, live_since timestamptz, \
     last_seen timestamptz, live_session uuid, live_node text, live_peer text, relay_targets jsonb, \
     created_at timestamptz NOT NULL DEFAULT now()); \
     CREATE TABLE streamgate_nodes (id text PRIMARY KEY, address text NOT NULL, version text NOT NULL, \
     started_at timestamptz NOT NULL, last_heartbeat timestamptz NOT NULL DEFAULT now())"
}

#[test]
fn supabase_sql_applies_and_the_anon_role_cannot_read_keys() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_supabase");
    for role in ["anon", "authenticated", "service_role"] {
        pg.psql(&db, &format!("DO $$ BEGIN CREATE ROLE {role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"));
    }
    pg.psql(&db, "CREATE PUBLICATION supabase_realtime");
    let sql = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/supabase.sql"
    ))
    .unwrap();
    let file = write_file(&pg.dir, "supabase.sql", &sql);
    for _ in 0..2 {
        // Applies cleanly, and again.
        run_ok(pg.psql_command(&db).arg("-f").arg(&file));
    }
    let node = pg_node(&pg, &db, "", "");
    let (id, key) = node.create_channel("public-show");
    let _ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 10);
    wait_live(&pg, &db, &id, true, Duration::from_secs(10));

    // As the anon role: the key column and the table are unreadable...
    for q in [
        "SELECT stream_key_hash FROM channels",
        "SELECT * FROM channels",
        "SELECT id FROM channels",
    ] {
        let r = pg.psql_result(&db, &format!("SET ROLE anon; {q}"));
        assert!(
            r.as_ref().is_err_and(|e| e.contains("permission denied")),
            "{q}: {r:?}"
        );
    }
    // ...the public view is, with the live state and the thumbnail name.
    let row = pg.psql(
        &db,
        &format!(
            "SET ROLE anon; SELECT name, is_live, thumbnail FROM public_channels WHERE id = '{id}'"
        ),
    );
    let thumb = pg.psql(&db, &format!("SELECT md5('{id}') || '.jpg'"));
    assert_eq!(row, format!("public-show|t|{thumb}"));
    assert!(!pg
        .psql(
            &db,
            "SET ROLE anon; SELECT string_agg(t::text, ',') FROM public_channels t"
        )
        .contains(&key));
    // Realtime follows the status table.
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'supabase_realtime' AND tablename = 'channel_status'"),
        "1"
    );
    node.assert_never_printed(&key);
}

#[test]
fn sslmode_from_the_url_is_honoured() {
    let (pg, ca_pem) = start_tls_only();
    let db = pg.create_db("sg_tls");
    pg.psql(&db, streamgate_schema());
    let dir = TempDir::new("pgca");
    let ca = write_file(&dir.0, "ca.pem", &ca_pem);
    let base = format!("postgres://postgres@127.0.0.1:{}/{db}", pg.port);
    let list = |url: &str, extra: &str| {
        let cfg = write_file(
            &dir.0,
            "sg.toml",
            &format!("[database]\nurl = \"{url}\"\n{extra}"),
        );
        streamgate(&cfg).args(["channel", "list"]).output().unwrap()
    };
    // require: encrypted, the certificate is not checked (libpq's meaning).
    let out = list(&format!("{base}?sslmode=require"), "");
    assert!(
        out.status.success(),
        "require: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // verify-full with the server's CA: verified.
    let out = list(
        &format!("{base}?sslmode=verify-full"),
        &format!("ca_file = \"{}\"\n", ca.display()),
    );
    assert!(
        out.status.success(),
        "verify-full with CA: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // verify-full without it: refused, with a reason, and no password in the message.
    let out = list(
        &format!(
            "postgres://postgres:hunter2@127.0.0.1:{}/{db}?sslmode=verify-full",
            pg.port
        ),
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot reach Postgres") && !err.contains("hunter2"),
        "{err}"
    );
    // disable against a TLS-only server: refused.
    let out = list(&format!("{base}?sslmode=disable"), "");
    assert!(!out.status.success());
    // A configured CA means the server is verified, whatever sslmode says: require
    // with another CA than the server's is refused.
    let other = rcgen::generate_simple_self_signed(vec!["elsewhere".to_string()]).unwrap();
    let wrong_ca = write_file(&dir.0, "wrong-ca.pem", &other.cert.pem());
    let out = list(
        &format!("{base}?sslmode=require"),
        &format!("ca_file = \"{}\"\n", wrong_ca.display()),
    );
    assert!(
        !out.status.success(),
        "require with a configured CA verifies the server"
    );
    // The node itself runs over TLS, and says loudly that the server is not verified.
    let node = Node::start(&format!("[database]\nurl = \"{base}?sslmode=require\"\n"));
    assert!(
        node.transcript.contains("the server is not verified"),
        "{}",
        node.transcript.text()
    );
    let (id, key) = node.create_channel("tls-channel");
    let _ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 10);
    wait_live(&pg, &db, &id, true, Duration::from_secs(10));
    let by_ssl = |ssl: bool| {
        pg.psql(&db, &format!("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'streamgate' AND s.ssl = {ssl}"))
    };
    assert_ne!(by_ssl(true), "0", "connected over TLS");
    assert_eq!(by_ssl(false), "0", "and never without");
    node.assert_never_printed(&key);
}

#[test]
fn rotating_a_key_in_postgres_ends_the_live_publish() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_rotate");
    pg.psql(&db, streamgate_schema());
    let node = pg_node(&pg, &db, "", "[auth]\nrecheck_interval = \"1s\"\n");
    let (id, key) = node.create_channel("pg-rotate");
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 30);
    wait_live(&pg, &db, &id, true, Duration::from_secs(10));
    // The operator rotates the key straight in the table (e.g. from a dashboard).
    pg.psql(
        &db,
        &format!("UPDATE channels SET stream_key_hash = 'rotated' WHERE id = '{id}'"),
    );
    ff.wait(Duration::from_secs(6))
        .expect("publish with the old key ended");
    wait_live(&pg, &db, &id, false, Duration::from_secs(5));
    let mut again = ffmpeg_publish(&node.publish_url(&key), "320x240", 3);
    assert!(!again
        .wait(Duration::from_secs(5))
        .expect("old key refused")
        .success());
    node.assert_never_printed(&key);
}

/// A store on `db` (migrated), opened on `main` as the node opens it.
fn library_store(
    main: &tokio::runtime::Runtime,
    pg: &Postgres,
    db: &str,
    query_timeout: Duration,
) -> std::sync::Arc<dyn streamgate::store::ChannelStore> {
    let mut config = streamgate::config::Config::default();
    config.database.url = streamgate::config::DatabaseUrl::Postgres(pg.url(db));
    config.database.query_timeout = query_timeout;
    main.block_on(async {
        streamgate::store::migrate(&config).await.unwrap();
        streamgate::store::open(&config).await.unwrap()
    })
}

fn main_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A key lookup that has to reconnect, made from an ingest thread (a single-threaded
/// runtime that then goes back to its publishers and stops polling anything else),
/// must not leave the database connection on that thread: the node's other callers
/// keep working. (The old store opened the new connection on the caller's runtime, so
/// every later query waited for an ingest thread that never came back to it.)
#[test]
fn a_reconnect_from_an_ingest_thread_leaves_no_connection_on_it() {
    let pg = Postgres::start();
    let db = pg.create_db("ingest_thread");
    let main = main_runtime();
    let store = library_store(&main, &pg, &db, Duration::from_secs(5));
    let (ch, key) = main.block_on(store.create_channel("c")).unwrap();
    // The database drops the node's connections (a failover, a pooler restart).
    pg.psql(
        &db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'streamgate'",
    );
    let ingest = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let found = ingest.block_on(async {
        // The first attempt may meet the dropped connection; the next reconnects.
        for _ in 0..50 {
            if let Ok(found) = store.find_by_key(&key).await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no answer from Postgres after the reconnect");
    });
    assert_eq!(found.map(|c| c.id), Some(ch.id));
    // The ingest runtime is not polled any more; the node's other work goes on.
    let listed = main.block_on(async {
        tokio::time::timeout(Duration::from_secs(3), store.list_channels()).await
    });
    assert!(
        matches!(&listed, Ok(Ok(list)) if list.len() == 1),
        "the main runtime's query must not depend on the ingest thread: {listed:?}"
    );
    drop(ingest);
    let found = main.block_on(store.find_by_key(&key)).unwrap();
    assert_eq!(found.map(|c| c.id), Some(ch.id));
}

/// One statement stuck behind a row lock must not hold up everyone else's: a key
/// lookup answers while a status write waits. (On one shared connection the lookup
/// queued behind the blocked write until the query deadline.)
#[test]
fn a_blocked_statement_does_not_hold_up_other_callers() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let pg = Postgres::start();
    let db = pg.create_db("blocked");
    let main = main_runtime();
    let store = library_store(&main, &pg, &db, Duration::from_secs(20));
    let (busy, _) = main.block_on(store.create_channel("busy")).unwrap();
    let (_, other_key) = main.block_on(store.create_channel("other")).unwrap();
    // Another client holds the busy channel's row.
    let mut locker = pg
        .psql_command(&db)
        .arg("-qAt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_locker = locker.stdin.take().unwrap();
    writeln!(
        to_locker,
        "BEGIN; SELECT 'locked' FROM channels WHERE id = '{}' FOR UPDATE;",
        busy.id
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(locker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");

    let write = {
        let store = store.clone();
        main.spawn(async move {
            store
                .apply_status(&streamgate::store::StatusUpdate {
                    channel_id: busy.id,
                    live: true,
                    session_id: uuid::Uuid::new_v4(),
                    seq: 1,
                    at: chrono::Utc::now(),
                    supersedes: Vec::new(),
                    peer_tag: None,
                })
                .await
        })
    };
    // The write is waiting for the row lock now.
    wait_for(Duration::from_secs(10), || {
        (pg.psql(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'streamgate' AND wait_event_type = 'Lock'",
        ) == "1")
            .then_some(())
    })
    .expect("the status write waits for the row lock");
    let started = Instant::now();
    let lookup = main.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), store.find_by_key(&other_key)).await
    });
    assert!(
        matches!(&lookup, Ok(Ok(Some(_)))),
        "the lookup answers while the write waits: {lookup:?} after {:?}",
        started.elapsed()
    );
    assert!(!write.is_finished(), "the write still waits for the lock");
    writeln!(to_locker, "COMMIT;").unwrap();
    drop(to_locker);
    let _ = locker.wait();
    main.block_on(write).unwrap().unwrap();
}

/// A duplicate name is told by the unique index it violates (SQLSTATE 23505 on an index
/// of the name column alone), not by the words of the message: a violation of another
/// unique column is a refused statement, not a duplicate name.
#[test]
fn a_duplicate_name_is_recognised_by_its_unique_index() {
    use streamgate::store::StoreErrorKind;

    let pg = Postgres::start();
    let db = pg.create_db("dupes");
    pg.psql(
        &db,
        "CREATE TABLE shows (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), title text, key_sha256 text, \
         online boolean NOT NULL DEFAULT false, slug text UNIQUE DEFAULT 'same'); \
         CREATE UNIQUE INDEX shows_title_once ON shows (title)",
    );
    let mut config = streamgate::config::Config::default();
    config.database.url = streamgate::config::DatabaseUrl::Postgres(pg.url(&db));
    config.database.table = "shows".into();
    config.database.name_column = "title".into();
    config.database.key_column = "key_sha256".into();
    config.database.live_column = "online".into();
    for c in [
        &mut config.database.live_since_column,
        &mut config.database.last_seen_column,
        &mut config.database.session_column,
        &mut config.database.node_column,
        &mut config.database.peer_column,
        &mut config.database.nodes_table,
        &mut config.database.relay_targets_column,
    ] {
        c.clear();
    }
    let main = main_runtime();
    let store = main.block_on(streamgate::store::open(&config)).unwrap();
    main.block_on(store.create_channel("a")).unwrap();
    // Another unique column (slug) is violated: refused, and not a duplicate name.
    let other = main.block_on(store.create_channel("b")).unwrap_err();
    assert_eq!(other.kind(), StoreErrorKind::Rejected, "{other}");
    assert!(!other.is_retryable());
    assert!(other.to_string().contains("23505"), "{other}");
    pg.psql(&db, "UPDATE shows SET slug = 'first'");
    let dup = main.block_on(store.create_channel("a")).unwrap_err();
    assert_eq!(dup.kind(), StoreErrorKind::DuplicateName, "{dup}");
    assert!(dup.to_string().contains("\"a\" already exists"), "{dup}");
    // The default table's name constraint is recognised the same way.
    let db2 = pg.create_db("dupes_default");
    let store = library_store(&main, &pg, &db2, Duration::from_secs(5));
    main.block_on(store.create_channel("x")).unwrap();
    let dup = main.block_on(store.create_channel("x")).unwrap_err();
    assert_eq!(dup.kind(), StoreErrorKind::DuplicateName, "{dup}");
}

/// `streamgate check` against Postgres says what the server said, and what is missing.
#[test]
fn check_reports_what_postgres_said_and_what_the_table_lacks() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_check");
    pg.psql(
        &db,
        "CREATE TABLE channels (id uuid PRIMARY KEY, name text, stream_key_hash text, is_live boolean NOT NULL DEFAULT false)",
    );
    let dir = TempDir::new("pgcheck");
    let run = |text: &str| {
        let cfg = write_file(&dir.0, "c.toml", text);
        let out = streamgate(&cfg)
            .arg("check")
            .current_dir(&dir.0)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let thumbs = format!("[thumbnails]\ndir = \"{}/t\"\n", dir.0.display());
    // A database that does not exist: the server's own words.
    let (ok, out) = run(&format!(
        "[database]\nurl = \"{}\"\n{thumbs}",
        pg.url("no_such_db")
    ));
    assert!(!ok, "{out}");
    assert!(
        out.contains("database \"no_such_db\" does not exist"),
        "what the server said: {out}"
    );
    // The default columns the table lacks are named, with the key to fix.
    let (ok, out) = run(&format!("[database]\nurl = \"{}\"\n{thumbs}", pg.url(&db)));
    assert!(!ok, "{out}");
    assert!(
        out.contains("column live_since (database.live_since_column) does not exist"),
        "{out}"
    );
    // Told which columns there are not, it passes.
    let (ok, out) = run(&format!(
        "[database]\nurl = \"{}\"\nlive_since_column = \"\"\nlast_seen_column = \"\"\nsession_column = \"\"\nnode_column = \"\"\npeer_column = \"\"\nnodes_table = \"\"\nrelay_targets_column = \"\"\n{thumbs}",
        pg.url(&db)
    ));
    assert!(ok, "{out}");
    assert!(out.contains("ok    database postgres://"), "{out}");
}

/// An existing table whose `text` id column spells UUIDs its own way (upper case, no
/// hyphens, braces, as exports from other systems do): the node names each row as the
/// table spells it. Before, every statement compared the node's own spelling, so the
/// live status was never written and the re-check took the channel for deleted and
/// ended the publish within seconds (removing its thumbnail).
#[test]
fn a_text_id_column_with_other_uuid_spellings() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_spelling");
    pg.psql(
        &db,
        "CREATE TABLE streamers (ref text PRIMARY KEY, handle text NOT NULL, skey text UNIQUE, \
         on_air boolean NOT NULL DEFAULT false, on_air_since timestamptz)",
    );
    let rows = [
        (
            "A1B2C3D4-E5F6-4A7B-8C9D-0E1F2A3B4C5D",
            "upper",
            "sk_upper_0123456789abcdef0123",
        ),
        (
            "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5e",
            "simple",
            "sk_simple_0123456789abcdef012",
        ),
        (
            "{A1B2C3D4-E5F6-4A7B-8C9D-0E1F2A3B4C5F}",
            "braced",
            "sk_braced_0123456789abcdef012",
        ),
    ];
    for (id, name, key) in rows {
        pg.psql(
            &db,
            &format!("INSERT INTO streamers VALUES ('{id}', '{name}', '{key}', false, NULL)"),
        );
    }
    let mapping = "table = \"streamers\"\nid_column = \"ref\"\nname_column = \"handle\"\nkey_column = \"skey\"\n\
                   key_storage = \"plain\"\nlive_column = \"on_air\"\nlive_since_column = \"on_air_since\"\n\
                   last_seen_column = \"\"\nsession_column = \"\"\nnode_column = \"\"\npeer_column = \"\"\n\
                   nodes_table = \"\"\nrelay_targets_column = \"\"\n";
    let node = Node::start(&format!(
        "[database]\nurl = \"{}\"\n{mapping}\n[auth]\nrecheck_interval = \"1s\"\n",
        pg.url(&db)
    ));
    let mut publishers: Vec<_> = rows
        .iter()
        .map(|(_, _, key)| RawPublisher::publish(node.rtmp_port, "live", key).expect("publish"))
        .collect();
    let on_air = |stored: &str| {
        pg.psql(
            &db,
            &format!(
                "SELECT on_air AND on_air_since IS NOT NULL FROM streamers WHERE ref = '{stored}'"
            ),
        ) == "t"
    };
    // Five re-checks pass with media flowing: every publish stays, every row is live.
    for tick in 0..10u32 {
        for p in publishers.iter_mut() {
            p.send(9, tick * 500, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for (stored, name, _) in rows {
        let id = uuid::Uuid::parse_str(stored).unwrap().to_string();
        let s = node
            .stream(&id)
            .unwrap_or_else(|| panic!("{name} was ended:\n{}", node.transcript.text()));
        assert_eq!(s["name"], name);
        assert!(
            on_air(stored),
            "{name} live in the table as it spells its id"
        );
    }
    assert!(
        !node.transcript.contains("deleted"),
        "{}",
        node.transcript.text()
    );
    drop(publishers);
    for (stored, name, _) in rows {
        wait_for(Duration::from_secs(10), || (!on_air(stored)).then_some(()))
            .unwrap_or_else(|| panic!("{name} never offline"));
    }
    for (_, _, key) in rows {
        node.assert_never_printed(key);
    }
}

/// `database.table = "Channels"` for a table made as `channels`: the start-up check
/// resolves the name as the statements will quote it (case counts) and says which
/// table exists. Before, it folded the case, passed, and then every statement failed
/// with 42P01, so every key was refused.
#[test]
fn a_table_name_is_checked_as_it_will_be_quoted() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_case");
    pg.psql(&db, streamgate_schema());
    let dir = TempDir::new("case");
    let cfg = write_file(
        &dir.0,
        "sg.toml",
        &format!(
            "[database]\nurl = \"{}\"\ntable = \"Channels\"\nnodes_table = \"\"\n",
            pg.url(&db)
        ),
    );
    // `serve` stops at its start-up check (before, it started and refused every key).
    let mut serve = Proc::spawn(streamgate(&cfg).arg("serve").current_dir(&dir.0));
    let status = serve.wait(Duration::from_secs(15));
    let text = serve.stderr();
    assert!(
        status.is_some_and(|s| !s.success()),
        "serve must not start on a table it cannot use:\n{text}"
    );
    for needle in ["Channels does not exist", "case-sensitive", "has channels"] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    // `check` says the same.
    let out = streamgate(&cfg)
        .arg("check")
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("case-sensitive"), "{text}");
}

/// The outage: the path to the database swallows every byte for 12 s (new
/// connections are accepted, then nothing; the open ones stay dead after it ends, as
/// when a middlebox loses its state), then forwards again. During it the heartbeat
/// keeps trying and says so; a publish that ends is not lost; afterwards everything
/// catches up within seconds, without a restart: the offline, a new channel's live,
/// and this node's heartbeat in the registry. Before, the pool's connect had no
/// deadline past TCP: the outbox and the heartbeat hung on it, logged nothing, and
/// wrote nothing until SIGTERM.
#[test]
fn a_silent_database_path_freezes_nothing_and_everything_catches_up() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_blackhole");
    pg.psql(&db, streamgate_schema());
    let middlebox = Middlebox::start(pg.port);
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
        middlebox.port
    );
    let node = Node::start(&format!(
        "[database]\nurl = \"{url}\"\nquery_timeout = \"2s\"\nconnect_timeout = \"2s\"\n\
         [status]\nnode_id = \"blackholed\"\nheartbeat_interval = \"2s\"\n\
         [auth]\nrecheck_interval = \"1s\"\n"
    ));
    let (a, key_a) = node.create_channel("ends-during-the-stall");
    let (b, key_b) = node.create_channel("starts-after-the-stall");
    let streaming_a = Streaming::start(node.rtmp_port, &key_a).expect("publish a");
    wait_live(&pg, &db, &a, true, Duration::from_secs(10));

    middlebox.swallow();
    let stalled = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    drop(streaming_a);
    wait_for(Duration::from_secs(15), || {
        node.stream(&a).is_none().then_some(())
    })
    .expect("a's publish ended on the node");
    // The heartbeat keeps trying and says so, beat after beat.
    wait_for(Duration::from_secs(15), || {
        let text = node.transcript.text();
        (text
            .matches("heartbeat: cannot say this node is alive")
            .count()
            >= 3)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the heartbeat stopped reporting:\n{}",
            node.transcript.text()
        )
    });
    assert!(
        node.transcript.contains("Postgres does not answer"),
        "the silent database is named"
    );
    std::thread::sleep(Duration::from_secs(12).saturating_sub(stalled.elapsed()));
    assert!(live(&pg, &db, &a).0, "nothing got through the stall");

    middlebox.forward();
    let back = Instant::now();
    // A new channel goes live (its first attempts may be told to try again while the
    // node has not seen the database come back yet).
    let streaming_b = wait_for(Duration::from_secs(10), || {
        Streaming::start(node.rtmp_port, &key_b).ok()
    })
    .expect("b admitted after the stall");
    let caught_up = wait_for(Duration::from_secs(10), || {
        let a_off = !live(&pg, &db, &a).0;
        let b_on = live(&pg, &db, &b).0;
        let beat = pg.psql(
            &db,
            "SELECT last_heartbeat > now() - interval '2 seconds' FROM streamgate_nodes WHERE id = 'blackholed'",
        ) == "t";
        (a_off && b_on && beat).then(|| back.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "not caught up 10 s after the path came back: a live {:?}, b live {:?}\n{}",
            live(&pg, &db, &a),
            live(&pg, &db, &b),
            node.transcript.text()
        )
    });
    eprintln!("caught up {caught_up:?} after the path came back");
    assert!(node.transcript.contains("Postgres answers again"));
    drop(streaming_b);
    wait_live(&pg, &db, &b, false, Duration::from_secs(10));
    node.assert_never_printed(&key_a);
    node.assert_never_printed(&key_b);
}

/// A database that accepts TCP and never answers (a stuck pooler, a proxy in front of
/// a dead server): `check`, `migrate` and `serve` each name it and say what did not
/// answer within `database.connect_timeout` plus a few seconds. Before, `check` was
/// still running after 30 s and `serve` sat silent.
#[test]
fn a_database_that_never_answers_is_named_within_the_connect_timeout() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_silent");
    let middlebox = Middlebox::start(pg.port);
    middlebox.swallow();
    let dir = TempDir::new("silent-db");
    let cfg = write_file(
        &dir.0,
        "sg.toml",
        &format!(
            "[database]\nurl = \"postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable\"\nconnect_timeout = \"2s\"\n\
             [rtmp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            middlebox.port
        ),
    );
    let endpoint = format!("127.0.0.1:{}", middlebox.port);
    for command in ["check", "migrate", "serve"] {
        let started = Instant::now();
        // stdout and stderr into one file, read once the process is gone.
        let log = dir.0.join(format!("{command}.out"));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = streamgate(&cfg)
            .arg(command)
            .current_dir(&dir.0)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let status = wait_child(&mut child, Duration::from_secs(15));
        let took = started.elapsed();
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        eprintln!("{command}: exited after {took:?}");
        assert!(
            status.is_some_and(|s| !s.success()),
            "{command} must fail, not hang: after {took:?}:\n{said}"
        );
        assert!(took < Duration::from_secs(8), "{command} took {took:?}");
        assert!(
            said.contains(&endpoint)
                && said.contains("accepts TCP connections but did not answer")
                && said.contains("database.connect_timeout"),
            "{command}:\n{said}"
        );
    }
}

/// Two nodes whose clocks differ by ten minutes (one runs ahead, as a machine whose
/// NTP broke). The encoder goes silent on the node ahead and comes back, from another
/// address, on the other one: the silence is measured and the new publish recorded by
/// the database's clock, so the newcomer is admitted, written live, and kept. Before,
/// the node ahead had written its `last_seen` and `live_since` ten minutes in the
/// future: the silent publish looked fresh, and the newer publish's live was refused,
/// taken as "written", and ended by the re-check as taken over.
#[test]
fn clock_skew_between_nodes_never_ends_a_newer_publish() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_skew");
    pg.psql(&db, streamgate_schema());
    let config = |name: &str| {
        format!(
            "[database]\nurl = \"{}\"\n[status]\nnode_id = \"{name}\"\nheartbeat_interval = \"1s\"\n\
             [auth]\nrecheck_interval = \"1s\"\n[rtmp]\nlisten = \"127.0.0.1:0\"\ntakeover_silence = \"2s\"\nidle_timeout = \"30s\"\n",
            pg.url(&db)
        )
    };
    let skew = skewed_clock(600);
    let skew: Vec<(&str, &str)> = skew.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ahead = Node::start_with_env(&config("node-ahead"), &skew);
    let right = Node::start(&config("node-right"));
    let (id, key) = right.create_channel("moving");
    let row = || {
        pg.psql(
            &db,
            &format!("SELECT is_live, coalesce(live_node, '') FROM channels WHERE id = '{id}'"),
        )
    };
    // The encoder on the node ahead, then silent there (its connection stays open).
    let mut first = RawPublisher::publish(ahead.rtmp_port, "live", &key).expect("publish");
    for ts in 0..5 {
        first.send(9, ts * 100, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(Duration::from_secs(10), || {
        (row() == "t|node-ahead").then_some(())
    })
    .unwrap_or_else(|| panic!("live on node-ahead: {}", row()));
    // Silent for longer than the takeover silence plus a heartbeat.
    std::thread::sleep(Duration::from_secs(4));
    let second: std::net::IpAddr = [127, 0, 0, 2].into();
    let moved = wait_for(Duration::from_secs(10), || {
        Streaming::start_from(second, right.rtmp_port, &key).ok()
    })
    .unwrap_or_else(|| {
        panic!(
            "the silent publish on the skewed node held the channel:\n{}",
            right.transcript.text()
        )
    });
    wait_for(Duration::from_secs(10), || {
        (row() == "t|node-right").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the newer publish never written: {}\n{}",
            row(),
            right.transcript.text()
        )
    });
    // Several re-checks later the newer publish still runs, and the table still says so.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        right.stream(&id).is_some(),
        "the newer publish was ended:\n{}",
        right.transcript.text()
    );
    assert_eq!(row(), "t|node-right");
    // The silent one on the node ahead was the one taken over.
    wait_for(Duration::from_secs(10), || {
        ahead.stream(&id).is_none().then_some(())
    })
    .expect("the old publish ended on the node ahead");
    assert_eq!(row(), "t|node-right");
    drop(moved);
    drop(first);
    right.assert_never_printed(&key);
    ahead.assert_never_printed(&key);
}
