//! Media understanding for a pass-through server: classify FLV audio/video tags
//! (legacy and Enhanced RTMP v2), read codec configuration records and parameter sets,
//! keep what a late consumer needs (metadata, sequence headers, latest keyframe), and
//! compute stream statistics and judge the encoder's settings ([`health`]); build the same FLV bodies from elementary streams
//! ([`mux`]: the protocol-neutral media input). Sans-IO; payloads stay shared `Bytes`.

pub mod cache;
pub mod codec;
pub mod flv;
pub mod health;
pub mod mux;
pub mod stats;
pub mod tag;
pub mod ts;

pub use cache::{Frame, Keyframe, KeyframeCache, Snapshot};
pub use codec::PictureSize;
pub use mux::MediaKind;
pub use stats::{sequence_header_size, StatsSnapshot, StreamStats};
pub use tag::{AudioCodec, AudioTag, VideoCodec, VideoPacket, VideoTag};
