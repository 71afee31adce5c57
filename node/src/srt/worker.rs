//! One ingest thread's share of SRT: its own UDP socket on the SRT port (the kernel
//! spreads callers over the threads' sockets by address, and keeps each caller on
//! one), the handshakes of the callers it gets, and their streams. One task does it
//! all, so nothing here is locked: datagrams in, datagrams out, payloads to the hub.
//!
//! A caller's conclusion starts the admission (the same call an RTMP publish makes) on
//! a task of this thread; the caller repeats its conclusion meanwhile, which is not
//! answered until the verdict is in (no stall for anyone: the decision is not made
//! on the receive path). The verdict answers it: accepted (the connection is created)
//! or rejected with the code that says why, remembered for the repeats that follow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::srt::crypto::{Decrypter, KeyMaterial, KmError};
use ::srt::packet::{parse_header, Header};
use ::srt::{Conclusion, Handshaking, Outgoing, RejectCode};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::limits::HandshakeRate;
use super::stream::{Stream, TsMedia};
use super::streamid;
use crate::auth::{Checked, PublishAttempt, Refusal, RefusalReason};
use crate::channel::Channel;
use crate::hub::{EndReason, Protocol};
use crate::ingest::admission::Ticket;
use crate::ingest::IngestContext;
use crate::log_budget::LogBudget;
use crate::metric;

/// How often the streams' timers run (SRT's ACK period).
const TICK: Duration = Duration::from_millis(10);
/// How often an idle worker (no stream, no admission) wakes.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// How long a rejection is remembered for the caller's repeated conclusions.
const REFUSAL_MEMORY: Duration = Duration::from_secs(10);
/// Rejections remembered at most (each a few dozen bytes).
const REFUSALS_MAX: usize = 4096;
/// Datagrams taken per wake-up before the other work gets a turn.
const RECV_BATCH: usize = 256;
/// How often each stream's link statistics go to the hub.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// What identifies a caller's attempt: its address and its socket.
type Caller = (SocketAddr, u32);

/// What the worker was set up with.
pub(super) struct WorkerConfig {
    pub(super) listener: ::srt::ListenerConfig,
    pub(super) app: String,
    pub(super) auth_deadline: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) max_handshakes_per_address: u32,
}

/// An admission in progress.
struct Pending {
    conclusion: Box<Conclusion>,
    ticket: Ticket,
    permit: tokio::sync::OwnedSemaphorePermit,
    /// Ends the publish if it is admitted after all (the worker's own token).
    cancel: CancellationToken,
}

/// An admission's outcome, back from its task.
struct Decided {
    caller: Caller,
    outcome: Outcome,
}

enum Outcome {
    Admitted(crate::hub::PublishHandle, Option<Box<Decrypter>>),
    Refused(RejectCode, &'static str),
}

/// Why a publisher's encryption does not fit its channel.
#[derive(Debug, Clone, Copy)]
enum Secret {
    /// The channel has a passphrase; the publisher does not encrypt.
    Required,
    /// The publisher encrypts; the channel has no passphrase.
    Unexpected,
    /// The passphrase does not unwrap the publisher's key.
    Wrong,
    /// The key material is not one this node reads (a cipher other than AES-CTR).
    Unsupported,
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Required => "the channel has an SRT passphrase and the publisher does not encrypt",
            Secret::Unexpected => "the publisher encrypts and the channel has no SRT passphrase (channel set-srt-passphrase)",
            Secret::Wrong => "wrong SRT passphrase",
            Secret::Unsupported => "the publisher encrypts with a cipher other than AES-CTR",
        })
    }
}

impl Secret {
    fn code(self) -> RejectCode {
        match self {
            Secret::Wrong => RejectCode::BADSECRET,
            Secret::Required | Secret::Unexpected | Secret::Unsupported => RejectCode::UNSECURE,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Secret::Required => "passphrase_required",
            Secret::Unexpected => "passphrase_unexpected",
            Secret::Wrong => "wrong_passphrase",
            Secret::Unsupported => "unsupported_cipher",
        }
    }
}

