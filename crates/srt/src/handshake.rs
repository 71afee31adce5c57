//! The handshake's control information field (HSv5, caller-listener) and its
//! extensions: the SRT options and latency (HSREQ/HSRSP), the key material
//! (KMREQ/KMRSP), the stream id, the congestion controller, the packet filter and group
//! membership. Rejection codes, as libsrt and `access_control.h` number them.

use std::net::IpAddr;

use crate::seq::SeqNo;

/// Bytes of the handshake's fixed part.
pub const HS_LEN: usize = 48;
/// What a version 5 listener puts in the extension field of its induction response.
pub const SRT_MAGIC: u16 = 0x4a17;
/// The handshake version of SRT 1.3 and later.
pub const HS_VERSION_5: u32 = 5;
/// The version a caller's induction request carries (UDT's).
pub const HS_VERSION_4: u32 = 4;

/// Extension flags of a conclusion (the low half of the type field).
pub mod ext_flags {
    pub const HSREQ: u16 = 1;
    pub const KMREQ: u16 = 2;
    pub const CONFIG: u16 = 4;
}

/// Extension block types.
pub mod cmd {
    pub const HSREQ: u16 = 1;
    pub const HSRSP: u16 = 2;
    pub const KMREQ: u16 = 3;
    pub const KMRSP: u16 = 4;
    pub const SID: u16 = 5;
    pub const CONGESTION: u16 = 6;
    pub const FILTER: u16 = 7;
    pub const GROUP: u16 = 8;
}

/// SRT option flags (HSREQ/HSRSP).
pub mod options {
    pub const TSBPDSND: u32 = 0x01;
    pub const TSBPDRCV: u32 = 0x02;
    pub const CRYPT: u32 = 0x04;
    pub const TLPKTDROP: u32 = 0x08;
    pub const NAKREPORT: u32 = 0x10;
    pub const REXMITFLG: u32 = 0x20;
    pub const STREAM: u32 = 0x40;
    pub const FILTERCAP: u32 = 0x80;
}

/// The longest stream id a caller may send (bytes).
pub const MAX_STREAM_ID: usize = 512;

/// A rejection reason: libsrt's own (below 1000) or an application's (1000-2999,
/// `access_control.h`). On the wire a rejection's handshake type is 1000 + the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RejectCode(pub u32);

impl RejectCode {
    pub const UNKNOWN: RejectCode = RejectCode(0);
    pub const SYSTEM: RejectCode = RejectCode(1);
    pub const PEER: RejectCode = RejectCode(2);
    pub const RESOURCE: RejectCode = RejectCode(3);
    pub const ROGUE: RejectCode = RejectCode(4);
    pub const BACKLOG: RejectCode = RejectCode(5);
    pub const IPE: RejectCode = RejectCode(6);
    pub const CLOSE: RejectCode = RejectCode(7);
    pub const VERSION: RejectCode = RejectCode(8);
    pub const RDVCOOKIE: RejectCode = RejectCode(9);
    pub const BADSECRET: RejectCode = RejectCode(10);
    pub const UNSECURE: RejectCode = RejectCode(11);
    pub const MESSAGEAPI: RejectCode = RejectCode(12);
    pub const CONGESTION: RejectCode = RejectCode(13);
    pub const FILTER: RejectCode = RejectCode(14);
    pub const GROUP: RejectCode = RejectCode(15);
    pub const TIMEOUT: RejectCode = RejectCode(16);
    pub const CRYPTO: RejectCode = RejectCode(17);
    pub const BAD_REQUEST: RejectCode = RejectCode(1400);
    pub const UNAUTHORIZED: RejectCode = RejectCode(1401);
    pub const OVERLOAD: RejectCode = RejectCode(1402);
    pub const FORBIDDEN: RejectCode = RejectCode(1403);
    pub const NOT_FOUND: RejectCode = RejectCode(1404);
    pub const BAD_MODE: RejectCode = RejectCode(1405);
    pub const UNACCEPTABLE: RejectCode = RejectCode(1406);
    pub const CONFLICT: RejectCode = RejectCode(1409);
    pub const INTERNAL_ERROR: RejectCode = RejectCode(1500);
    pub const UNAVAILABLE: RejectCode = RejectCode(1503);

    /// The handshake type that carries it.
    pub fn wire(self) -> u32 {
        1000 + self.0
    }
}

/// The handshake type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsType {
    Induction,
    Conclusion,
    WaveAHand,
    Agreement,
    Done,
    Rejection(RejectCode),
    Other(u32),
}

impl HsType {
    fn from_wire(v: u32) -> HsType {
        match v {
            1 => HsType::Induction,
            0xffff_ffff => HsType::Conclusion,
            0 => HsType::WaveAHand,
            0xffff_fffe => HsType::Agreement,
            0xffff_fffd => HsType::Done,
            v if (1000..4000).contains(&v) => HsType::Rejection(RejectCode(v - 1000)),
            other => HsType::Other(other),
        }
    }

