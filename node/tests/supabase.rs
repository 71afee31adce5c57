//! The Supabase kit (`deploy/supabase.sql`) on a real PostgreSQL with Supabase's API
//! roles: a website's backend (service_role) creates channels and rotates keys without
//! ever holding a key in plain text but the once it is returned; the node runs logged
//! in as the kit's least-privilege role; a project's own `channels` table is never
//! touched.

mod common;

use std::time::Duration;

use common::*;

/// A database with Supabase's API roles and Realtime publication, and the kit applied
/// (twice: it applies again safely).
fn supabase_db(pg: &Postgres, name: &str) -> String {
    let db = pg.create_db(name);
    // As Supabase makes them: the service role bypasses row-level security.
    for role in [
        "anon NOLOGIN",
        "authenticated NOLOGIN",
        "service_role NOLOGIN BYPASSRLS",
    ] {
        pg.psql(
            &db,
            &format!(
                "DO $$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ),
        );
    }
    pg.psql(&db, "CREATE PUBLICATION supabase_realtime");
    for _ in 0..2 {
        run_ok(pg.psql_command(&db).arg("-f").arg(kit(pg)));
    }
    db
}

fn kit(pg: &Postgres) -> std::path::PathBuf {
    let sql = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/supabase.sql"
    ))
    .unwrap();
    write_file(&pg.dir, "supabase.sql", &sql)
}

fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[test]
fn a_backend_makes_channels_and_keys_and_the_node_runs_as_its_own_role() {
    let pg = Postgres::start();
    let db = supabase_db(&pg, "sg_kit");

    // The backend (service key): a channel and its key, made in the database.
    let row = pg.psql(
        &db,
        "SET ROLE service_role; SELECT id || ' ' || stream_key FROM create_channel('from the website')",
    );
    let (id, key) = row.split_once(' ').unwrap();
    let (id, key) = (id.to_string(), key.to_string());
    assert!(key.starts_with("sg_") && key.len() == 43, "{key}");
    assert_eq!(
        pg.psql(
            &db,
            &format!("SELECT stream_key_hash FROM channels WHERE id = '{id}'")
        ),
        sha256_hex(&key),
        "only the hash is stored"
    );
    // service_role reads, renames and lists channels (the grants a backend needs).
    pg.psql(
        &db,
        &format!("SET ROLE service_role; UPDATE channels SET name = 'renamed' WHERE id = '{id}'"),
    );
    assert_eq!(
        pg.psql(&db, "SET ROLE service_role; SELECT name FROM channels"),
        "renamed"
    );
    // Nobody else may make or rotate keys.
    for role in ["anon", "authenticated", "streamgate_node"] {
        for q in [
            "SELECT * FROM create_channel('x')".to_string(),
            format!("SELECT rotate_stream_key('{id}')"),
        ] {
            let r = pg.psql_result(&db, &format!("SET ROLE {role}; {q}"));
            assert!(
                r.as_ref().is_err_and(|e| e.contains("permission denied")),
                "{role} {q}: {r:?}"
            );
        }
    }

    // The node, logged in as its own role.
    pg.psql(
        &db,
        "ALTER ROLE streamgate_node WITH LOGIN PASSWORD 'node-pass'",
    );
    let url = format!(
        "postgres://streamgate_node:node-pass@127.0.0.1:{}/{db}?sslmode=disable",
        pg.port
    );
    let node = Node::start(&format!(
        "[database]\nurl = \"{url}\"\n[auth]\nrecheck_interval = \"1s\"\n"
    ));
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 30);
    wait_for(Duration::from_secs(10), || {
        (pg.psql(
            &db,
            &format!("SELECT is_live FROM channels WHERE id = '{id}'"),
        ) == "t")
            .then_some(())
    })
    .expect("live, written by streamgate_node");
    assert_eq!(
        pg.psql(
            &db,
            &format!("SET ROLE anon; SELECT is_live FROM public_channels WHERE id = '{id}'")
        ),
        "t"
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM streamgate_nodes"),
        "1",
        "registered"
    );
    website_snippet_reads_what_the_kit_gives_anon(&pg, &db, &id);

    // The backend rotates the key: the publish with the old one ends, the new one works.
    let new_key = pg.psql(
        &db,
        &format!("SET ROLE service_role; SELECT rotate_stream_key('{id}')"),
    );
    assert!(new_key.starts_with("sg_") && new_key != key);
    assert!(
        ff.wait(Duration::from_secs(15)).is_some(),
        "the old key's publish ended"
    );
    let mut ff = ffmpeg_publish(&node.publish_url(&new_key), "320x240", 4);
    wait_listed(&node, &id, Duration::from_secs(10));
    assert!(ff.wait(Duration::from_secs(20)).unwrap().success());
    wait_for(Duration::from_secs(10), || {
        (pg.psql(
            &db,
            &format!("SELECT is_live FROM channels WHERE id = '{id}'"),
        ) == "f")
            .then_some(())
    })
    .expect("offline, written by streamgate_node");

    // What the node's role may not do.
    for q in [
        format!("UPDATE channels SET stream_key_hash = 'x' WHERE id = '{id}'"),
        format!("DELETE FROM channels WHERE id = '{id}'"),
        "INSERT INTO channels (name, stream_key_hash) VALUES ('n', 'h')".to_string(),
        "SELECT * FROM create_channel('y')".to_string(),
    ] {
        let r = pg.psql_result(&db, &format!("SET ROLE streamgate_node; {q}"));
        assert!(
            r.as_ref().is_err_and(|e| e.contains("permission denied")),
            "{q}: {r:?}"
        );
    }
    node.assert_never_printed(&key);
    node.assert_never_printed(&new_key);
}

