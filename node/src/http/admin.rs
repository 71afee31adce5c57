//! The operator's side of HTTP: `GET /metrics` (Prometheus text, through the
//! `metrics` exporter) and the admin API behind a bearer token (`admin.token`; off when
//! empty; compared in constant time):
//!
//! - `GET /admin/v1/sessions`: every live publish with its peer address, channel,
//!   start, media bytes and relay state;
//! - `GET /admin/v1/fleet`: every node sharing the database (address, version,
//!   start, last heartbeat, alive) and every live channel with the node carrying it
//!   (without a nodes registry: this node and its channels);
//! - `POST /admin/v1/channels/{id}/kick[?refuse_for=60s]`: ends the channel's live
//!   publish, and optionally refuses its key for that long so the encoder cannot come
//!   straight back.
//!
//! With them, the operator dashboard ([`super::dashboard`]). Served on `admin.listen`
//! when set (a private address, which then serves the public read-only routes the
//! dashboard reads too), otherwise beside the public routes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Authorizer;
use crate::config::Secret;
use crate::hub::{EndReason, Hub, SubscriberStatus};
use crate::ingest::admission::Admission;
use crate::key::constant_time_eq;
use crate::metric;
use crate::outbox::StatusOutbox;
use crate::store::{ChannelStore, FleetChannel};

/// What the operator routes read.
#[derive(Clone)]
pub struct AdminState {
    pub hub: Arc<Hub>,
    pub auth: Arc<Authorizer>,
    pub admission: Arc<Admission>,
    pub outbox: Arc<StatusOutbox>,
    pub prometheus: PrometheusHandle,
    pub process: Arc<metrics_process::Collector>,
    pub per_channel_metrics: bool,
    /// Empty: the admin API is off (`/metrics` stays).
    pub token: Secret,
    /// The fleet view reads the nodes table and the channels table.
    pub store: Arc<dyn ChannelStore>,
    /// This node's id (`status.node_id`).
    pub node_id: String,
    /// `status.dead_after`.
    pub dead_after: Duration,
    /// The ingest threads (their connections and load).
    pub ingest: Arc<crate::ingest::IngestWorkers>,
}

pub fn router(state: AdminState) -> Router {
    let mut r = Router::new()
        .route("/metrics", get(scrape))
        .merge(super::dashboard::router());
    if !state.token.is_empty() {
        r = r
            .route("/admin/v1/sessions", get(sessions))
            .route("/admin/v1/fleet", get(fleet))
            .route("/admin/v1/channels/{id}/kick", post(kick));
    }
    r.with_state(state)
}

/// Sets the gauges from snapshots, then renders every series.
async fn scrape(State(s): State<AdminState>) -> Response {
    let (open, pending) = s.admission.totals();
    metrics::gauge!(metric::CONNECTIONS_OPEN).set(open as f64);
    metrics::gauge!(metric::CONNECTIONS_PENDING).set(pending as f64);
    metrics::gauge!(metric::OUTBOX_PENDING).set(s.outbox.pending_len() as f64);
    let infos = s.hub.infos();
    metrics::gauge!(metric::LIVE_STREAMS).set(infos.len() as f64);
    let busy = s.ingest.busy_seconds();
    let paused = s.ingest.paused_seconds();
    metrics::gauge!(metric::INGEST_PACING).set(if s.ingest.pacing() { 1.0 } else { 0.0 });
    let pumped = s.ingest.pumped();
    for (i, n) in s.ingest.connections().into_iter().enumerate() {
        let thread = i.to_string();
        metrics::gauge!(metric::INGEST_THREAD_CONNECTIONS, "thread" => thread.clone())
            .set(n as f64);
        metrics::gauge!(metric::INGEST_THREAD_PUMPED, "thread" => thread.clone())
            .set(pumped[i] as f64);
        // Whole seconds (a counter is an integer): over a minute's rate, the share
        // of a core to within 2 %.
        metrics::counter!(metric::INGEST_THREAD_BUSY, "thread" => thread.clone())
            .absolute(busy[i] as u64);
        metrics::counter!(metric::INGEST_THREAD_PAUSED, "thread" => thread)
            .absolute(paused[i] as u64);
    }
    let mut targets: std::collections::BTreeMap<(String, &'static str), u64> = Default::default();
    for info in &infos {
        for r in &info.subscribers {
            let state = if r.connected {
                "connected"
            } else {
                "disconnected"
            };
            *targets.entry((r.target.clone(), state)).or_default() += 1;
        }
        if s.per_channel_metrics {
            let id = info.channel_id.to_string();
            metrics::gauge!(metric::CHANNEL_BITRATE, "channel_id" => id.clone())
                .set(info.stats.bitrate_bps as f64);
            metrics::gauge!(metric::CHANNEL_FPS, "channel_id" => id.clone()).set(info.stats.fps);
            metrics::gauge!(metric::CHANNEL_BYTES, "channel_id" => id)
                .set(info.stats.bytes_total as f64);
        }
    }
    for ((target, state), n) in targets {
        metrics::gauge!(metric::RELAY_TARGETS, "target" => target, "state" => state).set(n as f64);
    }
    s.process.collect();
    let body = s.prometheus.render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        body,
    )
        .into_response()
}

