//! Channels and their live status, behind the [`ChannelStore`] trait. The embedded
//! default is SQLite ([`sqlite::SqliteStore`]); a channel has a public UUID, a name, a
//! stream key stored as its SHA-256 hash, and live status.

pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::config::{Config, DatabaseKind};
use crate::key::StreamKey;

/// A channel as the public may see it: never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Channel {
    pub id: Uuid,
    pub name: String,
    pub is_live: bool,
    pub live_since: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Extra relay targets of this channel (may embed third-party keys: never shown).
    #[serde(skip)]
    pub relay_targets: Vec<String>,
}

/// One live/offline transition, from one publish session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub channel_id: Uuid,
    pub live: bool,
    /// The publish session that caused it.
    pub session_id: Uuid,
    /// Order of updates in this process (higher is newer).
    pub seq: u64,
    /// When the transition happened.
    pub at: DateTime<Utc>,
    /// Earlier sessions of this node whose updates this one replaced unwritten
    /// (coalescing): an offline may clear them too, and nothing else.
    pub supersedes: Vec<Uuid>,
}

/// Most superseded sessions one update carries.
pub const MAX_SUPERSEDED: usize = 64;

impl StatusUpdate {
    /// Takes over the sessions of an update it replaces (or that failed and is older).
    pub fn absorb(&mut self, other: &StatusUpdate) {
        for s in std::iter::once(other.session_id).chain(other.supersedes.iter().copied()) {
            if s != self.session_id
                && !self.supersedes.contains(&s)
                && self.supersedes.len() < MAX_SUPERSEDED
            {
                self.supersedes.push(s);
            }
        }
    }

    /// The sessions an offline of this update may end.
    pub fn ending_sessions(&self) -> Vec<Uuid> {
        std::iter::once(self.session_id)
            .chain(self.supersedes.iter().copied())
            .collect()
    }
}

/// Why the store could not answer. Says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(String),
    #[error("a channel named {0:?} already exists")]
    DuplicateName(String),
}

/// Where channels are kept.
#[async_trait]
pub trait ChannelStore: Send + Sync + 'static {
    /// The channel whose key this is, if any.
    async fn find_by_key(&self, key: &StreamKey) -> Result<Option<Channel>, StoreError>;
    /// Current key hashes of the given channels (missing: deleted).
    async fn key_hashes(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, String>, StoreError>;
    /// Writes one status transition.
    async fn apply_status(&self, update: &StatusUpdate) -> Result<(), StoreError>;
    /// Marks offline the channels this node left live (recovery after a crash).
    async fn mark_all_offline(&self) -> Result<u64, StoreError>;
    /// Refreshes `last_seen` of these live channels.
    async fn heartbeat(&self, live: &[Uuid]) -> Result<(), StoreError>;
    async fn create_channel(&self, name: &str) -> Result<(Channel, StreamKey), StoreError>;
    async fn list_channels(&self) -> Result<Vec<Channel>, StoreError>;
    /// Gives the channel a new key; `None` when there is no such channel.
    async fn rotate_key(&self, id: Uuid) -> Result<Option<StreamKey>, StoreError>;
    /// Replaces the channel's extra relay targets; `false` when there is no channel.
    async fn set_relay_targets(&self, id: Uuid, targets: &[String]) -> Result<bool, StoreError>;
    /// Deletes the channel; `false` when there was none.
    async fn delete_channel(&self, id: Uuid) -> Result<bool, StoreError>;
}

/// Opens the store the configuration selects (for Postgres: connects and checks the
/// table).
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn ChannelStore>> {
    match config.database_kind()? {
        DatabaseKind::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(&path).await?)),
        DatabaseKind::Postgres => Ok(Arc::new(
            postgres::PgStore::open(&config.database, config.status.node_id()).await?,
        )),
    }
}

/// Creates the default schema (`streamgate migrate`); says what it did.
pub async fn migrate(config: &Config) -> anyhow::Result<String> {
    match config.database_kind()? {
        DatabaseKind::Sqlite(path) => {
            sqlite::SqliteStore::open(&path).await?;
            Ok(format!(
                "SQLite database {} ready (its schema is created automatically)",
                path.display()
            ))
        }
        DatabaseKind::Postgres => {
            postgres::PgStore::new(&config.database, config.status.node_id())?
                .migrate()
                .await
        }
    }
}
