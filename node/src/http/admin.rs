//! The operator's side of HTTP: `GET /metrics` (Prometheus text, through the
//! `metrics` exporter) and the admin API behind a bearer token (`admin.token`; off when
//! empty). The token is compared by its SHA-256 digest, so the time a comparison takes
//! says nothing of the token's length or content; every wrong token makes its
//! address's next admin requests wait, as a wrong stream key does on the RTMP side
//! (`auth.failure_delay` doubling up to `auth.max_failure_delay`, then that for
//! `auth.ban_duration`; a request without a token is not a guess and is not counted):
//!
//! - `GET /admin/v1/sessions`: every live publish with its peer address, channel,
//!   start, media bytes and relay state;
//! - `GET /admin/v1/fleet`: every node sharing the database (address, version,
//!   start, last heartbeat, alive) and every live channel with the node carrying it
//!   (without a nodes registry: this node and its channels);
//! - `POST /admin/v1/channels/{id}/kick[?refuse_for=60s]`: ends the channel's live
//!   publish on this node, and optionally refuses its key on this node for that long
//!   (whether or not it is live here) so the encoder cannot come straight back;
//!   `refuse_for=0s` lifts a suspension. A suspension is held in this node's memory: it
//!   covers this node until it ends or the node restarts, not the rest of a fleet.
//!
//! With them, the operator dashboard ([`super::dashboard`]). Served on `admin.listen`
//! when set (a private address, which then serves the public read-only routes the
//! dashboard reads too), otherwise beside the public routes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::server::ClientAddr;
use crate::auth::{Authorizer, FailureLimiter};
use crate::config::Secret;
use crate::hub::{EndReason, Hub, SubscriberStatus};
use crate::ingest::admission::Admission;
use crate::key::secret_eq;
use crate::metric;
use crate::outbox::StatusOutbox;
use crate::store::{FleetChannel, FleetRegistry};

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
    pub registry: Arc<dyn FleetRegistry>,
    /// This node's id (`status.node_id`).
    pub node_id: String,
    /// `status.dead_after`.
    pub dead_after: Duration,
    /// The ingest threads (their connections and load).
    pub ingest: Arc<crate::ingest::IngestWorkers>,
    /// Wrong admin tokens per address: their next requests wait.
    pub token_failures: Arc<FailureLimiter>,
    /// Stream health (`health.enabled`).
    pub health: Option<Arc<crate::health::HealthMonitor>>,
    /// Webhook queues (`webhooks.urls`).
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
}

pub fn router(state: AdminState) -> Router {
    let mut r = Router::new()
        .route("/metrics", get(scrape))
        .merge(super::dashboard::router());
    if !state.token.is_empty() {
        let api = Router::new()
            .route("/admin/v1/sessions", get(sessions))
            .route("/admin/v1/fleet", get(fleet))
            .route("/admin/v1/channels/{id}/kick", post(kick))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_token,
            ));
        r = r.merge(api);
    }
    r.with_state(state)
}

