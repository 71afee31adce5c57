//! The receiving side of a live SRT connection: packets are handed on in sequence as
//! soon as they are in sequence (a relay has no use for holding them until their play
//! time); a packet that comes after a hole waits, the hole is reported at once (NAK)
//! and again periodically while it stays open, and is given up when the packet after
//! it has waited the connection's latency (too-late drop) or the sender says it will
//! not send it again (drop request). Full ACKs every 10 ms when there is news, timed
//! by the sender's ACKACKs for the round-trip time; keep-alives when idle.
//!
//! Memory: only packets after a hole are copied and held, at most
//! [`ReceiverConfig::capacity`] of them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::out::Outgoing;
use crate::packet::{self, AckInfo, ControlHeader, ControlType};
use crate::seq::SeqNo;

/// How often a full ACK may go out.
pub const ACK_INTERVAL: Duration = Duration::from_millis(10);
/// The shortest period of NAK reports.
const NAK_MIN_INTERVAL: Duration = Duration::from_millis(20);
/// Keep-alive after this long without sending anything.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// ACKs remembered for matching ACKACKs.
const ACKS_REMEMBERED: usize = 64;
/// Loss list words per NAK (fits any path MTU).
const NAK_MAX_WORDS: usize = 300;

/// What a receiver is set up with.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverConfig {
    /// The connection's latency: how long a packet after a hole waits for it.
    pub latency: Duration,
    /// Packets held past a hole at most (the flow window the sender is told).
    pub capacity: usize,
    /// Nothing received for this long: the connection is broken.
    pub peer_idle: Duration,
}

/// What a connection's counters say (SRT's own statistics, the receiver's half).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Data packets received (first copies).
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Packets found missing (a hole opened); recovered ones included.
    pub lost: u64,
    /// Retransmitted packets received (some fill holes, some arrive twice).
    pub retransmitted: u64,
    /// Packets given up: too late, or the sender dropped them.
    pub dropped: u64,
    /// Packets that came twice, or after they were given up.
    pub duplicates: u64,
    /// Packets beyond the buffer (the sender ignored the flow window).
    pub overflow: u64,
    /// NAK reports sent.
    pub naks_sent: u64,
    /// Round-trip time and its variance, microseconds.
    pub rtt_us: u32,
    pub rtt_var_us: u32,
    /// Packets held past a hole now.
    pub held: usize,
    /// Packets and bytes per second received, over the last second.
    pub packet_rate: u32,
    pub byte_rate: u32,
}

enum Slot {
    Hole,
    /// Given up (the sender dropped it): skipped when its turn comes.
    Dropped,
    Data {
        payload: Box<[u8]>,
        arrived: Instant,
    },
}

/// Sent ACK, waiting for its ACKACK.
#[derive(Clone, Copy)]
struct SentAck {
    number: u32,
    at: Instant,
    next: SeqNo,
}

/// Packets per second and bytes per second over whole seconds.
struct Rate {
    since: Instant,
    packets: u32,
    bytes: u64,
    packet_rate: u32,
    byte_rate: u32,
}

/// Link capacity from packet pairs: the sender sends every 16th packet and the next
/// one back to back; their arrival interval is the link's time per packet.
struct Probe {
    first_at: Option<(SeqNo, Instant)>,
    intervals: VecDeque<u32>,
}

impl Probe {
    fn on_packet(&mut self, seq: SeqNo, now: Instant, retransmitted: bool) {
        if retransmitted {
            self.first_at = None;
            return;
        }
        match seq.get() % 16 {
            0 => self.first_at = Some((seq, now)),
            1 => {
                if let Some((first, at)) = self.first_at.take() {
                    if first.add(1) == seq {
                        let us = now.saturating_duration_since(at).as_micros() as u32;
                        if self.intervals.len() == 16 {
                            self.intervals.pop_front();
                        }
                        self.intervals.push_back(us.max(1));
                    }
                }
            }
            _ => {}
        }
    }

