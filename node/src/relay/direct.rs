//! The direct path of a plain-TCP relay: ingest writes a read's messages straight to
//! the upstream's socket while nothing waits before them.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rtmp::{ClientEvent, ClientSession};
use rtmp_io::write_available;
use tokio::net::TcpStream;

use super::error::RelayError;
use super::RelayLink;
use crate::hub::StreamMessage;

/// The sending side of a plain-TCP relay connection while it publishes, shared by the
/// relay task and the ingest task (the same thread: a stream's relays run on its
/// ingest runtime). Ingest chunks the messages of a socket read into the session's
/// output and writes them in one write, straight to the socket, when nothing is
/// queued or unsent before them; otherwise the messages go to the bounded queue, which
/// the relay task drains. What it saves per message is the queue entry, the wake-up
/// and the poll of the relay task, and per read all writes but one.
pub(super) struct DirectPath {
    pub(super) session: ClientSession,
    pub(super) socket: Arc<TcpStream>,
    /// A write failed on the ingest side; the relay task reports it.
    pub(super) failed: Option<std::io::Error>,
}

impl DirectPath {
    /// Writes what the session has queued, without waiting: returns the bytes the
    /// socket took (the rest stays queued in the session).
    pub(super) fn write_now(&mut self) -> std::io::Result<u64> {
        let socket = &self.socket;
        // send/sendmsg, not write/writev: a socket write without the file layer (no
        // file position lock); `try_io` keeps tokio's readiness right on WouldBlock.
        write_available(self.session.output(), |slices| {
            socket.try_io(tokio::io::Interest::WRITABLE, || {
                let socket = socket2::SockRef::from(socket.as_ref());
                match slices {
                    [one] => socket.send(one),
                    _ => socket.send_vectored(slices),
                }
            })
        })
    }

    pub(super) fn unsent(&mut self) -> bool {
        !self.session.output().is_empty()
    }
}

impl RelayLink {
    /// Sends `messages` straight to the upstream, in one write, if the direct path is
    /// open, nothing is queued or unsent before them, and the queue is not skipping to
    /// a keyframe; `false` when they must go through the queue. What the socket does
    /// not take now, the relay task finishes when it is writable again (what follows
    /// waits in the queue meanwhile).
    pub(super) fn send_direct(&self, messages: &[StreamMessage]) -> bool {
        let Some(mut guard) = self.direct.try_lock() else {
            return false;
        };
        let Some(direct) = guard.as_mut() else {
            return false;
        };
        // Chunking them does not touch the queue, so whether it skips cannot change
        // halfway: the read's messages go this way all or none.
        if messages.is_empty()
            || direct.failed.is_some()
            || direct.unsent()
            || !self.queue.is_flowing()
        {
            return false;
        }
        for m in messages {
            send_message(&mut direct.session, m);
        }
        match direct.write_now() {
            Ok(n) => {
                self.count_sent(n);
                if direct.unsent() {
                    self.queue.wake();
                }
            }
            Err(e) => {
                direct.failed = Some(e);
                self.queue.wake();
            }
        }
        true
    }

    pub(super) fn count_sent(&self, n: u64) {
        self.queue.stats.bytes_sent.fetch_add(n, Relaxed);
        self.bytes_sent.add(n);
    }
}

/// Interprets what the upstream sent (acknowledgements, pings, statuses); a refusal
/// ends the connection.
pub(super) fn handle_replies(
    session: &mut ClientSession,
    buf: &mut bytes::BytesMut,
    events: &mut Vec<ClientEvent>,
) -> Result<(), RelayError> {
    session.handle_bytes(buf, events)?;
    for e in events.drain(..) {
        if let ClientEvent::Rejected { code, description } = e {
            return Err(RelayError::Refused { code, description });
        }
    }
    Ok(())
}

/// Puts one message of the stream into the session's output.
pub(super) fn send_message(session: &mut ClientSession, message: &StreamMessage) {
    match message {
        StreamMessage::Media {
            kind,
            timestamp,
            payload,
        } => session.send_media_ref(kind.flv_tag_type(), *timestamp, payload),
        StreamMessage::Metadata { timestamp, payload } => {
            session.send_metadata(*timestamp, payload)
        }
    }
}

/// Closes the direct path when the relay task leaves its connection, however it
/// leaves it.
pub(super) struct DirectGuard<'a>(pub(super) &'a RelayLink);

impl Drop for DirectGuard<'_> {
    fn drop(&mut self) {
        *self.0.direct.lock() = None;
    }
}
