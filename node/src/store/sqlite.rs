//! The embedded default store: one SQLite file (WAL mode, so the CLI and the running
//! node can use it at once). Calls run on tokio's blocking pool, never on the reactor.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{
    ChannelDirectory, ChannelState, ChannelStore, FleetRegistry, StatusStore, StatusUpdate,
    StoreError, StoreErrorKind,
};
use crate::channel::{Channel, SrtPassphrase};
use crate::key::StreamKey;

/// How long a statement waits for a lock held by another process (the CLI).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    stream_key_hash TEXT NOT NULL UNIQUE,
    is_live         INTEGER NOT NULL DEFAULT 0,
    live_since      TEXT,
    last_seen       TEXT,
    live_session    TEXT,
    relay_targets   TEXT,
    srt_passphrase  TEXT,
    created_at      TEXT NOT NULL
);";

/// Columns added after the first release, created on open when missing.
const ADDED_COLUMNS: [(&str, &str); 2] = [("relay_targets", "TEXT"), ("srt_passphrase", "TEXT")];

/// Channels in a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl From<rusqlite::Error> for StoreError {
    /// Classified by SQLite's result code: a busy or locked database is worth a retry,
    /// a file that cannot be opened or written means the database is unavailable, and
    /// anything else (schema, constraint, type) is the statement's fault.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let kind = match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                C::DatabaseBusy | C::DatabaseLocked => StoreErrorKind::Transient,
                C::CannotOpen | C::SystemIoFailure | C::DiskFull | C::ReadOnly => {
                    StoreErrorKind::Unavailable
                }
                _ => StoreErrorKind::Rejected,
            },
            _ => StoreErrorKind::Rejected,
        };
        StoreError::new(kind, format!("SQLite: {e}")).with_source(e)
    }
}

fn parse_time(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn row_to_channel(row: &rusqlite::Row<'_>) -> rusqlite::Result<Channel> {
    let id: String = row.get(0)?;
    Ok(Channel {
        id: Uuid::parse_str(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        name: row.get(1)?,
        is_live: row.get::<_, i64>(2)? != 0,
        live_since: parse_time(row.get(3)?),
        last_seen: parse_time(row.get(4)?),
        relay_targets: row
            .get::<_, Option<String>>(5)?
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        srt_passphrase: row
            .get::<_, Option<String>>(6)?
            .and_then(|p| SrtPassphrase::new(p).ok()),
    })
}

const CHANNEL_COLUMNS: &str =
    "id, name, is_live, live_since, last_seen, relay_targets, srt_passphrase";

impl SqliteStore {
    /// Opens (creating if needed) the database file and its folder.
    pub async fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("cannot create the database folder {}: {e}", dir.display())
                })?;
            }
            let conn = Connection::open(&path).map_err(|e| {
                anyhow::anyhow!("cannot open SQLite database {}: {e}", path.display())
            })?;
            Self::prepare(conn)
        })
        .await?
    }

    /// A private database in memory: the real SQLite engine and schema, gone when the
    /// store is dropped (tests that drive the node in-process).
    pub fn open_in_memory() -> anyhow::Result<SqliteStore> {
        Self::prepare(Connection::open_in_memory()?)
    }

    fn prepare(conn: Connection) -> anyhow::Result<SqliteStore> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        let existing: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('channels')")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for (col, ty) in ADDED_COLUMNS {
            if !existing.iter().any(|c| c == col) {
                conn.execute_batch(&format!("ALTER TABLE channels ADD COLUMN {col} {ty}"))?;
            }
        }
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in an earlier call leaves SQLite itself consistent (every
            // statement is atomic), so the connection stays usable.
            let mut guard = conn.lock();
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::unavailable(format!("SQLite task failed: {e}")).with_source(e))?
    }
}

#[cfg(test)]
impl SqliteStore {
    /// Drops the channels table (tests of what a refused statement does).
    pub(crate) async fn drop_table_for_test(&self) {
        self.with(|c| Ok(c.execute_batch("DROP TABLE channels")?))
            .await
            .unwrap();
    }
}

#[async_trait]
impl ChannelDirectory for SqliteStore {
    async fn find_by_key(&self, key: &StreamKey) -> Result<Option<Channel>, StoreError> {
        let hash = key.sha256_hex();
        self.with(move |c| {
            Ok(c.query_row(
                &format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE stream_key_hash = ?1"),
                params![hash],
                row_to_channel,
            )
            .optional()?)
        })
        .await
    }

