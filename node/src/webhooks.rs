//! Webhooks: every public event a backend asked for (`webhooks.events`), POSTed as
//! JSON to each `webhooks.urls`, signed the Standard Webhooks way
//! (<https://www.standardwebhooks.com>): headers `webhook-id`, `webhook-timestamp`
//! (Unix seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">` under the secret `whsec_<base64>`, so a backend
//! verifies with any of that scheme's libraries.
//!
//! Off the video path: an event is queued (a short lock, no I/O) and one task per URL
//! delivers in order: a delivery is retried, with backoff up to
//! `webhooks.retry_max_backoff`, until the backend takes it (2xx) or refuses it for
//! good (a 4xx other than 408/429), so a backend outage loses nothing up to
//! `webhooks.queue_max` waiting deliveries; past it the oldest is dropped, counted and
//! logged. One queue per URL in event order keeps each channel's events in order.
//! Every attempt has a deadline (`webhooks.timeout`: connect, TLS, request and
//! answer), and a URL that resolves to the node's own network is refused unless
//! `webhooks.allow_private_targets`. A delivery carries public data only: the
//! channel's public id and name, never a key.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chrono::Utc;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::client_tls::{http1, Http1Error};
use crate::config::{secret_bytes, WebhookEvent, WebhookUrl, WebhooksConfig};
use crate::events::{EventSink, PublicEvent};
use crate::log_budget::LogBudget;
use crate::peer::is_internal;

/// First wait after a failed attempt; doubles up to `webhooks.retry_max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How much of an answer's body is read (then dropped): enough to reuse the
/// connection after a small answer.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Failures logged per URL per window; the rest are counted.
const LOG_BUDGET: u32 = 5;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// One event to deliver.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `msg_` and a UUID: the same on every attempt (backends deduplicate on it).
    pub id: String,
    pub body: Bytes,
}

/// A delivery's body.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: chrono::DateTime<Utc>,
    node: &'a str,
    data: serde_json::Value,
}

/// The Standard Webhooks signature of one attempt.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("{0} resolves only to private, loopback or link-local addresses: set webhooks.allow_private_targets = true if the backend is on the node's network")]
    Forbidden(String),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within webhooks.timeout ({0:?})")]
    Timeout(Duration),
    #[error("answered {0}")]
    Status(u16),
}

impl AttemptError {
    /// A refusal that no retry changes (a 4xx other than 408 and 429).
    fn is_final(&self) -> bool {
        matches!(self, AttemptError::Status(s) if (400..500).contains(s) && *s != 408 && *s != 429)
    }
}

/// The deliveries waiting for one URL.
struct Target {
    url: WebhookUrl,
    /// Its redacted form: logs and metric labels.
    label: String,
    queue: Mutex<VecDeque<Delivery>>,
    /// Woken when a delivery is queued.
    queued: Notify,
    /// Woken when the queue empties (shutdown waits for it).
    drained: Notify,
    /// Whether a delivery is being attempted now.
    busy: std::sync::atomic::AtomicBool,
    dropped: AtomicU64,
}

/// The node's webhooks: queues, and the tasks that empty them.
pub struct Webhooks {
    targets: Vec<Arc<Target>>,
    wanted: Vec<WebhookEvent>,
    node: String,
    queue_max: usize,
    secret: Vec<u8>,
    timeout: Duration,
    retry_max_backoff: Duration,
    allow_private: bool,
    tls: TlsConnector,
}

impl Webhooks {
    /// `None` when no URL is configured.
    pub fn new(config: &WebhooksConfig, node: String) -> anyhow::Result<Option<Arc<Webhooks>>> {
        if !config.enabled() {
            return Ok(None);
        }
        let secret = secret_bytes(config.secret.expose())
            .map_err(|e| anyhow::anyhow!("webhooks.secret {e}"))?;
        Ok(Some(Arc::new(Webhooks {
            targets: config
                .urls
                .iter()
                .map(|url| {
                    // Present from the start at 0, so that a rate or an alert on it has a
                    // series before the first drop.
                    metrics::counter!(crate::metric::WEBHOOK_DROPPED, "url" => url.redacted())
                        .increment(0);
                    Arc::new(Target {
                        label: url.redacted(),
                        url: url.clone(),
                        queue: Mutex::new(VecDeque::new()),
                        queued: Notify::new(),
                        drained: Notify::new(),
                        busy: false.into(),
                        dropped: AtomicU64::new(0),
                    })
                })
                .collect(),
            wanted: config.events.clone(),
            node,
            queue_max: config.queue_max,
            secret,
            timeout: config.timeout,
            retry_max_backoff: config.retry_max_backoff,
            allow_private: config.allow_private_targets,
            tls: crate::client_tls::connector(&config.ca_file, "webhooks.ca_file")?,
        })))
    }

