//! The SRT packet header (data and control) and the control information fields this
//! listener reads and writes: ACK, ACKACK, NAK loss lists, drop requests. All fields
//! are big-endian 32-bit words (the handshake's and the key material's own layouts are
//! in [`crate::handshake`] and [`crate::crypto`]).

use crate::seq::SeqNo;

/// Header bytes of every packet.
pub const HEADER_LEN: usize = 16;

/// What a packet header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Data(DataHeader),
    Control(ControlHeader),
}

/// A data packet's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    pub seq: SeqNo,
    /// Position in its message (PP): 0b10 first, 0b00 middle, 0b01 last, 0b11 whole.
    pub position: u8,
    pub in_order: bool,
    /// Which key encrypted the payload (KK): 0 none, 1 even, 2 odd.
    pub key: u8,
    pub retransmitted: bool,
    /// Message number (26 bits).
    pub msgno: u32,
    /// Microseconds since the sender's connection start.
    pub timestamp: u32,
    /// The receiving socket.
    pub dest: u32,
}

/// The control packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Handshake,
    KeepAlive,
    Ack,
    Nak,
    CongestionWarning,
    Shutdown,
    AckAck,
    DropReq,
    PeerError,
    /// 0x7fff: SRT's own messages (key material refresh), by subtype.
    UserDefined,
    Unknown(u16),
}

impl ControlType {
    fn from_wire(v: u16) -> ControlType {
        match v {
            0 => ControlType::Handshake,
            1 => ControlType::KeepAlive,
            2 => ControlType::Ack,
            3 => ControlType::Nak,
            4 => ControlType::CongestionWarning,
            5 => ControlType::Shutdown,
            6 => ControlType::AckAck,
            7 => ControlType::DropReq,
            8 => ControlType::PeerError,
            0x7fff => ControlType::UserDefined,
            other => ControlType::Unknown(other),
        }
    }

    fn to_wire(self) -> u16 {
        match self {
            ControlType::Handshake => 0,
            ControlType::KeepAlive => 1,
            ControlType::Ack => 2,
            ControlType::Nak => 3,
            ControlType::CongestionWarning => 4,
            ControlType::Shutdown => 5,
            ControlType::AckAck => 6,
            ControlType::DropReq => 7,
            ControlType::PeerError => 8,
            ControlType::UserDefined => 0x7fff,
            ControlType::Unknown(v) => v & 0x7fff,
        }
    }
}

/// A control packet's header; its control information field follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlHeader {
    pub kind: ControlType,
    pub subtype: u16,
    /// Type-specific information (the ACK number of an ACK or ACKACK, the message
    /// number of a drop request).
    pub info: u32,
    pub timestamp: u32,
    pub dest: u32,
}

