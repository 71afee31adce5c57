//! One RTMP client connection: handshake under a deadline, then the server session,
//! with an idle deadline on every read and a write deadline on every flush. The
//! publish request waits for the authorizer; a refused key gets an error-level
//! `onStatus` (NetStream.Publish.BadName, "invalid stream key") before the close, so
//! ffmpeg exits at once and OBS shows the error instead of reconnecting.
//!
//! Until a publish is accepted the connection is on a short leash: a fixed deadline
//! from accept (before a PROXY header or TLS) that traffic does not extend
//! (`rtmp.auth_deadline`), the protocol
//! session's pre-publish limits (small messages, chunk sizes and chunk streams, no AMF
//! decoding of data messages), a bound on what it may make us queue to send, and a
//! pending slot of its address ([`super::admission`]).
//!
//! Generic over its [`Transport`], so tests can drive it over an in-memory pipe. What
//! its reads go through is the [`Flow`] (shared with the pump); the publish decision is
//! [`crate::auth::Authorizer::admit`]'s: the connection only translates it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use bytes::BytesMut;
use rtmp::handshake::{HandshakeError, ServerHandshake};
use rtmp::{ChunkLimits, OutputQueue, ServerConfig, ServerEvent, ServerSession, SessionError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::admission::Ticket;
use super::context::IngestContext;
use super::flow::{Flow, READ_RESERVE};
use super::pump::{Back, Held, Parked, Why};
pub use super::transport::{PumpedTcp, Transport};
use crate::auth::{PublishAttempt, RefusalReason, Verdict};
use crate::hub::{EndReason, Protocol};
use crate::key::StreamKey;
use rtmp_io::{write_queued, WriteError};

/// Most bytes a connection without an accepted publish may make us queue to send
/// (answers to its pings and commands): it has to read them first.
const PRE_PUBLISH_MAX_OUTPUT: usize = 32 * 1024;

/// Why a connection ended abnormally. None of these affects another connection.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("protocol error: {0}")]
    Session(#[from] SessionError),
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    #[error("client did not read our data within {0:?}")]
    WriteTimeout(Duration),
    #[error("client closed the connection during the handshake")]
    ClosedInHandshake,
    #[error("no publish accepted within {0:?} of connecting (rtmp.auth_deadline)")]
    NoPublish(Duration),
    #[error("more than {0} bytes of answers queued before a publish was accepted")]
    PrePublishOutput(usize),
}

impl ConnectionError {
    /// The client broke the protocol or a limit (as opposed to a network failure).
    fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            ConnectionError::Handshake(_)
                | ConnectionError::Session(_)
                | ConnectionError::NoPublish(_)
                | ConnectionError::PrePublishOutput(_)
        )
    }
}

/// How a connection arrived.
#[derive(Debug)]
pub struct Arrival {
    /// The client (the real one behind a trusted proxy).
    pub peer: SocketAddr,
    /// What arrived already (after a PROXY header, the start of the handshake).
    pub received: BytesMut,
    /// When it was accepted: its auth deadline runs from then.
    pub accepted_at: tokio::time::Instant,
    /// RTMP or RTMPS.
    pub protocol: Protocol,
}

