//! HTTP: `GET /healthz`, `GET /api/v1/streams` (public data only: never a key, never
//! a peer address), `GET /thumbs/<md5>.jpg` (no-cache, CORS, ETag). Errors are JSON
//! `{"error": "..."}`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
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
    /// Folder of the thumbnails.
    pub thumbnails_dir: PathBuf,
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
    /// Where this node serves it.
    pub thumbnail_url: String,
    /// When it was last refreshed (null until the first one is written).
    pub thumbnail_updated_at: Option<DateTime<Utc>>,
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
        .route("/thumbs/{name}", get(thumbnail))
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
                thumbnail_url: format!("/thumbs/{}", thumbnail_name(&s.channel_id)),
                thumbnail_updated_at: *s.thumbnail_updated_at.lock().expect("thumb time"),
                relays,
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Json(serde_json::json!({ "streams": list })).into_response()
}

/// `<32 lowercase hex>.jpg`: the only names ever served (no traversal possible).
fn is_thumbnail_name(name: &str) -> bool {
    name.len() == 36
        && name.ends_with(".jpg")
        && name[..32]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

async fn thumbnail(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !is_thumbnail_name(&name) {
        return not_found().await;
    }
    let path = state.thumbnails_dir.join(&name);
    let (meta, body) = match tokio::fs::metadata(&path).await {
        Ok(m) => match tokio::fs::read(&path).await {
            Ok(b) => (m, b),
            Err(_) => return not_found().await,
        },
        Err(_) => return not_found().await,
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
    let mut h = HeaderMap::new();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("ascii"));
    let last_modified = modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&last_modified).expect("ascii"),
    );
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    (StatusCode::OK, h, body).into_response()
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
        assert!(is_thumbnail_name(&expected));
    }

    #[test]
    fn only_thumbnail_names_are_served() {
        for bad in [
            "../streamgate.toml",
            "..%2f..%2fetc%2fpasswd",
            "0123456789abcdef0123456789abcdef.png",
            "0123456789ABCDEF0123456789ABCDEF.jpg",
            "/0123456789abcdef0123456789abcde.jpg",
            "",
        ] {
            assert!(!is_thumbnail_name(bad), "{bad}");
        }
    }
}
