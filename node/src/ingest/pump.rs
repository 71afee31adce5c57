//! The ingest thread's pump: the publishing connections of a thread, on plain TCP,
//! read, parsed and delivered straight from one epoll instance of the thread's own.
//!
//! A connection's task does everything that can wait (the handshake, the key check,
//! answers under a write deadline, the deadlines of its life). Once its publish is
//! accepted, its traffic is almost only media, which needs none of that: the task
//! hands its socket, its protocol session and what its reads go through ([`Flow`]) to
//! the pump and waits. The pump is one task on the thread; the runtime wakes it when
//! its epoll instance has events, and it serves every ready connection in one turn:
//! read, interpret, hand the media to the publish (relays write it at once), write
//! what the session queued (acknowledgements) if the socket takes it now. So a
//! message costs a read, the parsing and the relay's write, without a task wake, a
//! poll of the connection's future or the reactor's readiness bookkeeping per socket.
//!
//! Anything else goes back to the task ([`Why`]), with the connection: an event that
//! needs an answer or an await (a command, an unpublish), output the socket did not
//! take, the end of the stream, an error. The task takes the connection back itself
//! when its stop signal fires, when nothing arrived for its idle timeout (an idle
//! deadline that finds traffic since just moves on), and when it is dropped. The
//! connection's socket is in exactly one reactor at a time: the runtime's or the
//! pump's. Holding a connection allocates nothing: its state stays in the pump's slab
//! until its task takes it.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use parking_lot::Mutex;
use rtmp::{ServerEvent, ServerSession, SessionError};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tracing::warn;

use super::flow::Flow;

/// Events taken from the epoll instance per call.
const EVENTS: usize = 1024;
/// Reads of one connection in one turn when they keep filling their room; then the
/// others get a turn first.
const READS_PER_TURN: usize = 8;

/// What the pump holds of a connection.
pub(crate) struct Parked {
    pub(crate) socket: TcpStream,
    pub(crate) session: ServerSession,
    pub(crate) flow: Flow,
}

/// Why a connection goes back to its task.
pub(crate) enum Why {
    /// An event that needs the task (not media).
    Event(ServerEvent),
    /// Output the socket did not take at once: the task writes it under its
    /// deadline, then gives the connection to the pump again.
    Resume,
    /// The pump cannot take connections (registering the socket failed, or the pump
    /// stopped): the task serves this one itself from now on.
    Refused,
    /// The client closed the connection.
    Closed,
    /// Reading or writing failed.
    Failed(std::io::Error),
    /// The client broke the protocol.
    Protocol(SessionError),
    /// The task took it back: its idle deadline fired.
    Idle,
    /// The task took it back: its stop signal fired.
    Stop,
}

/// A connection given back.
pub(crate) struct Back {
    pub(crate) parked: Parked,
    pub(crate) why: Why,
}

/// A connection in the pump. It stays in its slot until its task takes it, also
/// after the pump gave it back (`back`): holding a connection allocates nothing.
struct Entry {
    /// Tells this hold from a later one in the same slot.
    id: u64,
    /// The client closed its side or the socket failed: a short read no longer means
    /// there is nothing more to read (the end of the stream is; it brings no new
    /// event).
    closing: bool,
    /// In the epoll instance (until given back).
    registered: bool,
    parked: Parked,
    /// Why the pump gave it back; its task takes it then.
    back: Option<Why>,
    /// The task, woken when the pump gives the connection back.
    task: Option<Waker>,
}

struct State {
    held: Slab<Entry>,
    next_id: u64,
}

/// One per ingest thread (see the module documentation).
pub struct Pump {
    registry: mio::Registry,
    state: Mutex<State>,
    /// False once the pump's task ended (the thread stops): nothing is given to it
    /// then.
    running: AtomicBool,
}