/// Whether the request carries the admin token.
fn authorized(headers: &HeaderMap, token: &Secret) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        Json(serde_json::json!({ "error": "a valid admin token is required (Authorization: Bearer ...)" })),
    )
        .into_response()
}

/// One live publish as the operator sees it.
#[derive(Serialize)]
struct Session {
    channel_id: Uuid,
    name: String,
    session_id: Uuid,
    /// The publisher's address (the real client behind a trusted proxy).
    peer: String,
    started_at: chrono::DateTime<chrono::Utc>,
    /// This node.
    node: String,
    media_bytes: u64,
    bitrate_kbps: u64,
    relays: Vec<SubscriberStatus>,
}

async fn sessions(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &s.token) {
        return unauthorized();
    }
    let mut list: Vec<Session> = s
        .hub
        .list()
        .iter()
        .map(|stream| {
            let info = stream.info();
            Session {
                channel_id: info.channel_id,
                name: info.name,
                session_id: info.session_id,
                peer: stream.peer.to_string(),
                started_at: info.started_at,
                node: s.node_id.clone(),
                media_bytes: info.stats.bytes_total,
                bitrate_kbps: info.stats.bitrate_bps / 1000,
                relays: info.subscribers,
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Json(serde_json::json!({ "sessions": list })).into_response()
}

/// The whole fleet as the database knows it: nodes, and which node carries each
/// live channel.
async fn fleet(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &s.token) {
        return unauthorized();
    }
    match s.store.fleet(s.dead_after).await {
        Ok(Some(view)) => Json(serde_json::json!({
            "this_node": s.node_id,
            "nodes": view.nodes,
            "channels": view.channels,
        }))
        .into_response(),
        Ok(None) => {
            // No registry (one node): what this node carries.
            let mut channels: Vec<FleetChannel> = s
                .hub
                .list()
                .iter()
                .map(|st| FleetChannel {
                    channel_id: st.channel_id,
                    name: st.name.clone(),
                    node: Some(s.node_id.clone()),
                    live_since: Some(st.started_at),
                })
                .collect();
            channels.sort_by(|a, b| a.name.cmp(&b.name));
            Json(serde_json::json!({
                "this_node": s.node_id,
                "nodes": [],
                "channels": channels,
                "note": "no nodes registry (database.nodes_table, Postgres): this node only",
            }))
            .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": format!("cannot read the fleet from the database: {e}") })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct KickQuery {
    /// Refuse the channel's key for this long afterwards, e.g. "60s".
    refuse_for: Option<String>,
}

async fn kick(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Query(q): Query<KickQuery>,
) -> Response {
    if !authorized(&headers, &s.token) {
        return unauthorized();
    }
    let refuse_for = match q.refuse_for.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if d <= Duration::from_secs(7 * 24 * 3600) => Some(d),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": "refuse_for must be a duration like \"60s\" or \"10m\", at most a week" })),
            )
                .into_response()
        }
    };
    if let Some(d) = refuse_for {
        s.auth.suspend(id, Instant::now() + d);
    }
    let Some(stream) = s.hub.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "this channel is not live on this node", "refused_for_s": refuse_for.map(|d| d.as_secs()) })),
        )
            .into_response();
    };
    stream.end(EndReason::Kicked);
    tracing::info!(channel_id = %id, session = %stream.session_id, refuse_for = ?refuse_for, "publish ended by the operator");
    Json(serde_json::json!({
        "kicked": true,
        "channel_id": id,
        "session_id": stream.session_id,
        "refused_for_s": refuse_for.map(|d| d.as_secs()),
    }))
    .into_response()
}
