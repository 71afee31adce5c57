//! The server session (what an unauthenticated client reaches) on arbitrary bytes after
//! the handshake, accepting every connect and publish it is asked for.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rtmp::{ServerConfig, ServerEvent, ServerSession};

fuzz_target!(|data: &[u8]| {
    let mut s = ServerSession::new(ServerConfig::default());
    let mut buf = BytesMut::from(data);
    let mut events = Vec::new();
    for _ in 0..64 {
        if s.handle_bytes(&mut buf, &mut events).is_err() {
            break;
        }
        if events.is_empty() {
            break;
        }
        for e in events.drain(..) {
            match e {
                ServerEvent::ConnectRequested { .. } => s.accept_connect(),
                ServerEvent::PublishRequested { stream_id, .. } => s.accept_publish(stream_id),
                _ => {}
            }
        }
    }
    let _ = s.output().take_contiguous();
});
