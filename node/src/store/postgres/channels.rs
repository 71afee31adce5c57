//! Channels in the table: lookups by key, the re-check, and the command line's
//! statements. Ids are named as the table spells them ([`PgStore::id_values`]).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::Row;
use uuid::Uuid;

use super::errors::violated_unique_index;
use super::schema::column_or_null;
use super::PgStore;
use crate::channel::{Channel, SrtPassphrase};
use crate::key::StreamKey;
use crate::store::{ChannelDirectory, ChannelState, StoreError, StoreErrorKind};

impl PgStore {
    pub(super) fn select_columns(&self) -> String {
        let m = self.map();
        format!(
            "{}::text, {}::text, {}, {}, {}, {}, {}",
            m.id.quoted,
            m.name.quoted,
            m.live.quoted,
            column_or_null(&m.live_since, "", "timestamptz"),
            column_or_null(&m.last_seen, "", "timestamptz"),
            column_or_null(&m.relay_targets, "", "text"),
            column_or_null(&m.srt_passphrase, "", "text"),
        )
    }

    pub(super) fn stored_key(&self, key: &StreamKey) -> String {
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
    pub(super) fn id_values(&self, ids: &[Uuid]) -> Vec<String> {
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
    pub(super) fn read_id(&self, stored: &str) -> Option<Uuid> {
        let id = Uuid::parse_str(stored).ok()?;
        if self.map().id.cast != "uuid" && stored != id.hyphenated().to_string() {
            self.id_spellings.insert(id, stored.to_string());
        }
        Some(id)
    }

    /// A channel from a row of [`PgStore::select_columns`], its id's spelling kept.
    pub(super) fn channel_of(&self, row: &Row) -> Result<Channel, StoreError> {
        let channel = row_to_channel(row)?;
        let _ = self.read_id(&row.get::<_, String>(0));
        Ok(channel)
    }
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
        srt_passphrase: row
            .get::<_, Option<String>>(6)
            .and_then(|p| SrtPassphrase::new(p).ok()),
    })
}

#[async_trait]
impl ChannelDirectory for PgStore {
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

    async fn set_srt_passphrase(
        &self,
        id: Uuid,
        passphrase: Option<&SrtPassphrase>,
    ) -> Result<bool, StoreError> {
        let m = self.map();
        let Some(col) = &m.srt_passphrase else {
            return Err(StoreError::new(
                StoreErrorKind::Rejected,
                "database.srt_passphrase_column is not configured",
            ));
        };
        let value = passphrase.map(|p| p.expose().to_string());
        let ids = self.id_values(&[id]);
        let sql = format!(
            "UPDATE {} SET {} = $2::text WHERE {} = ANY($1::{}[]) RETURNING 1",
            m.table, col.quoted, m.id.quoted, m.id.cast
        );
        Ok(!self
            .query(&sql, &[(&ids, Type::TEXT_ARRAY), (&value, Type::TEXT)])
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
}