    /// Packets per second (0 until measured).
    fn capacity(&self) -> u32 {
        if self.intervals.is_empty() {
            return 0;
        }
        let mut v: Vec<u32> = self.intervals.iter().copied().collect();
        v.sort_unstable();
        1_000_000 / v[v.len() / 2]
    }
}

/// The receiving half of a connection.
pub struct Receiver {
    cfg: ReceiverConfig,
    /// The peer's socket (the destination of what this side sends).
    peer_socket: u32,
    /// Control packets carry microseconds since this instant.
    start: Instant,
    /// The first packet not handed on: every one before it was, or was given up.
    next: SeqNo,
    /// From `next` on, when a hole is open: `held[0]` is the hole, the last is the
    /// highest packet received.
    held: VecDeque<Slot>,
    ack_number: u32,
    /// The last ACK sent, and the ACK point the sender confirmed (ACKACK).
    last_ack: Option<(SeqNo, Instant)>,
    confirmed: Option<SeqNo>,
    acks: VecDeque<SentAck>,
    rtt: Option<(u32, u32)>,
    last_nak: Instant,
    last_sent: Instant,
    last_received: Instant,
    rate: Rate,
    probe: Probe,
    stats: ReceiverStats,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("next", &self.next)
            .field("held", &self.held.len())
            .finish()
    }
}

impl Receiver {
    /// A receiver whose first packet is `isn`, answering to `peer_socket`.
    pub fn new(cfg: ReceiverConfig, isn: SeqNo, peer_socket: u32, now: Instant) -> Receiver {
        Receiver {
            cfg,
            peer_socket,
            start: now,
            next: isn,
            held: VecDeque::new(),
            ack_number: 0,
            last_ack: None,
            confirmed: None,
            acks: VecDeque::new(),
            rtt: None,
            last_nak: now,
            last_sent: now,
            last_received: now,
            rate: Rate {
                since: now,
                packets: 0,
                bytes: 0,
                packet_rate: 0,
                byte_rate: 0,
            },
            probe: Probe {
                first_at: None,
                intervals: VecDeque::new(),
            },
            stats: ReceiverStats::default(),
        }
    }

    pub fn stats(&self) -> ReceiverStats {
        let (rtt, var) = self.rtt();
        ReceiverStats {
            rtt_us: rtt,
            rtt_var_us: var,
            held: self.held.len(),
            packet_rate: self.rate.packet_rate,
            byte_rate: self.rate.byte_rate,
            ..self.stats
        }
    }

    /// Round-trip time and variance (the protocol's initial 100 ms / 50 ms until the
    /// first ACKACK).
    fn rtt(&self) -> (u32, u32) {
        self.rtt.unwrap_or((100_000, 50_000))
    }

    /// When anything last arrived.
    pub fn last_received(&self) -> Instant {
        self.last_received
    }

    /// Microseconds since the start, as control packets carry them.
    fn timestamp(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_micros() as u32
    }

    fn control(
        &mut self,
        now: Instant,
        out: &mut Outgoing,
        kind: ControlType,
        info: u32,
        cif: impl FnOnce(&mut Vec<u8>),
    ) {
        let h = ControlHeader {
            kind,
            subtype: 0,
            info,
            timestamp: self.timestamp(now),
            dest: self.peer_socket,
        };
        out.push(|b| {
            packet::write_control(b, &h);
            cif(b);
        });
        self.last_sent = now;
    }

    /// Notes that a packet of any kind arrived.
    pub fn heard(&mut self, now: Instant) {
        self.last_received = now;
    }

