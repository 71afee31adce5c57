//! Client session: publishing to an upstream RTMP server (the relay), in the order
//! librtmp/OBS use: connect → releaseStream, FCPublish, createStream → publish →
//! `onStatus` NetStream.Publish.Start → metadata and media → FCUnpublish, deleteStream.

use bytes::{Bytes, BytesMut};

use super::{info_code, info_field, SessionError, Transport, DEFAULT_WINDOW_ACK_SIZE};
use crate::amf0::Amf0Value;
use crate::chunk::{ChunkLimits, OutputQueue};
use crate::message::{self, Command, Message};

const TXN_CONNECT: f64 = 1.0;
const TXN_RELEASE: f64 = 2.0;
const TXN_FCPUBLISH: f64 = 3.0;
const TXN_CREATE_STREAM: f64 = 4.0;
const TXN_PUBLISH: f64 = 5.0;

/// Settings of a client session.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Application name (the path's first segment), e.g. `live`.
    pub app: String,
    /// The tcUrl: `rtmp://host:port/app`.
    pub tc_url: String,
    /// Name to publish under.
    pub stream_name: String,
    /// Outgoing chunk size (large: fewer headers per frame).
    pub out_chunk_size: u32,
    /// Limits of the chunk reader.
    pub chunk_limits: ChunkLimits,
}

/// Chunk-layer limits on what a server may send a publishing client. A server only
/// ever answers a publisher with small control and status messages (acknowledgements,
/// pings, `_result`, `onStatus`: a few hundred bytes each), so a server (an upstream a
/// channel's owner chose, say) cannot make the client hold more than about 128 KiB
/// (the room reserved for 8 unfinished 16 KiB messages) however it chunks what it
/// sends. Any chunk size is accepted: it costs nothing by itself.
pub const SERVER_REPLY_LIMITS: ChunkLimits = ChunkLimits {
    max_message_size: 16 * 1024,
    max_chunk_streams: 8,
    max_partial_bytes: 32 * 1024,
    max_chunk_size: crate::chunk::MAX_CHUNK_SIZE,
    min_chunk_size: crate::chunk::MIN_CHUNK_SIZE,
};

impl ClientConfig {
    /// A configuration with the customary defaults (and [`SERVER_REPLY_LIMITS`]).
    pub fn new(app: &str, tc_url: &str, stream_name: &str) -> Self {
        Self {
            app: app.to_owned(),
            tc_url: tc_url.to_owned(),
            stream_name: stream_name.to_owned(),
            out_chunk_size: 60_000,
            chunk_limits: SERVER_REPLY_LIMITS,
        }
    }
}

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The server accepted the publish: send metadata, sequence headers and media.
    Publishing,
    /// The server refused the connect or the publish.
    Rejected { code: String, description: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Connecting,
    CreatingStream,
    PublishPending,
    Publishing,
    Finished,
}

/// The client side of one RTMP connection.
#[derive(Debug)]
pub struct ClientSession {
    /// Settings.
    config: ClientConfig,
    /// Chunk layer and acknowledgements.
    transport: Transport,
    /// Progress of the command exchange.
    state: State,
    /// Message stream id the server gave us.
    stream_id: u32,
}

impl ClientSession {
    pub fn new(config: ClientConfig) -> Self {
        let transport = Transport::new(config.chunk_limits, DEFAULT_WINDOW_ACK_SIZE, true);
        Self {
            config,
            transport,
            state: State::Idle,
            stream_id: 0,
        }
    }

    /// Bytes to write to the server.
    pub fn output(&mut self) -> &mut OutputQueue {
        self.transport.output()
    }

    /// Whether the publish command was sent and its answer is awaited.
    pub fn is_publish_pending(&self) -> bool {
        self.state == State::PublishPending
    }

    /// Bytes of unfinished messages from the server held now (at most the chunk
    /// limits' `max_partial_bytes`).
    pub fn partial_bytes(&self) -> usize {
        self.transport.partial_bytes()
    }

    /// Whether media may be sent.
    pub fn is_publishing(&self) -> bool {
        self.state == State::Publishing
    }

    /// Queues Set Chunk Size and connect. Call once, after the handshake.
    pub fn start(&mut self) {
        if self.state != State::Idle {
            return;
        }
        self.state = State::Connecting;
        self.transport
            .set_out_chunk_size(self.config.out_chunk_size);
        self.transport.send(&message::command(
            0,
            &[
                Amf0Value::string("connect"),
                Amf0Value::Number(TXN_CONNECT),
                Amf0Value::object([
                    ("app", Amf0Value::string(self.config.app.clone())),
                    ("type", Amf0Value::string("nonprivate")),
                    (
                        "flashVer",
                        Amf0Value::string("FMLE/3.0 (compatible; streamgate)"),
                    ),
                    ("tcUrl", Amf0Value::string(self.config.tc_url.clone())),
                ]),
            ],
        ));
    }

