//! The Postgres store (Supabase in production). Works with the default table that
//! `streamgate migrate` creates or with an existing table whose name and columns are
//! configured; keys stored as SHA-256 hex or plain. Startup checks that the table and
//! every configured column exist with a usable type and says exactly what is missing.
//!
//! Every statement is sent unnamed (`query_typed`: Parse/Bind/Execute in one round
//! trip, nothing prepared by name), so the direct connection, Supabase's session pooler
//! and its transaction pooler all work. `sslmode` from the URL is honoured with libpq's
//! meaning ([`tls`]). Statements run on a small [`pool`] of connections that live on
//! the node's main runtime. Errors are classified by SQLSTATE: connection trouble,
//! serialization failures and lock timeouts are retryable; the rest is not.

mod pool;
mod tls;

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::{
    ChannelState, ChannelStore, FleetChannel, FleetView, NodeAnnouncement, NodeRecord,
    RemotePublish, StatusUpdate, StoreError, StoreErrorKind, SweptNode,
};
use crate::channel::Channel;
use crate::config::{DatabaseConfig, KeyStorage};
use crate::key::StreamKey;
use pool::Pool;
pub use tls::{split_sslmode, TlsMode};

/// A column as the store uses it: quoted name and the SQL type to cast parameters to.
#[derive(Debug, Clone)]
struct Col {
    quoted: String,
    /// `uuid` or `text` for ids and sessions; `jsonb` or `text` for relay targets.
    cast: &'static str,
}

/// The configured table, checked against the database.
#[derive(Debug, Clone)]
struct Mapping {
    table: String,
    id: Col,
    name: Col,
    key: Col,
    live: Col,
    live_since: Option<Col>,
    last_seen: Option<Col>,
    session: Option<Col>,
    node: Option<Col>,
    peer: Option<Col>,
    relay_targets: Option<Col>,
    /// The nodes registry (quoted), when configured.
    nodes: Option<String>,
    plain_keys: bool,
    /// Unique indexes on the name column alone: a violation of one of them is a
    /// duplicate name.
    name_unique_indexes: Vec<String>,
}

/// An optional column as a select expression: the column cast to `ty`, qualified by
/// `alias` (`""` or `"c."`), or a typed NULL when the table has no such column.
fn column_or_null(column: &Option<Col>, alias: &str, ty: &str) -> String {
    column.as_ref().map_or_else(
        || format!("NULL::{ty}"),
        |c| format!("{alias}{}::{ty}", c.quoted),
    )
}

fn quote(ident: &str) -> String {
    ident
        .split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

/// Channels in a Postgres table.
pub struct PgStore {
    pool: std::sync::Arc<Pool>,
    /// `host:port` for messages (never the password).
    endpoint: String,
    settings: DatabaseConfig,
    node_id: String,
    mapping: std::sync::OnceLock<Mapping>,
    /// A `text` id column may hold a UUID spelled otherwise than this node does
    /// (upper case, no hyphens, braces): the spelling read from the table for each
    /// channel read, so that a statement names the row as the table spells it.
    id_spellings: quick_cache::sync::Cache<Uuid, String>,
    /// The database's clock minus this node's, in microseconds, as last measured
    /// ([`PgStore::measure_clock`]): times this node stamps (when a publish started or
    /// ended) are written in the database's clock, so that publishes stamped by
    /// different nodes compare by one clock, whatever the skew between the machines.
    clock_offset_us: std::sync::atomic::AtomicI64,
}

/// A clock reading whose round trip took longer than this says too little of the
/// offset to replace the last one.
const CLOCK_SAMPLE_MAX_RTT: std::time::Duration = std::time::Duration::from_millis(500);

/// Stored id spellings remembered at most (the channels read most recently stay).
const ID_SPELLINGS: usize = 100_000;

type Param<'a> = (&'a (dyn ToSql + Sync), Type);

