//! MPEG-TS (ISO/IEC 13818-1), sans-IO: what an SRT publisher sends. [`TsDemuxer`]
//! takes the bytes as they come (any split, 188-byte packets found by their sync byte),
//! reads the program from the PAT and PMT, and reassembles each elementary stream's
//! PES packets (2.4.3.6) with their 33-bit PTS/DTS and random-access flag. A gap in a
//! stream's continuity counter (lost packets) drops the PES in progress and says so.
//! [`to_flv`] turns what comes out into the node's media input.
//!
//! Bounded: at most [`MAX_STREAMS`] elementary streams, a PES of at most the limit
//! given (a larger one is dropped), one partial packet held.

pub mod to_flv;

use bytes::{Bytes, BytesMut};

/// Bytes of a transport packet.
pub const PACKET: usize = 188;
const SYNC: u8 = 0x47;
/// Elementary streams followed at most.
pub const MAX_STREAMS: usize = 16;

/// What an elementary stream carries (the PMT's `stream_type`, 2.4.4.9 table 2-34).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    /// 0x1B, H.264 in Annex B.
    H264,
    /// 0x24, H.265 in Annex B.
    Hevc,
    /// 0x0F, AAC in ADTS.
    AacAdts,
    /// Anything else (MPEG audio, AC-3, Opus, KLV, SCTE-35...): not relayed.
    Other(u8),
}

impl StreamType {
    fn of(t: u8) -> StreamType {
        match t {
            0x1b => StreamType::H264,
            0x24 => StreamType::Hevc,
            0x0f => StreamType::AacAdts,
            other => StreamType::Other(other),
        }
    }
}

/// One elementary stream of the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsStream {
    pub pid: u16,
    pub stream_type: StreamType,
}

/// One whole PES packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pes {
    pub pid: u16,
    pub stream_type: StreamType,
    /// Presentation and decoding time stamps, 90 kHz, 33 bits as sent.
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    /// The adaptation field said a random access point starts in this PES.
    pub random_access: bool,
    /// The payload (an access unit, or ADTS frames).
    pub data: Bytes,
}

/// What the demuxer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsEvent {
    /// The program's elementary streams (from the PMT), when first seen and when they
    /// change.
    Program(Vec<TsStream>),
    Pes(Pes),
    /// Packets of this stream were lost (a continuity counter gap): the PES in
    /// progress was dropped.
    Lost {
        pid: u16,
    },
    /// A PES grew over the size limit and was dropped.
    Oversized {
        pid: u16,
    },
}

/// What the demuxer keeps of one elementary stream.
#[derive(Debug)]
struct Elementary {
    stream: TsStream,
    /// The last continuity counter seen (packets with a payload).
    cc: Option<u8>,
    /// The PES being assembled, from its first byte; `None` between PES packets or
    /// after a loss until the next start.
    pes: Option<BytesMut>,
    random_access: bool,
}

/// The demuxer of one transport stream.
#[derive(Debug)]
pub struct TsDemuxer {
    /// A packet's bytes not complete yet.
    partial: BytesMut,
    /// The PMT's PID, from the PAT.
    pmt_pid: Option<u16>,
    /// The program's streams, as the last PMT said.
    streams: Vec<Elementary>,
    /// Largest PES accepted.
    max_pes: usize,
    /// Bytes skipped to find the sync byte again.
    skipped: u64,
}

impl TsDemuxer {
    /// A demuxer that accepts PES packets up to `max_pes` bytes.
    pub fn new(max_pes: usize) -> TsDemuxer {
        TsDemuxer {
            partial: BytesMut::new(),
            pmt_pid: None,
            streams: Vec::new(),
            max_pes,
            skipped: 0,
        }
    }

    /// Bytes skipped so far to find a packet's start again (garbage, a cut packet).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Reads `data` (any amount, any split); what it completes goes to `events`.
    pub fn push(&mut self, mut data: &[u8], events: &mut Vec<TsEvent>) {
        if !self.partial.is_empty() {
            let need = PACKET - self.partial.len();
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < PACKET {
                return;
            }
            let packet = std::mem::take(&mut self.partial);
            if packet[0] == SYNC {
                self.packet(&packet, events);
            } else {
                self.skipped += PACKET as u64;
            }
        }
        while !data.is_empty() {
            if data[0] != SYNC {
                // Resynchronise: the next sync byte that another one follows a packet
                // later (or that ends the data).
                let at = (1..data.len())
                    .find(|&i| data[i] == SYNC && data.get(i + PACKET).is_none_or(|&b| b == SYNC));
                let skip = at.unwrap_or(data.len());
                self.skipped += skip as u64;
                data = &data[skip..];
                continue;
            }
            if data.len() < PACKET {
                self.partial.extend_from_slice(data);
                return;
            }
            let (packet, rest) = data.split_at(PACKET);
            self.packet(packet, events);
            data = rest;
        }
    }