/// How a connection ended normally.
#[derive(Debug)]
enum End {
    ClientClosed,
    Rejected(&'static str),
    EndedByNode(EndReason),
    Shutdown,
}

/// Runs one connection to its end and logs how it ended. `ticket` is its place in
/// the admission counts, returned when the connection ends.
///
/// How it arrived is in `arrival`.
pub async fn serve<S: Transport>(
    io: S,
    arrival: Arrival,
    ticket: Ticket,
    ctx: Arc<IngestContext>,
    cancel: CancellationToken,
) {
    let Arrival {
        peer,
        received,
        accepted_at,
        protocol,
    } = arrival;
    let mut flow = Flow::new(&ctx);
    flow.buf = received;
    let mut conn = Connection {
        io,
        peer,
        ctx,
        ticket,
        stop: cancel.child_token(),
        flow,
        accepted_at,
        protocol,
    };
    let result = conn.run(&cancel).await;
    let channel_id = conn.flow.publish.as_ref().map(|p| p.stream.channel_id);
    match result {
        Ok(End::ClientClosed) => debug!(%peer, ?channel_id, "connection closed by client"),
        Ok(End::Rejected(why)) => debug!(%peer, reason = why, "connection closed after refusal"),
        Ok(End::EndedByNode(reason)) => {
            info!(%peer, ?channel_id, reason = reason.as_str(), "connection closed by the node")
        }
        Ok(End::Shutdown) => debug!(%peer, ?channel_id, "connection closed for shutdown"),
        Err(e) if channel_id.is_some() => {
            info!(%peer, ?channel_id, error = %e, "publisher connection ended")
        }
        // Protocol violations and limits are worth an operator's attention; plain
        // network noise (resets, scanners that hang up) is not.
        Err(e) if e.is_protocol_violation() => {
            info!(%peer, error = %e, "connection closed: protocol error")
        }
        Err(e) => debug!(%peer, error = %e, "connection ended"),
    }
    // Dropping the publish handle marks the channel offline (unless taken over).
    if let Some(handle) = conn.flow.publish.take() {
        info!(channel_id = %handle.stream.channel_id, session = %handle.stream.session_id, "publish ended");
    }
}

struct Connection<S> {
    io: S,
    peer: SocketAddr,
    ctx: Arc<IngestContext>,
    /// Its place in the per-address counts.
    ticket: Ticket,
    /// Cancelled by the shutdown (its parent) or when the node ends this connection's
    /// publish (the publish's own token).
    stop: CancellationToken,
    /// What its reads go through (what the pump takes with the socket).
    flow: Flow,
    /// When the connection was accepted: the auth deadline runs from there, whatever
    /// came before the RTMP session (a PROXY header, the TLS handshake).
    accepted_at: tokio::time::Instant,
    /// RTMP or RTMPS.
    protocol: Protocol,
}

/// What woke a connection's turn.
enum Turn {
    Read(std::io::Result<usize>),
    /// The pump gave the connection back (with an event to act on, or output to
    /// write).
    Resume,
    /// The idle deadline passed (it may have been extended by traffic since).
    Idle,
    /// Shutdown, or the node ended this connection's publish.
    Stop,
    /// No publish accepted by the auth deadline.
    NoPublish,
}

/// The waker the deadlines and the stop signal are given: it wakes the connection's
/// task and notes that one of them (not the socket) fired, so that the many turns woken
/// by data poll the socket only, and never the timers or the token.
struct SideWake {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Waits while the pump holds the connection: until the pump gives it back, the stop
/// signal fires or nothing arrived for `idle` (then the connection is taken back from
/// the pump; if the pump gave it back meanwhile, the pump's reason comes first). An
/// idle deadline that finds traffic since is moved on without taking the connection
/// back.
async fn wait_pumped(
    held: &mut Held,
    idle: Duration,
    mut idle_deadline: Pin<&mut tokio::time::Sleep>,
    mut stop: Pin<&mut tokio_util::sync::WaitForCancellationFutureOwned>,
    side: &SideWake,
    side_waker: &Waker,
) -> Result<Back, ConnectionError> {
    enum Woke {
        Back,
        Idle,
        Stop,
    }
    let fired = loop {
        let woke = std::future::poll_fn(|cx| {
            if held.poll_back(cx).is_ready() {
                return Poll::Ready(Woke::Back);
            }
            side.task.register(cx.waker());
            if !side.fired.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            let mut side_cx = Context::from_waker(side_waker);
            if idle_deadline.as_mut().poll(&mut side_cx).is_ready() {
                return Poll::Ready(Woke::Idle);
            }
            if stop.as_mut().poll(&mut side_cx).is_ready() {
                return Poll::Ready(Woke::Stop);
            }
            Poll::Pending
        })
        .await;
        match woke {
            Woke::Back => break None,
            Woke::Idle => match held.last_read() {
                // Traffic since: the deadline moves on, the pump keeps the connection.
                Some(at) if at.elapsed() < idle => {
                    idle_deadline.as_mut().reset(at + idle);
                    // Polled again, so that it is armed for the new deadline.
                    side.fired.store(true, Ordering::Release);
                }
                _ => break Some(Why::Idle),
            },
            Woke::Stop => break Some(Why::Stop),
        }
    };
    let (parked, given) = held.take().ok_or_else(|| ConnectionError::Io(lost()))?;
    let why = match (given, fired) {
        (Some(why), None) => why,
        // The pump gave it back meanwhile: its reason first; what fired is looked at
        // again on the next turn.
        (Some(why), Some(_)) => {
            side.fired.store(true, Ordering::Release);
            why
        }
        (None, Some(why)) => why,
        // Ready without a reason: the pump never leaves one out.
        (None, None) => Why::Resume,
    };
    Ok(Back { parked, why })
}

/// The connection was taken from the pump already (it cannot happen: only its task
/// takes it).
fn lost() -> std::io::Error {
    std::io::Error::other("the connection left the ingest pump unseen")
}

impl<S: Transport> Connection<S> {
    async fn run(&mut self, cancel: &CancellationToken) -> Result<End, ConnectionError> {
        let ctx = self.ctx.clone();
        let cfg = &ctx.config;
        // From accept (before a PROXY header or TLS) to an accepted publish; traffic
        // does not extend it.
        let auth_until = self.accepted_at + cfg.auth_deadline;
        let auth_deadline = tokio::time::sleep_until(auth_until);
        tokio::pin!(auth_deadline);
        let hs_timeout = cfg.handshake_timeout;
        let hs_until = (tokio::time::Instant::now() + hs_timeout).min(auth_until);
        tokio::select! {
            r = tokio::time::timeout_at(hs_until, self.handshake()) => {
                r.map_err(|_| if hs_until == auth_until {
                    ConnectionError::NoPublish(cfg.auth_deadline)
                } else {
                    ConnectionError::HandshakeTimeout(hs_timeout)
                })??;
            }
            _ = cancel.cancelled() => return Ok(End::Shutdown),
        }

        let mut session = ServerSession::new(ServerConfig {
            chunk_limits: ChunkLimits {
                max_message_size: cfg.max_message_size,
                max_chunk_streams: cfg.max_chunk_streams,
                max_partial_bytes: cfg.max_partial_bytes,
                ..ChunkLimits::default()
            },
            out_chunk_size: cfg.chunk_size,
            ..ServerConfig::default()
        });
        let idle = cfg.idle_timeout;
        // Set up once, not per read: the idle deadline (re-armed only when it fires),
        // the shutdown signal, and (once publishing) the end of this publish.
        let idle_deadline = tokio::time::sleep(idle);
        tokio::pin!(idle_deadline);
        self.flow.read_at = tokio::time::Instant::now();
        // One token of this connection's own, for the shutdown (its parent) and for
        // the end of its publish (a publish of this connection is ended through it): one
        // future to poll per turn, and a lock no other connection takes.
        let stop = self.stop.clone().cancelled_owned();
        tokio::pin!(stop);
        let side = Arc::new(SideWake {
            // Polled on the first turn, which arms them.
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let side_waker = Waker::from(side.clone());
        // An event the pump read and gave back with the connection.
        let mut returned: Option<ServerEvent> = None;
        // Whether to offer this connection to the thread's pump (until the pump
        // refuses it).
        let mut pumpable = true;
        loop {
            // Interpret everything buffered, one event at a time: a request that needs
            // an answer is answered before later messages are read. Media, the bulk of
            // the traffic, is handed over on the way, without an await.
            loop {
                let ev = match returned.take() {
                    Some(ev) => ev,
                    None => match self.flow.next_event(&mut session)? {
                        Some(ev) => ev,
                        None => break,
                    },
                };
                let was_publishing = self.flow.publish.is_some();
                if let Some(end) = self.on_event(&mut session, ev).await? {
                    return Ok(end);
                }
                if was_publishing && self.flow.publish.is_none() {
                    // Unpublished but still connected: publish again within the deadline.
                    auth_deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + cfg.auth_deadline);
                    side.fired.store(true, Ordering::Release);
                }
            }
            if !session.is_trusted() && session.output().len() > PRE_PUBLISH_MAX_OUTPUT {
                return Err(ConnectionError::PrePublishOutput(PRE_PUBLISH_MAX_OUTPUT));
            }
            if !session.output().is_empty() {
                self.flush(session.output()).await?;
            }

            let mut room = 0;
            let pump = match self.flow.publish {
                // A publisher's socket waits in the thread's pump, which reads, parses
                // and delivers its media until something needs this task.
                Some(_) if pumpable => self.io.park()?,
                _ => None,
            };
            let turn = if let Some((pump, socket)) = pump {
                let flow = std::mem::replace(&mut self.flow, Flow::new(&ctx));
                let mut held = pump.hold(Parked {
                    socket,
                    session,
                    flow,
                });
                let Back { parked, why } = wait_pumped(
                    &mut held,
                    idle,
                    idle_deadline.as_mut(),
                    stop.as_mut(),
                    &side,
                    &side_waker,
                )
                .await?;
                let Parked {
                    socket,
                    session: pumped,
                    flow,
                } = parked;
                session = pumped;
                self.flow = flow;
                self.io.unpark(socket)?;
                match why {
                    Why::Event(ev) => {
                        returned = Some(ev);
                        Turn::Resume
                    }
                    Why::Resume => Turn::Resume,
                    Why::Refused => {
                        // Not again: the task reads this connection itself.
                        pumpable = false;
                        Turn::Resume
                    }
                    Why::Closed => Turn::Read(Ok(0)),
                    Why::Failed(e) => Turn::Read(Err(e)),
                    Why::Protocol(e) => return Err(e.into()),
                    Why::Idle => Turn::Idle,
                    Why::Stop => Turn::Stop,
                }
            } else {
                room = self.flow.prepare_read();
                let waiting_publish = self.flow.publish.is_none();
                std::future::poll_fn(|cx| {
                    // Reading first: a turn woken by data looks at nothing else.
                    if let Poll::Ready(r) = tokio_util::io::poll_read_buf(
                        Pin::new(&mut self.io),
                        cx,
                        &mut self.flow.buf,
                    ) {
                        return Poll::Ready(Turn::Read(r));
                    }
                    // The deadlines and the stop signal wake the task through `side`,
                    // which remembers it: they are polled only when one of them fired.
                    side.task.register(cx.waker());
                    if !side.fired.swap(false, Ordering::AcqRel) {
                        return Poll::Pending;
                    }
                    let mut side_cx = Context::from_waker(&side_waker);
                    if idle_deadline.as_mut().poll(&mut side_cx).is_ready() {
                        return Poll::Ready(Turn::Idle);
                    }
                    if stop.as_mut().poll(&mut side_cx).is_ready() {
                        return Poll::Ready(Turn::Stop);
                    }
                    if waiting_publish && auth_deadline.as_mut().poll(&mut side_cx).is_ready() {
                        return Poll::Ready(Turn::NoPublish);
                    }
                    Poll::Pending
                })
                .await
            };
            match turn {
                Turn::Read(Ok(0)) => return Ok(End::ClientClosed),
                Turn::Read(Ok(n)) => self.flow.after_read(n, room),
                // RTMPS: encoders close without a TLS close_notify (OBS always does).
                // RTMP frames its own messages, so nothing is truncated unseen: an
                // ordinary close.
                Turn::Read(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(End::ClientClosed)
                }
                Turn::Read(Err(e)) => return Err(e.into()),
                Turn::Resume => {}
                Turn::Idle => {
                    let quiet = self.flow.read_at.elapsed();
                    if quiet >= idle {
                        return Err(ConnectionError::Idle(idle));
                    }
                    idle_deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + (idle - quiet));
                    // Polled again next turn, so that it is armed for the new deadline.
                    side.fired.store(true, Ordering::Release);
                }
                Turn::Stop => {
                    return Ok(match &self.flow.publish {
                        Some(p) => {
                            End::EndedByNode(p.stream.end_reason().unwrap_or(EndReason::Shutdown))
                        }
                        None => End::Shutdown,
                    });
                }
                Turn::NoPublish => return Err(ConnectionError::NoPublish(cfg.auth_deadline)),
            }
        }
    }

