//! The PROXY protocol header parser (what a trusted balancer's connection starts with,
//! and what an attacker can send to a node that trusts the wrong range) on arbitrary
//! bytes, whole and in every prefix: never a panic, "need more" only while the bytes
//! could still become a header, and a found header never longer than its length field
//! allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_protocol::{parse, ProxiedPeer};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Ok(Some((peer, len))) = &whole {
        // Version 1: within the buffer and at most 107 bytes; version 2: 16 + u16.
        assert!(*len <= 16 + u16::MAX as usize);
        if let ProxiedPeer::Client(addr) = peer {
            let _ = addr.port();
        }
    }
    // Fed in pieces, an answer never comes before it could, and stays the same.
    for cut in [1usize, 7, 12, 16, 28, 52] {
        if cut < data.len() {
            if let Ok(Some(found)) = parse(&data[..cut]) {
                assert_eq!(whole.as_ref().ok().cloned().flatten(), Some(found));
            }
        }
    }
});
