//! Channels and their live status, behind the [`ChannelStore`] trait. The embedded
//! default is SQLite ([`sqlite::SqliteStore`]), production is Postgres/Supabase
//! ([`postgres::PgStore`]); a channel has a public UUID, a name, a stream key (stored
//! as its SHA-256 hash by default), and live status. Errors carry a
//! [`StoreErrorKind`] that says whether retrying can help.

pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::channel::Channel;
use crate::config::{Config, DatabaseUrl};
use crate::key::StreamKey;

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
    /// A live update's opaque tag of the publisher's address (see
    /// [`crate::key::StreamKey::peer_tag`]).
    pub peer_tag: Option<String>,
}

/// What the channels table says of a channel this node streams (the periodic
/// re-check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    /// The current key's SHA-256 hex.
    pub key_hash: String,
    pub live: bool,
    /// The publish session the table records (`None` without a session column, or
    /// offline).
    pub session: Option<Uuid>,
    /// The node the table records.
    pub node: Option<String>,
}

/// A live publish of a channel on another node, as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePublish {
    pub node: String,
    pub session: Option<Uuid>,
    /// Its publisher's [`crate::key::StreamKey::peer_tag`].
    pub peer_tag: Option<String>,
    /// Since that node last saw media of it (by the database's clock); `None` when
    /// the table has no `last_seen`.
    pub quiet_for: Option<std::time::Duration>,
    /// Whether that node is registered and heard from within the dead-node time.
    pub node_alive: bool,
}

/// This node, as it announces itself in the nodes table.
#[derive(Debug, Clone)]
pub struct NodeAnnouncement {
    pub address: String,
    /// Where the other nodes fetch this node's thumbnails (`http.advertise`): set
    /// once the HTTP listener is bound, so the first beat may go without it.
    pub http_url: std::sync::Arc<std::sync::OnceLock<String>>,
    pub version: String,
    pub started_at: DateTime<Utc>,
}

/// A node of the fleet, from the nodes table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRecord {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
    /// Heard from within the dead-node time.
    pub alive: bool,
    /// Where its thumbnails are fetched (`None` before the registry had the column).
    pub http_url: Option<String>,
}

/// A live channel and the node that carries it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetChannel {
    pub channel_id: Uuid,
    pub name: String,
    pub node: Option<String>,
    pub live_since: Option<DateTime<Utc>>,
}

/// Every node and every live channel of the database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetView {
    pub nodes: Vec<NodeRecord>,
    pub channels: Vec<FleetChannel>,
}

/// A node declared dead by this node's sweep, and the channels it marked offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweptNode {
    pub node: String,
    pub channels: Vec<Uuid>,
}

/// Whether the database answers, as the store last found: `true` while it does. A
/// store whose database can stop answering (Postgres) marks it down when a connect
/// fails or does not finish in time, and up again once it answers; who waits for the
/// database to come back (the outbox's retries, the heartbeat) watches it and catches
/// up at once instead of at its next retry.
#[derive(Debug)]
pub struct Health {
    up: tokio::sync::watch::Sender<bool>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health {
            up: tokio::sync::watch::Sender::new(true),
        }
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.up.subscribe()
    }

    pub fn set(&self, up: bool) {
        self.up
            .send_if_modified(|now| std::mem::replace(now, up) != up);
    }
}

/// Waits until `health` says the database answers again after having been down (or
/// forever without a health signal, or when its store is gone).
pub async fn answers_again(health: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    let Some(rx) = health else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if *rx.borrow_and_update() {
            return;
        }
    }
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

/// What kind of failure a [`StoreError`] is, and so what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The database cannot be reached or did not answer in time. Retrying helps.
    Unavailable,
    /// A conflict with concurrent work (lock busy, serialization failure, deadlock).
    /// Retrying helps.
    Transient,
    /// A channel with this name exists already.
    DuplicateName,
    /// The database refused the statement (schema, type, permission, constraint):
    /// sending it again cannot succeed until someone changes the database or the
    /// configuration.
    Rejected,
    /// The table holds something the node cannot read (e.g. an id that is not a UUID).
    BadData,
}