    async fn recheck(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ChannelState>, StoreError> {
        let ids = ids.to_vec();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT stream_key_hash, is_live, live_session FROM channels WHERE id = ?1",
            )?;
            let mut out = HashMap::new();
            for id in ids {
                if let Some(state) = stmt
                    .query_row(params![id.to_string()], |r| {
                        Ok(ChannelState {
                            key_hash: r.get(0)?,
                            live: r.get::<_, i64>(1)? != 0,
                            session: r
                                .get::<_, Option<String>>(2)?
                                .and_then(|s| Uuid::parse_str(&s).ok()),
                            node: None,
                        })
                    })
                    .optional()?
                {
                    out.insert(id, state);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create_channel(&self, name: &str) -> Result<(Channel, StreamKey), StoreError> {
        let name = name.to_string();
        self.with(move |c| {
            let key = StreamKey::generate();
            let id = Uuid::new_v4();
            // The conflict target is the name: a taken name inserts nothing, while any
            // other constraint still fails loudly.
            let inserted = c.execute(
                "INSERT INTO channels (id, name, stream_key_hash, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO NOTHING",
                params![id.to_string(), name, key.sha256_hex(), Utc::now().to_rfc3339()],
            )?;
            if inserted == 0 {
                return Err(StoreError::new(
                    StoreErrorKind::DuplicateName,
                    format!("a channel named {name:?} already exists"),
                ));
            }
            Ok((Channel::new(id, name), key))
        })
        .await
    }

    async fn list_channels(&self) -> Result<Vec<Channel>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY created_at, name"
            ))?;
            let rows = stmt.query_map([], row_to_channel)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn rotate_key(&self, id: Uuid) -> Result<Option<StreamKey>, StoreError> {
        self.with(move |c| {
            let key = StreamKey::generate();
            let n = c.execute(
                "UPDATE channels SET stream_key_hash = ?2 WHERE id = ?1",
                params![id.to_string(), key.sha256_hex()],
            )?;
            Ok((n > 0).then_some(key))
        })
        .await
    }

    async fn set_relay_targets(&self, id: Uuid, targets: &[String]) -> Result<bool, StoreError> {
        let json = (!targets.is_empty())
            .then(|| serde_json::to_string(targets).expect("strings serialize"));
        self.with(move |c| {
            Ok(c.execute(
                "UPDATE channels SET relay_targets = ?2 WHERE id = ?1",
                params![id.to_string(), json],
            )? > 0)
        })
        .await
    }

    async fn set_srt_passphrase(
        &self,
        id: Uuid,
        passphrase: Option<&SrtPassphrase>,
    ) -> Result<bool, StoreError> {
        let value = passphrase.map(|p| p.expose().to_string());
        self.with(move |c| {
            Ok(c.execute(
                "UPDATE channels SET srt_passphrase = ?2 WHERE id = ?1",
                params![id.to_string(), value],
            )? > 0)
        })
        .await
    }

    async fn delete_channel(&self, id: Uuid) -> Result<bool, StoreError> {
        self.with(move |c| {
            Ok(c.execute(
                "DELETE FROM channels WHERE id = ?1",
                params![id.to_string()],
            )? > 0)
        })
        .await
    }
}

#[async_trait]
impl StatusStore for SqliteStore {
    async fn apply_status(&self, u: &StatusUpdate) -> Result<(), StoreError> {
        let u = u.clone();
        self.with(move |c| {
            let at = u.at.to_rfc3339();
            if u.live {
                c.execute(
                    "UPDATE channels SET is_live = 1, live_since = ?2, last_seen = ?2, live_session = ?3 WHERE id = ?1",
                    params![u.channel_id.to_string(), at, u.session_id.to_string()],
                )?;
            } else {
                // An offline ends only the sessions this node knows ended.
                let tx = c.transaction()?;
                {
                    let mut stmt = tx.prepare_cached(
                        "UPDATE channels SET is_live = 0, last_seen = ?2, live_session = NULL
                         WHERE id = ?1 AND (live_session = ?3 OR live_session IS NULL)",
                    )?;
                    for s in u.ending_sessions() {
                        stmt.execute(params![u.channel_id.to_string(), at, s.to_string()])?;
                    }
                }
                tx.commit()?;
            }
            Ok(())
        })
        .await
    }