impl Pump {
    /// A pump and the task that runs it (to spawn on its thread's runtime; must be
    /// called inside that runtime).
    pub fn start() -> std::io::Result<(Arc<Pump>, impl std::future::Future<Output = ()>)> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        // SAFETY: `register_with_interest` asks that the descriptor `poll.as_raw_fd()`
        // be valid and open, refer to the same open file description, and be the one
        // `as_raw_fd` returns, for as long as the `AsyncFd` owns `poll`. A `mio::Poll`
        // owns its epoll descriptor (an `OwnedFd` made by `epoll_create1`) from its
        // creation to its drop, never replaces it, and `as_raw_fd` returns that field;
        // the `AsyncFd` takes `poll` by value, so the descriptor is closed only when
        // the `AsyncFd` (and its registration) is dropped.
        #[allow(unsafe_code)]
        let poll = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }?;
        let pump = Arc::new(Pump {
            registry,
            state: Mutex::new(State {
                held: Slab::new(),
                next_id: 0,
            }),
            running: AtomicBool::new(true),
        });
        let task = pump.clone().run(poll);
        Ok((pump, task))
    }

    fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Connections the pump holds now.
    pub fn len(&self) -> usize {
        self.state.lock().held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times a connection was given to the pump since it started.
    pub fn taken(&self) -> u64 {
        self.state.lock().next_id
    }

    /// Takes a connection. If the pump cannot take it, it is given back at once
    /// ([`Why::Refused`]).
    pub(crate) fn hold(self: &Arc<Self>, parked: Parked) -> Held {
        let mut state = self.state.lock();
        let id = state.next_id;
        state.next_id += 1;
        let slot = state.held.vacant_entry();
        let key = slot.key();
        let fd = parked.socket.as_raw_fd();
        // Edge-triggered: an event when data arrives, and one at once if some is
        // waiting already.
        let registered = self.is_running()
            && match self
                .registry
                .register(&mut SourceFd(&fd), Token(key), Interest::READABLE)
            {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "the ingest pump cannot take a connection; its task serves it");
                    false
                }
            };
        slot.insert(Entry {
            id,
            closing: false,
            registered,
            parked,
            back: (!registered).then_some(Why::Refused),
            task: None,
        });
        Held {
            pump: self.clone(),
            key,
            id,
        }
    }

    /// Gives the connection in `key` back to its task for `why`.
    fn give_back(&self, entry: &mut Entry, why: Why) {
        self.deregister(entry);
        entry.back = Some(why);
        if let Some(task) = entry.task.take() {
            task.wake();
        }
    }

    fn deregister(&self, entry: &mut Entry) {
        if !entry.registered {
            return;
        }
        entry.registered = false;
        let fd = entry.parked.socket.as_raw_fd();
        // It can only fail for a socket that is not registered, which cannot be.
        if let Err(e) = self.registry.deregister(&mut SourceFd(&fd)) {
            warn!(error = %e, "ingest pump: deregistering a connection failed");
        }
    }

    /// Removes the connection in `key` (if it is hold `id`).
    fn remove(&self, state: &mut State, key: usize, id: u64) -> Option<Entry> {
        if state.held.get(key).is_none_or(|e| e.id != id) {
            return None;
        }
        let mut entry = state.held.remove(key);
        self.deregister(&mut entry);
        Some(entry)
    }

    async fn run(self: Arc<Pump>, mut poll: AsyncFd<mio::Poll>) {
        let mut events = Events::with_capacity(EVENTS);
        // Connections whose reads kept filling their room: served again next turn.
        let (mut again, mut next) = (Vec::new(), Vec::new());
        loop {
            let polled = if again.is_empty() {
                match poll.readable_mut().await {
                    Ok(mut ready) => {
                        let r = ready
                            .get_inner_mut()
                            .poll(&mut events, Some(Duration::ZERO));
                        // Drained: the runtime wakes the pump at the next event (the
                        // readiness is kept if one arrived meanwhile).
                        if r.is_ok() && events.iter().count() < EVENTS {
                            ready.clear_ready();
                        }
                        r
                    }
                    Err(e) => Err(e),
                }
            } else {
                // Let the thread's other tasks run between two turns of a busy pump.
                tokio::task::yield_now().await;
                poll.get_mut().poll(&mut events, Some(Duration::ZERO))
            };
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "the ingest pump stopped; connections go back to their tasks");
                    self.stop();
                    return;
                }
            }
            let mut state = self.state.lock();
            for event in events.iter() {
                let closed = event.is_read_closed() || event.is_error();
                self.serve(&mut state, event.token().0, None, closed, &mut next);
            }
            for (key, id) in again.drain(..) {
                self.serve(&mut state, key, Some(id), false, &mut next);
            }
            drop(state);
            std::mem::swap(&mut again, &mut next);
        }
    }

    /// Serves the ready connection in `key` (if it is still hold `id`, for one noted
    /// in an earlier turn); `closed`: its event says the peer closed or the socket
    /// failed. Gives it back when something needs its task.
    fn serve(
        &self,
        state: &mut State,
        key: usize,
        id: Option<u64>,
        closed: bool,
        again: &mut Vec<(usize, u64)>,
    ) {
        let Some(entry) = state
            .held
            .get_mut(key)
            .filter(|e| e.back.is_none() && id.is_none_or(|id| e.id == id))
        else {
            return;
        };
        entry.closing |= closed;
        match pump(&mut entry.parked, entry.closing) {
            Step::Wait => {}
            Step::More => again.push((key, entry.id)),
            Step::Back(why) => self.give_back(entry, why),
        }
    }

    /// Gives every connection back (the pump cannot go on).
    fn stop(&self) {
        self.running.store(false, Ordering::Release);
        let mut state = self.state.lock();
        for (_, entry) in state.held.iter_mut() {
            if entry.back.is_none() {
                self.give_back(entry, Why::Refused);
            }
        }
    }
}