    fn to_wire(self) -> u32 {
        match self {
            HsType::Induction => 1,
            HsType::Conclusion => 0xffff_ffff,
            HsType::WaveAHand => 0,
            HsType::Agreement => 0xffff_fffe,
            HsType::Done => 0xffff_fffd,
            HsType::Rejection(code) => code.wire(),
            HsType::Other(v) => v,
        }
    }
}

/// The handshake's fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub version: u32,
    /// Advertised key length / 8 (2, 3, 4) or 0 (the high half of the type field).
    pub encryption: u16,
    /// Extension flags of a conclusion, or the magic of an induction response.
    pub extension: u16,
    pub isn: SeqNo,
    pub mss: u32,
    pub flow_window: u32,
    pub kind: HsType,
    /// The sending side's socket.
    pub socket_id: u32,
    pub cookie: u32,
    /// The receiver's address as the sender sees it, as libsrt writes it.
    pub peer_ip: [u8; 16],
}

/// Why a handshake cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HsError {
    #[error("handshake shorter than 48 bytes")]
    Short,
    #[error("malformed handshake extension")]
    Extension,
    #[error("stream id longer than 512 bytes")]
    LongStreamId,
    #[error("stream id is not UTF-8")]
    StreamIdEncoding,
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Handshake {
    /// Reads the fixed part; the extensions are what follows it.
    pub fn parse(cif: &[u8]) -> Result<(Handshake, &[u8]), HsError> {
        if cif.len() < HS_LEN {
            return Err(HsError::Short);
        }
        let ty = word(cif, 4);
        let mut peer_ip = [0u8; 16];
        peer_ip.copy_from_slice(&cif[32..48]);
        Ok((
            Handshake {
                version: word(cif, 0),
                encryption: (ty >> 16) as u16,
                extension: ty as u16,
                isn: SeqNo::new(word(cif, 8)),
                mss: word(cif, 12),
                flow_window: word(cif, 16),
                kind: HsType::from_wire(word(cif, 20)),
                socket_id: word(cif, 24),
                cookie: word(cif, 28),
                peer_ip,
            },
            &cif[HS_LEN..],
        ))
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        let ty = (self.encryption as u32) << 16 | self.extension as u32;
        for w in [
            self.version,
            ty,
            self.isn.get(),
            self.mss,
            self.flow_window,
            self.kind.to_wire(),
            self.socket_id,
            self.cookie,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(&self.peer_ip);
    }
}

/// An address as libsrt writes it into a handshake: its bytes in 32-bit words, each
/// word byte-swapped (libsrt copies the address into host-order words, then swaps
/// every word of the packet to network order).
pub fn peer_ip_field(ip: IpAddr) -> [u8; 16] {
    let mut f = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => f[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => f.copy_from_slice(&v6.octets()),
    }
    for w in f.chunks_exact_mut(4) {
        w.reverse();
    }
    f
}

/// The SRT options and latencies of an HSREQ or HSRSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtOptions {
    /// major * 0x10000 + minor * 0x100 + patch.
    pub version: u32,
    pub flags: u32,
    /// Milliseconds the sender of this block holds packets it receives.
    pub recv_latency: u16,
    /// Milliseconds it asks its peer to hold the packets it sends.
    pub send_latency: u16,
}

impl SrtOptions {
    fn parse(b: &[u8]) -> Result<SrtOptions, HsError> {
        if b.len() < 8 {
            return Err(HsError::Extension);
        }
        let latency = if b.len() >= 12 { word(b, 8) } else { 0 };
        Ok(SrtOptions {
            version: word(b, 0),
            flags: word(b, 4),
            recv_latency: (latency >> 16) as u16,
            send_latency: latency as u16,
        })
    }

    /// Appends the block (type and length word included).
    pub fn write(&self, out: &mut Vec<u8>, block: u16) {
        out.extend_from_slice(&((block as u32) << 16 | 3).to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        let latency = (self.recv_latency as u32) << 16 | self.send_latency as u32;
        out.extend_from_slice(&latency.to_be_bytes());
    }
}

/// The extensions of a conclusion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions<'a> {
    pub options: Option<SrtOptions>,
    /// The key material message, as sent.
    pub key_material: Option<&'a [u8]>,
    pub stream_id: Option<String>,
    /// The congestion controller (absent: live).
    pub congestion: Option<String>,
    /// A packet filter configuration (FEC).
    pub filter: Option<String>,
    /// The caller is a member of a socket group (bonding).
    pub group: bool,
}

/// A string extension's content: 32-bit words, each byte-swapped, zero-padded.
fn read_string(b: &[u8]) -> Result<String, HsError> {
    let mut bytes = Vec::with_capacity(b.len());
    for w in b.chunks_exact(4) {
        bytes.extend(w.iter().rev());
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|_| HsError::StreamIdEncoding)
}

/// Appends a string extension block (as libsrt writes it).
pub fn write_string(out: &mut Vec<u8>, block: u16, s: &str) {
    let words = s.len().div_ceil(4);
    out.extend_from_slice(&((block as u32) << 16 | words as u32).to_be_bytes());
    let mut padded = s.as_bytes().to_vec();
    padded.resize(words * 4, 0);
    for w in padded.chunks_exact(4) {
        out.extend(w.iter().rev());
    }
}

