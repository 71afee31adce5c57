//! Server session: what an ingest server says to OBS, ffmpeg or GStreamer (RTMP 1.0
//! section 7.2; command order as OBS/librtmp/ffmpeg send it).
//!
//! connect → (Window Ack Size, Set Peer Bandwidth, Set Chunk Size, `_result`
//! NetConnection.Connect.Success) → releaseStream / FCPublish / createStream
//! (`_result` with the stream id) → publish(name) → the driver decides →
//! (StreamBegin, `onStatus` NetStream.Publish.Start) or (`onStatus` level `error`
//! NetStream.Publish.BadName). `Publish.Start` is never sent before the driver
//! accepted the name.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{SessionError, StreamName, Transport, DEFAULT_WINDOW_ACK_SIZE};
use crate::amf0::Amf0Value;
use crate::chunk::{ChunkLimits, OutputQueue, RawMessage};
use crate::message::{self, Command, Message};

/// Most message streams (createStream) one connection may open.
pub const MAX_STREAMS_PER_CONNECTION: usize = 8;

/// Chunk-layer limits before a publish is accepted. What a publisher sends before then
/// (connect, releaseStream, FCPublish, createStream, publish) is a few hundred bytes a
/// message on one or two chunk streams; these bounds keep what an unauthenticated peer
/// can make the server hold to a few tens of KiB. They bound what costs memory (the
/// message size, the unfinished bytes, the chunk streams), never what costs nothing by
/// itself: any chunk size the protocol allows (up to 2^31-1, RTMP 1.0 5.4.1) is
/// accepted, since a chunk can never carry more than its message. The smallest chunk
/// size stays [`crate::chunk::MIN_CHUNK_SIZE`]: below it every few bytes would cost a
/// header parse, on the publish that follows too.
pub const PRE_PUBLISH_LIMITS: ChunkLimits = ChunkLimits {
    max_message_size: 32 * 1024,
    max_chunk_streams: 8,
    max_partial_bytes: 32 * 1024,
    max_chunk_size: crate::chunk::MAX_CHUNK_SIZE,
    min_chunk_size: crate::chunk::MIN_CHUNK_SIZE,
};

/// Settings of a server session.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Limits of the chunk reader once a publish is accepted.
    pub chunk_limits: ChunkLimits,
    /// Limits until then: whatever a client sends before it is trusted must cost
    /// little. Data messages are not AMF-decoded until then either.
    pub pre_publish_limits: ChunkLimits,
    /// Outgoing chunk size announced after connect.
    pub out_chunk_size: u32,
    /// Window acknowledgement size announced to the client.
    pub window_ack_size: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            chunk_limits: ChunkLimits::default(),
            pre_publish_limits: PRE_PUBLISH_LIMITS,
            out_chunk_size: 4096,
            window_ack_size: DEFAULT_WINDOW_ACK_SIZE,
        }
    }
}

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// The client asked to connect to `app` (query string removed). Answer with
    /// [`ServerSession::accept_connect`] or [`ServerSession::reject_connect`].
    ConnectRequested {
        app: String,
    },
    /// The client asked to publish. Answer with [`ServerSession::accept_publish`] or
    /// [`ServerSession::reject_publish`].
    PublishRequested {
        stream_id: u32,
        name: StreamName,
    },
    /// Metadata for the published stream, as `onMetaData` + object (the
    /// `@setDataFrame` wrapper removed).
    Metadata {
        stream_id: u32,
        timestamp: u32,
        payload: Bytes,
    },
    Audio(RawMessage),
    Video(RawMessage),
    /// The client ended the publish (FCUnpublish, closeStream or deleteStream).
    Unpublished {
        stream_id: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Created,
    PublishPending,
    Publishing,
}

/// The message streams of a connection and their states: at most
/// [`MAX_STREAMS_PER_CONNECTION`], looked up for every media message, so kept in a
/// small array inside the session.
#[derive(Debug)]
struct StreamTable {
    entries: [(u32, StreamState); MAX_STREAMS_PER_CONNECTION],
    len: usize,
}