    /// A data packet (decrypted): handed on when it is next in sequence, with any
    /// packets it lets follow, else held.
    pub fn on_data(
        &mut self,
        now: Instant,
        seq: SeqNo,
        retransmitted: bool,
        payload: &[u8],
        out: &mut Outgoing,
        deliver: &mut dyn FnMut(&[u8]),
    ) {
        self.last_received = now;
        if retransmitted {
            self.stats.retransmitted += 1;
        }
        self.probe.on_packet(seq, now, retransmitted);
        let off = self.next.offset_to(seq);
        if off < 0 {
            self.stats.duplicates += 1;
            return;
        }
        let off = off as usize;
        if off >= self.cfg.capacity {
            self.stats.overflow += 1;
            return;
        }
        if off < self.held.len() && !matches!(self.held[off], Slot::Hole) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.packets += 1;
        self.stats.bytes += payload.len() as u64;
        self.rate.packets += 1;
        self.rate.bytes += payload.len() as u64;
        if self.held.is_empty() && off == 0 {
            deliver(payload);
            self.next = self.next.add(1);
            return;
        }
        if off >= self.held.len() {
            let gap = off - self.held.len();
            if gap > 0 {
                // A new hole: reported at once.
                let first = self.next.add(self.held.len() as u32);
                let last = seq.sub(1);
                self.stats.lost += gap as u64;
                self.control(now, out, ControlType::Nak, 0, |b| {
                    packet::write_loss_list(b, &[(first, last)])
                });
                self.stats.naks_sent += 1;
                self.held.extend((0..gap).map(|_| Slot::Hole));
            }
            self.held.push_back(Slot::Data {
                payload: payload.into(),
                arrived: now,
            });
        } else {
            self.held[off] = Slot::Data {
                payload: payload.into(),
                arrived: now,
            };
        }
        self.drain(deliver);
    }

    /// Hands on what is in sequence at the front; skips what was given up.
    fn drain(&mut self, deliver: &mut dyn FnMut(&[u8])) {
        while let Some(front) = self.held.front() {
            match front {
                Slot::Hole => break,
                Slot::Dropped => {
                    self.stats.dropped += 1;
                }
                Slot::Data { payload, .. } => deliver(payload),
            }
            self.held.pop_front();
            self.next = self.next.add(1);
        }
    }

    /// The sender will not send `first..=last` again.
    pub fn on_drop_request(&mut self, first: SeqNo, last: SeqNo, deliver: &mut dyn FnMut(&[u8])) {
        let end = self.next.offset_to(last);
        if end < 0 || first.offset_to(last) < 0 {
            return;
        }
        let end = (end as usize).min(self.cfg.capacity - 1);
        let start = self.next.offset_to(first).max(0) as usize;
        if start > end {
            return; // all of it past the window: nothing held there to give up
        }
        while self.held.len() <= end {
            self.held.push_back(Slot::Hole);
        }
        for slot in self.held.range_mut(start..=end) {
            if matches!(slot, Slot::Hole) {
                *slot = Slot::Dropped;
            }
        }
        self.drain(deliver);
    }

    /// The sender confirmed ACK `number`: a round-trip time sample.
    pub fn on_ackack(&mut self, now: Instant, number: u32) {
        let Some(i) = self.acks.iter().position(|a| a.number == number) else {
            return;
        };
        let ack = self.acks[i];
        self.acks.drain(..=i);
        let sample = now
            .saturating_duration_since(ack.at)
            .as_micros()
            .min(u32::MAX as u128) as u32;
        self.rtt = Some(match self.rtt {
            None => (sample, sample / 2),
            Some((rtt, var)) => {
                let var = (3 * var as u64 + rtt.abs_diff(sample) as u64) / 4;
                let rtt = (7 * rtt as u64 + sample as u64) / 8;
                (rtt as u32, var as u32)
            }
        });
        if self.confirmed.is_none_or(|c| c.offset_to(ack.next) > 0) {
            self.confirmed = Some(ack.next);
        }
    }

