//! The node's Prometheus metrics: every name in one place, with what it counts. The
//! modules record through the `metrics` facade (a no-op until `serve` installs the
//! exporter); counters and histograms when things happen, gauges from snapshots when
//! `/metrics` is scraped. No label ever holds a stream key; labels are bounded sets
//! (listener, reason, result, the redacted target template), and the per-channel
//! series (`channel_id`) exist only when `metrics.per_channel` is on.

/// Thumbnails of channels live on other nodes, asked of this node, by result
/// (`fetched`, `cached`, `not_found`, `failed`, `timeout`).
pub const FLEET_THUMBNAILS: &str = "streamgate_fleet_thumbnails_total";
/// Always 1, labelled with the node's version: which build runs where.
pub const BUILD_INFO: &str = "streamgate_build_info";
/// Connections accepted, by listener (`rtmp`, `rtmps`).
pub const CONNECTIONS_ACCEPTED: &str = "streamgate_connections_accepted_total";
/// Connections closed before the RTMP session, by reason (`address_full`,
/// `address_pending_full`, `pending_full`, `proxy_header`, `tls`).
pub const CONNECTIONS_REFUSED: &str = "streamgate_connections_refused_total";
/// Connections open now, and of those without an accepted publish.
pub const CONNECTIONS_OPEN: &str = "streamgate_connections_open";
pub const CONNECTIONS_PENDING: &str = "streamgate_connections_pending";
/// Live publishes on this node.
pub const LIVE_STREAMS: &str = "streamgate_live_streams";
/// Per ingest thread: connections on it, and seconds it was awake (its rate is the
/// share of a core the thread uses; see `rtmp.placement`).
pub const INGEST_THREAD_CONNECTIONS: &str = "streamgate_ingest_thread_connections";
pub const INGEST_THREAD_PUMPED: &str = "streamgate_ingest_thread_pumped_connections";
pub const INGEST_THREAD_BUSY: &str = "streamgate_ingest_thread_busy_seconds_total";
/// Per ingest thread: seconds it slept to pace its wake-ups; and how many threads are
/// paced now (`rtmp.busy_wakeup_interval`).
pub const INGEST_THREAD_PAUSED: &str = "streamgate_ingest_thread_paused_seconds_total";
pub const INGEST_PACING: &str = "streamgate_ingest_pacing";
/// Bytes read from RTMP clients (after TLS).
pub const INGEST_BYTES: &str = "streamgate_ingest_bytes_total";
/// Publish requests by outcome (`accepted`, `unknown_key`, `unavailable`), and how long
/// the decision took (the wait of an address that sent wrong keys included).
pub const AUTH_DECISIONS: &str = "streamgate_auth_decisions_total";
pub const AUTH_SECONDS: &str = "streamgate_auth_seconds";
/// Relay targets by state (`connected`, `disconnected`), per target template.
pub const RELAY_TARGETS: &str = "streamgate_relay_targets";
/// Per target template: bytes sent upstream, reconnects, messages and bytes dropped.
pub const RELAY_BYTES: &str = "streamgate_relay_bytes_total";
pub const RELAY_RECONNECTS: &str = "streamgate_relay_reconnects_total";
pub const RELAY_DROPPED_MESSAGES: &str = "streamgate_relay_dropped_messages_total";
pub const RELAY_DROPPED_BYTES: &str = "streamgate_relay_dropped_bytes_total";
/// Thumbnails by result (`written`, `failed`), and how long each took.
pub const THUMBNAILS: &str = "streamgate_thumbnails_total";
pub const THUMBNAIL_SECONDS: &str = "streamgate_thumbnail_seconds";
/// Status updates waiting for the database; write latency; failed writes by kind
/// (`retryable`, `refused`).
pub const OUTBOX_PENDING: &str = "streamgate_status_outbox_pending";
pub const STATUS_WRITE_SECONDS: &str = "streamgate_status_write_seconds";
pub const STATUS_WRITE_FAILURES: &str = "streamgate_status_write_failures_total";
/// Fleet: publishes ended because another node took the channel, publishes refused
/// because another encoder holds it, dead nodes this node swept.
pub const TAKEOVERS: &str = "streamgate_takeovers_total";
pub const ALREADY_LIVE: &str = "streamgate_publishes_refused_already_live_total";
pub const NODES_SWEPT: &str = "streamgate_dead_nodes_swept_total";
/// HTTP: requests refused, by reason (`address_full`, `event_streams_full`,
/// `event_streams_address_full`); connections served from the reserve (the public
/// slots were full); wrong admin tokens.
pub const HTTP_REFUSED: &str = "streamgate_http_refused_total";
pub const HTTP_RESERVED: &str = "streamgate_http_reserved_connections_total";
pub const ADMIN_TOKEN_FAILURES: &str = "streamgate_admin_token_failures_total";
/// Live streams by health verdict (`good`, `warn`, `bad`); verdict changes told, by
/// check and new verdict; per channel (opt-in), each check's verdict (0 good, 1 warn,
/// 2 bad).
pub const STREAMS_BY_HEALTH: &str = "streamgate_streams_by_health";
pub const HEALTH_CHANGES: &str = "streamgate_health_changes_total";
pub const CHANNEL_HEALTH: &str = "streamgate_channel_health";
/// Webhooks: attempts by URL (redacted) and result (`delivered`, `failed`,
/// `refused`), deliveries dropped from a full queue, deliveries waiting, attempt time.
pub const WEBHOOK_ATTEMPTS: &str = "streamgate_webhook_attempts_total";
pub const WEBHOOK_DROPPED: &str = "streamgate_webhook_dropped_total";
pub const WEBHOOK_PENDING: &str = "streamgate_webhook_pending";
pub const WEBHOOK_SECONDS: &str = "streamgate_webhook_seconds";
/// Per channel (opt-in): bitrate, frames per second, media bytes since the start.
pub const CHANNEL_BITRATE: &str = "streamgate_channel_bitrate_bits_per_second";
pub const CHANNEL_FPS: &str = "streamgate_channel_frames_per_second";
pub const CHANNEL_BYTES: &str = "streamgate_channel_media_bytes_total";
pub const CHANNEL_SRT_RTT: &str = "streamgate_channel_srt_rtt_seconds";
pub const CHANNEL_SRT_PACKETS: &str = "streamgate_channel_srt_packets_total";
pub const CHANNEL_SRT_BUFFERED: &str = "streamgate_channel_srt_buffered_packets";
pub const LIVE_STREAMS_BY_PROTOCOL: &str = "streamgate_live_streams_by_protocol";