/// Sets the gauges from snapshots, then renders every series.
async fn scrape(State(s): State<AdminState>) -> Response {
    metrics::gauge!(metric::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let (open, pending) = s.admission.totals();
    metrics::gauge!(metric::CONNECTIONS_OPEN).set(open as f64);
    metrics::gauge!(metric::CONNECTIONS_PENDING).set(pending as f64);
    metrics::gauge!(metric::OUTBOX_PENDING).set(s.outbox.pending_len() as f64);
    let infos = s.hub.infos();
    metrics::gauge!(metric::LIVE_STREAMS).set(infos.len() as f64);
    let busy = s.ingest.busy_seconds();
    let paused = s.ingest.paused_seconds();
    metrics::gauge!(metric::INGEST_PACING).set(s.ingest.paced_threads() as f64);
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
    let mut by_protocol: std::collections::BTreeMap<&'static str, u64> = [
        crate::hub::Protocol::Rtmp,
        crate::hub::Protocol::Rtmps,
        crate::hub::Protocol::Srt,
    ]
    .into_iter()
    .map(|p| (p.as_str(), 0))
    .collect();
    for info in &infos {
        *by_protocol.entry(info.protocol.as_str()).or_default() += 1;
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
            metrics::counter!(metric::CHANNEL_BYTES, "channel_id" => id.clone())
                .absolute(info.stats.bytes_total);
            if let Some(l) = &info.link {
                metrics::gauge!(metric::CHANNEL_SRT_RTT, "channel_id" => id.clone())
                    .set(l.rtt_ms / 1000.0);
                metrics::gauge!(metric::CHANNEL_SRT_BUFFERED, "channel_id" => id.clone())
                    .set(l.receive_buffer_packets as f64);
                for (kind, n) in [
                    ("received", l.packets_received),
                    ("lost", l.packets_lost),
                    ("retransmitted", l.packets_retransmitted),
                    ("dropped", l.packets_dropped),
                ] {
                    metrics::counter!(metric::CHANNEL_SRT_PACKETS, "channel_id" => id.clone(), "kind" => kind)
                        .absolute(n);
                }
            }
        }
    }
    if let Some(health) = &s.health {
        let mut by_verdict = [0u64; 3];
        for (id, verdict, checks) in health.verdicts() {
            by_verdict[usize::from(verdict.level())] += 1;
            if s.per_channel_metrics {
                let id = id.to_string();
                for (check, v) in checks {
                    metrics::gauge!(metric::CHANNEL_HEALTH, "channel_id" => id.clone(), "check" => check.as_str())
                        .set(f64::from(v.level()));
                }
            }
        }
        for (verdict, n) in ["good", "warn", "bad"].into_iter().zip(by_verdict) {
            metrics::gauge!(metric::STREAMS_BY_HEALTH, "verdict" => verdict).set(n as f64);
        }
    }
    if let Some(w) = &s.webhooks {
        metrics::gauge!(metric::WEBHOOK_PENDING).set(w.pending() as f64);
    }
    for (protocol, n) in by_protocol {
        metrics::gauge!(metric::LIVE_STREAMS_BY_PROTOCOL, "protocol" => protocol).set(n as f64);
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

/// In front of every admin API route: lets the request through when it carries the
/// admin token; otherwise answers 401. The address of a client that sent a wrong token
/// waits before each of its next requests is answered (valid ones too, so that the
/// speed of an answer says nothing); a request with no token at all is refused at
/// once and not counted.
async fn require_token(
    State(s): State<AdminState>,
    client: Option<Extension<ClientAddr>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match check_token(&s, client, request.headers()).await {
        Ok(()) => next.run(request).await,
        Err(refused) => refused,
    }
}

async fn check_token(
    s: &AdminState,
    client: Option<Extension<ClientAddr>>,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(unauthorized());
    };
    let ip = client.map(|Extension(ClientAddr(a))| a.ip());
    if let Some(ip) = ip {
        let wait = s.token_failures.delay(ip, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    if secret_eq(given.trim().as_bytes(), s.token.expose().as_bytes()) {
        return Ok(());
    }
    metrics::counter!(metric::ADMIN_TOKEN_FAILURES).increment(1);
    if let Some(ip) = ip {
        let held = s.token_failures.record_failure(ip, Instant::now());
        tracing::warn!(peer = %ip, longest_wait = held, "admin API: wrong token");
    }
    Err(unauthorized())
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
    /// What it publishes with: `rtmp`, `rtmps` or `srt`.
    protocol: &'static str,
    started_at: chrono::DateTime<chrono::Utc>,
    /// This node.
    node: String,
    media_bytes: u64,
    bitrate_kbps: u64,
    relays: Vec<SubscriberStatus>,
}

async fn sessions(State(s): State<AdminState>) -> Response {
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
                protocol: stream.protocol.as_str(),
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
async fn fleet(State(s): State<AdminState>) -> Response {
    match s.registry.fleet(s.dead_after).await {
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
    Path(id): Path<Uuid>,
    Query(q): Query<KickQuery>,
) -> Response {
    let refuse_for = match q.refuse_for.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if d <= Duration::from_secs(7 * 24 * 3600) => Some(d),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": "refuse_for must be a duration like \"60s\" or \"10m\", at most a week (\"0s\" lifts a suspension)" })),
            )
                .into_response()
        }
    };
    if let Some(d) = refuse_for {
        s.auth.suspend(id, Instant::now() + d);
    }
    let live = s.hub.get(&id);
    if let Some(stream) = &live {
        stream.end(EndReason::Kicked);
        tracing::info!(channel_id = %id, session = %stream.session_id, refuse_for = ?refuse_for, "publish ended by the operator");
    } else if let Some(d) = refuse_for {
        tracing::info!(channel_id = %id, refuse_for = ?d, "channel suspended on this node by the operator (not live here)");
    }
    let suspension = refuse_for.filter(|d| !d.is_zero()).map(|d| {
        serde_json::json!({
            "refused_for_s": d.as_secs(),
            "scope": "this node, until it restarts",
        })
    });
    match (live, refuse_for) {
        (None, None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "this channel is not live on this node" })),
        )
            .into_response(),
        (live, _) => Json(serde_json::json!({
            "kicked": live.is_some(),
            "channel_id": id,
            "session_id": live.map(|l| l.session_id),
            "refused_for_s": refuse_for.map(|d| d.as_secs()),
            "suspension": suspension,
        }))
        .into_response(),
    }
}