    async fn handshake(&mut self) -> Result<(), ConnectionError> {
        let mut hs = ServerHandshake::new();
        let mut out = BytesMut::new();
        loop {
            let done = hs.read(&mut self.flow.buf, &mut out)?;
            if !out.is_empty() {
                self.io.write_all(&out).await?;
                out.clear();
            }
            if done {
                debug!(peer = %self.peer, kind = ?hs.kind(), "handshake done");
                return Ok(());
            }
            self.flow.buf.reserve(READ_RESERVE);
            if self.io.read_buf(&mut self.flow.buf).await? == 0 {
                return Err(ConnectionError::ClosedInHandshake);
            }
        }
    }

    /// Acts on one session event; `Some` ends the connection.
    async fn on_event(
        &mut self,
        session: &mut ServerSession,
        ev: ServerEvent,
    ) -> Result<Option<End>, ConnectionError> {
        match ev {
            ServerEvent::ConnectRequested { app } => {
                if app == self.ctx.config.app {
                    session.accept_connect();
                } else {
                    debug!(peer = %self.peer, "connect to an unknown application refused");
                    let hint = format!(
                        "unknown application; publish to rtmp://HOST/{}/<stream key>",
                        self.ctx.config.app
                    );
                    session.reject_connect(&hint);
                    self.flush(session.output()).await?;
                    return Ok(Some(End::Rejected("unknown application")));
                }
            }
            ServerEvent::PublishRequested { stream_id, name } => {
                if self.flow.publish.is_some() {
                    return self
                        .refuse_publish(
                            session,
                            stream_id,
                            "NetStream.Publish.BadConnection",
                            "this connection is already publishing",
                            "second publish on one connection",
                        )
                        .await;
                }
                // Its one publish request made: no longer pending (an answer that waits
                // for the address's wrong keys holds no pending slot of the address).
                self.ticket.leave_pending();
                let attempt = PublishAttempt {
                    key: StreamKey::new(name.expose()),
                    peer: self.peer,
                    protocol: self.protocol,
                    cancel: Some(self.stop.clone()),
                };
                match self.ctx.auth.admit(attempt).await {
                    Verdict::Admitted(handle) => {
                        session.accept_publish(stream_id);
                        self.flow.publish = Some(handle);
                    }
                    Verdict::Refused(refusal) => {
                        let code = match refusal.reason {
                            RefusalReason::UnknownKey | RefusalReason::AlreadyLive => {
                                "NetStream.Publish.BadName"
                            }
                            RefusalReason::Suspended | RefusalReason::Unavailable => {
                                "NetStream.Publish.Unauthorized"
                            }
                        };
                        return self
                            .refuse_publish(
                                session,
                                stream_id,
                                code,
                                &refusal.description(),
                                refusal.label(),
                            )
                            .await;
                    }
                }
            }
            ServerEvent::Metadata { .. } | ServerEvent::Video(_) | ServerEvent::Audio(_) => {
                // Handled there (and only there); nothing comes back for media.
                let _ = self.flow.on_media(ev);
            }
            ServerEvent::Unpublished { .. } => {
                if let Some(handle) = self.flow.publish.take() {
                    info!(channel_id = %handle.stream.channel_id, session = %handle.stream.session_id, "publish ended by client");
                }
            }
        }
        Ok(None)
    }

    /// Refuses a publish with an error-level `onStatus` the client shows, sends it,
    /// and ends the connection (`why` is for the log).
    async fn refuse_publish(
        &mut self,
        session: &mut ServerSession,
        stream_id: u32,
        code: &str,
        description: &str,
        why: &'static str,
    ) -> Result<Option<End>, ConnectionError> {
        session.reject_publish(stream_id, code, description);
        self.flush(session.output()).await?;
        Ok(Some(End::Rejected(why)))
    }

    /// Writes everything queued under the write deadline.
    async fn flush(&mut self, out: &mut OutputQueue) -> Result<(), ConnectionError> {
        match write_queued(&mut self.io, out, self.ctx.config.write_timeout).await {
            Ok(_) => Ok(()),
            Err(WriteError::Io(e)) => Err(e.into()),
            Err(WriteError::Timeout(d)) => Err(ConnectionError::WriteTimeout(d)),
        }
    }
}