impl PgStore {
    /// Parses the URL and prepares TLS and the pool; does not connect yet. Call it on
    /// the runtime that is to run the database I/O.
    pub fn new(url: &str, settings: &DatabaseConfig, node_id: String) -> anyhow::Result<PgStore> {
        let (url, mode) = split_sslmode(url).map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("database.url is not a valid Postgres URL ({e}); write postgres://user:password@host:5432/database"))?;
        config.connect_timeout(settings.connect_timeout);
        // A connection whose peer vanished (a middlebox that lost its state, a dead
        // host) is found by the kernel too, not only by the statement deadlines: data
        // unacknowledged for this long, or an idle connection whose keepalives go
        // unanswered, closes it.
        config.tcp_user_timeout(settings.query_timeout * 2 + settings.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(30));
        config.keepalives_interval(std::time::Duration::from_secs(10));
        config.keepalives_retries(3);
        config.application_name("streamgate");
        let local = config.get_hosts().iter().all(is_local_host);
        let mode = effective_tls_mode(mode, local, !settings.ca_file.is_empty());
        config.ssl_mode(match mode {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            TlsMode::Require | TlsMode::Verify => tokio_postgres::config::SslMode::Require,
        });
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(s) => s.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let endpoint = format!("{host}:{port}");
        match mode {
            TlsMode::Verify => {}
            TlsMode::Require => {
                warn!(%endpoint, "the Postgres connection is encrypted but the server is not verified: set sslmode=verify-full and database.ca_file (for Supabase: the certificate from Project Settings → Database → SSL configuration)")
            }
            TlsMode::Disable if !local => {
                warn!(%endpoint, "the Postgres connection is NOT encrypted (sslmode=disable) and leaves this machine: use sslmode=verify-full")
            }
            TlsMode::Disable | TlsMode::Prefer => {}
        }
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls::tls_config(
            mode,
            &settings.ca_file,
        )?);
        // A caller waits for a free connection at most as long as for a statement.
        let pool = std::sync::Arc::new(Pool::new(
            config,
            tls,
            settings.pool_size,
            settings.query_timeout,
            endpoint.clone(),
        )?);
        Ok(PgStore {
            pool,
            endpoint,
            settings: settings.clone(),
            node_id,
            mapping: std::sync::OnceLock::new(),
            id_spellings: quick_cache::sync::Cache::new(ID_SPELLINGS),
            clock_offset_us: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// Connects and checks the table.
    pub async fn open(
        url: &str,
        settings: &DatabaseConfig,
        node_id: String,
    ) -> anyhow::Result<PgStore> {
        let store = Self::new(url, settings, node_id)?;
        store.check_schema().await?;
        Ok(store)
    }

    /// Runs one statement on a connection of its own, under the query deadline. A
    /// broken connection, or one whose statement passed the deadline, is closed; the
    /// next call gets another.
    async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let lease = self.pool.get().await?;
        let result = tokio::time::timeout(
            self.settings.query_timeout,
            lease.client().query_typed(sql, params),
        )
        .await;
        match result {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => {
                if e.is_closed() || lease.client().is_closed() {
                    lease.discard(false);
                    return Err(StoreError::unavailable(format!(
                        "lost the Postgres connection to {}: {}",
                        self.endpoint,
                        pg_error_text(&e)
                    ))
                    .with_source(e));
                }
                Err(classify(e))
            }
            Err(_) => {
                lease.discard(true);
                Err(StoreError::unavailable(format!(
                    "Postgres at {} did not answer within {:?}",
                    self.endpoint, self.settings.query_timeout
                )))
            }
        }
    }

    fn map(&self) -> &Mapping {
        self.mapping.get().expect("schema checked at open")
    }

    /// Verifies the table and columns; remembers how to cast parameters.
    pub async fn check_schema(&self) -> anyhow::Result<()> {
        let s = &self.settings;
        let table = s.table.clone();
        // Resolved exactly as the statements will name it: quoted, so case counts.
        let regclass = quote(&table);
        let rows = self
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[(&regclass, Type::TEXT)],
            )
            .await?;
        if rows.is_empty() {
            let hint = match self.tables_named_like(&table).await.as_slice() {
                [] if s.is_default_schema() => {
                    "run `streamgate migrate` to create it, or apply deploy/supabase.sql"
                        .to_string()
                }
                [] => "check database.table".to_string(),
                like => format!(
                    "names are case-sensitive: the database has {}; write that in database.table",
                    like.join(", ")
                ),
            };
            anyhow::bail!(
                "table {table} does not exist in the database at {} ({hint})",
                self.endpoint
            );
        }
        let columns: HashMap<String, String> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        let mut problems = Vec::new();
        let mut col = |key: &str, name: &str, accepted: &[&str]| -> Option<Col> {
            if name.is_empty() {
                return None;
            }
            match columns.get(name) {
                None => {
                    problems.push(format!(
                        "column {name} (database.{key}) does not exist in {table}"
                    ));
                    None
                }
                Some(ty) if !accepted.iter().any(|a| ty.starts_with(a)) => {
                    problems.push(format!(
                        "column {name} (database.{key}) is {ty}; expected {}",
                        accepted.join(" or ")
                    ));
                    None
                }
                Some(ty) => Some(Col {
                    quoted: quote(name),
                    cast: if ty == "uuid" {
                        "uuid"
                    } else if ty == "jsonb" {
                        "jsonb"
                    } else {
                        "text"
                    },
                }),
            }
        };
        const TEXT: &[&str] = &["text", "character varying", "character"];
        const IDS: &[&str] = &["uuid", "text", "character varying"];
        const TIME: &[&str] = &["timestamp with time zone", "timestamp without time zone"];
        let id = col("id_column", &s.id_column, IDS);
        let name = col("name_column", &s.name_column, TEXT);
        let key = col("key_column", &s.key_column, TEXT);
        let live = col("live_column", &s.live_column, &["boolean"]);
        let live_since = col("live_since_column", &s.live_since_column, TIME);
        let last_seen = col("last_seen_column", &s.last_seen_column, TIME);
        let session = col("session_column", &s.session_column, IDS);
        let node = col("node_column", &s.node_column, TEXT);
        let peer = col("peer_column", &s.peer_column, TEXT);
        let relay_targets = col(
            "relay_targets_column",
            &s.relay_targets_column,
            &["jsonb", "json", "text"],
        );
        if !problems.is_empty() {
            let hint = if s.is_default_schema() {
                " (a table made by an older `streamgate migrate`: run `streamgate migrate` again, it adds what is missing)"
            } else {
                ""
            };
            anyhow::bail!(
                "the channels table does not match the configuration: {}{hint}",
                problems.join("; ")
            );
        }
        let nodes = if s.nodes_table.is_empty() {
            None
        } else {
            self.check_nodes_table(&s.nodes_table).await?;
            Some(quote(&s.nodes_table))
        };
        let name_unique_indexes = self
            .query(
                "SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
                 WHERE x.indrelid = to_regclass($1) AND x.indisunique AND x.indnatts = 1 \
                 AND x.indkey[0] = (SELECT a.attnum FROM pg_attribute a \
                     WHERE a.attrelid = to_regclass($1) AND a.attname = $2)",
                &[(&regclass, Type::TEXT), (&s.name_column, Type::TEXT)],
            )
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let mapping = Mapping {
            name_unique_indexes,
            table: quote(&table),
            id: id.expect("checked"),
            name: name.expect("checked"),
            key: key.expect("checked"),
            live: live.expect("checked"),
            live_since,
            last_seen,
            session,
            node,
            peer,
            relay_targets,
            nodes,
            plain_keys: s.key_storage == KeyStorage::Plain,
        };
        if mapping.nodes.is_some() && mapping.node.is_none() {
            anyhow::bail!("database.nodes_table is set but database.node_column is empty: a fleet needs to know which node carries each channel (set node_column, or nodes_table = \"\" for a single node)");
        }
        if mapping.node.is_none() {
            warn!("database.node_column is empty: crash recovery marks offline every live channel of the table (run one node per table)");
        }
        let _ = self.mapping.set(mapping);
        self.measure_clock().await;
        info!(endpoint = %self.endpoint, table = %table, "Postgres channel store ready");
        Ok(())
    }

    /// Reads the database's clock and keeps its offset from this node's (taking the
    /// middle of the round trip as the moment it was read); a reading with a slow
    /// round trip is ignored. Warns when the two clocks differ by more than a second.
    async fn measure_clock(&self) {
        let sent = Utc::now();
        let started = std::time::Instant::now();
        let Ok(rows) = self.query("SELECT clock_timestamp()", &[]).await else {
            return;
        };
        let rtt = started.elapsed();
        let Some(db_now) = rows.first().map(|r| r.get::<_, DateTime<Utc>>(0)) else {
            return;
        };
        if rtt > CLOCK_SAMPLE_MAX_RTT {
            return;
        }
        let local = sent + chrono::Duration::from_std(rtt / 2).unwrap_or_default();
        let offset = (db_now - local).num_microseconds().unwrap_or(0);
        let before = self
            .clock_offset_us
            .swap(offset, std::sync::atomic::Ordering::Relaxed);
        if offset.abs() > 1_000_000 && (offset - before).abs() > 500_000 {
            warn!(endpoint = %self.endpoint, offset_ms = offset / 1000, "this machine's clock differs from the database's by more than a second: the node writes its times in the database's clock, but check NTP on this machine");
        }
    }

    /// `at` (this node's clock) in the database's clock.
    fn in_db_clock(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        at + chrono::Duration::microseconds(
            self.clock_offset_us
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Tables and views whose name (or schema and name) matches `name` but for case,
    /// as the database spells them: what to suggest for a name not found.
    async fn tables_named_like(&self, name: &str) -> Vec<String> {
        let (schema, table) = match name.rsplit_once('.') {
            Some((s, t)) => (Some(s.to_string()), t.to_string()),
            None => (None, name.to_string()),
        };
        self.query(
            "SELECT CASE WHEN n.nspname = 'public' AND $2::text IS NULL THEN c.relname::text \
             ELSE n.nspname || '.' || c.relname END FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE lower(c.relname) = lower($1) AND c.relkind IN ('r', 'p', 'v', 'f') \
             AND ($2::text IS NULL OR lower(n.nspname) = lower($2)) \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 LIMIT 3",
            &[(&table, Type::TEXT), (&schema, Type::TEXT)],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
    }

    /// Checks that the nodes registry exists with the columns the node writes.
    async fn check_nodes_table(&self, table: &str) -> anyhow::Result<()> {
        let rows = self
            .query(
                "SELECT a.attname::text FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[(&quote(table), Type::TEXT)],
            )
            .await?;
        let have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let missing: Vec<&str> = NODE_COLUMNS
            .iter()
            .copied()
            .filter(|c| !have.iter().any(|h| h == c))
            .collect();
        if have.is_empty() {
            anyhow::bail!(
                "the nodes table {table} (database.nodes_table) does not exist in the database at {}: run `streamgate migrate` (it creates it) or apply deploy/supabase.sql; for a single node without a registry set database.nodes_table = \"\"",
                self.endpoint
            );
        }
        if !missing.is_empty() {
            anyhow::bail!(
                "the nodes table {table} (database.nodes_table) lacks the columns {}: run `streamgate migrate` or apply deploy/supabase.sql",
                missing.join(", ")
            );
        }
        Ok(())
    }

    /// Creates what is missing of the default schema (`streamgate migrate`): the
    /// channels table (only for the default mapping; an existing table is the
    /// operator's) with any column a newer version added, and the nodes registry.
    pub async fn migrate(&self) -> anyhow::Result<String> {
        let mut done = Vec::new();
        if self.settings.is_default_schema() {
            for statement in DEFAULT_SCHEMA {
                self.query(statement, &[]).await?;
            }
            done.push("table channels".to_string());
        }
        if !self.settings.nodes_table.is_empty() {
            self.query(&nodes_schema(&quote(&self.settings.nodes_table)), &[])
                .await?;
            done.push(format!("nodes table {}", self.settings.nodes_table));
        }
        anyhow::ensure!(
            !done.is_empty(),
            "database.table/columns are customised (an existing schema) and database.nodes_table is empty: there is nothing for migrate to create"
        );
        let done: Vec<String> = done.iter().map(|d| format!("{d} ready")).collect();
        Ok(format!(
            "{} in the database at {}",
            done.join("; "),
            self.endpoint
        ))
    }

    fn select_columns(&self) -> String {
        let m = self.map();
        format!(
            "{}::text, {}::text, {}, {}, {}, {}",
            m.id.quoted,
            m.name.quoted,
            m.live.quoted,
            column_or_null(&m.live_since, "", "timestamptz"),
            column_or_null(&m.last_seen, "", "timestamptz"),
            column_or_null(&m.relay_targets, "", "text"),
        )
    }

    fn stored_key(&self, key: &StreamKey) -> String {
        if self.map().plain_keys {
            key.expose().to_string()
        } else {
            key.sha256_hex()
        }
    }

    /// The values that name `ids` in the id column, for `id = ANY($n::<cast>[])`: a
    /// `uuid` column compares UUIDs; a `text` column is compared as text, as the
    /// table spells it: the spelling read from the table for that channel, and the
    /// usual spellings of a UUID (hyphenated or not, lower or upper case, braced).
    fn id_values(&self, ids: &[Uuid]) -> Vec<String> {
        if self.map().id.cast == "uuid" {
            return ids.iter().map(Uuid::to_string).collect();
        }
        let mut out = Vec::with_capacity(ids.len() * 7);
        for id in ids {
            let (h, s) = (id.hyphenated().to_string(), id.simple().to_string());
            out.push(format!("{{{h}}}"));
            out.push(format!("{{{}}}", h.to_uppercase()));
            out.push(h.to_uppercase());
            out.push(s.to_uppercase());
            out.push(h);
            out.push(s);
            if let Some(stored) = self.id_spellings.get(id) {
                if !out.contains(&stored) {
                    out.push(stored);
                }
            }
        }
        out
    }

    /// Parses an id read from the table (any spelling of a UUID) and remembers its
    /// spelling when it is not this node's.
    fn read_id(&self, stored: &str) -> Option<Uuid> {
        let id = Uuid::parse_str(stored).ok()?;
        if self.map().id.cast != "uuid" && stored != id.hyphenated().to_string() {
            self.id_spellings.insert(id, stored.to_string());
        }
        Some(id)
    }

    /// A channel from a row of [`PgStore::select_columns`], its id's spelling kept.
    fn channel_of(&self, row: &Row) -> Result<Channel, StoreError> {
        let channel = row_to_channel(row)?;
        let _ = self.read_id(&row.get::<_, String>(0));
        Ok(channel)
    }
}

/// The table `migrate` creates (same columns as deploy/supabase.sql), then the
/// columns later versions added, for a table an older version created.
pub const DEFAULT_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS channels (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL UNIQUE,
    stream_key_hash text NOT NULL UNIQUE,
    is_live         boolean NOT NULL DEFAULT false,
    live_since      timestamptz,
    last_seen       timestamptz,
    live_session    uuid,
    live_node       text,
    live_peer       text,
    relay_targets   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
)",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS live_peer text",
];

/// Columns of the nodes registry.
const NODE_COLUMNS: &[&str] = &["id", "address", "version", "started_at", "last_heartbeat"];

/// The nodes registry `migrate` creates (same as deploy/supabase.sql).
fn nodes_schema(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
    id             text PRIMARY KEY,
    address        text NOT NULL,
    version        text NOT NULL,
    started_at     timestamptz NOT NULL,
    last_heartbeat timestamptz NOT NULL DEFAULT now()
)"
    )
}