#[test]
fn a_projects_own_channels_table_is_never_altered() {
    let pg = Postgres::start();
    let db = pg.create_db("sg_theirs");
    for role in ["anon", "authenticated", "service_role"] {
        pg.psql(
            &db,
            &format!("DO $$ BEGIN CREATE ROLE {role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"),
        );
    }
    pg.psql(&db, "CREATE TABLE public.channels (id serial PRIMARY KEY, title text); GRANT SELECT ON public.channels TO anon");
    let out = pg
        .psql_command(&db)
        .arg("-f")
        .arg(kit(&pg))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() || text.contains("ERROR"), "{text}");
    assert!(
        text.contains("was not created by this script: nothing was changed"),
        "{text}"
    );
    assert!(
        text.contains("docs/supabase.md, \"An existing table\""),
        "the hint names the way: {text}"
    );
    // Untouched: no RLS, the project's grant kept, no streamgate object made.
    assert_eq!(
        pg.psql(
            &db,
            "SELECT relrowsecurity FROM pg_class WHERE relname = 'channels'"
        ),
        "f"
    );
    assert_eq!(
        pg.psql(&db, "SET ROLE anon; SELECT count(*) FROM channels"),
        "0"
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM pg_tables WHERE tablename IN ('streamgate_nodes', 'channel_status')"),
        "0"
    );
}

/// docs/website.md's supabase-js snippet: it parses as a JavaScript module, and what it
/// reads is there for the anon role (Supabase's REST and Realtime servers do not run
/// here): its columns of `public_channels` with the live channel in them, and
/// `channel_status` in the Realtime publication with a policy that lets anon read it.
fn website_snippet_reads_what_the_kit_gives_anon(pg: &Postgres, db: &str, live_id: &str) {
    require("node", "nodejs");
    let html = common::source::doc_code_block("docs/website.md", "**With Supabase**", "```html");
    let open = "<script type=\"module\">\n";
    let script = &html[html.find(open).unwrap() + open.len()..];
    let script = &script[..script.find("</script>").unwrap()];
    let module = write_file(&pg.dir, "snippet.mjs", script);
    run_ok(
        std::process::Command::new("node")
            .arg("--check")
            .arg(&module),
    );
    let between = |from: &str, to: &str| -> String {
        let at = script
            .find(from)
            .unwrap_or_else(|| panic!("{from} in the snippet"))
            + from.len();
        script[at..at + script[at..].find(to).unwrap()].to_string()
    };
    let view = between(".from(\"", "\"");
    let columns = between(".select(\"", "\"");
    let filter = between(".eq(\"", "\"");
    let order = between(".order(\"", "\"");
    let table = between("table: \"", "\"");
    let rows = pg.psql(
        db,
        &format!(
            "SET ROLE anon; SELECT string_agg(t::text, ';') FROM \
             (SELECT {columns} FROM public.{view} WHERE {filter} ORDER BY {order}) t"
        ),
    );
    let thumbnail = {
        use md5::{Digest, Md5};
        format!("{}.jpg", hex::encode(Md5::digest(live_id.as_bytes())))
    };
    assert!(
        rows.contains(live_id) && rows.contains(&thumbnail),
        "anon reads the live channel through the snippet's query: {rows}"
    );
    assert_eq!(
        pg.psql(
            db,
            &format!("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'supabase_realtime' AND schemaname = 'public' AND tablename = '{table}'")
        ),
        "1",
        "Realtime publishes {table}"
    );
    assert_eq!(
        pg.psql(
            db,
            &format!("SET ROLE anon; SELECT count(*) > 0 FROM public.{table} WHERE id = '{live_id}' AND is_live")
        ),
        "t",
        "anon may read {table} (Realtime checks the subscriber's select rights)"
    );
}