impl Default for StreamTable {
    fn default() -> Self {
        StreamTable {
            entries: [(0, StreamState::Created); MAX_STREAMS_PER_CONNECTION],
            len: 0,
        }
    }
}

impl StreamTable {
    fn iter(&self) -> impl Iterator<Item = &(u32, StreamState)> {
        self.entries[..self.len].iter()
    }

    fn get(&self, id: u32) -> Option<StreamState> {
        self.iter().find(|(i, _)| *i == id).map(|(_, s)| *s)
    }

    /// Sets the state of stream `id`; a new stream beyond the capacity is ignored
    /// (createStream checks the count first).
    fn insert(&mut self, id: u32, state: StreamState) {
        if let Some(slot) = self.entries[..self.len].iter_mut().find(|(i, _)| *i == id) {
            slot.1 = state;
        } else if self.len < MAX_STREAMS_PER_CONNECTION {
            self.entries[self.len] = (id, state);
            self.len += 1;
        }
    }

    fn remove(&mut self, id: u32) {
        let found = self.iter().position(|(s, _)| *s == id);
        if let Some(i) = found {
            self.entries.copy_within(i + 1..self.len, i);
            self.len -= 1;
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectState {
    AwaitConnect,
    ConnectPending { transaction_id: u64 },
    Connected,
}

/// The server side of one RTMP connection.
#[derive(Debug)]
pub struct ServerSession {
    /// Settings.
    config: ServerConfig,
    /// Chunk layer and acknowledgements.
    transport: Transport,
    /// Connect progress.
    connect: ConnectState,
    /// Message streams created by the client.
    streams: StreamTable,
    /// Next id handed out by createStream.
    next_stream_id: u32,
    /// A publish was accepted: the looser limits apply.
    trusted: bool,
    /// Events of the last message not handed out yet (FCUnpublish can end several
    /// streams).
    pending: VecDeque<ServerEvent>,
}

impl ServerSession {
    pub fn new(config: ServerConfig) -> Self {
        let transport = Transport::new(config.pre_publish_limits, config.window_ack_size, false);
        Self {
            config,
            transport,
            connect: ConnectState::AwaitConnect,
            streams: StreamTable::default(),
            next_stream_id: 1,
            trusted: false,
            pending: VecDeque::new(),
        }
    }

    /// Bytes to write to the client.
    pub fn output(&mut self) -> &mut OutputQueue {
        self.transport.output()
    }

    /// Whether a publish was accepted on this connection (its limits are the looser
    /// ones from then on).
    pub fn is_trusted(&self) -> bool {
        self.trusted
    }

    /// Whether a stream is publishing.
    pub fn is_publishing(&self, stream_id: u32) -> bool {
        self.streams.get(stream_id) == Some(StreamState::Publishing)
    }

    /// Feeds received bytes (after the handshake); pushes what happened to `events`.
    /// Stops after a `ConnectRequested` or `PublishRequested` so the driver can answer
    /// before later messages are interpreted.
    pub fn handle_bytes(
        &mut self,
        buf: &mut BytesMut,
        events: &mut Vec<ServerEvent>,
    ) -> Result<(), SessionError> {
        while let Some(ev) = self.next_event(buf)? {
            let answer_first = matches!(
                ev,
                ServerEvent::ConnectRequested { .. } | ServerEvent::PublishRequested { .. }
            );
            events.push(ev);
            if answer_first {
                break;
            }
        }
        Ok(())
    }

    /// The next thing that happened in the received bytes (after the handshake), one
    /// at a time, so that the driver acts on each (answers a publish request, say)
    /// before later messages are interpreted. `None`: more bytes are needed.
    ///
    /// Audio and video of a publishing stream, the bulk of the traffic, come out as
    /// they arrived, without going through the generic message decoding.
    pub fn next_event(&mut self, buf: &mut BytesMut) -> Result<Option<ServerEvent>, SessionError> {
        if let Some(ev) = self.pending.pop_front() {
            return Ok(Some(ev));
        }
        loop {
            let Some(raw) = self.transport.next_raw(buf)? else {
                return Ok(None);
            };
            match raw.type_id {
                message::MSG_AUDIO | message::MSG_VIDEO => {
                    // Media before an accepted publish is dropped.
                    if self.is_publishing(raw.stream_id) {
                        return Ok(Some(if raw.type_id == message::MSG_AUDIO {
                            ServerEvent::Audio(raw)
                        } else {
                            ServerEvent::Video(raw)
                        }));
                    }
                }
                _ => {
                    let msg = self.transport.interpret(raw)?;
                    self.handle_message(msg)?;
                    if let Some(ev) = self.pending.pop_front() {
                        return Ok(Some(ev));
                    }
                }
            }
        }
    }

    /// Acts on a message other than audio and video ([`ServerSession::next_event`]
    /// takes those before decoding); what the driver must know goes to `pending`.
    fn handle_message(&mut self, msg: Message) -> Result<(), SessionError> {
        match msg {
            Message::Command(cmd) => self.handle_command(cmd),
            Message::Data { values, raw } if self.is_publishing(raw.stream_id) => {
                if let Some(payload) = message::metadata_payload(&values, &raw.payload) {
                    self.pending.push_back(ServerEvent::Metadata {
                        stream_id: raw.stream_id,
                        timestamp: raw.timestamp,
                        payload,
                    });
                }
                Ok(())
            }
            // Data before an accepted publish, acks, bandwidth: nothing to do.
            _ => Ok(()),
        }
    }

    fn handle_command(&mut self, cmd: Command) -> Result<(), SessionError> {
        let connected = self.connect == ConnectState::Connected;
        match cmd.name.as_str() {
            "connect" => {
                if self.connect != ConnectState::AwaitConnect {
                    return Err(SessionError::Protocol("connect sent twice"));
                }
                let app = cmd
                    .object
                    .get("app")
                    .and_then(|a| a.as_str())
                    .unwrap_or_default();
                let app = app
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches('/');
                self.connect = ConnectState::ConnectPending {
                    transaction_id: cmd.transaction_id as u64,
                };
                self.pending.push_back(ServerEvent::ConnectRequested {
                    app: app.to_owned(),
                });
            }
            _ if !connected => return Err(SessionError::Protocol("command before connect")),
            "releaseStream" | "FCPublish" => self.reply_result(&cmd, Amf0Value::Undefined),
            "createStream" => {
                if self.streams.len() >= MAX_STREAMS_PER_CONNECTION {
                    return Err(SessionError::Protocol("too many createStream calls"));
                }
                let id = self.next_stream_id;
                self.next_stream_id += 1;
                self.streams.insert(id, StreamState::Created);
                self.reply_result(&cmd, Amf0Value::Number(id as f64));
            }
            "publish" => {
                let sid = cmd.stream_id;
                if self.streams.get(sid) != Some(StreamState::Created) {
                    return Err(SessionError::Protocol(
                        "publish on a stream that was not created",
                    ));
                }
                let name = cmd
                    .args
                    .first()
                    .and_then(|a| a.as_str())
                    .unwrap_or_default();
                self.streams.insert(sid, StreamState::PublishPending);
                self.pending.push_back(ServerEvent::PublishRequested {
                    stream_id: sid,
                    name: StreamName::new(name),
                });
            }
            "FCUnpublish" | "closeStream" | "deleteStream" => {
                let sid = if cmd.name == "deleteStream" {
                    cmd.args.first().and_then(|a| a.as_number()).unwrap_or(0.0) as u32
                } else {
                    cmd.stream_id
                };
                // FCUnpublish arrives on stream 0 naming the stream: end every publish.
                let ended: Vec<u32> =
                    if cmd.name == "FCUnpublish" || self.streams.get(sid).is_none() {
                        self.streams
                            .iter()
                            .filter(|(_, s)| *s == StreamState::Publishing)
                            .map(|(id, _)| *id)
                            .collect()
                    } else {
                        vec![sid]
                    };
                for id in ended {
                    if self.streams.get(id) == Some(StreamState::Publishing) {
                        self.streams.insert(id, StreamState::Created);
                        self.pending
                            .push_back(ServerEvent::Unpublished { stream_id: id });
                    }
                }
                if cmd.name == "deleteStream" {
                    self.streams.remove(sid);
                }
                if cmd.name == "FCUnpublish" {
                    self.reply_result(&cmd, Amf0Value::Undefined);
                }
            }
            "play" | "play2" => {
                self.transport.send(&message::on_status(
                    cmd.stream_id,
                    "error",
                    "NetStream.Play.Failed",
                    "this server accepts publishers only",
                ));
            }
            // getStreamLength, _checkbw, setDataFrame as command...: answered with
            // nothing, as FMS does for unknown calls without a transaction.
            _ => {}
        }
        Ok(())
    }

    fn reply_result(&mut self, cmd: &Command, value: Amf0Value) {
        if cmd.transaction_id != 0.0 {
            self.transport.send(&message::command(
                0,
                &[
                    Amf0Value::string("_result"),
                    Amf0Value::Number(cmd.transaction_id),
                    Amf0Value::Null,
                    value,
                ],
            ));
        }
    }

    /// Accepts the pending connect.
    pub fn accept_connect(&mut self) {
        let ConnectState::ConnectPending { transaction_id } = self.connect else {
            return;
        };
        self.connect = ConnectState::Connected;
        let t = &mut self.transport;
        t.send(&message::window_ack_size(self.config.window_ack_size));
        t.send(&message::set_peer_bandwidth(self.config.window_ack_size, 2));
        t.set_out_chunk_size(self.config.out_chunk_size);
        t.send(&message::command(
            0,
            &[
                Amf0Value::string("_result"),
                Amf0Value::Number(transaction_id as f64),
                Amf0Value::object([
                    ("fmsVer", Amf0Value::string("FMS/3,5,7,7009")),
                    ("capabilities", Amf0Value::Number(31.0)),
                    ("mode", Amf0Value::Number(1.0)),
                ]),
                Amf0Value::object([
                    ("level", Amf0Value::string("status")),
                    ("code", Amf0Value::string("NetConnection.Connect.Success")),
                    ("description", Amf0Value::string("Connection succeeded.")),
                    ("objectEncoding", Amf0Value::Number(0.0)),
                ]),
            ],
        ));
    }

    /// Rejects the pending connect with an `_error` the client can show.
    pub fn reject_connect(&mut self, description: &str) {
        let ConnectState::ConnectPending { transaction_id } = self.connect else {
            return;
        };
        self.transport.send(&message::command(
            0,
            &[
                Amf0Value::string("_error"),
                Amf0Value::Number(transaction_id as f64),
                Amf0Value::Null,
                Amf0Value::object([
                    ("level", Amf0Value::string("error")),
                    ("code", Amf0Value::string("NetConnection.Connect.Rejected")),
                    ("description", Amf0Value::string(description)),
                ]),
            ],
        ));
    }

    /// Accepts a pending publish: StreamBegin, then NetStream.Publish.Start.
    pub fn accept_publish(&mut self, stream_id: u32) {
        if self.streams.get(stream_id) != Some(StreamState::PublishPending) {
            return;
        }
        self.streams.insert(stream_id, StreamState::Publishing);
        self.transport.trust(self.config.chunk_limits);
        self.trusted = true;
        self.transport
            .send(&message::user_control(message::UC_STREAM_BEGIN, stream_id));
        self.transport.send(&message::on_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            "Start publishing",
        ));
    }

    /// Rejects a pending publish with an error-level `onStatus` (e.g.
    /// `NetStream.Publish.BadName`), which ffmpeg and OBS show and do not retry. The
    /// driver closes the connection after flushing it.
    pub fn reject_publish(&mut self, stream_id: u32, code: &str, description: &str) {
        self.streams.insert(stream_id, StreamState::Created);
        self.transport
            .send(&message::on_status(stream_id, "error", code, description));
    }
}
