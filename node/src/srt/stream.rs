//! One accepted SRT publish: the connection's in-sequence payloads (MPEG-TS) through
//! the demuxer and the conversion to the node's media input, handed to the hub once
//! per wake-up of the thread, as an RTMP connection hands over one read.

use std::time::Instant;

use media::ts::to_flv::{Notice, Output, TsToFlv};
use media::ts::{TsDemuxer, TsEvent};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::hub::{LinkStats, PublishHandle, ReadBatch};
use crate::ingest::admission::Ticket;

/// The most a PES (one video frame) may take: a 4K keyframe fits.
const MAX_PES: usize = 8 * 1024 * 1024;

/// An accepted publish.
pub(super) struct Stream {
    pub(super) conn: ::srt::Connection,
    pub(super) publish: PublishHandle,
    /// Cancelled when the node ends the publish.
    pub(super) cancel: CancellationToken,
    pub(super) media: TsMedia,
    /// When the last payload arrived (the media idle deadline counts from it).
    pub(super) last_payload: Instant,
    /// When the link statistics were last handed to the hub.
    pub(super) reported: Instant,
    /// The packet counts already added to the node's totals.
    pub(super) counted: [u64; 4],
    pub(super) _ticket: Ticket,
    pub(super) _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The stream's MPEG-TS on its way to the hub.
pub(super) struct TsMedia {
    demux: TsDemuxer,
    flv: TsToFlv,
    events: Vec<TsEvent>,
    outputs: Vec<Output>,
    batch: ReadBatch,
    /// What was said about the stream's content, so that each is said once.
    told: Told,
}

#[derive(Default)]
struct Told {
    unsupported: bool,
    no_video: bool,
    lost: u64,
    discontinuities: u64,
}

impl TsMedia {
    pub(super) fn new() -> TsMedia {
        TsMedia {
            demux: TsDemuxer::new(MAX_PES),
            flv: TsToFlv::new(),
            events: Vec::new(),
            outputs: Vec::new(),
            batch: ReadBatch::default(),
            told: Told::default(),
        }
    }

    /// Takes payload bytes (demuxed at once; converted by [`TsMedia::flush`]).
    pub(super) fn push(&mut self, payload: &[u8]) {
        self.demux.push(payload, &mut self.events);
    }

    /// Converts what was demuxed and hands it to the publish in one go.
    pub(super) fn flush(&mut self, publish: &PublishHandle, at: tokio::time::Instant) {
        if self.events.is_empty() {
            return;
        }
        for e in self.events.drain(..) {
            self.flv.on_event(e, &mut self.outputs);
        }
        let channel = publish.stream.channel_id;
        for o in self.outputs.drain(..) {
            match o {
                Output::Media {
                    kind,
                    timestamp,
                    body,
                } => self.batch.push_media(kind, timestamp, body),
                Output::Notice(n) => self.told.tell(channel, n),
            }
        }
        if !self.batch.is_empty() {
            publish.stream.deliver_read(&mut self.batch, at);
        }
    }
}

impl Told {
    /// Logs what the stream's content says: an unsupported codec and a program without
    /// video once, losses and discontinuities the first time and every 100th.
    fn tell(&mut self, channel: uuid::Uuid, n: Notice) {
        match n {
            Notice::Unsupported { pid, stream_type } => {
                if !std::mem::replace(&mut self.unsupported, true) {
                    warn!(channel_id = %channel, pid, stream_type = format!("0x{stream_type:02x}"), "SRT stream carries a codec the node does not relay (H.264, H.265 and AAC are relayed); the rest of the stream goes on");
                }
            }
            Notice::NoVideo => {
                if !std::mem::replace(&mut self.no_video, true) {
                    warn!(channel_id = %channel, "SRT stream has no H.264 or H.265 video: only its audio is relayed, and it gets no thumbnail");
                }
            }
            Notice::Lost { pid } => {
                self.lost += 1;
                if self.lost % 100 == 1 {
                    info!(channel_id = %channel, pid, times = self.lost, "SRT stream lost MPEG-TS packets (too late for retransmission): a frame was dropped");
                }
            }
            Notice::Oversized { pid } => {
                warn!(channel_id = %channel, pid, "SRT stream sent a frame over 8 MiB: dropped");
            }
            Notice::Discontinuity { pid, jump_ms } => {
                self.discontinuities += 1;
                if self.discontinuities % 100 == 1 {
                    info!(channel_id = %channel, pid, jump_ms, "SRT stream's clock jumped (encoder restart or splice): timestamps continue smoothly");
                }
            }
        }
    }
}

impl Stream {
    /// The link statistics as the hub shows them.
    /// Adds what the link counted since the last call to the node's totals
    /// (`streamgate_srt_packets_total` by kind).
    pub(super) fn count_packets(&mut self) {
        let r = self.conn.stats().receiver;
        let now = [r.packets, r.lost, r.retransmitted, r.dropped];
        for (i, kind) in ["received", "lost", "retransmitted", "dropped"]
            .into_iter()
            .enumerate()
        {
            let add = now[i].saturating_sub(self.counted[i]);
            if add > 0 {
                metrics::counter!(crate::metric::SRT_PACKETS, "kind" => kind).increment(add);
            }
        }
        self.counted = now;
    }

    pub(super) fn link_stats(&self) -> LinkStats {
        let s = self.conn.stats();
        let r = s.receiver;
        LinkStats {
            rtt_ms: r.rtt_us as f64 / 1000.0,
            latency_ms: s.latency_ms as u32,
            packets_received: r.packets,
            packets_lost: r.lost,
            packets_retransmitted: r.retransmitted,
            packets_dropped: r.dropped,
            receive_buffer_packets: r.held,
            receive_kbps: r.byte_rate as u64 * 8 / 1000,
            encrypted: s.encrypted,
        }
    }
}
