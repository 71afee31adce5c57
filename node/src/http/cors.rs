//! Cross-origin reads of the public API (`http.cors_origins`): a website on its own
//! origin reads `/api/v1/streams` with `fetch`, follows `/api/v1/events` with
//! `EventSource`, and draws `/thumbs/`. Only reads are allowed (GET), without
//! credentials; the admin API and `/metrics` never answer another origin.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Which origins may read.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    any: bool,
    origins: Vec<HeaderValue>,
}

impl CorsPolicy {
    /// From `http.cors_origins` (validated: `*` or `scheme://host[:port]`).
    pub fn new(origins: &[String]) -> Arc<CorsPolicy> {
        Arc::new(CorsPolicy {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        })
    }

    /// The `Access-Control-Allow-Origin` for a request from `origin`, if allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = origin?;
        self.origins
            .iter()
            .any(|o| o == origin)
            .then(|| origin.clone())
    }
}

/// Answers preflights and adds the allowing headers to what an allowed origin reads.
pub async fn layer(
    State(policy): State<Arc<CorsPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = policy.allow(origin.as_ref());
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if allowed.is_some() {
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Last-Event-ID, Cache-Control, If-None-Match"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        r
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    if !policy.any {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(allow) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("ETag, Last-Modified, Retry-After"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_origin_or_the_listed_ones() {
        let any = CorsPolicy::new(&["*".into()]);
        assert_eq!(any.allow(None).unwrap(), "*");
        let listed = CorsPolicy::new(&["https://site.example".into()]);
        let site = HeaderValue::from_static("https://site.example");
        assert_eq!(listed.allow(Some(&site)).unwrap(), "https://site.example");
        assert!(listed
            .allow(Some(&HeaderValue::from_static("https://evil.example")))
            .is_none());
        assert!(listed.allow(None).is_none());
        assert!(CorsPolicy::new(&[]).allow(Some(&site)).is_none());
    }
}
