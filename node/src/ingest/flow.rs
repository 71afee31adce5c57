//! What a publishing connection's reads go through, from the bytes to the publish:
//! the buffer (with the room each read gets), the session's events, and the media of
//! one read handed to the hub in one go. The connection's task drives it while the
//! connection is its own, the ingest thread's [`super::pump::Pump`] while the pump holds
//! the socket; both read through [`Flow::read_from`] or the task's own reads.

use bytes::BytesMut;
use media::MediaKind;
use rtmp::{ServerEvent, ServerSession, SessionError};

use super::context::IngestContext;
use crate::hub::{PublishHandle, ReadBatch};

/// Spare read-buffer capacity reserved before each read. Small, because thousands of
/// connections each hold one; it grows when a large chunk needs it, and for a
/// connection whose reads keep filling it ([`ReadSize`]).
pub(super) const READ_RESERVE: usize = 8 * 1024;
/// The most spare capacity a read gets (a 6 Mbps stream brings about 15 KiB every
/// 20 ms, a keyframe several times that).
const READ_RESERVE_MAX: usize = 64 * 1024;

/// How much room each read of a connection gets: [`READ_RESERVE`], doubled (up to
/// [`READ_RESERVE_MAX`]) for a connection whose reads often fill it, so that a
/// high-bitrate stream needs one read per write of its publisher instead of two or
/// three; halved again when its reads stop filling it. An occasional large read (a
/// keyframe of an ordinary stream) does not grow it.
#[derive(Debug)]
struct ReadSize {
    room: usize,
    reads: u32,
    full: u32,
}

impl ReadSize {
    /// Reads per decision.
    const WINDOW: u32 = 64;

    fn new() -> ReadSize {
        ReadSize {
            room: READ_RESERVE,
            reads: 0,
            full: 0,
        }
    }

    /// Notes a read of `n` bytes into `room` bytes of spare capacity.
    fn after_read(&mut self, n: usize, room: usize) {
        self.reads += 1;
        if n >= room {
            self.full += 1;
        }
        if self.reads == Self::WINDOW {
            if self.full * 4 >= Self::WINDOW {
                self.room = (self.room * 2).min(READ_RESERVE_MAX);
            } else if self.full == 0 {
                self.room = (self.room / 2).max(READ_RESERVE);
            }
            self.reads = 0;
            self.full = 0;
        }
    }
}
/// What a connection's reads go through, from the bytes to the publish: the task's
/// while the connection is its own, the [`Pump`]'s while the pump holds the socket.
pub(crate) struct Flow {
    /// Received bytes not yet interpreted.
    pub(super) buf: BytesMut,
    /// The publish this connection holds, if any.
    pub(super) publish: Option<PublishHandle>,
    /// The messages of the current read, handed to the publish in one go.
    batch: ReadBatch,
    /// Room each read gets.
    read_size: ReadSize,
    /// Bytes read, on their way to the shared counter.
    ingest_bytes: crate::metric::BatchedCounter,
    /// When the last read returned data (the idle deadline counts from it, and the
    /// media it brought is stamped with it).
    pub(super) read_at: tokio::time::Instant,
}

impl Flow {
    pub(super) fn new(ctx: &IngestContext) -> Flow {
        Flow {
            buf: BytesMut::new(),
            publish: None,
            batch: ReadBatch::default(),
            read_size: ReadSize::new(),
            ingest_bytes: crate::metric::BatchedCounter::new(ctx.ingest_bytes.clone()),
            read_at: tokio::time::Instant::now(),
        }
    }

    /// When the last read returned data.
    pub(crate) fn read_at(&self) -> tokio::time::Instant {
        self.read_at
    }

    /// Makes room for the next read; returns how much there is.
    pub(super) fn prepare_read(&mut self) -> usize {
        if self.buf.is_empty() && self.buf.capacity() > 2 * self.read_size.room {
            // Reads got small again: give the large buffer back.
            self.buf = BytesMut::new();
        }
        self.buf.reserve(self.read_size.room);
        self.buf.capacity() - self.buf.len()
    }

    /// Notes a read of `n` bytes (more than none) into `room`.
    pub(super) fn after_read(&mut self, n: usize, room: usize) {
        // Only a publisher's reads earn room: before its key is accepted a connection
        // holds no more than the start.
        if self.publish.is_some() {
            self.read_size.after_read(n, room);
        }
        self.read_at = tokio::time::Instant::now();
        self.ingest_bytes.add_owned(n as u64);
    }

    /// Reads once from `socket` (non-blocking) straight into the buffer's spare room
    /// (at most [`READ_RESERVE_MAX`]): the bytes read (0 at the end of the stream) and
    /// the room they had. The pump's read.
    pub(crate) fn read_from(
        &mut self,
        socket: &std::net::TcpStream,
    ) -> std::io::Result<(usize, usize)> {
        let room = self.prepare_read().min(READ_RESERVE_MAX);
        let len = self.buf.len();
        let n = socket2::SockRef::from(socket).recv(&mut self.buf.spare_capacity_mut()[..room])?;
        // One of the node's two `unsafe` blocks (STYLE: forbidden unless justified per
        // use; ARCHITECTURE.md lists them). Reading
        // into an initialised buffer instead costs a copy of every byte received: with
        // a scratch buffer copied out, `memmove` was 12 % of the node's CPU samples at
        // 6 Mbps, and reading here costs 0.93-0.96x (BENCHMARKS.md, "Relay hot path,
        // round 5"); zeroing the spare room first would make every connection's whole
        // room resident. tokio reads into spare room the same way for the sockets it
        // owns (`try_read_buf`).
        #[allow(unsafe_code)]
        // SAFETY: `recv` returns how many bytes it wrote, from the start of the slice
        // it was given (the spare capacity just after `len`) and never more than the
        // slice's length (`room`, within the capacity): those `n` bytes are
        // initialised, so `len + n` bytes are.
        unsafe {
            self.buf.set_len(len + n);
        }
        if n > 0 {
            self.after_read(n, room);
        }
        Ok((n, room))
    }