    /// Timers: too-late drop, ACK, periodic NAK, keep-alive. `false` when the peer has
    /// been silent for [`ReceiverConfig::peer_idle`] (the connection is broken).
    pub fn tick(
        &mut self,
        now: Instant,
        out: &mut Outgoing,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> bool {
        if now.saturating_duration_since(self.last_received) >= self.cfg.peer_idle {
            return false;
        }
        self.too_late(now, deliver);
        self.rates(now);
        self.ack(now, out);
        self.nak(now, out);
        if now.saturating_duration_since(self.last_sent) >= KEEPALIVE {
            self.control(now, out, ControlType::KeepAlive, 0, |_| {});
        }
        true
    }

    /// Gives up holes whose next packet has waited the latency.
    fn too_late(&mut self, now: Instant, deliver: &mut dyn FnMut(&[u8])) {
        loop {
            if !matches!(self.held.front(), Some(Slot::Hole)) {
                return;
            }
            let waited = self.held.iter().enumerate().find_map(|(i, s)| match s {
                Slot::Data { arrived, .. } => Some((i, *arrived)),
                _ => None,
            });
            let Some((i, arrived)) = waited else { return };
            if now.saturating_duration_since(arrived) < self.cfg.latency {
                return;
            }
            for s in self.held.range_mut(..i) {
                if matches!(s, Slot::Hole) {
                    *s = Slot::Dropped;
                }
            }
            self.drain(deliver);
        }
    }

    fn rates(&mut self, now: Instant) {
        let took = now.saturating_duration_since(self.rate.since);
        if took >= Duration::from_secs(1) {
            let us = took.as_micros().max(1) as u64;
            self.rate.packet_rate = (self.rate.packets as u64 * 1_000_000 / us) as u32;
            self.rate.byte_rate = (self.rate.bytes * 1_000_000 / us).min(u32::MAX as u64) as u32;
            self.rate.packets = 0;
            self.rate.bytes = 0;
            self.rate.since = now;
        }
    }

    fn ack(&mut self, now: Instant, out: &mut Outgoing) {
        let next = self.next;
        if self.confirmed == Some(next) {
            return; // the sender knows
        }
        let (rtt, var) = self.rtt();
        if let Some((seq, at)) = self.last_ack {
            let again = Duration::from_micros(rtt as u64 + 4 * var as u64).max(ACK_INTERVAL);
            if seq == next && now.saturating_duration_since(at) < again {
                return;
            }
            if now.saturating_duration_since(at) < ACK_INTERVAL {
                return;
            }
        }
        self.ack_number = self.ack_number.wrapping_add(1).max(1);
        let info = AckInfo {
            next: next.get(),
            rtt,
            rtt_var: var,
            available: (self.cfg.capacity - self.held.len().min(self.cfg.capacity)) as u32,
            packet_rate: self.rate.packet_rate,
            capacity: self.probe.capacity(),
            byte_rate: self.rate.byte_rate,
        };
        let number = self.ack_number;
        self.control(now, out, ControlType::Ack, number, |b| info.write(b));
        self.last_ack = Some((next, now));
        if self.acks.len() == ACKS_REMEMBERED {
            self.acks.pop_front();
        }
        self.acks.push_back(SentAck {
            number,
            at: now,
            next,
        });
    }

    /// Reports every open hole, every (RTT + 4 RTTVar) / 2 (20 ms at least).
    fn nak(&mut self, now: Instant, out: &mut Outgoing) {
        if !self.held.iter().any(|s| matches!(s, Slot::Hole)) {
            return;
        }
        let (rtt, var) = self.rtt();
        let period = Duration::from_micros((rtt as u64 + 4 * var as u64) / 2).max(NAK_MIN_INTERVAL);
        if now.saturating_duration_since(self.last_nak) < period {
            return;
        }
        let hole = |i: usize| matches!(self.held[i], Slot::Hole);
        let mut ranges: Vec<(SeqNo, SeqNo)> = Vec::new();
        let (mut words, mut i) = (0, 0);
        while i < self.held.len() {
            if !hole(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i + 1 < self.held.len() && hole(i + 1) {
                i += 1;
            }
            let w = if start == i { 1 } else { 2 };
            if words + w > NAK_MAX_WORDS {
                break;
            }
            words += w;
            ranges.push((self.next.add(start as u32), self.next.add(i as u32)));
            i += 1;
        }
        self.control(now, out, ControlType::Nak, 0, |b| {
            packet::write_loss_list(b, &ranges)
        });
        self.stats.naks_sent += 1;
        self.last_nak = now;
    }
}

impl Receiver {
    /// The first packet not handed on.
    pub fn next(&self) -> SeqNo {
        self.next
    }
}
