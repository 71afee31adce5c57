//! HTTP: `GET /healthz`, `GET /api/v1/streams` (public data only: never a key, never
//! a peer address). Errors are JSON `{"error": "..."}`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::Serialize;
use uuid::Uuid;

use crate::hub::Hub;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    pub hub: Arc<Hub>,
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
    /// File name of the thumbnail: md5 of the channel UUID, `.jpg`.
    pub thumbnail: String,
    pub relays: Vec<RelayInfo>,
}

/// State of one relay target of a live stream.
#[derive(Debug, Serialize)]
pub struct RelayInfo {
    /// Scheme, host, port, app and public name only.
    pub url: String,
    pub connected: bool,
    pub reconnects: u64,
    pub bytes_sent: u64,
    pub dropped_messages: u64,
    pub dropped_bytes: u64,
    pub last_error: Option<String>,
}

/// `md5(lowercase hyphenated uuid).jpg`: the public thumbnail name.
pub fn thumbnail_name(id: &Uuid) -> String {
    format!(
        "{}.jpg",
        hex::encode(Md5::digest(id.hyphenated().to_string().as_bytes()))
    )
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/streams", get(streams))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn streams(State(state): State<HttpState>) -> Response {
    let mut list: Vec<StreamInfo> = state
        .hub
        .list()
        .into_iter()
        .map(|s| {
            let st = s.stats();
            let relays = s
                .media
                .lock()
                .expect("media lock")
                .relays
                .iter()
                .map(|r| {
                    let q = &r.queue.stats;
                    RelayInfo {
                        url: r.display_url.clone(),
                        connected: q.connected.load(Relaxed),
                        reconnects: q.reconnects.load(Relaxed),
                        bytes_sent: q.bytes_sent.load(Relaxed),
                        dropped_messages: q.dropped_messages.load(Relaxed),
                        dropped_bytes: q.dropped_bytes.load(Relaxed),
                        last_error: r.last_error.lock().expect("relay error lock").clone(),
                    }
                })
                .collect();
            StreamInfo {
                channel_id: s.channel_id,
                name: s.name.clone(),
                started_at: s.started_at,
                video_codec: st.video_codec.map(|c| c.name()),
                audio_codec: st.audio_codec.map(|c| c.name()),
                width: st.size.map(|p| p.width),
                height: st.size.map(|p| p.height),
                fps: (st.fps * 100.0).round() / 100.0,
                bitrate_kbps: st.bitrate_bps / 1000,
                thumbnail: thumbnail_name(&s.channel_id),
                relays,
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Json(serde_json::json!({ "streams": list })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnail_name_is_md5_of_the_hyphenated_uuid() {
        let id = Uuid::parse_str("3F2504E0-4F89-11D3-9A0C-0305E82C3301").unwrap();
        // md5("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
        let expected = format!(
            "{}.jpg",
            hex::encode(Md5::digest(b"3f2504e0-4f89-11d3-9a0c-0305e82c3301"))
        );
        assert_eq!(thumbnail_name(&id), expected);
        assert_eq!(expected.len(), 32 + 4);
    }
}
