//! HTTP: `GET /healthz`, `GET /api/v1/streams` (public data only: never a key, never
//! a peer address), `GET /api/v1/streams/{channel_id}/health`, `GET /api/v1/events` (server-sent events, capped in all and per
//! address), `GET /thumbs/<md5>.jpg` (no-cache, ETag); readable from the origins of
//! `http.cors_origins` ([`cors`]). Errors are JSON
//! `{"error": "..."}`. The server loop that bounds connections and slow clients is
//! [`server`].

pub mod admin;
pub mod cors;
pub mod dashboard;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::channel::ThumbnailId;
use crate::health::HealthMonitor;
use crate::hub::{Hub, SubscriberStatus};
use crate::peer::PerAddress;
use crate::thumbs::fleet::{FleetThumbnails, FORWARDED};
use crate::thumbs::ThumbnailScheduler;
use server::ClientAddr;

/// How many event streams may be open: in all, and per address.
#[derive(Clone)]
pub struct EventStreamCaps {
    all: Arc<tokio::sync::Semaphore>,
    per_address: Arc<PerAddress>,
}

impl EventStreamCaps {
    pub fn new(all: usize, per_address: usize) -> EventStreamCaps {
        EventStreamCaps {
            all: Arc::new(tokio::sync::Semaphore::new(all)),
            per_address: PerAddress::new(per_address),
        }
    }
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    pub hub: Arc<Hub>,
    /// Folder of the thumbnails.
    pub thumbnails_dir: PathBuf,
    /// When thumbnails are made: when each was last written.
    pub thumbnails: Option<Arc<ThumbnailScheduler>>,
    /// In a fleet: the thumbnails of channels live on the other nodes.
    pub fleet_thumbnails: Option<Arc<FleetThumbnails>>,
    /// Stream health, when `health.enabled`.
    pub health: Option<Arc<HealthMonitor>>,
    /// This node's id, when the streams list is to show it (`http.show_node`).
    pub node: Option<String>,
    /// `http.max_event_streams`, `http.max_event_streams_per_address`.
    pub event_streams: EventStreamCaps,
    /// `http.cors_origins`.
    pub cors: Arc<cors::CorsPolicy>,
}

/// One live stream in `/api/v1/streams`.
#[derive(Debug, Serialize)]
pub struct StreamInfo {
    pub channel_id: Uuid,
    pub name: String,
    pub started_at: DateTime<Utc>,
    pub video_codec: Option<&'static str>,
    pub audio_codec: Option<&'static str>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: f64,
    pub bitrate_kbps: u64,
    /// What the publisher speaks: `rtmp`, `rtmps` or `srt`.
    pub protocol: &'static str,
    /// How the publisher's link is doing (SRT: round-trip time, loss, retransmissions,
    /// drops, receive buffer); null for RTMP.
    pub link: Option<crate::hub::LinkStats>,
    /// File name of the thumbnail: md5 of the channel UUID, `.jpg`.
    pub thumbnail: String,
    /// Where this node serves it.
    pub thumbnail_url: String,
    /// When it was last refreshed (null until the first one is written).
    pub thumbnail_updated_at: Option<DateTime<Utc>>,
    /// State of each relay target: scheme, host, port, app and public name only.
    pub relays: Vec<SubscriberStatus>,
    /// The stream's health verdict and what is not good (null when health is off or
    /// not judged yet); the whole of it at `/api/v1/streams/{channel_id}/health`.
    pub health: Option<HealthSummary>,
    /// The node carrying it (only with `http.show_node`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A stream's health in the streams list.
#[derive(Debug, Serialize)]
pub struct HealthSummary {
    pub verdict: &'static str,
    pub problems: Vec<crate::events::CheckView>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/streams", get(streams))
        .route("/api/v1/streams/{channel_id}/health", get(stream_health))
        .route("/api/v1/events", get(events))
        .route("/thumbs/{name}", get(thumbnail))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.cors.clone(),
            cors::layer,
        ))
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// 503 with a reason and when to come back.
fn busy(message: &str) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// The fallback of a reserved connection (taken while the public slots are full): only
/// the operator's routes are served there.
pub async fn reserved_only() -> Response {
    busy("the node is serving http.max_connections clients; try again shortly")
}

pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn streams(State(state): State<HttpState>) -> Response {
    let mut list: Vec<StreamInfo> = state
        .hub
        .infos()
        .into_iter()
        .map(|s| {
            let st = s.stats;
            let thumbnail = ThumbnailId::of(&s.channel_id).file_name();
            StreamInfo {
                channel_id: s.channel_id,
                name: s.name,
                started_at: s.started_at,
                video_codec: st.video_codec.map(|c| c.name()),
                audio_codec: st.audio_codec.map(|c| c.name()),
                width: st.size.map(|p| p.width),
                height: st.size.map(|p| p.height),
                fps: (st.fps * 100.0).round() / 100.0,
                bitrate_kbps: st.bitrate_bps / 1000,
                protocol: s.protocol.as_str(),
                link: s.link,
                thumbnail_url: format!("/thumbs/{thumbnail}"),
                thumbnail,
                thumbnail_updated_at: state
                    .thumbnails
                    .as_ref()
                    .and_then(|t| t.written_at(s.channel_id, s.session_id)),
                relays: s.subscribers,
                health: state
                    .health
                    .as_ref()
                    .and_then(|h| h.get(&s.channel_id))
                    .map(|h| HealthSummary {
                        verdict: h.verdict,
                        problems: h
                            .checks
                            .into_iter()
                            .filter(|c| c.verdict != "good")
                            .collect(),
                    }),
                node: state.node.clone(),
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Json(serde_json::json!({ "streams": list })).into_response()
}

/// One live stream's health: every check with its verdict, reason and fix, and the
/// measures behind them. Public data only (the channel's public id).
async fn stream_health(State(state): State<HttpState>, Path(id): Path<String>) -> Response {
    let Some(health) = &state.health else {
        return error(
            StatusCode::NOT_FOUND,
            "stream health is off on this node (health.enabled = false)",
        );
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return error(StatusCode::NOT_FOUND, "not a channel id");
    };
    if state.hub.get(&id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "this channel is not live on this node",
        );
    }
    match health.get(&id) {
        Some(h) => Json(h).into_response(),
        // Live, not judged yet (within a second of its start).
        None => Json(serde_json::json!({
            "channel_id": id, "verdict": "good", "checks": [], "measures": {}, "updated_at": null
        }))
        .into_response(),
    }
}

/// How often an idle event stream gets a comment line (keeps proxies from closing it).
const EVENTS_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Server-sent events: `live`, `offline` and `thumbnail`, each with a JSON body naming
/// the channel by its public id. A listener that falls behind gets a `lagged` event
/// with how many it missed. A comment every 15 s keeps proxies from closing it. At
/// most `http.max_event_streams` are open, `http.max_event_streams_per_address` from
/// one address; more are answered 503. Every listener is sent the same frame, rendered
/// once per event ([`crate::events::Published`]).
async fn events(State(state): State<HttpState>, client: Option<Extension<ClientAddr>>) -> Response {
    use tokio::sync::broadcast::error::RecvError;
    let caps = &state.event_streams;
    let Ok(all) = caps.all.clone().try_acquire_owned() else {
        metrics::counter!(crate::metric::HTTP_REFUSED, "reason" => "event_streams_full")
            .increment(1);
        return busy("too many event streams are open (http.max_event_streams)");
    };
    let address = match client {
        Some(Extension(ClientAddr(peer))) => {
            match caps.per_address.take(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    metrics::counter!(crate::metric::HTTP_REFUSED, "reason" => "event_streams_address_full")
                    .increment(1);
                    return busy("too many event streams from this address (http.max_event_streams_per_address)");
                }
            }
        }
        None => None,
    };
    struct Listener {
        events: tokio::sync::broadcast::Receiver<Arc<crate::events::Published>>,
        keepalive: tokio::time::Interval,
        /// Its places in the caps, given back when the stream ends.
        _held: (
            tokio::sync::OwnedSemaphorePermit,
            Option<crate::peer::AddressSlot>,
        ),
    }
    let listener = Listener {
        events: state.hub.events().subscribe(),
        keepalive: tokio::time::interval(EVENTS_KEEPALIVE),
        _held: (all, address),
    };
    let stream = futures_util::stream::unfold(listener, |mut l| async move {
        let frame = tokio::select! {
            r = l.events.recv() => match r {
                Ok(published) => published.sse.clone(),
                Err(RecvError::Lagged(n)) => {
                    bytes::Bytes::from(format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n"))
                }
                Err(RecvError::Closed) => return None,
            },
            // The first tick is at once: the head and a first byte go out.
            _ = l.keepalive.tick() => bytes::Bytes::from_static(b":\n\n"),
        };
        Some((Ok::<_, std::convert::Infallible>(frame), l))
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // nginx in front: pass each event on at once.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn thumbnail(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    // Only `<ThumbnailId>.jpg` names: no path, no traversal, no other file.
    if ThumbnailId::from_file_name(&name).is_none() {
        return not_found().await;
    }
    let path = state.thumbnails_dir.join(&name);
    let local = match tokio::fs::metadata(&path).await {
        Ok(m) => tokio::fs::read(&path).await.ok().map(|b| (m, b)),
        Err(_) => None,
    };
    let Some((meta, body)) = local else {
        // Not here: the node of the fleet that carries the channel has it (never
        // asked again for a node's own fetch: no loops).
        if let (Some(fleet), None) = (&state.fleet_thumbnails, headers.get(FORWARDED)) {
            if let Some(remote) = fleet.get(&name).await {
                return jpeg(remote.body, remote.etag, remote.last_modified, &headers);
            }
        }
        return not_found().await;
    };
    let modified: DateTime<Utc> = meta
        .modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now());
    let etag = format!(
        "\"{:x}-{:x}\"",
        body.len(),
        modified.timestamp_nanos_opt().unwrap_or_default()
    );
    let last_modified = modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    jpeg(
        body.into(),
        Some(HeaderValue::from_str(&etag).expect("ascii")),
        Some(HeaderValue::from_str(&last_modified).expect("ascii")),
        &headers,
    )
}

/// A thumbnail's answer: never cached by the browser without asking, 304 when the
/// client's `If-None-Match` names its ETag.
fn jpeg(
    body: axum::body::Bytes,
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
    request: &HeaderMap,
) -> Response {
    let mut h = HeaderMap::new();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    if let Some(last_modified) = last_modified {
        h.insert(header::LAST_MODIFIED, last_modified);
    }
    if let Some(etag) = etag {
        let matches = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .zip(etag.to_str().ok())
            .is_some_and(|(v, etag)| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        h.insert(header::ETAG, etag);
        if matches {
            return (StatusCode::NOT_MODIFIED, h).into_response();
        }
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    (StatusCode::OK, h, body).into_response()
}
