//! The publishing client: drives an [`rtmp::ClientSession`] over a stream, in the
//! order OBS and librtmp use (RTMP 1.0 section 7.2): handshake, connect,
//! releaseStream / FCPublish / createStream, publish, then metadata and media, and
//! FCUnpublish / deleteStream at the end.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtmp::handshake::{ClientHandshake, HandshakeError, HandshakeKind};
use rtmp::{ClientConfig, ClientEvent, ClientSession, SessionError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::write::{write_queued, WriteError};

/// Read-buffer space reserved before each read (server replies are small).
const READ_RESERVE: usize = 4096;

/// How a [`Publisher`] behaves.
#[derive(Debug, Clone, Copy)]
pub struct PublisherOptions {
    /// Simple (what ffmpeg and OBS accept everywhere) or digest handshake.
    pub handshake: HandshakeKind,
    /// Deadline of every write: a server that stops reading fails the publisher.
    pub write_timeout: Duration,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        Self {
            handshake: HandshakeKind::Simple,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("server stalled: {0}")]
    Write(#[from] WriteError),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("protocol: {0}")]
    Protocol(#[from] SessionError),
    #[error("server refused: {code} {description}")]
    Refused { code: String, description: String },
    #[error("server closed the connection")]
    Closed,
}

impl PublishError {
    /// The server answered with an RTMP error status (as opposed to a network or
    /// protocol failure).
    pub fn is_refusal(&self) -> bool {
        matches!(self, PublishError::Refused { .. })
    }
}

/// A connection that publishes one stream.
#[derive(Debug)]
pub struct Publisher<S> {
    /// The stream to the server.
    io: S,
    /// Protocol state.
    session: ClientSession,
    /// Received bytes not yet interpreted.
    buf: BytesMut,
    /// Behaviour settings.
    options: PublisherOptions,
    /// From the moment the publish command was written to `NetStream.Publish.Start`.
    publish_latency: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Publisher<S> {
    /// Handshakes, connects and publishes; returns once the server answered
    /// `NetStream.Publish.Start`. A refusal is [`PublishError::Refused`] with the
    /// server's code and description. Bound the whole call with a timeout: a server
    /// that never answers is waited for.
    pub async fn publish(
        mut io: S,
        config: ClientConfig,
        options: PublisherOptions,
    ) -> Result<Self, PublishError> {
        let mut buf = BytesMut::new();
        let mut out = BytesMut::new();
        let mut hs = ClientHandshake::new(options.handshake);
        hs.start(&mut out);
        loop {
            if !out.is_empty() {
                io.write_all(&out).await?;
                out.clear();
            }
            if hs.read(&mut buf, &mut out)? {
                io.write_all(&out).await?;
                break;
            }
            read_more(&mut io, &mut buf).await?;
        }
        let mut session = ClientSession::new(config);
        session.start();
        let mut publish_sent = None;
        let mut events = Vec::new();
        loop {
            // Answer what arrived before waiting for more: the server waits for us.
            session.handle_bytes(&mut buf, &mut events)?;
            let carries_publish = publish_sent.is_none() && session.is_publish_pending();
            write_queued(&mut io, session.output(), options.write_timeout).await?;
            if carries_publish {
                publish_sent = Some(Instant::now());
            }
            match events.drain(..).next() {
                Some(ClientEvent::Publishing) => {
                    let publish_latency = publish_sent.map_or(Duration::ZERO, |t| t.elapsed());
                    return Ok(Publisher {
                        io,
                        session,
                        buf,
                        options,
                        publish_latency,
                    });
                }
                Some(ClientEvent::Rejected { code, description }) => {
                    return Err(PublishError::Refused { code, description })
                }
                None => {}
            }
            read_more(&mut io, &mut buf).await?;
        }
    }

    /// Time from writing the publish command to the server's `NetStream.Publish.Start`.
    pub fn publish_latency(&self) -> Duration {
        self.publish_latency
    }

    /// Queues an audio (8) or video (9) message; the payload is shared, not copied.
    pub fn send_media(&mut self, type_id: u8, timestamp: u32, payload: Bytes) {
        self.session.send_media(type_id, timestamp, payload);
    }

    /// Queues `@setDataFrame` with an `onMetaData` body.
    pub fn send_metadata(&mut self, timestamp: u32, on_metadata: &Bytes) {
        self.session.send_metadata(timestamp, on_metadata);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&mut self) -> usize {
        self.session.output().len()
    }

    /// Writes everything queued under the write deadline; returns the bytes written.
    pub async fn flush(&mut self) -> Result<u64, PublishError> {
        Ok(write_queued(
            &mut self.io,
            self.session.output(),
            self.options.write_timeout,
        )
        .await?)
    }

    /// Reads and interprets what the server sent (acknowledgements, pings, statuses)
    /// without waiting for more; answers are queued for the next flush. Fails when the
    /// server closed the connection or refused the stream.
    pub async fn poll_incoming(&mut self) -> Result<(), PublishError> {
        loop {
            self.buf.reserve(READ_RESERVE);
            match tokio::time::timeout(Duration::ZERO, self.io.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => return Err(PublishError::Closed),
                Ok(Ok(_)) => self.interpret()?,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Ok(()),
            }
        }
    }

    /// Waits until the server ends the connection, interpreting what it sends on the
    /// way: [`PublishError::Closed`] for a close, [`PublishError::Refused`] when an
    /// error status came first, or the I/O or protocol failure.
    pub async fn closed(&mut self) -> PublishError {
        loop {
            if let Err(e) = read_more(&mut self.io, &mut self.buf).await {
                return e;
            }
            if let Err(e) = self.interpret() {
                return e;
            }
        }
    }

    fn interpret(&mut self) -> Result<(), PublishError> {
        let mut events = Vec::new();
        self.session.handle_bytes(&mut self.buf, &mut events)?;
        for e in events {
            if let ClientEvent::Rejected { code, description } = e {
                return Err(PublishError::Refused { code, description });
            }
        }
        Ok(())
    }

    /// Ends the publish: FCUnpublish and deleteStream, written, then the write side shut.
    pub async fn finish(mut self) -> Result<(), PublishError> {
        self.session.finish();
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }

    /// The stream, the session and unread bytes, for a driver that reads and writes
    /// concurrently (the relay splits the stream in two).
    pub fn into_parts(self) -> (S, ClientSession, BytesMut) {
        (self.io, self.session, self.buf)
    }

    /// The underlying stream (e.g. to write raw bytes in a test).
    pub fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

/// One read into `buf`; a clean end of stream is [`PublishError::Closed`].
async fn read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<(), PublishError> {
    buf.reserve(READ_RESERVE);
    if io.read_buf(buf).await? == 0 {
        return Err(PublishError::Closed);
    }
    Ok(())
}