    /// Interprets what is buffered up to the next event that needs the connection's
    /// attention (returned); the media on the way is handed to the publish (in one go
    /// per read: relays send it in one write).
    pub(crate) fn next_event(
        &mut self,
        session: &mut ServerSession,
    ) -> Result<Option<ServerEvent>, SessionError> {
        while let Some(ev) = session.next_event(&mut self.buf)? {
            if let Some(ev) = self.on_media(ev) {
                self.flush_delivered();
                return Ok(Some(ev));
            }
        }
        self.flush_delivered();
        Ok(None)
    }

    /// Hands the messages of the current read to the publish.
    fn flush_delivered(&mut self) {
        match &self.publish {
            Some(p) => p.stream.deliver_read(&mut self.batch, self.read_at),
            None => self.batch.clear(),
        }
    }

    /// Adds a media or metadata message to the read's batch (nothing when not
    /// publishing); gives back any other event.
    pub(super) fn on_media(&mut self, ev: ServerEvent) -> Option<ServerEvent> {
        if self.publish.is_none() {
            return match ev {
                ServerEvent::Metadata { .. } | ServerEvent::Video(_) | ServerEvent::Audio(_) => {
                    None
                }
                other => Some(other),
            };
        }
        match ev {
            ServerEvent::Metadata {
                timestamp, payload, ..
            } => self.batch.push_metadata(timestamp, payload),
            // An empty media message carries nothing: dropped here, before it costs a
            // relay queue slot.
            ServerEvent::Video(m) | ServerEvent::Audio(m) if m.payload.is_empty() => {}
            ServerEvent::Video(m) => {
                self.batch
                    .push_media(MediaKind::Video, m.timestamp, m.payload)
            }
            ServerEvent::Audio(m) => {
                self.batch
                    .push_media(MediaKind::Audio, m.timestamp, m.payload)
            }
            other => return Some(other),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_that_keep_filling_the_buffer_get_more_room_and_give_it_back() {
        let mut r = ReadSize::new();
        // An ordinary stream: a keyframe's three full reads in a window do not count.
        for i in 0..ReadSize::WINDOW {
            r.after_read(if i < 3 { 8192 } else { 1500 }, 8192);
        }
        assert_eq!(r.room, READ_RESERVE);
        // A high-bitrate stream: every other read full.
        for _ in 0..3 {
            for i in 0..ReadSize::WINDOW {
                r.after_read(if i % 2 == 0 { r.room } else { 4000 }, r.room);
            }
        }
        assert_eq!(r.room, 64 * 1024);
        for _ in 0..10 {
            for _ in 0..ReadSize::WINDOW {
                r.after_read(r.room, r.room);
            }
        }
        assert_eq!(r.room, READ_RESERVE_MAX, "at most");
        // Reads shrink: the room halves, window by window, to the start.
        for _ in 0..4 {
            for _ in 0..ReadSize::WINDOW {
                r.after_read(1500, r.room);
            }
        }
        assert_eq!(r.room, READ_RESERVE);
    }

    /// The pump's read, which writes into the buffer's spare room (the node's one
    /// `unsafe`): the buffer ends up holding what was there, then exactly the bytes
    /// sent, in order, each read within its room; nothing waiting leaves it untouched;
    /// the end of the stream reads 0.
    #[test]
    fn the_pumps_read_appends_exactly_what_arrived() {
        use std::io::{ErrorKind, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut flow = Flow {
            buf: BytesMut::from(&b"left"[..]),
            publish: None,
            batch: ReadBatch::default(),
            read_size: ReadSize::new(),
            ingest_bytes: crate::metric::BatchedCounter::new(metrics::Counter::noop()),
            read_at: tokio::time::Instant::now(),
        };
        let e = flow.read_from(&server).expect_err("nothing sent yet");
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        assert_eq!(&flow.buf[..], b"left");

        // More than the largest room, so that it takes several reads.
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            std::thread::spawn(move || {
                client.write_all(&sent).unwrap();
                // Dropped: the end of the stream.
            })
        };
        let (mut reads, mut end) = (0, false);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !end {
            assert!(
                std::time::Instant::now() < deadline,
                "read {} bytes",
                flow.buf.len()
            );
            let before = flow.buf.len();
            match flow.read_from(&server) {
                Ok((0, _)) => end = true,
                Ok((n, room)) => {
                    reads += 1;
                    assert!(n <= room && room <= READ_RESERVE_MAX, "{n} {room}");
                    assert_eq!(flow.buf.len(), before + n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert_eq!(flow.buf.len(), before);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        writer.join().unwrap();
        assert!(reads >= 300_000 / READ_RESERVE_MAX, "{reads} reads");
        assert_eq!(&flow.buf[..4], b"left");
        assert!(flow.buf[4..] == sent[..], "the bytes differ");
    }
}
