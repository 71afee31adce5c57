//! Both sides of the RTMP handshake on arbitrary bytes: the server's (what every client
//! reaches before anything else) and the client's (what an upstream answers the
//! relay), whole and split in two. Never a panic; the output stays bounded by the
//! handshake's sizes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rtmp::handshake::{ClientHandshake, HandshakeKind, ServerHandshake};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize * 16).min(data.len());
    let mut server = ServerHandshake::new();
    let (mut buf, mut out) = (BytesMut::from(&data[..split]), BytesMut::new());
    if let Ok(false) = server.read(&mut buf, &mut out) {
        buf.extend_from_slice(&data[split..]);
        let _ = server.read(&mut buf, &mut out);
    }
    assert!(out.len() <= 1 + 2 * 1536);

    for kind in [HandshakeKind::Simple, HandshakeKind::Digest] {
        let mut client = ClientHandshake::new(kind);
        let mut out = BytesMut::new();
        client.start(&mut out);
        out.clear();
        let mut buf = BytesMut::from(&data[..split]);
        if let Ok(false) = client.read(&mut buf, &mut out) {
            buf.extend_from_slice(&data[split..]);
            let _ = client.read(&mut buf, &mut out);
        }
        assert!(out.len() <= 1536);
    }
});
