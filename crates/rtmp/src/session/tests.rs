//! Client and server sessions talking to each other in memory, and byte-level checks
//! of what the server answers.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::chunk::{ChunkLimits, ChunkReader, RawMessage};
use crate::message::{self, Message};

/// Moves all pending output of one side into the other's input buffer.
fn pump(out: &mut crate::chunk::OutputQueue, into: &mut BytesMut) {
    into.extend_from_slice(&out.take_contiguous());
}

struct Pair {
    client: ClientSession,
    server: ServerSession,
    c2s: BytesMut,
    s2c: BytesMut,
}

impl Pair {
    fn new() -> Self {
        Self::with(ClientConfig::new(
            "live",
            "rtmp://127.0.0.1/live",
            "pub-name",
        ))
    }

    fn with(config: ClientConfig) -> Self {
        let mut client = ClientSession::new(config);
        client.start();
        Pair {
            client,
            server: ServerSession::new(ServerConfig::default()),
            c2s: BytesMut::new(),
            s2c: BytesMut::new(),
        }
    }

    fn server_step(&mut self) -> Vec<ServerEvent> {
        pump(self.client.output(), &mut self.c2s);
        let mut ev = Vec::new();
        self.server.handle_bytes(&mut self.c2s, &mut ev).unwrap();
        ev
    }

    /// Runs the exchange up to the server's publish decision; returns its event.
    fn until_publish_request(&mut self) -> ServerEvent {
        assert_eq!(
            self.server_step(),
            vec![ServerEvent::ConnectRequested { app: "live".into() }]
        );
        self.server.accept_connect();
        for _ in 0..4 {
            assert!(self.client_step().is_empty());
            let mut ev = self.server_step();
            if !ev.is_empty() {
                assert_eq!(ev.len(), 1, "{ev:?}");
                return ev.remove(0);
            }
        }
        panic!("no publish request");
    }

    fn client_step(&mut self) -> Vec<ClientEvent> {
        pump(self.server.output(), &mut self.s2c);
        let mut ev = Vec::new();
        self.client.handle_bytes(&mut self.s2c, &mut ev).unwrap();
        ev
    }
}

#[test]
fn client_publishes_to_server() {
    let mut p = Pair::new();
    let ev = p.until_publish_request();
    let ServerEvent::PublishRequested { stream_id, name } = &ev else {
        panic!("expected publish, got {ev:?}");
    };
    assert_eq!(name.expose(), "pub-name");
    let sid = *stream_id;
    assert_eq!(sid, 1);
    assert!(
        !p.client.is_publishing(),
        "no Publish.Start before the server decides"
    );
    p.server.accept_publish(sid);
    assert_eq!(p.client_step(), vec![ClientEvent::Publishing]);

    let meta = crate::amf0::encode_all(&[
        crate::amf0::Amf0Value::string("onMetaData"),
        crate::amf0::Amf0Value::EcmaArray(vec![(
            "width".into(),
            crate::amf0::Amf0Value::Number(640.0),
        )]),
    ])
    .freeze();
    p.client.send_metadata(0, &meta);
    let frame = Bytes::from(vec![0x17u8; 100_000]);
    p.client.send_media(message::MSG_VIDEO, 40, frame.clone());
    p.client
        .send_media(message::MSG_AUDIO, 41, Bytes::from_static(&[0xAF, 1, 2, 3]));
    let ev = p.server_step();
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert_eq!(
        ev[0],
        ServerEvent::Metadata {
            stream_id: sid,
            timestamp: 0,
            payload: meta
        }
    );
    match &ev[1] {
        ServerEvent::Video(m) => {
            assert_eq!(m.timestamp, 40);
            assert_eq!(m.payload, frame);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&ev[2], ServerEvent::Audio(m) if m.timestamp == 41));

    p.client.finish();
    assert_eq!(
        p.server_step(),
        vec![ServerEvent::Unpublished { stream_id: sid }]
    );
}

#[test]
fn rejected_publish_reaches_the_client_as_error_status() {
    let mut p = Pair::new();
    p.until_publish_request();
    p.server
        .reject_publish(1, "NetStream.Publish.BadName", "invalid stream key");
    assert_eq!(
        p.client_step(),
        vec![ClientEvent::Rejected {
            code: "NetStream.Publish.BadName".into(),
            description: "invalid stream key".into()
        }]
    );
    // Media sent anyway by a misbehaving client is not delivered.
    p.client
        .send_media(message::MSG_VIDEO, 0, Bytes::from_static(&[0x17, 0]));
    assert!(p.server_step().is_empty());
}