/// SRT: conclusions by result (`accepted`, or why not), datagrams the socket could
/// not take, and the link totals of the SRT publishes that ended (packets received,
/// lost, retransmitted, dropped too late).
pub const SRT_HANDSHAKES: &str = "streamgate_srt_handshakes_total";
pub const SRT_SEND_DROPPED: &str = "streamgate_srt_send_dropped_total";
pub const SRT_PACKETS: &str = "streamgate_srt_packets_total";

/// The relay label of a channel's own targets (their URLs may hold third parties'
/// keys, and there is one set per channel).
pub const CHANNEL_OWN_TARGET: &str = "channel_own";

/// A byte counter fed from a hot path: adds go to a counter of its own and reach the
/// shared (Prometheus) one in steps of [`BatchedCounter::STEP`] and when it is dropped,
/// so the threads do not write one shared cache line for every read and write.
#[derive(Debug)]
pub struct BatchedCounter {
    shared: metrics::Counter,
    pending: std::sync::atomic::AtomicU64,
}

impl BatchedCounter {
    /// What a series may lag behind, per connection or relay link.
    pub const STEP: u64 = 64 * 1024;

    pub fn new(shared: metrics::Counter) -> BatchedCounter {
        BatchedCounter {
            shared,
            pending: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// [`BatchedCounter::add`] by its only user: no atomic operation.
    pub fn add_owned(&mut self, n: u64) {
        let pending = self.pending.get_mut();
        *pending += n;
        if *pending >= Self::STEP {
            self.shared.increment(std::mem::take(pending));
        }
    }

    pub fn add(&self, n: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.pending.fetch_add(n, Relaxed) + n >= Self::STEP {
            self.shared.increment(self.pending.swap(0, Relaxed));
        }
    }
}

impl Drop for BatchedCounter {
    fn drop(&mut self) {
        self.shared.increment(*self.pending.get_mut());
    }
}

/// Registers what every metric means (shown as `# HELP`).
/// The counters with a bounded set of labels, each series made at 0 when the node
/// starts: a rate or an alert on them works from the first scrape, not from the first
/// event (a series that does not exist yet is not a zero to Prometheus).
pub fn start_at_zero() {
    let series: [(&'static str, &'static str, &[&'static str]); 4] = [
        (
            CONNECTIONS_REFUSED,
            "reason",
            &[
                "address_full",
                "address_pending_full",
                "pending_full",
                "proxy_header",
                "tls",
            ],
        ),
        (
            AUTH_DECISIONS,
            "result",
            &["accepted", "unknown_key", "unavailable", "suspended"],
        ),
        (THUMBNAILS, "result", &["written", "failed"]),
        (
            FLEET_THUMBNAILS,
            "result",
            &["fetched", "cached", "not_found", "failed", "timeout"],
        ),
    ];
    for (name, label, values) in series {
        for value in values {
            metrics::counter!(name, label => *value).increment(0);
        }
    }
}

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        BUILD_INFO,
        "always 1; the version label says which build runs"
    );
    describe_counter!(
        CONNECTIONS_ACCEPTED,
        "RTMP/RTMPS connections accepted, by listener"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "connections closed before their RTMP session, by reason"
    );
    describe_gauge!(CONNECTIONS_OPEN, "RTMP/RTMPS connections open");
    describe_counter!(
        FLEET_THUMBNAILS,
        "thumbnails of channels live on other nodes asked of this node, by result"
    );
    describe_counter!(
        SRT_HANDSHAKES,
        "SRT conclusions answered, by result (accepted, or the reason of the rejection)"
    );
    describe_counter!(
        SRT_SEND_DROPPED,
        "SRT control datagrams the socket could not take (its send buffer full)"
    );
    describe_counter!(
        SRT_PACKETS,
        "SRT data packets, by kind (received, lost, retransmitted, dropped: given up), counted every second"
    );
    describe_gauge!(
        CONNECTIONS_PENDING,
        "connections without an accepted publish"
    );
    describe_gauge!(LIVE_STREAMS, "live publishes on this node");
    describe_gauge!(
        INGEST_THREAD_CONNECTIONS,
        "connections on each ingest thread (rtmp.placement)"
    );
    describe_gauge!(
        INGEST_THREAD_PUMPED,
        "publishing connections served by each ingest thread's pump (plain TCP; the others are served by their own task)"
    );
    describe_counter!(
        INGEST_THREAD_BUSY,
        "seconds each ingest thread was awake; its rate is the share of a core it uses"
    );
    describe_counter!(
        INGEST_THREAD_PAUSED,
        "seconds each ingest thread slept to pace its wake-ups while the node was busy (rtmp.busy_wakeup_interval)"
    );
    describe_gauge!(
        INGEST_PACING,
        "ingest threads pacing their wake-ups now (each awake more than 0.7 of a core)"
    );
    describe_counter!(
        TAKEOVERS,
        "publishes taken over by a newer publish of their channel, by where (node, fleet)"
    );
    describe_counter!(
        ALREADY_LIVE,
        "publishes refused because another encoder, still sending from another address, holds the channel, by where (node, fleet)"
    );
    describe_counter!(
        NODES_SWEPT,
        "nodes of the fleet this node declared dead (their channels marked offline)"
    );
    describe_counter!(INGEST_BYTES, Unit::Bytes, "bytes read from RTMP clients");
    describe_counter!(AUTH_DECISIONS, "publish requests, by outcome");
    describe_histogram!(
        AUTH_SECONDS,
        Unit::Seconds,
        "time to decide a publish request"
    );
    describe_gauge!(RELAY_TARGETS, "relay connections, by state and target");
    describe_counter!(
        RELAY_BYTES,
        Unit::Bytes,
        "bytes relayed upstream, by target"
    );
    describe_counter!(RELAY_RECONNECTS, "relay reconnections, by target");
    describe_counter!(
        RELAY_DROPPED_MESSAGES,
        "messages a slow upstream did not get, by target"
    );
    describe_counter!(
        RELAY_DROPPED_BYTES,
        Unit::Bytes,
        "payload bytes a slow upstream did not get, by target"
    );
    describe_counter!(THUMBNAILS, "thumbnail attempts, by result");
    describe_histogram!(THUMBNAIL_SECONDS, Unit::Seconds, "time to make a thumbnail");
    describe_gauge!(
        OUTBOX_PENDING,
        "live/offline updates waiting for the database"
    );
    describe_histogram!(
        STATUS_WRITE_SECONDS,
        Unit::Seconds,
        "time of one live/offline write"
    );
    describe_counter!(STATUS_WRITE_FAILURES, "failed live/offline writes, by kind");
    describe_counter!(
        HTTP_REFUSED,
        "HTTP connections or requests refused, by reason"
    );
    describe_counter!(
        HTTP_RESERVED,
        "HTTP connections served from the reserve for operator routes (the public slots were full)"
    );
    describe_counter!(
        ADMIN_TOKEN_FAILURES,
        "admin API requests with a wrong token"
    );
    describe_gauge!(STREAMS_BY_HEALTH, "live streams by health verdict");
    describe_counter!(
        HEALTH_CHANGES,
        "stream health verdict changes told, by check and new verdict"
    );
    describe_gauge!(
        CHANNEL_HEALTH,
        "a live channel's verdict per health check: 0 good, 1 warn, 2 bad (opt-in)"
    );
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        "webhook delivery attempts, by URL and result"
    );
    describe_counter!(
        WEBHOOK_DROPPED,
        "webhook deliveries dropped from a full queue (webhooks.queue_max)"
    );
    describe_gauge!(WEBHOOK_PENDING, "webhook deliveries waiting");
    describe_histogram!(
        WEBHOOK_SECONDS,
        Unit::Seconds,
        "time of one webhook delivery attempt"
    );
    describe_gauge!(
        CHANNEL_BITRATE,
        "bitrate of a live channel in bits per second (opt-in)"
    );
    describe_gauge!(CHANNEL_FPS, "frames per second of a live channel (opt-in)");
    describe_gauge!(
        CHANNEL_SRT_RTT,
        Unit::Seconds,
        "round-trip time of a live SRT channel's link (opt-in)"
    );
    describe_counter!(
        CHANNEL_SRT_PACKETS,
        "data packets of a live SRT channel's publish so far, by kind: received, lost, retransmitted, dropped (opt-in)"
    );
    describe_gauge!(
        CHANNEL_SRT_BUFFERED,
        "packets a live SRT channel holds behind a lost one (opt-in)"
    );
    describe_gauge!(
        LIVE_STREAMS_BY_PROTOCOL,
        "live publishes on this node, by protocol (rtmp, rtmps, srt)"
    );
    describe_counter!(
        CHANNEL_BYTES,
        Unit::Bytes,
        "media bytes of a live channel's publish (opt-in)"
    );
}