    /// Feeds received bytes; pushes what happened to `events`.
    pub fn handle_bytes(
        &mut self,
        buf: &mut BytesMut,
        events: &mut Vec<ClientEvent>,
    ) -> Result<(), SessionError> {
        while let Some(msg) = self.transport.next_message(buf)? {
            if let Message::Command(cmd) = msg {
                self.handle_command(cmd, events);
            }
        }
        Ok(())
    }

    fn call(&mut self, name: &str, txn: f64, stream_id: u32, args: Vec<Amf0Value>) {
        let mut values = vec![
            Amf0Value::string(name),
            Amf0Value::Number(txn),
            Amf0Value::Null,
        ];
        values.extend(args);
        self.transport.send(&message::command(stream_id, &values));
    }

    fn handle_command(&mut self, cmd: Command, events: &mut Vec<ClientEvent>) {
        let all: Vec<Amf0Value> = std::iter::once(cmd.object.clone())
            .chain(cmd.args.clone())
            .collect();
        match (cmd.name.as_str(), self.state) {
            ("_result", State::Connecting) if cmd.transaction_id == TXN_CONNECT => {
                self.state = State::CreatingStream;
                let name = Amf0Value::string(self.config.stream_name.clone());
                self.call("releaseStream", TXN_RELEASE, 0, vec![name.clone()]);
                self.call("FCPublish", TXN_FCPUBLISH, 0, vec![name]);
                self.call("createStream", TXN_CREATE_STREAM, 0, vec![]);
            }
            ("_result", State::CreatingStream) if cmd.transaction_id == TXN_CREATE_STREAM => {
                self.stream_id = cmd.args.first().and_then(|a| a.as_number()).unwrap_or(1.0) as u32;
                self.state = State::PublishPending;
                let args = vec![
                    Amf0Value::string(self.config.stream_name.clone()),
                    Amf0Value::string("live"),
                ];
                self.call("publish", TXN_PUBLISH, self.stream_id, args);
            }
            ("_error", State::Connecting | State::CreatingStream) => {
                self.state = State::Finished;
                events.push(ClientEvent::Rejected {
                    code: info_code(&all).unwrap_or("_error").to_owned(),
                    description: info_field(&all, "description")
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
            ("onStatus", State::PublishPending | State::Publishing) => {
                let code = info_code(&all).unwrap_or_default();
                let level = info_field(&all, "level").unwrap_or_default();
                if code == "NetStream.Publish.Start" && self.state == State::PublishPending {
                    self.state = State::Publishing;
                    events.push(ClientEvent::Publishing);
                } else if level == "error" {
                    self.state = State::Finished;
                    events.push(ClientEvent::Rejected {
                        code: code.to_owned(),
                        description: info_field(&all, "description")
                            .unwrap_or_default()
                            .to_owned(),
                    });
                }
            }
            _ => {}
        }
    }

    /// Queues a metadata message (`onMetaData`, {...}) as `@setDataFrame`.
    pub fn send_metadata(&mut self, timestamp: u32, on_metadata: &Bytes) {
        if !self.is_publishing() {
            return;
        }
        let mut payload = BytesMut::with_capacity(on_metadata.len() + 16);
        Amf0Value::string("@setDataFrame").encode(&mut payload);
        payload.extend_from_slice(on_metadata);
        self.transport
            .send(&message::data(self.stream_id, timestamp, payload.freeze()));
    }

    /// Queues an audio (8) or video (9) message; a large payload is shared, not
    /// copied.
    pub fn send_media(&mut self, type_id: u8, timestamp: u32, payload: Bytes) {
        self.send_media_ref(type_id, timestamp, &payload);
    }

    /// [`ClientSession::send_media`] for a payload the caller keeps: a small one is
    /// copied without ever being referenced.
    pub fn send_media_ref(&mut self, type_id: u8, timestamp: u32, payload: &Bytes) {
        if !self.is_publishing() {
            return;
        }
        self.transport
            .send_media(type_id, self.stream_id, timestamp, payload);
    }

    /// Queues FCUnpublish and deleteStream. The driver closes after flushing.
    pub fn finish(&mut self) {
        if matches!(self.state, State::Publishing | State::PublishPending) {
            let name = Amf0Value::string(self.config.stream_name.clone());
            self.call("FCUnpublish", 6.0, 0, vec![name]);
            self.call(
                "deleteStream",
                7.0,
                0,
                vec![Amf0Value::Number(self.stream_id as f64)],
            );
        }
        self.state = State::Finished;
    }
}
