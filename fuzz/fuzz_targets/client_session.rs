//! The client session (the relay's side: everything an upstream sends it after the
//! handshake) on arbitrary bytes, with the limits it has on what a server may send:
//! never a panic, never more unfinished data held than those limits allow, and media
//! can be queued once the bytes accepted the publish.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rtmp::{ClientConfig, ClientSession, SERVER_REPLY_LIMITS};

fuzz_target!(|data: &[u8]| {
    let mut s = ClientSession::new(ClientConfig::new("live", "rtmp://h/live", "name"));
    s.start();
    let _ = s.output().take_contiguous();
    let split = data.first().map_or(0, |b| *b as usize * 4).min(data.len());
    let mut buf = BytesMut::from(&data[..split]);
    let mut events = Vec::new();
    let mut ok = s.handle_bytes(&mut buf, &mut events).is_ok();
    if ok {
        buf.extend_from_slice(&data[split..]);
        ok = s.handle_bytes(&mut buf, &mut events).is_ok();
    }
    assert!(s.partial_bytes() <= SERVER_REPLY_LIMITS.max_partial_bytes);
    if ok && s.is_publishing() {
        s.send_media(9, 0, Bytes::from_static(&[0x17, 1, 0, 0, 0]));
    }
    let _ = s.output().take_contiguous();
});
