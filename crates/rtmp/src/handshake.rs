//! RTMP handshake (RTMP 1.0 section 5.2), server and client side, simple and digest.
//!
//! The simple handshake echoes random data. The digest ("complex") handshake, used by
//! Flash-era clients and some servers, hides an HMAC-SHA256 digest at an offset derived
//! from the packet itself (two layouts exist: digest after byte 8 or after byte 772).
//! The server validates C1's digest with either layout and falls back to the simple
//! handshake when neither validates, so ffmpeg/OBS (simple) and Flash (digest) both work.
//!
//! Both sides are sans-IO: feed received bytes, collect bytes to send.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Size of C1/S1/C2/S2.
pub const HANDSHAKE_SIZE: usize = 1536;
/// RTMP protocol version carried in C0/S0.
pub const RTMP_VERSION: u8 = 3;
const DIGEST_LEN: usize = 32;

const GENUINE_FP_KEY: &[u8] = b"Genuine Adobe Flash Player 001";
const GENUINE_FMS_KEY: &[u8] = b"Genuine Adobe Flash Media Server 001";
const KEY_SUFFIX: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
    0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];
/// Version field we put in a digest S1 (what FMS 3.5 announces).
const SERVER_VERSION: [u8; 4] = [0x0D, 0x0E, 0x0A, 0x0D];
/// Version field we put in a digest C1 (a Flash Player 10 value).
const CLIENT_VERSION: [u8; 4] = [0x80, 0x00, 0x07, 0x02];

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("unsupported RTMP version {0} in C0/S0 (expected 3)")]
    BadVersion(u8),
}

/// Which handshake variant was negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    Simple,
    Digest,
}

/// Layout of the digest inside a 1536-byte packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Offset derived from bytes 8..12 (librtmp's "schema 1").
    DigestFirst,
    /// Offset derived from bytes 772..776 ("schema 0").
    KeyFirst,
}

fn digest_offset(packet: &[u8], layout: Layout) -> usize {
    let base = match layout {
        Layout::DigestFirst => 8,
        Layout::KeyFirst => 772,
    };
    let sum: usize = packet[base..base + 4].iter().map(|&b| b as usize).sum();
    sum % 728 + base + 4
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn packet_digest(packet: &[u8], offset: usize, key: &[u8]) -> [u8; 32] {
    hmac_sha256(key, &[&packet[..offset], &packet[offset + DIGEST_LEN..]])
}

/// Finds a valid digest in `packet` signed with `key`, trying both layouts.
fn find_digest(packet: &[u8], key: &[u8]) -> Option<[u8; 32]> {
    for layout in [Layout::DigestFirst, Layout::KeyFirst] {
        let off = digest_offset(packet, layout);
        let expected = packet_digest(packet, off, key);
        if expected[..] == packet[off..off + DIGEST_LEN] {
            return Some(expected);
        }
    }
    None
}

fn full_key(short: &[u8]) -> Vec<u8> {
    let mut k = short.to_vec();
    k.extend_from_slice(&KEY_SUFFIX);
    k
}

fn random_packet(time: u32, version: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; HANDSHAKE_SIZE];
    rand::thread_rng().fill_bytes(&mut p[8..]);
    p[0..4].copy_from_slice(&time.to_be_bytes());
    p[4..8].copy_from_slice(&version);
    p
}

/// Writes a digest into `packet` with the DigestFirst layout, returns the digest.
fn sign_packet(packet: &mut [u8], key: &[u8]) -> [u8; 32] {
    let off = digest_offset(packet, Layout::DigestFirst);
    let d = packet_digest(packet, off, key);
    packet[off..off + DIGEST_LEN].copy_from_slice(&d);
    d
}

/// A response packet (S2 or C2) for the peer's digest: random bytes whose last 32
/// bytes are an HMAC keyed by HMAC(full key, peer digest).
fn digest_response(peer_digest: &[u8; 32], full: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; HANDSHAKE_SIZE];
    rand::thread_rng().fill_bytes(&mut p);
    let key = hmac_sha256(full, &[peer_digest]);
    let sig = hmac_sha256(&key, &[&p[..HANDSHAKE_SIZE - DIGEST_LEN]]);
    p[HANDSHAKE_SIZE - DIGEST_LEN..].copy_from_slice(&sig);
    p
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    AwaitC0C1,
    AwaitC2,
    Done,
}

/// Server side of the handshake: reads C0+C1, answers S0+S1+S2, reads C2.
#[derive(Debug)]
pub struct ServerHandshake {
    /// Where we are in the exchange.
    state: ServerState,
    /// Negotiated variant, known once C1 arrived.
    kind: Option<HandshakeKind>,
}