/// Why the store could not answer. The message says what to check; the source is
/// kept for whoever needs the details.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Keeps `source` as the cause.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        self.source = Some(source.into());
        self
    }

    pub fn unavailable(message: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::Unavailable, message)
    }

    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Unavailable | StoreErrorKind::Transient
        )
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Channels: their keys, names and relay targets (key lookups, the re-check, the
/// command line).
#[async_trait]
pub trait ChannelDirectory: Send + Sync + 'static {
    /// The channel whose key this is, if any.
    async fn find_by_key(&self, key: &StreamKey) -> Result<Option<Channel>, StoreError>;
    /// Key hash and live session of the given channels (missing: deleted).
    async fn recheck(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ChannelState>, StoreError>;
    async fn create_channel(&self, name: &str) -> Result<(Channel, StreamKey), StoreError>;
    async fn list_channels(&self) -> Result<Vec<Channel>, StoreError>;
    /// Gives the channel a new key; `None` when there is no such channel.
    async fn rotate_key(&self, id: Uuid) -> Result<Option<StreamKey>, StoreError>;
    /// Replaces the channel's extra relay targets; `false` when there is no channel.
    async fn set_relay_targets(&self, id: Uuid, targets: &[String]) -> Result<bool, StoreError>;
    /// Sets (or with `None` removes) the channel's SRT passphrase; `false`: no such
    /// channel.
    async fn set_srt_passphrase(
        &self,
        id: Uuid,
        passphrase: Option<&crate::channel::SrtPassphrase>,
    ) -> Result<bool, StoreError>;
    /// Deletes the channel; `false` when there was none.
    async fn delete_channel(&self, id: Uuid) -> Result<bool, StoreError>;
}

/// Live status: what the outbox writes, `last_seen`, crash recovery.
#[async_trait]
pub trait StatusStore: Send + Sync + 'static {
    /// Writes one status transition.
    async fn apply_status(&self, update: &StatusUpdate) -> Result<(), StoreError>;
    /// Marks offline the channels this node left live (recovery after a crash).
    async fn mark_all_offline(&self) -> Result<u64, StoreError>;
    /// Refreshes `last_seen` of these live channels.
    async fn heartbeat(&self, live: &[Uuid]) -> Result<(), StoreError>;
}

/// The fleet: which node carries what, and which nodes are alive. A store that serves
/// one node (SQLite) keeps the defaults: nothing elsewhere, nobody else.
#[async_trait]
pub trait FleetRegistry: Send + Sync + 'static {
    /// The channel's live publish on another node, if the table records one.
    async fn live_elsewhere(
        &self,
        _id: Uuid,
        _dead_after: std::time::Duration,
    ) -> Result<Option<RemotePublish>, StoreError> {
        Ok(None)
    }
    /// Says this node is alive (inserts or refreshes its row in the nodes table).
    async fn announce_node(&self, _node: &NodeAnnouncement) -> Result<(), StoreError> {
        Ok(())
    }
    /// Removes this node's row (clean shutdown).
    async fn retire_node(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Declares dead the nodes not heard from for `dead_after` and marks their live
    /// channels offline, in one statement: each dead node is swept by exactly one
    /// caller, however many sweep at once.
    async fn sweep_dead_nodes(
        &self,
        _dead_after: std::time::Duration,
    ) -> Result<Vec<SweptNode>, StoreError> {
        Ok(Vec::new())
    }
    /// The nodes and live channels of the whole database; `None` without a nodes
    /// registry.
    async fn fleet(
        &self,
        _dead_after: std::time::Duration,
    ) -> Result<Option<FleetView>, StoreError> {
        Ok(None)
    }
}

/// Where channels are kept: every role, as one store opens them (each caller takes the
/// role it uses: `Arc<dyn ChannelStore>` coerces to `Arc<dyn StatusStore>` and the
/// others).
pub trait ChannelStore: ChannelDirectory + StatusStore + FleetRegistry {
    /// Whether the database answers, for those who wait for it to come back; `None`
    /// for a store that is always there (SQLite).
    fn health(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
}

/// Opens the store the configuration selects (for Postgres: connects and checks the
/// table). Call it on the runtime that should run the database I/O: the Postgres
/// connections stay on it, whichever thread queries them later.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn ChannelStore>> {
    match &config.database.url {
        DatabaseUrl::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path).await?)),
        DatabaseUrl::Postgres(url) => Ok(Arc::new(
            postgres::PgStore::open(url, &config.database, config.status.node_id()).await?,
        )),
    }
}

/// Creates the default schema (`streamgate migrate`); says what it did.
pub async fn migrate(config: &Config) -> anyhow::Result<String> {
    match &config.database.url {
        DatabaseUrl::Sqlite(path) => {
            sqlite::SqliteStore::open(path).await?;
            Ok(format!(
                "SQLite database {} ready (its schema is created automatically)",
                path.display()
            ))
        }
        DatabaseUrl::Postgres(url) => {
            postgres::PgStore::new(url, &config.database, config.status.node_id())?
                .migrate()
                .await
        }
    }
}
