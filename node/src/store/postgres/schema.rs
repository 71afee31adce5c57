//! The start-up check of the configured table (every column exists with a usable
//! type; a name is resolved as the statements quote it) and `streamgate migrate`.

use std::collections::HashMap;

use tokio_postgres::types::Type;
use tracing::{info, warn};

use super::PgStore;
use crate::config::KeyStorage;

/// A column as the store uses it: quoted name and the SQL type to cast parameters to.
#[derive(Debug, Clone)]
pub(super) struct Col {
    pub(super) quoted: String,
    /// `uuid` or `text` for ids and sessions; `jsonb` or `text` for relay targets.
    pub(super) cast: &'static str,
}

/// The configured table, checked against the database.
#[derive(Debug, Clone)]
pub(super) struct Mapping {
    pub(super) table: String,
    pub(super) id: Col,
    pub(super) name: Col,
    pub(super) key: Col,
    pub(super) live: Col,
    pub(super) live_since: Option<Col>,
    pub(super) last_seen: Option<Col>,
    pub(super) session: Option<Col>,
    pub(super) node: Option<Col>,
    pub(super) peer: Option<Col>,
    pub(super) relay_targets: Option<Col>,
    pub(super) srt_passphrase: Option<Col>,
    /// The nodes registry (quoted), when configured.
    pub(super) nodes: Option<String>,
    /// Whether the registry has `http_url` (added after its first version: without it
    /// the nodes cannot serve each other's thumbnails).
    pub(super) nodes_http_url: bool,
    pub(super) plain_keys: bool,
    /// Unique indexes on the name column alone: a violation of one of them is a
    /// duplicate name.
    pub(super) name_unique_indexes: Vec<String>,
}

/// An optional column as a select expression: the column cast to `ty`, qualified by
/// `alias` (`""` or `"c."`), or a typed NULL when the table has no such column.
pub(super) fn column_or_null(column: &Option<Col>, alias: &str, ty: &str) -> String {
    column.as_ref().map_or_else(
        || format!("NULL::{ty}"),
        |c| format!("{alias}{}::{ty}", c.quoted),
    )
}

pub(super) fn quote(ident: &str) -> String {
    ident
        .split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

impl PgStore {
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
        // Per-channel SRT passphrases came after the other columns: a table
        // without the column (an existing deployment) keeps working, without them.
        let srt_passphrase = if !s.srt_passphrase_column.is_empty()
            && !columns.contains_key(&s.srt_passphrase_column)
        {
            warn!(
                column = %s.srt_passphrase_column,
                "the channels table has no SRT passphrase column: per-channel SRT passphrases are off (run `streamgate migrate` or add the column, or set database.srt_passphrase_column = \"\" to silence this)"
            );
            None
        } else {
            col("srt_passphrase_column", &s.srt_passphrase_column, TEXT)
        };
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
        let (nodes, nodes_http_url) = if s.nodes_table.is_empty() {
            (None, false)
        } else {
            let http_url = self.check_nodes_table(&s.nodes_table).await?;
            (Some(quote(&s.nodes_table)), http_url)
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
            srt_passphrase,
            nodes,
            nodes_http_url,
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

    /// Checks that the nodes registry exists with the columns the node writes; says
    /// whether it has `http_url` (warns when not).
    async fn check_nodes_table(&self, table: &str) -> anyhow::Result<bool> {
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
        let http_url = have.iter().any(|h| h == "http_url");
        if !http_url {
            tracing::warn!(
                "the nodes table {table} has no http_url column: the nodes of the fleet cannot serve each other's thumbnails; run `streamgate migrate` (or deploy/supabase.sql) to add it"
            );
        }
        Ok(http_url)
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
            let table = quote(&self.settings.nodes_table);
            self.query(&nodes_schema(&table), &[]).await?;
            self.query(
                &format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS http_url text"),
                &[],
            )
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
    srt_passphrase  text,
    created_at      timestamptz NOT NULL DEFAULT now()
)",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS live_peer text",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS srt_passphrase text",
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
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    http_url       text
)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("public.channels"), "\"public\".\"channels\"");
    }
}