impl Default for ServerHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerHandshake {
    pub fn new() -> Self {
        Self {
            state: ServerState::AwaitC0C1,
            kind: None,
        }
    }

    /// The variant the client used, once known.
    pub fn kind(&self) -> Option<HandshakeKind> {
        self.kind
    }

    /// Consumes handshake bytes from `input`, appending anything to send to `output`.
    /// Returns `true` once the handshake is complete; bytes after C2 stay in `input`
    /// (they are the first chunks).
    pub fn read(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
    ) -> Result<bool, HandshakeError> {
        loop {
            match self.state {
                ServerState::AwaitC0C1 => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    if input[0] != RTMP_VERSION {
                        // Versions 6 (RTMPE) and anything else are refused.
                        return Err(HandshakeError::BadVersion(input[0]));
                    }
                    if input.len() < 1 + HANDSHAKE_SIZE {
                        return Ok(false);
                    }
                    input.advance(1);
                    let c1 = input.split_to(HANDSHAKE_SIZE);
                    self.answer_c1(&c1, output);
                    self.state = ServerState::AwaitC2;
                }
                ServerState::AwaitC2 => {
                    if input.len() < HANDSHAKE_SIZE {
                        return Ok(false);
                    }
                    // C2 is not verified: clients disagree on its content, and it proves
                    // nothing an attacker could not replay.
                    input.advance(HANDSHAKE_SIZE);
                    self.state = ServerState::Done;
                }
                ServerState::Done => return Ok(true),
            }
        }
    }

    fn answer_c1(&mut self, c1: &[u8], output: &mut BytesMut) {
        output.put_u8(RTMP_VERSION);
        let client_digest = if c1[4..8] != [0, 0, 0, 0] {
            find_digest(c1, GENUINE_FP_KEY)
        } else {
            None
        };
        match client_digest {
            Some(cd) => {
                self.kind = Some(HandshakeKind::Digest);
                let mut s1 = random_packet(0, SERVER_VERSION);
                sign_packet(&mut s1, GENUINE_FMS_KEY);
                output.put_slice(&s1);
                output.put_slice(&digest_response(&cd, &full_key(GENUINE_FMS_KEY)));
            }
            None => {
                self.kind = Some(HandshakeKind::Simple);
                output.put_slice(&random_packet(0, [0; 4]));
                // S2 echoes C1.
                output.put_slice(c1);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Start,
    AwaitS0S1S2,
    Done,
}

/// Client side of the handshake: sends C0+C1, reads S0+S1+S2, sends C2.
#[derive(Debug)]
pub struct ClientHandshake {
    /// Where we are in the exchange.
    state: ClientState,
    /// Which variant to offer.
    kind: HandshakeKind,
}

impl ClientHandshake {
    pub fn new(kind: HandshakeKind) -> Self {
        Self {
            state: ClientState::Start,
            kind,
        }
    }

    /// C0+C1, to be sent first.
    pub fn start(&mut self, output: &mut BytesMut) {
        debug_assert_eq!(self.state, ClientState::Start);
        output.put_u8(RTMP_VERSION);
        match self.kind {
            HandshakeKind::Simple => output.put_slice(&random_packet(0, [0; 4])),
            HandshakeKind::Digest => {
                let mut c1 = random_packet(0, CLIENT_VERSION);
                sign_packet(&mut c1, GENUINE_FP_KEY);
                output.put_slice(&c1);
            }
        }
        self.state = ClientState::AwaitS0S1S2;
    }

    /// Consumes S0+S1+S2 and appends C2. Returns `true` when complete; later bytes stay
    /// in `input`.
    pub fn read(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
    ) -> Result<bool, HandshakeError> {
        match self.state {
            ClientState::Start => {
                self.start(output);
                Ok(false)
            }
            ClientState::AwaitS0S1S2 => {
                if input.is_empty() {
                    return Ok(false);
                }
                if input[0] != RTMP_VERSION {
                    return Err(HandshakeError::BadVersion(input[0]));
                }
                if input.len() < 1 + 2 * HANDSHAKE_SIZE {
                    return Ok(false);
                }
                input.advance(1);
                let s1: Bytes = input.split_to(HANDSHAKE_SIZE).freeze();
                input.advance(HANDSHAKE_SIZE); // S2: not verified, see the server side.
                let server_digest = match self.kind {
                    HandshakeKind::Digest => find_digest(&s1, GENUINE_FMS_KEY),
                    HandshakeKind::Simple => None,
                };
                match server_digest {
                    Some(sd) => output.put_slice(&digest_response(&sd, &full_key(GENUINE_FP_KEY))),
                    None => output.put_slice(&s1),
                }
                self.state = ClientState::Done;
                Ok(true)
            }
            ClientState::Done => Ok(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: HandshakeKind) -> (ServerHandshake, BytesMut) {
        let mut client = ClientHandshake::new(kind);
        let mut server = ServerHandshake::new();
        let mut c2s = BytesMut::new();
        let mut s2c = BytesMut::new();
        client.start(&mut c2s);
        // Feed C0+C1 one byte at a time: partial input must be handled.
        let all = c2s.split();
        let mut input = BytesMut::new();
        for b in all.iter() {
            input.put_u8(*b);
            assert!(!server.read(&mut input, &mut s2c).unwrap());
        }
        assert_eq!(s2c.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert!(client.read(&mut s2c, &mut c2s).unwrap());
        assert_eq!(c2s.len(), HANDSHAKE_SIZE);
        c2s.extend_from_slice(b"first chunk");
        assert!(server.read(&mut c2s, &mut s2c).unwrap());
        assert_eq!(&c2s[..], b"first chunk");
        (server, s2c)
    }

    #[test]
    fn simple_handshake_echoes() {
        let mut client = ClientHandshake::new(HandshakeKind::Simple);
        let mut server = ServerHandshake::new();
        let mut c = BytesMut::new();
        let mut s = BytesMut::new();
        client.start(&mut c);
        let c1 = c[1..].to_vec();
        server.read(&mut c, &mut s).unwrap();
        assert_eq!(s[0], 3);
        assert_eq!(&s[1 + HANDSHAKE_SIZE..], &c1[..], "S2 must echo C1");
        assert_eq!(server.kind(), Some(HandshakeKind::Simple));
        run(HandshakeKind::Simple);
    }

    #[test]
    fn digest_handshake_validates_both_ways() {
        let (server, _) = run(HandshakeKind::Digest);
        assert_eq!(server.kind(), Some(HandshakeKind::Digest));
        // The server's S1 carries a digest signed with the FMS key.
        let c = client_c1();
        let mut input = c.clone();
        let mut s = BytesMut::new();
        ServerHandshake::new().read(&mut input, &mut s).unwrap();
        assert!(find_digest(&s[1..1 + HANDSHAKE_SIZE], GENUINE_FMS_KEY).is_some());
    }

    fn client_c1() -> BytesMut {
        let mut client = ClientHandshake::new(HandshakeKind::Digest);
        let mut c = BytesMut::new();
        client.start(&mut c);
        c
    }

    fn c1_of(c0c1: &[u8]) -> Vec<u8> {
        c0c1[1..].to_vec()
    }

    #[test]
    fn s2_signature_matches_client_digest() {
        let c = client_c1();
        let c1 = c1_of(&c);
        let cd = find_digest(&c1, GENUINE_FP_KEY).unwrap();
        let mut server = ServerHandshake::new();
        let mut input = c.clone();
        let mut s = BytesMut::new();
        server.read(&mut input, &mut s).unwrap();
        let s2 = &s[1 + HANDSHAKE_SIZE..];
        let key = hmac_sha256(&full_key(GENUINE_FMS_KEY), &[&cd]);
        let sig = hmac_sha256(&key, &[&s2[..HANDSHAKE_SIZE - DIGEST_LEN]]);
        assert_eq!(&s2[HANDSHAKE_SIZE - DIGEST_LEN..], &sig);
    }

    #[test]
    fn key_first_layout_is_recognised() {
        let mut c1 = random_packet(0, CLIENT_VERSION);
        let off = digest_offset(&c1, Layout::KeyFirst);
        let d = packet_digest(&c1, off, GENUINE_FP_KEY);
        c1[off..off + DIGEST_LEN].copy_from_slice(&d);
        assert_eq!(find_digest(&c1, GENUINE_FP_KEY), Some(d));
    }

    #[test]
    fn bad_digest_falls_back_to_simple() {
        // Non-zero version but garbage digest: simple handshake, S2 echoes C1.
        let c1 = random_packet(0, CLIENT_VERSION);
        let mut input = BytesMut::new();
        input.put_u8(3);
        input.put_slice(&c1);
        let mut server = ServerHandshake::new();
        let mut s = BytesMut::new();
        server.read(&mut input, &mut s).unwrap();
        assert_eq!(server.kind(), Some(HandshakeKind::Simple));
        assert_eq!(&s[1 + HANDSHAKE_SIZE..], &c1[..]);
    }

    #[test]
    fn wrong_version_is_an_error() {
        let mut server = ServerHandshake::new();
        let mut input = BytesMut::from(&[6u8, 0, 0][..]);
        assert_eq!(
            server.read(&mut input, &mut BytesMut::new()),
            Err(HandshakeError::BadVersion(6))
        );
        // An HTTP request on the RTMP port is refused at the first byte.
        let mut input = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(server.read(&mut input, &mut BytesMut::new()).is_err());
    }
}
