//! streamgate: a secure live-ingest node. RTMP in (stream key checked against the
//! channels table and replaced by the channel's public UUID), live status out to the
//! database, public stream data over HTTP. See README.md and DESIGN.md.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod key;
pub mod net;
pub mod outbox;
pub mod relay;
pub mod store;
pub mod thumbs;