#[test]
fn rejected_connect_reaches_the_client() {
    let mut p = Pair::new();
    p.server_step();
    p.server.reject_connect("unknown application");
    let ev = p.client_step();
    assert!(
        matches!(&ev[..], [ClientEvent::Rejected { code, description }]
        if code == "NetConnection.Connect.Rejected" && description == "unknown application")
    );
}

/// Reads what the server sent, as decoded messages.
fn server_messages(server: &mut ServerSession, r: &mut ChunkReader) -> Vec<Message> {
    let mut buf = server.output().take_contiguous();
    let mut out = Vec::new();
    while let Some(raw) = r.read(&mut buf).unwrap() {
        out.push(Message::decode(raw).unwrap());
    }
    out
}

#[test]
fn connect_reply_has_what_obs_and_ffmpeg_expect() {
    let mut p = Pair::new();
    p.server_step();
    p.server.accept_connect();
    let msgs = server_messages(&mut p.server, &mut ChunkReader::new(ChunkLimits::default()));
    assert!(matches!(
        msgs[0],
        Message::WindowAckSize(DEFAULT_WINDOW_ACK_SIZE)
    ));
    assert!(matches!(
        msgs[1],
        Message::SetPeerBandwidth { limit: 2, .. }
    ));
    let Message::Command(result) = &msgs[2] else {
        panic!("{msgs:?}")
    };
    assert_eq!(result.name, "_result");
    assert_eq!(result.transaction_id, 1.0);
    assert_eq!(
        result.args[0].get("code").and_then(|c| c.as_str()),
        Some("NetConnection.Connect.Success")
    );
}