/// Appends a block whose content is already in wire order (key material).
pub fn write_block(out: &mut Vec<u8>, block: u16, content: &[u8]) {
    let words = content.len().div_ceil(4);
    out.extend_from_slice(&((block as u32) << 16 | words as u32).to_be_bytes());
    out.extend_from_slice(content);
    out.resize(out.len() + (words * 4 - content.len()), 0);
}

/// Reads the extension blocks that follow a conclusion's fixed part.
pub fn parse_extensions(mut b: &[u8]) -> Result<Extensions<'_>, HsError> {
    let mut e = Extensions::default();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(HsError::Extension);
        }
        let head = word(b, 0);
        let (block, len) = ((head >> 16) as u16, (head & 0xffff) as usize * 4);
        let content = b.get(4..4 + len).ok_or(HsError::Extension)?;
        match block {
            cmd::HSREQ | cmd::HSRSP => e.options = Some(SrtOptions::parse(content)?),
            cmd::KMREQ | cmd::KMRSP => e.key_material = Some(content),
            cmd::SID => {
                if len > MAX_STREAM_ID {
                    return Err(HsError::LongStreamId);
                }
                e.stream_id = Some(read_string(content)?);
            }
            cmd::CONGESTION => e.congestion = Some(read_string(content)?),
            cmd::FILTER => e.filter = Some(read_string(content)?),
            cmd::GROUP => e.group = true,
            _ => {} // unknown blocks are skipped
        }
        b = &b[4 + len..];
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_part_reads_back() {
        let hs = Handshake {
            version: 5,
            encryption: 2,
            extension: ext_flags::HSREQ | ext_flags::KMREQ | ext_flags::CONFIG,
            isn: SeqNo::new(12345),
            mss: 1500,
            flow_window: 8192,
            kind: HsType::Conclusion,
            socket_id: 0x1111,
            cookie: 0x2222,
            peer_ip: peer_ip_field("127.0.0.1".parse().unwrap()),
        };
        let mut b = Vec::new();
        hs.write(&mut b);
        assert_eq!(b.len(), HS_LEN);
        // libsrt's byte order for 127.0.0.1.
        assert_eq!(&b[32..36], &[1, 0, 0, 127]);
        let (back, rest) = Handshake::parse(&b).unwrap();
        assert_eq!(back, hs);
        assert!(rest.is_empty());
        assert_eq!(Handshake::parse(&b[..47]), Err(HsError::Short));
    }

    #[test]
    fn rejections_are_1000_plus_the_code() {
        assert_eq!(RejectCode::FORBIDDEN.wire(), 2403);
        assert_eq!(RejectCode::BADSECRET.wire(), 1010);
        assert_eq!(
            HsType::from_wire(2409),
            HsType::Rejection(RejectCode::CONFLICT)
        );
    }

    #[test]
    fn extensions_as_libsrt_writes_them() {
        let mut b = Vec::new();
        SrtOptions {
            version: 0x010501,
            flags: options::TSBPDSND | options::TSBPDRCV | options::CRYPT,
            recv_latency: 120,
            send_latency: 200,
        }
        .write(&mut b, cmd::HSREQ);
        // A stream id, 4-byte words each reversed: "live/abc" is "evil" "cba/".
        write_string(&mut b, cmd::SID, "live/abcde");
        assert_eq!(&b[16..20], &[0, cmd::SID as u8, 0, 3]);
        assert_eq!(&b[20..28], b"evilcba/");
        assert_eq!(&b[28..32], &[0, 0, b'e', b'd']);
        write_block(&mut b, cmd::KMREQ, &[1, 2, 3, 4, 5]);
        write_block(&mut b, 99, &[0; 8]);
        let e = parse_extensions(&b).unwrap();
        let o = e.options.unwrap();
        assert_eq!(
            (o.version, o.recv_latency, o.send_latency),
            (0x010501, 120, 200)
        );
        assert_eq!(e.stream_id.as_deref(), Some("live/abcde"));
        assert_eq!(e.key_material, Some(&[1, 2, 3, 4, 5, 0, 0, 0][..]));
        assert!(e.congestion.is_none() && e.filter.is_none() && !e.group);
    }

    #[test]
    fn a_block_longer_than_the_packet_or_a_long_stream_id_is_malformed() {
        let mut b = Vec::new();
        b.extend_from_slice(&((cmd::SID as u32) << 16 | 10).to_be_bytes());
        b.extend_from_slice(&[0; 12]);
        assert_eq!(parse_extensions(&b), Err(HsError::Extension));
        let mut b = Vec::new();
        write_string(&mut b, cmd::SID, &"k".repeat(513));
        assert_eq!(parse_extensions(&b), Err(HsError::LongStreamId));
        assert_eq!(parse_extensions(&[0, 1]), Err(HsError::Extension));
    }
}