    /// Starts one delivery task per URL; they stop when `stop` is cancelled.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) {
        for (i, target) in self.targets.iter().enumerate() {
            info!(url = %target.label, events = ?self.wanted, "webhook deliveries on");
            tokio::spawn(self.clone().deliver_all(i, stop.clone()));
        }
    }

    /// Whether each URL can be reached (resolved, allowed, connected, TLS) within
    /// `webhooks.timeout`, and how long it took; nothing is sent (`streamgate check`).
    pub async fn probe(&self) -> Vec<(String, Result<Duration, String>)> {
        let mut out = Vec::new();
        for t in &self.targets {
            let started = std::time::Instant::now();
            let result = match tokio::time::timeout(self.timeout, self.connect(&t.url)).await {
                Ok(Ok(_)) => Ok(started.elapsed()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(AttemptError::Timeout(self.timeout).to_string()),
            };
            out.push((t.label.clone(), result));
        }
        out
    }

    /// Deliveries waiting, in all.
    pub fn pending(&self) -> usize {
        self.targets
            .iter()
            .map(|t| t.queue.lock().len() + usize::from(t.busy.load(Ordering::Relaxed)))
            .sum()
    }

    /// Waits up to `grace` for every queue to empty (shutdown: the last offlines).
    pub async fn drain(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, async {
            for t in &self.targets {
                loop {
                    let wait = t.drained.notified();
                    if t.queue.lock().is_empty() && !t.busy.load(Ordering::Acquire) {
                        break;
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(100), wait).await;
                }
            }
        })
        .await
        .is_ok()
    }

    fn kind(event: &PublicEvent) -> WebhookEvent {
        match event {
            PublicEvent::Live { .. } => WebhookEvent::Live,
            PublicEvent::Offline { .. } => WebhookEvent::Offline,
            PublicEvent::Thumbnail { .. } => WebhookEvent::Thumbnail,
            PublicEvent::Health { .. } => WebhookEvent::Health,
        }
    }

    /// The body of `event`.
    fn render(&self, id: &str, event: &PublicEvent) -> Bytes {
        let mut data = serde_json::to_value(event).expect("events serialize");
        if let Some(map) = data.as_object_mut() {
            map.remove("type");
        }
        let body = Body {
            id,
            kind: event.name(),
            timestamp: Utc::now(),
            node: &self.node,
            data,
        };
        Bytes::from(serde_json::to_vec(&body).expect("bodies serialize"))
    }

    async fn deliver_all(self: Arc<Self>, index: usize, stop: CancellationToken) {
        let target = self.targets[index].clone();
        let mut sender: Option<SendRequest<Full<Bytes>>> = None;
        let mut log = LogBudget::new(LOG_BUDGET, LOG_WINDOW);
        loop {
            let next = {
                let wait = target.queued.notified();
                let next = {
                    let mut q = target.queue.lock();
                    let next = q.pop_front();
                    target.busy.store(next.is_some(), Ordering::Release);
                    next
                };
                match next {
                    Some(d) => d,
                    None => {
                        target.drained.notify_waiters();
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = wait => continue,
                        }
                    }
                }
            };
            let mut backoff = FIRST_BACKOFF;
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                let started = std::time::Instant::now();
                let result = tokio::time::timeout(
                    self.timeout,
                    self.attempt(&target.url, &mut sender, &next),
                )
                .await
                .unwrap_or(Err(AttemptError::Timeout(self.timeout)));
                metrics::histogram!(crate::metric::WEBHOOK_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                let outcome = match &result {
                    Ok(()) => "delivered",
                    Err(e) if e.is_final() => "refused",
                    Err(_) => "failed",
                };
                metrics::counter!(crate::metric::WEBHOOK_ATTEMPTS, "url" => target.label.clone(), "result" => outcome)
                    .increment(1);
                let Err(e) = result else { break };
                sender = None;
                if log.take(|n| warn!(failures = n, "more webhook failures than logged (streamgate_webhook_attempts_total counts them all)")) {
                    warn!(url = %target.label, id = %next.id, attempts, error = %e,
                        "webhook delivery failed{}", if e.is_final() { "; the backend refused it, it is dropped" } else { "; retrying" });
                }
                if e.is_final() {
                    break;
                }
                tokio::select! {
                    // At shutdown the delivery in hand goes back to the queue's head.
                    _ = stop.cancelled() => {
                        target.queue.lock().push_front(next);
                        target.busy.store(false, Ordering::Release);
                        return;
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(self.retry_max_backoff);
            }
            target.busy.store(false, Ordering::Release);
        }
    }

    /// One POST of `d`, on the kept connection or a new one.
    async fn attempt(
        &self,
        url: &WebhookUrl,
        sender: &mut Option<SendRequest<Full<Bytes>>>,
        d: &Delivery,
    ) -> Result<(), AttemptError> {
        if let Some(s) = sender.as_mut() {
            if s.ready().await.is_err() {
                *sender = None;
            }
        }
        let reused = sender.is_some();
        if !reused {
            *sender = Some(self.connect(url).await?);
        }
        let answer = match self.post(url, sender, d).await {
            // A kept-alive connection the backend closed as the request went out: once
            // more on a new one (the same delivery: the backend deduplicates on its id).
            Err(AttemptError::Http(e))
                if reused && (e.is_canceled() || e.is_incomplete_message()) =>
            {
                *sender = Some(self.connect(url).await?);
                self.post(url, sender, d).await?
            }
            other => other?,
        };
        let status = answer.status().as_u16();
        // Read (a bounded part of) the answer so that the connection can be reused.
        let _ = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(AttemptError::Status(status))
        }
    }

    /// Sends `d` on the connection in `sender`, signed now.
    async fn post(
        &self,
        url: &WebhookUrl,
        sender: &mut Option<SendRequest<Full<Bytes>>>,
        d: &Delivery,
    ) -> Result<hyper::Response<hyper::body::Incoming>, AttemptError> {
        let s = sender.as_mut().expect("connected");
        let timestamp = Utc::now().timestamp();
        let request = hyper::Request::post(url.path_and_query.as_str())
            .header(hyper::header::HOST, url.host_header())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("streamgate/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", d.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature(&self.secret, &d.id, timestamp, &d.body),
            )
            .body(Full::new(d.body.clone()))
            .expect("a valid request");
        Ok(s.send_request(request).await?)
    }

    async fn connect(&self, url: &WebhookUrl) -> Result<SendRequest<Full<Bytes>>, AttemptError> {
        let addrs = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| AttemptError::Resolve(url.host.clone(), e))?;
        let mut last = AttemptError::Forbidden(url.host.clone());
        let mut tcp = None;
        for addr in addrs {
            if !self.allow_private && is_internal(addr.ip()) {
                continue;
            }
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = AttemptError::Connect(e),
            }
        }
        let tcp = tcp.ok_or(last)?;
        http1(tcp, &url.host, url.tls.then_some(&self.tls))
            .await
            .map_err(|e| match e {
                Http1Error::Tls(e) => AttemptError::Tls(e),
                Http1Error::Http(e) => AttemptError::Http(e),
            })
    }
}