/// Why bytes are not a packet this listener can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("shorter than an SRT header")]
    Short,
    #[error("malformed {0}")]
    Malformed(&'static str),
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the header of a packet.
pub fn parse_header(b: &[u8]) -> Result<Header, PacketError> {
    if b.len() < HEADER_LEN {
        return Err(PacketError::Short);
    }
    let (w0, w1, timestamp, dest) = (word(b, 0), word(b, 4), word(b, 8), word(b, 12));
    if w0 & 0x8000_0000 == 0 {
        Ok(Header::Data(DataHeader {
            seq: SeqNo::new(w0),
            position: (w1 >> 30) as u8,
            in_order: w1 & (1 << 29) != 0,
            key: ((w1 >> 27) & 0b11) as u8,
            retransmitted: w1 & (1 << 26) != 0,
            msgno: w1 & 0x03ff_ffff,
            timestamp,
            dest,
        }))
    } else {
        Ok(Header::Control(ControlHeader {
            kind: ControlType::from_wire(((w0 >> 16) & 0x7fff) as u16),
            subtype: w0 as u16,
            info: w1,
            timestamp,
            dest,
        }))
    }
}

/// Appends a control packet's header.
pub fn write_control(out: &mut Vec<u8>, h: &ControlHeader) {
    let w0 = 0x8000_0000 | (h.kind.to_wire() as u32) << 16 | h.subtype as u32;
    for w in [w0, h.info, h.timestamp, h.dest] {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

/// Appends a data packet's header (a sender's; the listener only reads them).
pub fn write_data(out: &mut Vec<u8>, h: &DataHeader) {
    let w1 = (h.position as u32 & 0b11) << 30
        | (h.in_order as u32) << 29
        | (h.key as u32 & 0b11) << 27
        | (h.retransmitted as u32) << 26
        | (h.msgno & 0x03ff_ffff);
    for w in [h.seq.get(), w1, h.timestamp, h.dest] {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

/// A full ACK's control information field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckInfo {
    /// The first packet not received (every one before it was, or was given up).
    pub next: u32,
    /// Round-trip time and its variance, microseconds.
    pub rtt: u32,
    pub rtt_var: u32,
    /// Free room in the receiver's buffer, packets.
    pub available: u32,
    /// Packets per second received.
    pub packet_rate: u32,
    /// Estimated link capacity, packets per second.
    pub capacity: u32,
    /// Bytes per second received.
    pub byte_rate: u32,
}

impl AckInfo {
    pub const LEN: usize = 28;

    pub fn write(&self, out: &mut Vec<u8>) {
        for w in [
            self.next & 0x7fff_ffff,
            self.rtt,
            self.rtt_var,
            self.available,
            self.packet_rate,
            self.capacity,
            self.byte_rate,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
    }

    /// Reads a full, small or light ACK (missing fields are 0).
    pub fn parse(cif: &[u8]) -> Result<AckInfo, PacketError> {
        if cif.len() < 4 {
            return Err(PacketError::Malformed("ACK"));
        }
        let at = |i: usize| {
            if cif.len() >= 4 * (i + 1) {
                word(cif, 4 * i)
            } else {
                0
            }
        };
        Ok(AckInfo {
            next: at(0) & 0x7fff_ffff,
            rtt: at(1),
            rtt_var: at(2),
            available: at(3),
            packet_rate: at(4),
            capacity: at(5),
            byte_rate: at(6),
        })
    }
}

/// Appends a loss list: each range `(first, last)` as one number, or as two with the
/// first's top bit set.
pub fn write_loss_list(out: &mut Vec<u8>, ranges: &[(SeqNo, SeqNo)]) {
    for &(first, last) in ranges {
        if first == last {
            out.extend_from_slice(&first.get().to_be_bytes());
        } else {
            out.extend_from_slice(&(first.get() | 0x8000_0000).to_be_bytes());
            out.extend_from_slice(&last.get().to_be_bytes());
        }
    }
}

/// Reads a loss list (a NAK's field) into ranges.
pub fn parse_loss_list(cif: &[u8]) -> Result<Vec<(SeqNo, SeqNo)>, PacketError> {
    if !cif.len().is_multiple_of(4) {
        return Err(PacketError::Malformed("loss list"));
    }
    let mut out = Vec::new();
    let mut words = cif.chunks_exact(4).map(|c| word(c, 0));
    while let Some(w) = words.next() {
        if w & 0x8000_0000 != 0 {
            let last = words.next().ok_or(PacketError::Malformed("loss list"))?;
            out.push((SeqNo::new(w), SeqNo::new(last)));
        } else {
            out.push((SeqNo::new(w), SeqNo::new(w)));
        }
    }
    Ok(out)
}

/// A drop request's field: the packets the sender will not send again.
pub fn parse_drop_request(cif: &[u8]) -> Result<(SeqNo, SeqNo), PacketError> {
    if cif.len() < 8 {
        return Err(PacketError::Malformed("drop request"));
    }
    Ok((SeqNo::new(word(cif, 0)), SeqNo::new(word(cif, 4))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_back_what_was_written() {
        let d = DataHeader {
            seq: SeqNo::new(0x1234_5678),
            position: 0b11,
            in_order: false,
            key: 2,
            retransmitted: true,
            msgno: 0x02ab_cdef,
            timestamp: 123_456,
            dest: 0xdead_beef,
        };
        let mut b = Vec::new();
        write_data(&mut b, &d);
        assert_eq!(parse_header(&b), Ok(Header::Data(d)));
        let c = ControlHeader {
            kind: ControlType::UserDefined,
            subtype: 3,
            info: 7,
            timestamp: 9,
            dest: 11,
        };
        b.clear();
        write_control(&mut b, &c);
        assert_eq!(&b[..4], &[0xff, 0xff, 0, 3]);
        assert_eq!(parse_header(&b), Ok(Header::Control(c)));
        assert_eq!(parse_header(&b[..15]), Err(PacketError::Short));
    }

    #[test]
    fn loss_lists_code_single_numbers_and_ranges() {
        let ranges = [
            (SeqNo::new(5), SeqNo::new(5)),
            (SeqNo::new(9), SeqNo::new(20)),
            (SeqNo::new(0x7fff_fffe), SeqNo::new(1)),
        ];
        let mut b = Vec::new();
        write_loss_list(&mut b, &ranges);
        assert_eq!(b.len(), 4 * 5);
        assert_eq!(&b[4..8], &[0x80, 0, 0, 9]);
        assert_eq!(parse_loss_list(&b).unwrap(), ranges);
        assert!(parse_loss_list(&b[..8]).is_err(), "a range cut in half");
    }

    #[test]
    fn acks_full_and_light() {
        let a = AckInfo {
            next: 77,
            rtt: 1000,
            rtt_var: 500,
            available: 8000,
            packet_rate: 60,
            capacity: 9000,
            byte_rate: 80_000,
        };
        let mut b = Vec::new();
        a.write(&mut b);
        assert_eq!(b.len(), AckInfo::LEN);
        assert_eq!(AckInfo::parse(&b).unwrap(), a);
        assert_eq!(AckInfo::parse(&b[..4]).unwrap().next, 77);
        assert!(AckInfo::parse(&b[..3]).is_err());
    }
}
