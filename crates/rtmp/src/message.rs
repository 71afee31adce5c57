//! RTMP messages (RTMP 1.0 sections 5.4, 6 and 7): protocol control, user control,
//! commands and data, audio and video. Decoding turns a [`RawMessage`] into a
//! [`Message`]; the builders produce [`RawMessage`]s on the customary chunk streams.

use bytes::{BufMut, Bytes, BytesMut};

use crate::amf0::{self, Amf0Error, Amf0Value};
use crate::chunk::RawMessage;

pub const MSG_SET_CHUNK_SIZE: u8 = 1;
pub const MSG_ABORT: u8 = 2;
pub const MSG_ACKNOWLEDGEMENT: u8 = 3;
pub const MSG_USER_CONTROL: u8 = 4;
pub const MSG_WINDOW_ACK_SIZE: u8 = 5;
pub const MSG_SET_PEER_BANDWIDTH: u8 = 6;
pub const MSG_AUDIO: u8 = 8;
pub const MSG_VIDEO: u8 = 9;
pub const MSG_DATA_AMF3: u8 = 15;
pub const MSG_COMMAND_AMF3: u8 = 17;
pub const MSG_DATA_AMF0: u8 = 18;
pub const MSG_COMMAND_AMF0: u8 = 20;

/// Chunk stream for protocol control messages.
pub const CSID_PROTOCOL: u32 = 2;
/// Chunk stream for commands (what librtmp and ffmpeg use).
pub const CSID_COMMAND: u32 = 3;
/// Chunk stream for audio.
pub const CSID_AUDIO: u32 = 4;
/// Chunk stream for video.
pub const CSID_VIDEO: u32 = 6;
/// Chunk stream for data messages (metadata).
pub const CSID_DATA: u32 = 5;

pub const UC_STREAM_BEGIN: u16 = 0;
pub const UC_STREAM_EOF: u16 = 1;
pub const UC_SET_BUFFER_LENGTH: u16 = 3;
pub const UC_PING_REQUEST: u16 = 6;
pub const UC_PING_RESPONSE: u16 = 7;

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Acknowledgement(u32),
    UserControl {
        event: u16,
        value: u32,
    },
    WindowAckSize(u32),
    SetPeerBandwidth {
        size: u32,
        limit: u8,
    },
    Audio(RawMessage),
    Video(RawMessage),
    /// A data message (`@setDataFrame`, `onMetaData`...), with its original payload.
    Data {
        values: Vec<Amf0Value>,
        raw: RawMessage,
    },
    Command(Command),
    /// A message type we do not act on (shared objects, aggregates...).
    Other(RawMessage),
}

/// A command message: name, transaction id, command object and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub stream_id: u32,
    pub name: String,
    pub transaction_id: f64,
    /// The command object (often `Null`).
    pub object: Amf0Value,
    pub args: Vec<Amf0Value>,
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("malformed AMF0 in a type-{type_id} message: {source}")]
    Amf { type_id: u8, source: Amf0Error },
    #[error("type-{0} message is too short")]
    TooShort(u8),
    #[error("command message without a name")]
    MissingCommandName,
}

fn u32_at(p: &[u8], at: usize, type_id: u8) -> Result<u32, MessageError> {
    p.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(MessageError::TooShort(type_id))
}