/// The channel's passphrase against the publisher's key material.
fn check_secret(channel: &Channel, km: Option<&[u8]>) -> Result<Option<Decrypter>, Secret> {
    match (&channel.srt_passphrase, km) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(Secret::Required),
        (None, Some(_)) => Err(Secret::Unexpected),
        (Some(p), Some(km)) => {
            let km = KeyMaterial::parse(km).map_err(|e| match e {
                KmError::Unsupported => Secret::Unsupported,
                _ => Secret::Wrong,
            })?;
            Decrypter::new(p.expose().as_bytes(), &km)
                .map(Some)
                .map_err(|_| Secret::Wrong)
        }
    }
}

/// The code an authorizer's refusal is sent as.
fn refusal_code(r: &Refusal) -> RejectCode {
    match r.reason {
        RefusalReason::UnknownKey => RejectCode::UNAUTHORIZED,
        RefusalReason::Suspended => RejectCode::FORBIDDEN,
        RefusalReason::AlreadyLive => RejectCode::CONFLICT,
        RefusalReason::Unavailable => RejectCode::UNAVAILABLE,
    }
}

/// One thread's SRT.
pub(super) struct Worker {
    socket: UdpSocket,
    listener: ::srt::Listener,
    cfg: WorkerConfig,
    ctx: Arc<IngestContext>,
    /// Socket ids, unique on the node.
    ids: Arc<AtomicU32>,
    streams: HashMap<u32, Stream>,
    /// Accepted callers, to answer a repeated conclusion.
    accepted: HashMap<Caller, u32>,
    pending: HashMap<Caller, Pending>,
    refused: HashMap<Caller, (RejectCode, Instant)>,
    decided_tx: mpsc::UnboundedSender<Decided>,
    decided_rx: mpsc::UnboundedReceiver<Decided>,
    out: Outgoing,
    /// Where each datagram of `out` goes.
    dests: Vec<SocketAddr>,
    /// Streams that received payloads since their media was last flushed.
    touched: Vec<u32>,
    log_budget: LogBudget,
    handshake_rate: HandshakeRate,
}

