//! streamgate: a secure live-ingest node. RTMP in (stream key checked against the
//! channels table and replaced by the channel's public UUID), relay to upstream RTMP
//! servers, thumbnails, live status out to the database, public stream data over HTTP.
//! README.md says how to run it (docs/ has the rest); ARCHITECTURE.md how the modules fit together.
//!
//! The flow reads one way: `ingest` → `auth` → `hub` → (`relay` | `thumbs` |
//! `outbox`) → `store`, with `http` reading snapshots, `revocation`, `heartbeat` and
//! `health` watching from the side, `webhooks` telling a backend what `events` says, and `app` only wiring. `config`, `channel`, `key` and `peer` are
//! the vocabulary everyone uses.

pub mod app;
pub mod auth;
pub mod channel;
pub mod check;
pub mod cli;
pub mod client_tls;
pub mod config;
pub mod events;
pub mod health;
pub mod healthcheck;
pub mod heartbeat;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod key;
pub mod listen;
pub mod log_budget;
pub mod metric;
pub mod outbox;
pub mod peer;
pub mod relay;
pub mod revocation;
pub mod srt;
pub mod store;
pub mod thumbs;
pub mod webhooks;