    /// One 188-byte packet starting with the sync byte.
    fn packet(&mut self, p: &[u8], events: &mut Vec<TsEvent>) {
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        let afc = (p[3] >> 4) & 0x03;
        let cc = p[3] & 0x0f;
        let mut at = 4;
        let mut random_access = false;
        if afc & 0x02 != 0 {
            let len = p[4] as usize;
            if len > 0 && 5 + len <= PACKET {
                random_access = p[5] & 0x40 != 0;
            }
            at = 5 + len;
        }
        if afc & 0x01 == 0 || at >= PACKET {
            return;
        }
        let payload = &p[at..];
        if pid == 0 {
            if pusi {
                self.pat(payload);
            }
            return;
        }
        if Some(pid) == self.pmt_pid {
            if pusi {
                self.pmt(payload, events);
            }
            return;
        }
        let Some(i) = self.streams.iter().position(|e| e.stream.pid == pid) else {
            return;
        };
        let max_pes = self.max_pes;
        let e = &mut self.streams[i];
        // Continuity: the next counter, or the same one again (a duplicate packet).
        let gap = match e.cc {
            Some(last) if cc == last => return,
            Some(last) => cc != (last + 1) & 0x0f,
            None => false,
        };
        if gap && e.pes.take().is_some() {
            events.push(TsEvent::Lost { pid });
        }
        e.cc = Some(cc);
        if pusi {
            if let Some(done) = e.pes.take() {
                emit(e, done, events);
            }
            e.pes = Some(BytesMut::from(payload));
            e.random_access = random_access;
        } else if let Some(pes) = e.pes.as_mut() {
            pes.extend_from_slice(payload);
        }
        let Some(pes) = e.pes.as_ref() else { return };
        if pes.len() > max_pes {
            e.pes = None;
            events.push(TsEvent::Oversized { pid });
            return;
        }
        // A PES with its length given is complete once that many bytes are in.
        if pes.len() >= 6 {
            let len = u16::from_be_bytes([pes[4], pes[5]]) as usize;
            if len > 0 && pes.len() >= 6 + len {
                let mut done = e.pes.take().expect("present");
                done.truncate(6 + len);
                emit(e, done, events);
            }
        }
    }

    /// The PAT (2.4.4.3): the PMT of the first program.
    fn pat(&mut self, payload: &[u8]) {
        let Some(section) = section(payload) else {
            return;
        };
        // After table_id .. last_section_number (8 bytes), 4-byte entries, CRC last.
        let entries = &section[8..section.len().saturating_sub(4).max(8)];
        for entry in entries.chunks_exact(4) {
            let program = u16::from_be_bytes([entry[0], entry[1]]);
            if program != 0 {
                self.pmt_pid = Some(u16::from_be_bytes([entry[2] & 0x1f, entry[3]]));
                return;
            }
        }
    }

    /// The PMT (2.4.4.8): the program's elementary streams.
    fn pmt(&mut self, payload: &[u8], events: &mut Vec<TsEvent>) {
        let Some(section) = section(payload) else {
            return;
        };
        if section.len() < 16 {
            return;
        }
        let info_len = (u16::from_be_bytes([section[10] & 0x0f, section[11]])) as usize;
        let mut at = 12 + info_len;
        let end = section.len() - 4;
        let mut streams = Vec::new();
        while at + 5 <= end && streams.len() < MAX_STREAMS {
            let stream_type = StreamType::of(section[at]);
            let pid = u16::from_be_bytes([section[at + 1] & 0x1f, section[at + 2]]);
            let es_info = u16::from_be_bytes([section[at + 3] & 0x0f, section[at + 4]]) as usize;
            streams.push(TsStream { pid, stream_type });
            at += 5 + es_info;
        }
        let now: Vec<TsStream> = self.streams.iter().map(|e| e.stream).collect();
        if now != streams {
            self.streams = streams
                .iter()
                .map(|&stream| Elementary {
                    stream,
                    cc: None,
                    pes: None,
                    random_access: false,
                })
                .collect();
            events.push(TsEvent::Program(streams));
        }
    }
}

/// A PSI section from a payload that starts one (pointer field first), checked to be
/// whole within the payload; `None` otherwise.
fn section(payload: &[u8]) -> Option<&[u8]> {
    let pointer = *payload.first()? as usize;
    let s = payload.get(1 + pointer..)?;
    if s.len() < 3 {
        return None;
    }
    let len = (u16::from_be_bytes([s[1] & 0x0f, s[2]])) as usize;
    let s = s.get(..3 + len)?;
    (s.len() >= 12).then_some(s)
}

/// Hands a whole PES on, its header read (2.4.3.7); a malformed one is dropped.
fn emit(e: &Elementary, pes: BytesMut, events: &mut Vec<TsEvent>) {
    if pes.len() < 9 || pes[0..3] != [0, 0, 1] {
        return;
    }
    let flags = pes[7];
    let header_len = pes[8] as usize;
    if pes.len() < 9 + header_len {
        return;
    }
    // The time stamps are read within the header only (a short one has none).
    let header = &pes[9..9 + header_len];
    let pts = (flags & 0x80 != 0).then(|| timestamp(header)).flatten();
    let dts = (flags & 0xc0 == 0xc0)
        .then(|| header.get(5..).and_then(timestamp))
        .flatten();
    let mut pes = pes.freeze();
    let data = pes.split_off(9 + header_len);
    events.push(TsEvent::Pes(Pes {
        pid: e.stream.pid,
        stream_type: e.stream.stream_type,
        pts,
        dts,
        random_access: e.random_access,
        data,
    }));
}

/// A 33-bit time stamp in its 5 bytes (2.4.3.7), markers not checked.
fn timestamp(b: &[u8]) -> Option<u64> {
    let b = b.get(..5)?;
    Some(
        ((b[0] as u64 >> 1) & 0x07) << 30
            | (b[1] as u64) << 22
            | ((b[2] as u64) >> 1) << 15
            | (b[3] as u64) << 7
            | (b[4] as u64) >> 1,
    )
}

#[cfg(test)]
mod tests;