impl EventSink for Webhooks {
    /// Queues `event` for every URL (called wherever events are published, possibly
    /// under the hub's session lock: a short lock per queue, no I/O).
    fn offer(&self, event: &PublicEvent) {
        if !self.wanted.contains(&Self::kind(event)) {
            return;
        }
        let id = format!("msg_{}", Uuid::new_v4().simple());
        let body = self.render(&id, event);
        for t in &self.targets {
            let dropped = {
                let mut q = t.queue.lock();
                q.push_back(Delivery {
                    id: id.clone(),
                    body: body.clone(),
                });
                (q.len() > self.queue_max).then(|| q.pop_front()).flatten()
            };
            if let Some(d) = dropped {
                let n = t.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::counter!(crate::metric::WEBHOOK_DROPPED, "url" => t.label.clone())
                    .increment(1);
                // The first drop of an outage, then one line per 1000.
                if n == 1 || n % 1000 == 0 {
                    warn!(url = %t.label, dropped = n, oldest = %d.id,
                        "webhook queue full (webhooks.queue_max): the oldest delivery was dropped");
                }
            }
            t.queued.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (its test vector).
    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        let secret = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// Past `webhooks.queue_max` the oldest waiting delivery goes, counted; the order
    /// of the rest is kept, and the events not asked for are not queued.
    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let config = WebhooksConfig {
            urls: vec![WebhookUrl::parse("https://backend.example/hooks").unwrap()],
            secret: crate::config::Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            queue_max: 16,
            ..WebhooksConfig::default()
        };
        let hooks = Webhooks::new(&config, "node-a".into()).unwrap().unwrap();
        let ids: Vec<Uuid> = (0..20u128).map(Uuid::from_u128).collect();
        for id in &ids {
            hooks.offer(&PublicEvent::Offline { channel_id: *id });
            hooks.offer(&PublicEvent::thumbnail(*id, Utc::now()));
        }
        let t = &hooks.targets[0];
        assert_eq!(t.dropped.load(Ordering::Relaxed), 4);
        let queued: Vec<String> = t
            .queue
            .lock()
            .iter()
            .map(|d| {
                let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
                assert_eq!(
                    (v["type"].as_str(), v["node"].as_str()),
                    (Some("offline"), Some("node-a"))
                );
                v["data"]["channel_id"].as_str().unwrap().to_string()
            })
            .collect();
        let expected: Vec<String> = ids[4..].iter().map(Uuid::to_string).collect();
        assert_eq!(queued, expected);
        assert_eq!(hooks.pending(), 16);
    }

    #[test]
    fn only_final_refusals_are_not_retried() {
        for (status, is_final) in [
            (400, true),
            (404, true),
            (408, false),
            (429, false),
            (500, false),
            (503, false),
        ] {
            assert_eq!(
                AttemptError::Status(status).is_final(),
                is_final,
                "{status}"
            );
        }
        assert!(!AttemptError::Timeout(Duration::from_secs(1)).is_final());
    }
}