#[test]
fn ping_request_gets_a_response_and_acks_carry_the_running_total() {
    let mut server = ServerSession::new(ServerConfig::default());
    let mut reader = ChunkReader::new(ChunkLimits::default());
    let mut w = crate::chunk::ChunkWriter::new();
    let mut q = crate::chunk::OutputQueue::new();
    // The peer asks for an ack every 1000 bytes: more often than the floor allows.
    w.write(&message::window_ack_size(1000), &mut q);
    w.write(
        &message::user_control(message::UC_PING_REQUEST, 777),
        &mut q,
    );
    let mut buf = q.take_contiguous();
    let sent = buf.len() as u64;
    server.handle_bytes(&mut buf, &mut Vec::new()).unwrap();
    let msgs = server_messages(&mut server, &mut reader);
    assert!(msgs.contains(&Message::UserControl {
        event: message::UC_PING_RESPONSE,
        value: 777
    }));
    // Now about 12,000 bytes of ignored media: an ack every MIN_ACK_WINDOW bytes (not
    // every 1000), two of them, at running totals.
    let mut q = crate::chunk::OutputQueue::new();
    for i in 0..12u32 {
        w.write(
            &message::media(message::MSG_VIDEO, 1, i, Bytes::from(vec![0u8; 990])),
            &mut q,
        );
    }
    let mut buf = q.take_contiguous();
    server.handle_bytes(&mut buf, &mut Vec::new()).unwrap();
    let acks: Vec<u32> = server_messages(&mut server, &mut reader)
        .into_iter()
        .filter_map(|m| match m {
            Message::Acknowledgement(n) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert!(
        acks[0] as u64 >= 4096 && acks[1] as u64 >= 8192,
        "{acks:?} after {sent}"
    );
    assert!(acks[1] > acks[0]);
}

#[test]
fn commands_before_connect_and_publish_without_stream_are_errors() {
    let mut server = ServerSession::new(ServerConfig::default());
    let mut w = crate::chunk::ChunkWriter::new();
    let mut q = crate::chunk::OutputQueue::new();
    w.write(
        &message::command(
            0,
            &[
                crate::amf0::Amf0Value::string("createStream"),
                crate::amf0::Amf0Value::Number(2.0),
            ],
        ),
        &mut q,
    );
    let mut buf = q.take_contiguous();
    assert!(server.handle_bytes(&mut buf, &mut Vec::new()).is_err());
}

#[test]
fn stream_name_debug_is_redacted() {
    let n = StreamName::new("supersecret?foo=bar");
    assert_eq!(n.expose(), "supersecret");
    let dbg = format!("{n:?}");
    assert!(!dbg.contains("supersecret"), "{dbg}");
}

/// Until a publish is accepted the server is strict: small messages, small chunk
/// sizes, few chunk streams, and data messages are not AMF-decoded. Once the publish
/// is accepted the configured limits apply.
#[test]
fn the_server_is_strict_until_a_publish_is_accepted() {
    let big = |ts| message::media(message::MSG_VIDEO, 1, ts, Bytes::from(vec![0x17u8; 40_000]));
    // Before: a 40 KB message closes the connection before its payload arrives.
    let mut p = Pair::new();
    let ev = p.until_publish_request();
    let mut w = crate::chunk::ChunkWriter::new();
    let mut q = crate::chunk::OutputQueue::new();
    w.write(&big(0), &mut q);
    let mut buf = q.take_contiguous();
    buf.truncate(20);
    assert!(matches!(
        p.server.handle_bytes(&mut buf, &mut Vec::new()),
        Err(SessionError::Chunk(
            crate::chunk::ChunkError::MessageTooLarge { .. }
        ))
    ));
    // Before: a chunk size as large as the protocol allows is no error (it costs
    // nothing by itself), but the message that would use it still is.
    let mut p2 = Pair::new();
    p2.until_publish_request();
    let mut q = crate::chunk::OutputQueue::new();
    let mut w = crate::chunk::ChunkWriter::new();
    w.write(
        &message::set_chunk_size(crate::chunk::MAX_CHUNK_SIZE),
        &mut q,
    );
    w.set_chunk_size(crate::chunk::MAX_CHUNK_SIZE);
    w.write(&big(0), &mut q);
    let mut buf = q.take_contiguous();
    buf.truncate(40);
    let r = p2.server.handle_bytes(&mut buf, &mut Vec::new());
    assert!(
        matches!(
            r,
            Err(SessionError::Chunk(
                crate::chunk::ChunkError::MessageTooLarge { .. }
            ))
        ),
        "{r:?}"
    );
    // Before: a data message with broken AMF is not decoded, so it is no error.
    let mut p3 = Pair::new();
    p3.until_publish_request();
    let mut q = crate::chunk::OutputQueue::new();
    let junk = RawMessage {
        csid: 4,
        timestamp: 0,
        type_id: message::MSG_DATA_AMF0,
        stream_id: 1,
        payload: Bytes::from_static(&[0x02, 0xff, 0xff, 0x01]),
    };
    w.write(&junk, &mut q);
    let mut buf = q.take_contiguous();
    assert!(p3.server.handle_bytes(&mut buf, &mut Vec::new()).is_ok());
    assert!(!p3.server.is_trusted());

    // After the publish is accepted, the same 40 KB message is fine.
    let ServerEvent::PublishRequested { stream_id, .. } = ev else {
        panic!("{ev:?}")
    };
    let mut p = Pair::new();
    p.until_publish_request();
    p.server.accept_publish(stream_id);
    assert!(p.server.is_trusted());
    let mut q = crate::chunk::OutputQueue::new();
    let mut w = crate::chunk::ChunkWriter::new();
    w.write(&big(7), &mut q);
    let mut buf = q.take_contiguous();
    let mut events = Vec::new();
    p.server.handle_bytes(&mut buf, &mut events).unwrap();
    assert!(
        matches!(&events[..], [ServerEvent::Video(m)] if m.payload.len() == 40_000),
        "{events:?}"
    );
}

/// RTMP 1.0 5.4.1 allows a chunk size up to 2^31-1, and a client may set it before
/// `connect`: the server accepts it and the publish goes through (nginx-rtmp resets
/// such a client; SRS 6 accepts it). Memory is bounded by the message size and
/// unfinished bytes, not by the chunk size.
#[test]
fn a_client_may_set_the_largest_chunk_size_before_connect() {
    let mut p = Pair::with(ClientConfig {
        out_chunk_size: crate::chunk::MAX_CHUNK_SIZE,
        ..ClientConfig::new("live", "rtmp://127.0.0.1/live", "pub-name")
    });
    let ServerEvent::PublishRequested { stream_id, name } = p.until_publish_request() else {
        panic!("no publish request")
    };
    assert_eq!(name.expose(), "pub-name");
    p.server.accept_publish(stream_id);
    assert_eq!(p.client_step(), vec![ClientEvent::Publishing]);
    p.client
        .send_media(message::MSG_VIDEO, 0, Bytes::from(vec![0x17u8; 300_000]));
    let ev = p.server_step();
    assert!(
        matches!(&ev[..], [ServerEvent::Video(m)] if m.payload.len() == 300_000),
        "{ev:?}"
    );
}
