//! The publisher against our own server session over an in-memory pipe: the whole
//! exchange, media arriving intact, and a refusal carrying the server's status.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rtmp::handshake::{HandshakeKind, ServerHandshake};
use rtmp::{ClientConfig, ServerConfig, ServerEvent, ServerSession};
use rtmp_io::{write_queued, PublishError, Publisher, PublisherOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// A minimal server: accepts the connect, then accepts or refuses the publish;
/// returns the media it received until the client leaves.
async fn serve(mut io: DuplexStream, accept: bool) -> Vec<(u8, u32, Bytes)> {
    let mut buf = BytesMut::new();
    let mut hs = ServerHandshake::new();
    let mut out = BytesMut::new();
    loop {
        let done = hs.read(&mut buf, &mut out).unwrap();
        io.write_all(&out).await.unwrap();
        out.clear();
        if done {
            break;
        }
        assert!(io.read_buf(&mut buf).await.unwrap() > 0);
    }
    let mut session = ServerSession::new(ServerConfig::default());
    let mut events = Vec::new();
    let mut media = Vec::new();
    loop {
        session.handle_bytes(&mut buf, &mut events).unwrap();
        for ev in events.drain(..) {
            match ev {
                ServerEvent::ConnectRequested { .. } => session.accept_connect(),
                ServerEvent::PublishRequested { stream_id, name } => {
                    assert_eq!(name.expose(), "the-name");
                    if accept {
                        session.accept_publish(stream_id);
                    } else {
                        session.reject_publish(stream_id, "NetStream.Publish.BadName", "no");
                    }
                }
                ServerEvent::Video(m) | ServerEvent::Audio(m) => {
                    media.push((m.type_id, m.timestamp, m.payload))
                }
                _ => {}
            }
        }
        // The client may already be gone after its last message.
        let written = write_queued(&mut io, session.output(), Duration::from_secs(5)).await;
        if written.is_err() || io.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return media;
        }
    }
}

fn config() -> ClientConfig {
    ClientConfig::new("live", "rtmp://127.0.0.1/live", "the-name")
}

#[tokio::test]
async fn publishes_and_delivers_media_in_order_with_either_handshake() {
    for kind in [HandshakeKind::Simple, HandshakeKind::Digest] {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(serve(server, true));
        let options = PublisherOptions {
            handshake: kind,
            ..PublisherOptions::default()
        };
        let mut p = Publisher::publish(client, config(), options).await.unwrap();
        let frame = Bytes::from(vec![0x17u8; 70_000]);
        p.send_media(9, 0, frame.clone());
        p.send_media(8, 21, Bytes::from_static(&[0xAF, 1, 2]));
        p.flush().await.unwrap();
        p.poll_incoming().await.unwrap();
        p.finish().await.unwrap();
        let media = server.await.unwrap();
        assert_eq!(
            media,
            vec![(9, 0, frame), (8, 21, Bytes::from_static(&[0xAF, 1, 2]))],
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn a_refusal_carries_the_servers_status() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(serve(server, false));
    let err = Publisher::publish(client, config(), PublisherOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_refusal(), "{err}");
    match err {
        PublishError::Refused { code, description } => {
            assert_eq!(
                (code.as_str(), description.as_str()),
                ("NetStream.Publish.BadName", "no")
            )
        }
        other => panic!("{other}"),
    }
    drop(server);
}