impl Message {
    /// Interprets a raw message.
    pub fn decode(raw: RawMessage) -> Result<Message, MessageError> {
        let t = raw.type_id;
        let p = &raw.payload;
        Ok(match t {
            MSG_ACKNOWLEDGEMENT => Message::Acknowledgement(u32_at(p, 0, t)?),
            MSG_USER_CONTROL => {
                let event = p
                    .get(0..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .ok_or(MessageError::TooShort(t))?;
                // Some events carry more than 4 bytes (SetBufferLength): the first 4 are
                // the stream id or timestamp we need.
                let value = u32_at(p, 2, t).unwrap_or(0);
                Message::UserControl { event, value }
            }
            MSG_WINDOW_ACK_SIZE => Message::WindowAckSize(u32_at(p, 0, t)?),
            MSG_SET_PEER_BANDWIDTH => Message::SetPeerBandwidth {
                size: u32_at(p, 0, t)?,
                limit: p.get(4).copied().unwrap_or(2),
            },
            MSG_AUDIO => Message::Audio(raw),
            MSG_VIDEO => Message::Video(raw),
            MSG_DATA_AMF0 | MSG_DATA_AMF3 => {
                let body = if t == MSG_DATA_AMF3 && p.first() == Some(&0) {
                    &p[1..]
                } else {
                    &p[..]
                };
                let values = amf0::decode_all(body)
                    .map_err(|source| MessageError::Amf { type_id: t, source })?;
                Message::Data { values, raw }
            }
            MSG_COMMAND_AMF0 | MSG_COMMAND_AMF3 => {
                // An AMF3 command starts with a format byte, then AMF0 values.
                let body = if t == MSG_COMMAND_AMF3 && !p.is_empty() {
                    &p[1..]
                } else {
                    &p[..]
                };
                let mut values = amf0::decode_all(body)
                    .map_err(|source| MessageError::Amf { type_id: t, source })?
                    .into_iter();
                let name = match values.next() {
                    Some(Amf0Value::String(s)) | Some(Amf0Value::LongString(s)) => s,
                    _ => return Err(MessageError::MissingCommandName),
                };
                let transaction_id = values.next().and_then(|v| v.as_number()).unwrap_or(0.0);
                let object = values.next().unwrap_or(Amf0Value::Null);
                Message::Command(Command {
                    stream_id: raw.stream_id,
                    name,
                    transaction_id,
                    object,
                    args: values.collect(),
                })
            }
            _ => Message::Other(raw),
        })
    }
}

fn control(type_id: u8, payload: Bytes) -> RawMessage {
    RawMessage {
        csid: CSID_PROTOCOL,
        timestamp: 0,
        type_id,
        stream_id: 0,
        payload,
    }
}

/// Set Chunk Size.
pub fn set_chunk_size(size: u32) -> RawMessage {
    control(
        MSG_SET_CHUNK_SIZE,
        Bytes::copy_from_slice(&size.to_be_bytes()),
    )
}

/// Acknowledgement with the running byte total.
pub fn acknowledgement(sequence: u32) -> RawMessage {
    control(
        MSG_ACKNOWLEDGEMENT,
        Bytes::copy_from_slice(&sequence.to_be_bytes()),
    )
}

/// Window Acknowledgement Size.
pub fn window_ack_size(size: u32) -> RawMessage {
    control(
        MSG_WINDOW_ACK_SIZE,
        Bytes::copy_from_slice(&size.to_be_bytes()),
    )
}

/// Set Peer Bandwidth (limit 2 = dynamic).
pub fn set_peer_bandwidth(size: u32, limit: u8) -> RawMessage {
    let mut b = BytesMut::with_capacity(5);
    b.put_u32(size);
    b.put_u8(limit);
    control(MSG_SET_PEER_BANDWIDTH, b.freeze())
}

/// A user control event with a 4-byte value (stream id or timestamp).
pub fn user_control(event: u16, value: u32) -> RawMessage {
    let mut b = BytesMut::with_capacity(6);
    b.put_u16(event);
    b.put_u32(value);
    control(MSG_USER_CONTROL, b.freeze())
}

/// A command message on the command chunk stream.
pub fn command(stream_id: u32, values: &[Amf0Value]) -> RawMessage {
    RawMessage {
        csid: CSID_COMMAND,
        timestamp: 0,
        type_id: MSG_COMMAND_AMF0,
        stream_id,
        payload: amf0::encode_all(values).freeze(),
    }
}

/// A data message (e.g. `@setDataFrame`).
pub fn data(stream_id: u32, timestamp: u32, payload: Bytes) -> RawMessage {
    RawMessage {
        csid: CSID_DATA,
        timestamp,
        type_id: MSG_DATA_AMF0,
        stream_id,
        payload,
    }
}

/// An audio or video message with a shared payload.
/// The chunk stream audio (8) or video (9) messages are sent on.
pub fn media_csid(type_id: u8) -> u32 {
    if type_id == MSG_AUDIO {
        CSID_AUDIO
    } else {
        CSID_VIDEO
    }
}

pub fn media(type_id: u8, stream_id: u32, timestamp: u32, payload: Bytes) -> RawMessage {
    RawMessage {
        csid: media_csid(type_id),
        timestamp,
        type_id,
        stream_id,
        payload,
    }
}

/// An `onStatus` command: level, code and description.
pub fn on_status(stream_id: u32, level: &str, code: &str, description: &str) -> RawMessage {
    command(
        stream_id,
        &[
            Amf0Value::string("onStatus"),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::object([
                ("level", Amf0Value::string(level)),
                ("code", Amf0Value::string(code)),
                ("description", Amf0Value::string(description)),
            ]),
        ],
    )
}

/// Strips a leading `@setDataFrame` from a data message, giving what a player or
/// relay expects (`onMetaData`, {...}). Returns `None` for messages that are not
/// metadata.
pub fn metadata_payload(values: &[Amf0Value], raw: &Bytes) -> Option<Bytes> {
    match values.first().and_then(|v| v.as_str()) {
        Some("@setDataFrame") => {
            if values.get(1).and_then(|v| v.as_str()) != Some("onMetaData") {
                return None;
            }
            Some(amf0::encode_all(&values[1..]).freeze())
        }
        Some("onMetaData") => Some(raw.clone()),
        _ => None,
    }
}
