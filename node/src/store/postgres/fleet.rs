//! The fleet in the database: the nodes registry (heartbeats, the one-statement sweep
//! of dead nodes), another node's publish of a channel, the fleet view.

use async_trait::async_trait;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::schema::column_or_null;
use super::{seconds, PgStore};
use crate::store::{
    FleetChannel, FleetRegistry, FleetView, NodeAnnouncement, NodeRecord, RemotePublish,
    StoreError, SweptNode,
};

#[async_trait]
impl FleetRegistry for PgStore {
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
        let (column, value, set) = if self.map().nodes_http_url {
            (", http_url", ", $5", ", http_url = EXCLUDED.http_url")
        } else {
            ("", "", "")
        };
        let sql = format!(
            "INSERT INTO {table} (id, address, version, started_at, last_heartbeat{column}) \
             VALUES ($1, $2, $3, $4, now(){value}) ON CONFLICT (id) DO UPDATE SET \
             address = EXCLUDED.address, version = EXCLUDED.version, \
             started_at = EXCLUDED.started_at, last_heartbeat = now(){set}"
        );
        let http_url: Option<&str> = node.http_url.get().map(String::as_str);
        let mut params: Vec<super::Param<'_>> = vec![
            (&self.node_id, Type::TEXT),
            (&node.address, Type::TEXT),
            (&node.version, Type::TEXT),
            (&node.started_at, Type::TIMESTAMPTZ),
        ];
        if self.map().nodes_http_url {
            params.push((&http_url, Type::TEXT));
        }
        self.query(&sql, &params).await?;
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
                     last_heartbeat > now() - $1 * interval '1 second', {} FROM {table} ORDER BY id",
                    if m.nodes_http_url { "http_url" } else { "NULL::text" }
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
                http_url: r.get(6),
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
}