enum Step {
    /// Read to the end of what arrived: the next event says when there is more.
    Wait,
    /// Its reads kept filling their room: more may be waiting.
    More,
    Back(Why),
}

/// Reads what arrived for one connection, interprets it, delivers the media and
/// writes what the session queued, as far as that goes without waiting. `closing`:
/// read on to the end of the stream.
fn pump(p: &mut Parked, closing: bool) -> Step {
    for _ in 0..READS_PER_TURN {
        let (n, room) = match p.flow.read_from(&p.socket) {
            Ok((0, _)) => return Step::Back(Why::Closed),
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Step::Back(Why::Failed(e)),
        };
        match p.flow.next_event(&mut p.session) {
            Ok(None) => {}
            Ok(Some(ev)) => return Step::Back(Why::Event(ev)),
            Err(e) => return Step::Back(Why::Protocol(e)),
        }
        let out = p.session.output();
        if !out.is_empty() {
            let socket = &p.socket;
            let written = rtmp_io::write_available(out, |slices| {
                std::io::Write::write_vectored(&mut &*socket, slices)
            });
            if let Err(e) = written {
                return Step::Back(Why::Failed(e));
            }
            if !p.session.output().is_empty() {
                return Step::Back(Why::Resume);
            }
        }
        // A read that did not fill its room took everything that had arrived (the
        // epoll instance is edge-triggered: the next arrival is a new event). Not so
        // the end of the stream: it came with the event already taken.
        if n < room && !closing {
            return Step::Wait;
        }
    }
    Step::More
}

/// A connection the pump holds, on its task's side. Dropped (the task ended), it takes
/// the connection back from the pump and drops it.
pub(crate) struct Held {
    pump: Arc<Pump>,
    key: usize,
    id: u64,
}

impl Held {
    /// Ready when the pump gave the connection back (take it with [`Held::take`]).
    pub(crate) fn poll_back(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.pump.state.lock();
        match state.held.get_mut(self.key).filter(|e| e.id == self.id) {
            Some(entry) if entry.back.is_none() => {
                match &mut entry.task {
                    Some(task) if task.will_wake(cx.waker()) => {}
                    task => *task = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// When the connection last read data; `None` when the pump gave it back already.
    pub(crate) fn last_read(&self) -> Option<Instant> {
        let state = self.pump.state.lock();
        state
            .held
            .get(self.key)
            .filter(|e| e.id == self.id && e.back.is_none())
            .map(|e| e.parked.flow.read_at())
    }

    /// Takes the connection back, with why the pump gave it back if it did; `None`
    /// only if it was taken already.
    pub(crate) fn take(&mut self) -> Option<(Parked, Option<Why>)> {
        let mut state = self.pump.state.lock();
        self.pump
            .remove(&mut state, self.key, self.id)
            .map(|e| (e.parked, e.back))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let entry = {
            let mut state = self.pump.state.lock();
            self.pump.remove(&mut state, self.key, self.id)
        };
        // Dropped outside the lock: dropping a publish marks the channel offline.
        drop(entry);
    }
}