    async fn mark_all_offline(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE channels SET is_live = 0, live_session = NULL WHERE is_live != 0",
                [],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn heartbeat(&self, live: &[Uuid]) -> Result<(), StoreError> {
        let ids = live.to_vec();
        let now = Utc::now().to_rfc3339();
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE channels SET last_seen = ?2 WHERE id = ?1 AND is_live = 1",
                )?;
                for id in ids {
                    stmt.execute(params![id.to_string(), now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

impl FleetRegistry for SqliteStore {}

impl ChannelStore for SqliteStore {}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (SqliteStore, tempdir::Dir) {
        let dir = tempdir::Dir::new();
        (
            SqliteStore::open(&dir.path.join("db/x.db")).await.unwrap(),
            dir,
        )
    }

    /// A minimal temporary directory, removed on drop.
    mod tempdir {
        pub(super) struct Dir {
            pub(super) path: std::path::PathBuf,
        }
        impl Dir {
            pub(super) fn new() -> Self {
                let path = std::env::temp_dir().join(format!("sg-test-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    #[tokio::test]
    async fn channel_lifecycle() {
        let (s, _d) = store().await;
        let (ch, key) = s.create_channel("alpha").await.unwrap();
        let dup = s.create_channel("alpha").await.unwrap_err();
        assert_eq!(dup.kind(), StoreErrorKind::DuplicateName, "{dup}");
        assert!(!dup.is_retryable());
        assert_eq!(s.find_by_key(&key).await.unwrap().unwrap().id, ch.id);
        assert!(s
            .find_by_key(&StreamKey::new("wrong"))
            .await
            .unwrap()
            .is_none());
        let new_key = s.rotate_key(ch.id).await.unwrap().unwrap();
        assert!(s.find_by_key(&key).await.unwrap().is_none());
        assert_eq!(s.find_by_key(&new_key).await.unwrap().unwrap().id, ch.id);
        assert_eq!(
            s.recheck(&[ch.id]).await.unwrap()[&ch.id].key_hash,
            new_key.sha256_hex()
        );
        let targets = vec!["rtmp://a.example/live2/third-party-key".to_string()];
        assert!(s.set_relay_targets(ch.id, &targets).await.unwrap());
        assert_eq!(
            s.find_by_key(&new_key)
                .await
                .unwrap()
                .unwrap()
                .relay_targets,
            targets
        );
        assert!(s.set_relay_targets(ch.id, &[]).await.unwrap());
        assert!(s
            .find_by_key(&new_key)
            .await
            .unwrap()
            .unwrap()
            .relay_targets
            .is_empty());
        assert!(s.delete_channel(ch.id).await.unwrap());
        assert!(!s.delete_channel(ch.id).await.unwrap());
        assert!(s.recheck(&[ch.id]).await.unwrap().is_empty());
        assert!(s.rotate_key(ch.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn stale_offline_does_not_end_a_newer_live() {
        let (s, _d) = store().await;
        let (ch, _) = s.create_channel("beta").await.unwrap();
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        let upd = |live, session_id, seq| StatusUpdate {
            channel_id: ch.id,
            live,
            session_id,
            seq,
            at: Utc::now(),
            supersedes: Vec::new(),
            peer_tag: None,
        };
        s.apply_status(&upd(true, old, 1)).await.unwrap();
        s.apply_status(&upd(true, new, 2)).await.unwrap();
        s.apply_status(&upd(false, old, 3)).await.unwrap();
        assert!(s.list_channels().await.unwrap()[0].is_live);
        s.apply_status(&upd(false, new, 4)).await.unwrap();
        let c = &s.list_channels().await.unwrap()[0];
        assert!(!c.is_live && c.last_seen.is_some());
        // Coalesced during an outage: "old" live was written, then "new" live and
        // offline were merged into one offline that supersedes "old".
        s.apply_status(&upd(true, old, 5)).await.unwrap();
        let mut merged = upd(false, new, 6);
        merged.supersedes.push(old);
        s.apply_status(&merged).await.unwrap();
        assert!(!s.list_channels().await.unwrap()[0].is_live);
        s.apply_status(&upd(true, new, 7)).await.unwrap();
        assert_eq!(s.mark_all_offline().await.unwrap(), 1);
        assert!(!s.list_channels().await.unwrap()[0].is_live);
    }
}