impl Worker {
    pub(super) fn new(
        socket: UdpSocket,
        cfg: WorkerConfig,
        ctx: Arc<IngestContext>,
        ids: Arc<AtomicU32>,
    ) -> Worker {
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut secret);
        let (decided_tx, decided_rx) = mpsc::unbounded_channel();
        let handshake_rate = HandshakeRate::new(cfg.max_handshakes_per_address);
        Worker {
            handshake_rate,
            socket,
            listener: ::srt::Listener::new(cfg.listener, secret, Instant::now()),
            cfg,
            ctx,
            ids,
            streams: HashMap::new(),
            accepted: HashMap::new(),
            pending: HashMap::new(),
            refused: HashMap::new(),
            decided_tx,
            decided_rx,
            out: Outgoing::new(),
            dests: Vec::new(),
            touched: Vec::new(),
            // Refusals before the key check: 20 lines per 10 s at most.
            log_budget: LogBudget::new(20, std::time::Duration::from_secs(10)),
        }
    }

    /// Runs until `shutdown`; then tells every publisher the connection is over.
    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let mut buf = vec![0u8; 2048];
        let mut next_tick = Instant::now() + TICK;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                ready = self.socket.readable() => {
                    if ready.is_ok() {
                        self.receive(&mut buf);
                    }
                }
                Some(d) = self.decided_rx.recv() => self.decided(d),
                _ = tokio::time::sleep_until(next_tick.into()) => {}
            }
            // Under a flood the socket is always readable: the verdicts and the timers
            // (ACKs, NAKs, ends) still get their turn after every batch.
            while let Ok(d) = self.decided_rx.try_recv() {
                self.decided(d);
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick();
                // Nothing to time without streams or admissions: an idle worker wakes
                // for datagrams and verdicts only (and a second's housekeeping), not
                // 100 times a second.
                let idle = self.streams.is_empty() && self.pending.is_empty();
                next_tick = now + if idle { IDLE_TICK } else { TICK };
            } else if next_tick > now + TICK
                && !(self.streams.is_empty() && self.pending.is_empty())
            {
                // Work arrived while idle: the timers run from now.
                next_tick = now + TICK;
            }
            self.send();
        }
        for s in self.streams.values() {
            s.conn.shutdown(&mut self.out);
            self.dests.push(s.conn.peer);
        }
        self.send();
    }

    /// Takes the datagrams waiting (up to a batch), then hands each stream's media to
    /// the hub in one go.
    fn receive(&mut self, buf: &mut [u8]) {
        for _ in 0..RECV_BATCH {
            let (n, peer) = match self.socket.try_recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "SRT socket receive error");
                    break;
                }
            };
            self.datagram(Instant::now(), peer, &mut buf[..n]);
        }
        self.flush_media();
    }

    fn datagram(&mut self, now: Instant, peer: SocketAddr, d: &mut [u8]) {
        let dest = match parse_header(d) {
            Ok(Header::Data(h)) => h.dest,
            Ok(Header::Control(h)) => h.dest,
            Err(_) => return,
        };
        if dest == 0 {
            if !self.handshake_rate.allow(peer.ip(), now) {
                metrics::counter!(metric::SRT_HANDSHAKES, "result" => "rate_limited").increment(1);
                return;
            }
            match self.listener.on_handshake(now, peer, d, &mut self.out) {
                Handshaking::Answered => {}
                Handshaking::Conclusion(c) => self.conclusion(c),
                Handshaking::Ignored(why) => {
                    debug!(%peer, why, "SRT handshake ignored");
                    metrics::counter!(metric::SRT_HANDSHAKES, "result" => "ignored").increment(1);
                }
            }
            self.address_new(peer);
            return;
        }
        let Some(s) = self.streams.get_mut(&dest) else {
            return;
        };
        // Only the caller the socket was given to.
        if s.conn.peer != peer {
            return;
        }
        let media = &mut s.media;
        let mut got = false;
        let closed = s.conn.on_packet(now, d, &mut self.out, &mut |p| {
            got = true;
            media.push(p)
        });
        if got {
            s.last_payload = now;
            if self.touched.last() != Some(&dest) {
                self.touched.push(dest);
            }
        }
        let peer = s.conn.peer;
        self.address_new(peer);
        if let Some(c) = closed {
            self.end(dest, &format!("{c:?}"));
        }
    }

    /// Addresses the datagrams added since the last call to `peer`.
    fn address_new(&mut self, peer: SocketAddr) {
        while self.dests.len() < self.out.len() {
            self.dests.push(peer);
        }
    }

    fn flush_media(&mut self) {
        let at = tokio::time::Instant::now();
        for id in self.touched.drain(..) {
            if let Some(s) = self.streams.get_mut(&id) {
                s.media.flush(&s.publish, at);
            }
        }
    }

    fn send(&mut self) {
        let mut dropped = 0u64;
        for (i, d) in self.out.iter().enumerate() {
            if let Err(e) = self.socket.try_send_to(d, self.dests[i]) {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    dropped += 1;
                } else {
                    debug!(error = %e, peer = %self.dests[i], "SRT send error");
                }
            }
        }
        if dropped > 0 {
            metrics::counter!(metric::SRT_SEND_DROPPED).increment(dropped);
        }
        self.out.clear();
        self.dests.clear();
    }

    /// A caller's conclusion: answered again if decided, else its admission starts.
    fn conclusion(&mut self, c: Box<Conclusion>) {
        let caller = (c.peer, c.caller_socket);
        if let Some(id) = self.accepted.get(&caller) {
            if let Some(s) = self.streams.get(id) {
                s.conn.repeat_response(&mut self.out);
            }
            return;
        }
        if self.pending.contains_key(&caller) {
            return; // still deciding; the caller will ask again
        }
        if let Some((code, _)) = self.refused.get(&caller) {
            c.reject(*code, &mut self.out);
            return;
        }
        if let Some(code) = c.unacceptable {
            if self.log_budget.take(refusals_left_out) {
                info!(peer = %c.peer, code = code.0, "SRT publish refused: the caller asks for what this node does not do (HSv4, stream mode, another congestion controller, a packet filter or a group)");
            }
            return self.refuse(&c, code, "unsupported");
        }
        let key = match streamid::key_of(c.stream_id.as_deref(), &self.cfg.app) {
            Ok(k) => k,
            Err(e) => {
                if self.log_budget.take(refusals_left_out) {
                    info!(peer = %c.peer, reason = %e, "SRT publish refused");
                }
                return self.refuse(&c, e.code(), e.label());
            }
        };
        // Refusals by the caps are counted, not logged above debug (as for RTMP): a
        // flood would fill the log.
        let ticket = match self.ctx.admission.admit(c.peer.ip()) {
            Ok(t) => t,
            Err(e) => {
                debug!(peer = %c.peer, reason = %e, "SRT publish refused");
                return self.refuse(&c, RejectCode::OVERLOAD, e.label());
            }
        };
        let Ok(permit) = self.ctx.connections.clone().try_acquire_owned() else {
            debug!(peer = %c.peer, "SRT publish refused: rtmp.max_connections connections are open");
            return self.refuse(&c, RejectCode::OVERLOAD, "max_connections");
        };
        let cancel = CancellationToken::new();
        let attempt = PublishAttempt {
            key,
            peer: c.peer,
            protocol: Protocol::Srt,
            cancel: Some(cancel.clone()),
        };
        let km = c.key_material.clone();
        let (auth, deadline, tx) = (
            self.ctx.auth.clone(),
            self.cfg.auth_deadline,
            self.decided_tx.clone(),
        );
        tokio::spawn(async move {
            let verdict = tokio::time::timeout(
                deadline,
                auth.admit_checked(attempt, |ch| check_secret(ch, km.as_deref())),
            )
            .await;
            let outcome = match verdict {
                Ok(Checked::Admitted(handle, decrypter)) => {
                    Outcome::Admitted(handle, decrypter.map(Box::new))
                }
                Ok(Checked::Refused(r)) => Outcome::Refused(refusal_code(&r), r.label()),
                Ok(Checked::Failed(e)) => Outcome::Refused(e.code(), e.label()),
                Err(_) => Outcome::Refused(RejectCode::UNAVAILABLE, "auth_deadline"),
            };
            let _ = tx.send(Decided { caller, outcome });
        });
        self.pending.insert(
            caller,
            Pending {
                conclusion: c,
                ticket,
                permit,
                cancel,
            },
        );
    }

    fn refuse(&mut self, c: &Conclusion, code: RejectCode, label: &'static str) {
        metrics::counter!(metric::SRT_HANDSHAKES, "result" => label).increment(1);
        c.reject(code, &mut self.out);
        if self.refused.len() >= REFUSALS_MAX {
            let now = Instant::now();
            self.refused
                .retain(|_, (_, at)| now.duration_since(*at) < REFUSAL_MEMORY);
            if self.refused.len() >= REFUSALS_MAX {
                return; // a flood: the repeats are answered by a new attempt
            }
        }
        self.refused
            .insert((c.peer, c.caller_socket), (code, Instant::now()));
    }

    /// An admission's verdict: the caller is accepted or rejected.
    fn decided(&mut self, d: Decided) {
        let Some(p) = self.pending.remove(&d.caller) else {
            return;
        };
        let peer = p.conclusion.peer;
        match d.outcome {
            Outcome::Refused(code, label) => {
                self.refuse(&p.conclusion, code, label);
            }
            Outcome::Admitted(publish, decrypter) => {
                let now = Instant::now();
                let id = self.next_id();
                let conn = p.conclusion.accept(
                    now,
                    id,
                    &self.cfg.listener,
                    decrypter.map(|d| *d),
                    &mut self.out,
                );
                metrics::counter!(metric::SRT_HANDSHAKES, "result" => "accepted").increment(1);
                info!(%peer, channel_id = %publish.stream.channel_id, session = %publish.stream.session_id, latency_ms = conn.stats().latency_ms, encrypted = conn.stats().encrypted, "SRT publish accepted");
                let mut ticket = p.ticket;
                ticket.leave_pending();
                self.accepted.insert(d.caller, id);
                self.streams.insert(
                    id,
                    Stream {
                        conn,
                        publish,
                        cancel: p.cancel,
                        media: TsMedia::new(),
                        last_payload: now,
                        reported: now,
                        counted: [0; 4],
                        _ticket: ticket,
                        _permit: p.permit,
                    },
                );
            }
        }
        self.address_new(peer);
    }

    fn next_id(&self) -> u32 {
        loop {
            let id = self.ids.fetch_add(1, Ordering::Relaxed) & 0x3fff_ffff;
            if id != 0 && !self.streams.contains_key(&id) {
                return id;
            }
        }
    }

    /// Ends stream `id`: the caller is told, the publish ends (its handle dropped).
    fn end(&mut self, id: u32, why: &str) {
        let Some(mut s) = self.streams.remove(&id) else {
            return;
        };
        s.count_packets();
        s.conn.shutdown(&mut self.out);
        self.address_new(s.conn.peer);
        self.accepted.remove(&(s.conn.peer, s.conn.caller_socket));
        let stats = s.conn.stats().receiver;
        info!(peer = %s.conn.peer, channel_id = %s.publish.stream.channel_id, why, packets = stats.packets, lost = stats.lost, retransmitted = stats.retransmitted, dropped = stats.dropped, "SRT publish ended");
        s.cancel.cancel();
    }

    /// The streams' timers, the node's ends of publishes, idle media.
    fn tick(&mut self) {
        let now = Instant::now();
        let mut ending: Vec<(u32, String)> = Vec::new();
        for (id, s) in self.streams.iter_mut() {
            if s.publish.stream.is_ended() {
                let why = s
                    .publish
                    .stream
                    .end_reason()
                    .map_or("ended by the node", EndReason::as_str);
                ending.push((*id, why.to_string()));
                continue;
            }
            let media = &mut s.media;
            let mut got = false;
            let closed = s.conn.tick(now, &mut self.out, &mut |p| {
                got = true;
                media.push(p)
            });
            while self.dests.len() < self.out.len() {
                self.dests.push(s.conn.peer);
            }
            if got {
                s.last_payload = now;
                s.media.flush(&s.publish, tokio::time::Instant::now());
            }
            if let Some(c) = closed {
                ending.push((
                    *id,
                    format!("{c:?}: nothing from the publisher for srt.peer_idle_timeout"),
                ));
            } else if now.duration_since(s.last_payload) >= self.cfg.idle_timeout {
                ending.push((*id, "no media for rtmp.idle_timeout".into()));
            }
            if now.duration_since(s.reported) >= REPORT_EVERY {
                s.reported = now;
                s.publish.stream.set_link(s.link_stats());
                s.count_packets();
            }
        }
        for (id, why) in ending {
            self.end(id, &why);
        }
        if self.refused.len() > REFUSALS_MAX / 2 {
            self.refused
                .retain(|_, (_, at)| now.duration_since(*at) < REFUSAL_MEMORY);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for p in self.pending.values() {
            p.cancel.cancel();
        }
    }
}

/// The summary of the refusals a log window left out.
fn refusals_left_out(n: u64) {
    info!(
        refusals = n,
        "more SRT publishes refused than logged (streamgate_srt_handshakes_total counts them all)"
    );
}
