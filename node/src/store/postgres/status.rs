//! Live status in the table: the outbox's writes, `last_seen`, crash recovery, all in
//! the database's clock (the offset measured at start and every heartbeat).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tracing::{debug, warn};
use uuid::Uuid;

use super::PgStore;
use crate::store::{StatusStore, StatusUpdate, StoreError};

/// A clock reading whose round trip took longer than this says too little of the
/// offset to replace the last one.
const CLOCK_SAMPLE_MAX_RTT: std::time::Duration = std::time::Duration::from_millis(500);

impl PgStore {
    /// Reads the database's clock and keeps its offset from this node's (taking the
    /// middle of the round trip as the moment it was read); a reading with a slow
    /// round trip is ignored. Warns when the two clocks differ by more than a second.
    pub(super) async fn measure_clock(&self) {
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
}

#[async_trait]
impl StatusStore for PgStore {
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
}
