//! `[database]`: where channels live and, for Postgres, how the table is shaped.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::duration_str;
use super::{invalid, pem_file, positive, ConfigError};

/// Which database, parsed from `database.url`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite:PATH`: an embedded database file.
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`, as written (it may carry a password).
    Postgres(String),
}

impl DatabaseUrl {
    fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(format!(
                    "{url:?} names no file; write \"sqlite:./data/streamgate.db\""
                ));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        let scheme = url.split(':').next().unwrap_or_default();
        if matches!(scheme, "postgres" | "postgresql") {
            return Ok(DatabaseUrl::Postgres(url.to_string()));
        }
        // Never echo a URL that may carry a password.
        Err(format!("\"{scheme}:...\" is an unsupported database; use \"sqlite:PATH\" or \"postgres://user:password@host:5432/db\""))
    }
}

impl DatabaseUrl {
    /// The URL as it may be printed: the password (in the userinfo or as a
    /// `password=` parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        let DatabaseUrl::Postgres(url) = self else {
            return self.to_string();
        };
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url.as_str(), None),
        };
        let base = match base.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    let masked = if userinfo.contains(':') { ":***" } else { "" };
                    format!("{scheme}://{user}{masked}@{host}")
                }
                None => base.to_string(),
            },
            None => base.to_string(),
        };
        match query {
            None => base,
            Some(q) => {
                let q: Vec<String> = q
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                        _ => pair.to_string(),
                    })
                    .collect();
                format!("{base}?{}", q.join("&"))
            }
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            DatabaseUrl::Postgres(url) => f.write_str(url),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            // The password stays out of debug output.
            DatabaseUrl::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DatabaseUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How keys are stored in the key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStorage {
    /// The lowercase hex SHA-256 of the key.
    Sha256,
    /// The key itself.
    Plain,
}

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    /// Postgres: connections kept open at most (queries of the node share them).
    pub pool_size: usize,
    /// Postgres: table holding the channels (optionally schema-qualified).
    pub table: String,
    pub id_column: String,
    pub name_column: String,
    pub key_column: String,
    pub key_storage: KeyStorage,
    pub live_column: String,
    /// Optional columns: `""` when the table has none.
    pub live_since_column: String,
    pub last_seen_column: String,
    pub session_column: String,
    pub node_column: String,
    /// An opaque tag of the publisher's address (salted with its stream key, so a
    /// reader of the table learns nothing from it): how another node tells a
    /// reconnecting encoder from a second one.
    pub peer_column: String,
    pub relay_targets_column: String,
    /// The passphrase SRT publishers of a channel must encrypt with (NULL: none).
    pub srt_passphrase_column: String,
    /// The registry of the nodes sharing this database (heartbeats; a dead node's
    /// channels are marked offline by the others). `""`: no registry (one node).
    pub nodes_table: String,
    /// CA certificates (PEM) for `sslmode=verify-ca|verify-full`.
    pub ca_file: String,
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    #[serde(with = "duration_str")]
    pub query_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DatabaseUrl::Sqlite(PathBuf::from("./data/streamgate.db")),
            pool_size: 4,
            table: "channels".into(),
            id_column: "id".into(),
            name_column: "name".into(),
            key_column: "stream_key_hash".into(),
            key_storage: KeyStorage::Sha256,
            live_column: "is_live".into(),
            live_since_column: "live_since".into(),
            last_seen_column: "last_seen".into(),
            session_column: "live_session".into(),
            node_column: "live_node".into(),
            peer_column: "live_peer".into(),
            relay_targets_column: "relay_targets".into(),
            srt_passphrase_column: "srt_passphrase".into(),
            nodes_table: "streamgate_nodes".into(),
            ca_file: String::new(),
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        }
    }
}

/// A SQL identifier, optionally schema-qualified: letters, digits and `_`.
fn valid_identifier(s: &str, qualified: bool) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (parts.len() == 1 || (qualified && parts.len() == 2)) && parts.iter().all(|p| ok_part(p))
}

impl DatabaseConfig {
    /// Whether the nodes share a registry (Postgres with `nodes_table`): a fleet.
    pub fn has_fleet_registry(&self) -> bool {
        matches!(self.url, DatabaseUrl::Postgres(_)) && !self.nodes_table.is_empty()
    }

    /// Whether the table mapping is the default one (the schema `migrate` creates).
    pub fn is_default_schema(&self) -> bool {
        let d = DatabaseConfig::default();
        self.mapping() == d.mapping() && self.key_storage == d.key_storage
    }

    /// Table and column names, in a fixed order.
    fn mapping(&self) -> [&str; 13] {
        [
            &self.table,
            &self.id_column,
            &self.name_column,
            &self.key_column,
            &self.live_column,
            &self.live_since_column,
            &self.last_seen_column,
            &self.session_column,
            &self.node_column,
            &self.peer_column,
            &self.relay_targets_column,
            &self.srt_passphrase_column,
            &self.nodes_table,
        ]
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("database.connect_timeout", self.connect_timeout)?;
        positive("database.query_timeout", self.query_timeout)?;
        if self.pool_size == 0 {
            return Err(invalid(
                "database.pool_size",
                0,
                "must be at least 1 (4 is a good value)",
            ));
        }
        if matches!(self.url, DatabaseUrl::Sqlite(_)) && !self.is_default_schema() {
            return Err(invalid(
                "database.table",
                format!("{:?}", self.table),
                "table and column settings apply to Postgres only; the SQLite store has a fixed schema",
            ));
        }
        if !valid_identifier(&self.table, true) {
            return Err(invalid(
                "database.table",
                format!("{:?}", self.table),
                "must be a table name like \"channels\" or \"public.channels\"",
            ));
        }
        for (key, value, required) in [
            ("database.id_column", &self.id_column, true),
            ("database.name_column", &self.name_column, true),
            ("database.key_column", &self.key_column, true),
            ("database.live_column", &self.live_column, true),
            ("database.live_since_column", &self.live_since_column, false),
            ("database.last_seen_column", &self.last_seen_column, false),
            ("database.session_column", &self.session_column, false),
            ("database.node_column", &self.node_column, false),
            ("database.peer_column", &self.peer_column, false),
            (
                "database.relay_targets_column",
                &self.relay_targets_column,
                false,
            ),
            (
                "database.srt_passphrase_column",
                &self.srt_passphrase_column,
                false,
            ),
        ] {
            if (required || !value.is_empty()) && !valid_identifier(value, false) {
                let fix = if required {
                    "must be a column name (letters, digits, _)"
                } else {
                    "must be a column name (letters, digits, _) or \"\" when the table has none"
                };
                return Err(invalid(key, format!("{value:?}"), fix));
            }
        }
        if !self.nodes_table.is_empty() && !valid_identifier(&self.nodes_table, true) {
            return Err(invalid(
                "database.nodes_table",
                format!("{:?}", self.nodes_table),
                "must be a table name like \"streamgate_nodes\", or \"\" for no registry",
            ));
        }
        pem_file("database.ca_file", &self.ca_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let u = DatabaseUrl::parse(
            "postgres://postgres.abc:s3cr3t@pooler.example:5432/db?sslmode=require&password=other",
        )
        .unwrap();
        let r = u.redacted();
        assert_eq!(
            r,
            "postgres://postgres.abc:***@pooler.example:5432/db?sslmode=require&password=***"
        );
        let u = DatabaseUrl::parse("postgresql://host/db").unwrap();
        assert_eq!(u.redacted(), "postgresql://host/db");
        assert_eq!(
            DatabaseUrl::parse("sqlite:./x.db").unwrap().redacted(),
            "sqlite:./x.db"
        );
    }
}
