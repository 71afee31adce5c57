//! SRT (Secure Reliable Transport, draft-sharabayko-srt) for a live-ingest listener,
//! sans-IO: the bytes of each UDP datagram go in, with the time; datagrams to send and
//! payloads in sequence come out. No socket, thread or clock of its own, so every
//! behaviour is tested with exact packets and exact times, and fuzzed.
//!
//! - [`packet`]: headers and the control fields (ACK, NAK loss lists, drop requests).
//! - [`handshake`]: the HSv5 handshake, its extensions (SRT options and latency, key
//!   material, stream id, congestion controller, filter, group) and rejection codes.
//! - [`listener`]: inductions answered with a SYN cookie and nothing kept; a
//!   conclusion handed to the application, which accepts (a [`listener::Connection`])
//!   or rejects with a code the caller shows, when it has decided.
//! - [`receiver`]: in-sequence delivery, NAK, ACK/ACKACK round-trip time, too-late drop,
//!   drop requests, keep-alive and idle timeout, statistics.
//! - [`crypto`]: key material, passphrase-derived key encrypting key, key unwrap and
//!   AES-CTR.
//!
//! What it does not do: send data (the listener only receives, as an ingest does),
//! rendezvous, HSv4 callers (libsrt before 1.3), stream (file) mode, packet filters and
//! groups; a caller that asks for any of them is rejected with the code that says so.

pub mod cookie;
pub mod crypto;
pub mod handshake;
pub mod listener;
pub mod out;
pub mod packet;
pub mod receiver;
pub mod seq;

pub use handshake::RejectCode;
pub use listener::{
    Closed, Conclusion, Connection, ConnectionStats, Handshaking, Listener, ListenerConfig,
};
pub use out::Outgoing;
pub use seq::SeqNo;

#[cfg(test)]
mod tests;