/// Seconds, as Postgres interval arithmetic takes them (`$n * interval '1 second'`).
fn seconds(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

/// Whether a Postgres host is this machine (a Unix socket, `localhost` or a loopback
/// address): only there may a connection fall back to plaintext.
fn is_local_host(host: &tokio_postgres::config::Host) -> bool {
    match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// The TLS mode actually used: `prefer` (the default) never falls back to plaintext
/// for a host that is not this machine, and a configured CA means the server is
/// verified whatever the URL says (short of `disable`).
fn effective_tls_mode(asked: TlsMode, local: bool, ca_configured: bool) -> TlsMode {
    match asked {
        TlsMode::Prefer | TlsMode::Require if ca_configured => TlsMode::Verify,
        TlsMode::Prefer if !local => TlsMode::Require,
        other => other,
    }
}

/// What Postgres (or the way to it) said: the server's own message and SQLSTATE when
/// it answered ("password authentication failed for user ...", "database ... does not
/// exist"), otherwise the error with its causes ("error connecting to server:
/// Connection refused").
pub(crate) fn pg_error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Classifies a statement's failure by SQLSTATE: what retrying can fix (connection
/// trouble, serialization failures, deadlocks, lock and statement timeouts, a server
/// shutting down or out of connections) and what it cannot.
fn classify(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return StoreError::unavailable(format!("Postgres: {}", pg_error_text(&e))).with_source(e);
    };
    let code = db.code();
    let kind = if code.code().starts_with("08")
        || code.code().starts_with("53")
        || [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code)
    {
        StoreErrorKind::Transient
    } else {
        StoreErrorKind::Rejected
    };
    let message = format!("Postgres: {} (SQLSTATE {})", db.message(), code.code());
    StoreError::new(kind, message).with_source(e)
}

/// The index a unique violation (SQLSTATE 23505) was reported on.
fn violated_unique_index(e: &StoreError) -> Option<String> {
    let source = std::error::Error::source(e)?;
    let db = source
        .downcast_ref::<tokio_postgres::Error>()?
        .as_db_error()?;
    (db.code() == &SqlState::UNIQUE_VIOLATION)
        .then(|| db.constraint().map(str::to_owned))
        .flatten()
}

fn row_to_channel(row: &Row) -> Result<Channel, StoreError> {
    let id: String = row.get(0);
    Ok(Channel {
        id: Uuid::parse_str(&id).map_err(|e| {
            StoreError::new(
                StoreErrorKind::BadData,
                format!("channel id {id:?} is not a UUID"),
            )
            .with_source(e)
        })?,
        name: row.get::<_, Option<String>>(1).unwrap_or_default(),
        is_live: row.get::<_, Option<bool>>(2).unwrap_or(false),
        live_since: row.get::<_, Option<DateTime<Utc>>>(3),
        last_seen: row.get::<_, Option<DateTime<Utc>>>(4),
        relay_targets: row
            .get::<_, Option<String>>(5)
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
    })
}

#[async_trait]
impl ChannelStore for PgStore {
    async fn find_by_key(&self, key: &StreamKey) -> Result<Option<Channel>, StoreError> {
        let m = self.map();
        let stored = self.stored_key(key);
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = $1 LIMIT 1",
            self.select_columns(),
            m.table,
            m.key.quoted
        );
        let rows = self.query(&sql, &[(&stored, Type::TEXT)]).await?;
        rows.first().map(|r| self.channel_of(r)).transpose()
    }

    async fn recheck(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ChannelState>, StoreError> {
        let m = self.map();
        let ids = self.id_values(ids);
        let sql = format!(
            "SELECT {}::text, {}::text, {}, {}, {} FROM {} WHERE {} = ANY($1::{}[])",
            m.id.quoted,
            m.key.quoted,
            m.live.quoted,
            column_or_null(&m.session, "", "text"),
            column_or_null(&m.node, "", "text"),
            m.table,
            m.id.quoted,
            m.id.cast
        );
        let rows = self.query(&sql, &[(&ids, Type::TEXT_ARRAY)]).await?;
        let mut out = HashMap::new();
        for r in rows {
            let (id, key): (String, Option<String>) = (r.get(0), r.get(1));
            let (Some(id), Some(key)) = (self.read_id(&id), key) else {
                continue;
            };
            // Plain keys are hashed here, so callers compare digests in constant time.
            let key_hash = if m.plain_keys {
                StreamKey::new(key).sha256_hex()
            } else {
                key
            };
            out.insert(
                id,
                ChannelState {
                    key_hash,
                    live: r.get::<_, Option<bool>>(2).unwrap_or(false),
                    session: r
                        .get::<_, Option<String>>(3)
                        .and_then(|s| Uuid::parse_str(&s).ok()),
                    node: r.get(4),
                },
            );
        }
        Ok(out)
    }

    async fn live_elsewhere(
        &self,
        id: Uuid,
        dead_after: std::time::Duration,
    ) -> Result<Option<RemotePublish>, StoreError> {
        let m = self.map();
        let Some(node) = &m.node else {
            return Ok(None);
        };
        let quiet = m
            .last_seen
            .as_ref()
            .map_or("NULL::float8".to_string(), |c| {
                format!(
                    "EXTRACT(EPOCH FROM (now() - c.{}::timestamptz))::float8",
                    c.quoted
                )
            });
        let alive = m.nodes.as_ref().map_or("true".to_string(), |t| {
            format!(
                "EXISTS (SELECT 1 FROM {t} n WHERE n.id = c.{}::text \
                 AND n.last_heartbeat > now() - $3 * interval '1 second')",
                node.quoted
            )
        });
        let sql = format!(
            "SELECT c.{n}::text, {}, {}, {quiet}, {alive} FROM {} c \
             WHERE c.{} = ANY($1::{}[]) AND c.{} AND c.{n} IS NOT NULL AND c.{n}::text <> $2",
            column_or_null(&m.session, "c.", "text"),
            column_or_null(&m.peer, "c.", "text"),
            m.table,
            m.id.quoted,
            m.id.cast,
            m.live.quoted,
            n = node.quoted,
        );
        let (ids, me, dead) = (
            self.id_values(&[id]),
            self.node_id.clone(),
            seconds(dead_after),
        );
        let rows = self
            .query(
                &sql,
                &[
                    (&ids, Type::TEXT_ARRAY),
                    (&me, Type::TEXT),
                    (&dead, Type::FLOAT8),
                ],
            )
            .await?;
        Ok(rows.first().map(|r| RemotePublish {
            node: r.get(0),
            session: r
                .get::<_, Option<String>>(1)
                .and_then(|s| Uuid::parse_str(&s).ok()),
            peer_tag: r.get(2),
            quiet_for: r
                .get::<_, Option<f64>>(3)
                .map(|s| std::time::Duration::from_secs_f64(s.max(0.0))),
            node_alive: r.get(4),
        }))
    }

    async fn announce_node(&self, node: &NodeAnnouncement) -> Result<(), StoreError> {
        let Some(table) = &self.map().nodes else {
            return Ok(());
        };
        let sql = format!(
            "INSERT INTO {table} (id, address, version, started_at, last_heartbeat) \
             VALUES ($1, $2, $3, $4, now()) ON CONFLICT (id) DO UPDATE SET \
             address = EXCLUDED.address, version = EXCLUDED.version, \
             started_at = EXCLUDED.started_at, last_heartbeat = now()"
        );
        self.query(
            &sql,
            &[
                (&self.node_id, Type::TEXT),
                (&node.address, Type::TEXT),
                (&node.version, Type::TEXT),
                (&node.started_at, Type::TIMESTAMPTZ),
            ],
        )
        .await?;
        Ok(())
    }

    async fn retire_node(&self) -> Result<(), StoreError> {
        let Some(table) = &self.map().nodes else {
            return Ok(());
        };
        self.query(
            &format!("DELETE FROM {table} WHERE id = $1"),
            &[(&self.node_id, Type::TEXT)],
        )
        .await?;
        Ok(())
    }

    async fn sweep_dead_nodes(
        &self,
        dead_after: std::time::Duration,
    ) -> Result<Vec<SweptNode>, StoreError> {
        let m = self.map();
        let (Some(table), Some(node)) = (&m.nodes, &m.node) else {
            return Ok(Vec::new());
        };
        let mut sets = vec![format!("{} = false", m.live.quoted)];
        if let Some(c) = &m.session {
            sets.push(format!("{} = NULL", c.quoted));
        }
        // Channels left live by a node that is not registered at all (it was swept
        // while cut off from the database and never came back, or it ran a version
        // without the registry) go too, once their last_seen is as old.
        let orphans = m.last_seen.as_ref().map_or(String::new(), |seen| {
            format!(
                " OR (c.{n} IS NOT NULL AND c.{n}::text <> $2 \
                 AND c.{}::timestamptz < now() - $1 * interval '1 second' \
                 AND NOT EXISTS (SELECT 1 FROM {table} x WHERE x.id = c.{n}::text))",
                seen.quoted,
                n = node.quoted
            )
        });
        // One statement: the DELETE decides which sweeper owns a dead node (a
        // concurrent one waits on the row lock, then finds it gone), and the UPDATE
        // re-checks `live` on rows another sweeper changed meanwhile.
        let sql = format!(
            "WITH dead AS ( \
                 DELETE FROM {table} WHERE last_heartbeat < now() - $1 * interval '1 second' \
                 AND id <> $2 RETURNING id \
             ), ended AS ( \
                 UPDATE {t} c SET {sets} WHERE c.{live} AND (c.{n}::text IN (SELECT id FROM dead){orphans}) \
                 RETURNING c.{n}::text AS node, c.{id}::text AS channel \
             ) \
             SELECT id, NULL::text FROM dead UNION ALL SELECT node, channel FROM ended",
            t = m.table,
            sets = sets.join(", "),
            live = m.live.quoted,
            n = node.quoted,
            id = m.id.quoted,
        );
        let (dead, me) = (seconds(dead_after), self.node_id.clone());
        let rows = self
            .query(&sql, &[(&dead, Type::FLOAT8), (&me, Type::TEXT)])
            .await?;
        let mut swept: Vec<SweptNode> = Vec::new();
        for r in rows {
            let (node, channel): (String, Option<String>) = (r.get(0), r.get(1));
            let entry = match swept.iter_mut().position(|s| s.node == node) {
                Some(i) => &mut swept[i],
                None => {
                    swept.push(SweptNode {
                        node,
                        channels: Vec::new(),
                    });
                    swept.last_mut().expect("just pushed")
                }
            };
            if let Some(id) = channel.and_then(|c| Uuid::parse_str(&c).ok()) {
                entry.channels.push(id);
            }
        }
        Ok(swept)
    }

    async fn fleet(
        &self,
        dead_after: std::time::Duration,
    ) -> Result<Option<FleetView>, StoreError> {
        let m = self.map();
        let Some(table) = &m.nodes else {
            return Ok(None);
        };
        let dead = seconds(dead_after);
        let nodes = self
            .query(
                &format!(
                    "SELECT id, address, version, started_at, last_heartbeat, \
                     last_heartbeat > now() - $1 * interval '1 second' FROM {table} ORDER BY id"
                ),
                &[(&dead, Type::FLOAT8)],
            )
            .await?
            .iter()
            .map(|r| NodeRecord {
                id: r.get(0),
                address: r.get(1),
                version: r.get(2),
                started_at: r.get(3),
                last_heartbeat: r.get(4),
                alive: r.get(5),
            })
            .collect();
        let sql = format!(
            "SELECT {}::text, {}::text, {}, {} FROM {} WHERE {} ORDER BY {}",
            m.id.quoted,
            m.name.quoted,
            column_or_null(&m.node, "", "text"),
            column_or_null(&m.live_since, "", "timestamptz"),
            m.table,
            m.live.quoted,
            m.name.quoted
        );
        let channels = self
            .query(&sql, &[])
            .await?
            .iter()
            .filter_map(|r| {
                Some(FleetChannel {
                    channel_id: Uuid::parse_str(&r.get::<_, String>(0)).ok()?,
                    name: r.get::<_, Option<String>>(1).unwrap_or_default(),
                    node: r.get(2),
                    live_since: r.get(3),
                })
            })
            .collect();
        Ok(Some(FleetView { nodes, channels }))
    }

    async fn apply_status(&self, u: &StatusUpdate) -> Result<(), StoreError> {
        let m = self.map();
        let id = self.id_values(&[u.channel_id]);
        let session = u.session_id.to_string();
        // Publishes of different nodes compare by the database's clock.
        let at = self.in_db_clock(u.at);
        let mut sets = vec![format!("{} = {}", m.live.quoted, u.live)];
        if let Some(c) = &m.last_seen {
            sets.push(format!("{} = $2", c.quoted));
        }
        if u.live {
            if let Some(c) = &m.live_since {
                sets.push(format!("{} = $2", c.quoted));
            }
            if let Some(c) = &m.session {
                sets.push(format!("{} = $3::{}", c.quoted, c.cast));
            }
            if let Some(c) = &m.node {
                sets.push(format!("{} = $4", c.quoted));
            }
            if let Some(c) = &m.peer {
                sets.push(format!("{} = $6", c.quoted));
            }
        } else if let Some(c) = &m.session {
            sets.push(format!("{} = NULL", c.quoted));
        }
        let mut sql = format!(
            "UPDATE {} SET {} WHERE {} = ANY($1::{}[])",
            m.table,
            sets.join(", "),
            m.id.quoted,
            m.id.cast
        );
        if let (false, Some(c)) = (u.live, &m.session) {
            // An offline ends only the sessions this node knows ended (its own, merged
            // by coalescing), never a newer session, e.g. a takeover on another node.
            sql.push_str(&format!(
                " AND ({0} IS NULL OR {0} = ANY($5::{1}[]))",
                c.quoted, c.cast
            ));
        }
        if let (true, Some(c)) = (u.live, &m.live_since) {
            // A live that reaches the table late (its node's outbox waited out an
            // outage) never replaces a newer publish another node recorded meanwhile.
            sql.push_str(&format!(
                " AND (NOT {0} OR {1} IS NULL OR {1}::timestamptz <= $2)",
                m.live.quoted, c.quoted
            ));
        }
        sql.push_str(" RETURNING 1");
        let node = self.node_id.clone();
        let ending: Vec<String> = u.ending_sessions().iter().map(|s| s.to_string()).collect();
        let rows = self
            .query(
                &sql,
                &[
                    (&id, Type::TEXT_ARRAY),
                    (&at, Type::TIMESTAMPTZ),
                    (&session, Type::TEXT),
                    (&node, Type::TEXT),
                    (&ending, Type::TEXT_ARRAY),
                    (&u.peer_tag, Type::TEXT),
                ],
            )
            .await?;
        debug!(channel_id = %u.channel_id, live = u.live, rows = rows.len(), "status statement");
        Ok(())
    }

    async fn mark_all_offline(&self) -> Result<u64, StoreError> {
        let m = self.map();
        let mut sets = vec![format!("{} = false", m.live.quoted)];
        if let Some(c) = &m.session {
            sets.push(format!("{} = NULL", c.quoted));
        }
        let node = self.node_id.clone();
        let rows = match &m.node {
            Some(n) => {
                let sql = format!(
                    "UPDATE {} SET {} WHERE {} AND {} = $1 RETURNING 1",
                    m.table,
                    sets.join(", "),
                    m.live.quoted,
                    n.quoted
                );
                self.query(&sql, &[(&node, Type::TEXT)]).await?
            }
            None => {
                let sql = format!(
                    "UPDATE {} SET {} WHERE {} RETURNING 1",
                    m.table,
                    sets.join(", "),
                    m.live.quoted
                );
                self.query(&sql, &[]).await?
            }
        };
        Ok(rows.len() as u64)
    }

    async fn heartbeat(&self, live: &[Uuid]) -> Result<(), StoreError> {
        // Every beat keeps the clock offset fresh (clocks drift; NTP steps them).
        self.measure_clock().await;
        let m = self.map();
        let Some(seen) = &m.last_seen else {
            return Ok(());
        };
        if live.is_empty() {
            return Ok(());
        }
        let ids = self.id_values(live);
        let mut sql = format!(
            "UPDATE {} SET {} = now() WHERE {} = ANY($1::{}[]) AND {}",
            m.table, seen.quoted, m.id.quoted, m.id.cast, m.live.quoted
        );
        if let Some(n) = &m.node {
            // A channel another node took over is that node's to refresh.
            sql.push_str(&format!(" AND {}::text = $2", n.quoted));
        }
        self.query(
            &sql,
            &[(&ids, Type::TEXT_ARRAY), (&self.node_id, Type::TEXT)],
        )
        .await?;
        Ok(())
    }

    async fn create_channel(&self, name: &str) -> Result<(Channel, StreamKey), StoreError> {
        let m = self.map();
        let key = StreamKey::generate();
        let id = Uuid::new_v4();
        let stored = self.stored_key(&key);
        let sql = format!(
            "INSERT INTO {} ({}, {}, {}) VALUES ($1::{}, $2, $3)",
            m.table, m.id.quoted, m.name.quoted, m.key.quoted, m.id.cast
        );
        let (ids, names) = (id.to_string(), name.to_string());
        let inserted = self
            .query(
                &sql,
                &[
                    (&ids, Type::TEXT),
                    (&names, Type::TEXT),
                    (&stored, Type::TEXT),
                ],
            )
            .await;
        if let Err(e) = inserted {
            let on_name = violated_unique_index(&e)
                .is_some_and(|index| m.name_unique_indexes.contains(&index));
            if on_name {
                return Err(StoreError::new(
                    StoreErrorKind::DuplicateName,
                    format!("a channel named {name:?} already exists"),
                )
                .with_source(e));
            }
            return Err(e);
        }
        Ok((Channel::new(id, name), key))
    }

    async fn list_channels(&self) -> Result<Vec<Channel>, StoreError> {
        let m = self.map();
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            self.select_columns(),
            m.table,
            m.name.quoted
        );
        self.query(&sql, &[])
            .await?
            .iter()
            .map(|r| self.channel_of(r))
            .collect()
    }

    async fn rotate_key(&self, id: Uuid) -> Result<Option<StreamKey>, StoreError> {
        let m = self.map();
        let key = StreamKey::generate();
        let stored = self.stored_key(&key);
        let ids = self.id_values(&[id]);
        let sql = format!(
            "UPDATE {} SET {} = $2 WHERE {} = ANY($1::{}[]) RETURNING 1",
            m.table, m.key.quoted, m.id.quoted, m.id.cast
        );
        let rows = self
            .query(&sql, &[(&ids, Type::TEXT_ARRAY), (&stored, Type::TEXT)])
            .await?;
        Ok((!rows.is_empty()).then_some(key))
    }

    async fn set_relay_targets(&self, id: Uuid, targets: &[String]) -> Result<bool, StoreError> {
        let m = self.map();
        let Some(col) = &m.relay_targets else {
            return Err(StoreError::new(
                StoreErrorKind::Rejected,
                "database.relay_targets_column is not configured",
            ));
        };
        let json = (!targets.is_empty())
            .then(|| serde_json::to_string(targets).expect("strings serialize"));
        let ids = self.id_values(&[id]);
        let sql = format!(
            "UPDATE {} SET {} = $2::text::{} WHERE {} = ANY($1::{}[]) RETURNING 1",
            m.table, col.quoted, col.cast, m.id.quoted, m.id.cast
        );
        Ok(!self
            .query(&sql, &[(&ids, Type::TEXT_ARRAY), (&json, Type::TEXT)])
            .await?
            .is_empty())
    }

    async fn delete_channel(&self, id: Uuid) -> Result<bool, StoreError> {
        let m = self.map();
        let ids = self.id_values(&[id]);
        let sql = format!(
            "DELETE FROM {} WHERE {} = ANY($1::{}[]) RETURNING 1",
            m.table, m.id.quoted, m.id.cast
        );
        Ok(!self
            .query(&sql, &[(&ids, Type::TEXT_ARRAY)])
            .await?
            .is_empty())
    }

    fn health(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.pool.health.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_plaintext_fallback_off_this_machine_and_a_ca_means_verify() {
        use tokio_postgres::config::Host;
        assert!(is_local_host(&Host::Tcp("127.0.0.1".into())));
        assert!(is_local_host(&Host::Tcp("localhost".into())));
        assert!(is_local_host(&Host::Tcp("::1".into())));
        assert!(is_local_host(&Host::Unix("/run/postgresql".into())));
        assert!(!is_local_host(&Host::Tcp("db.abc.supabase.co".into())));
        assert!(!is_local_host(&Host::Tcp("10.0.0.5".into())));
        use TlsMode::*;
        assert_eq!(effective_tls_mode(Prefer, false, false), Require);
        assert_eq!(effective_tls_mode(Prefer, true, false), Prefer);
        assert_eq!(effective_tls_mode(Require, false, true), Verify);
        assert_eq!(effective_tls_mode(Prefer, true, true), Verify);
        assert_eq!(effective_tls_mode(Disable, false, true), Disable);
        assert_eq!(effective_tls_mode(Require, false, false), Require);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("public.channels"), "\"public\".\"channels\"");
    }
}
