//! The listener's side of the caller-listener handshake (HSv5) and the connections it
//! accepts.
//!
//! An induction is answered at once from its bytes alone (the cookie is a keyed hash,
//! nothing is kept). A conclusion whose cookie is good becomes a [`Conclusion`] for the
//! application to decide on, at its own pace: the caller repeats its conclusion until
//! it gets an answer, so the application may take the time a database takes, and
//! answers with [`Conclusion::accept`] (a [`Connection`]) or [`Conclusion::reject`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cookie::CookieJar;
use crate::crypto::{Decrypter, KeyMaterial};
use crate::handshake::{
    self, cmd, ext_flags, options, Handshake, HsError, HsType, RejectCode, SrtOptions,
};
use crate::out::Outgoing;
use crate::packet::{self, ControlHeader, ControlType, Header, HEADER_LEN};
use crate::receiver::{Receiver, ReceiverConfig, ReceiverStats};
use crate::seq::SeqNo;

/// The SRT version this listener speaks (the protocol of libsrt 1.5).
pub const SRT_VERSION: u32 = 0x01_05_01;
/// The largest packet this listener takes (Ethernet's MTU).
pub const MAX_MSS: u32 = 1500;
/// The oldest caller version with the HSv5 handshake and the stream id.
const MIN_PEER_VERSION: u32 = 0x01_03_00;

/// What the listener is set up with.
#[derive(Debug, Clone, Copy)]
pub struct ListenerConfig {
    /// The least latency (ms) of an accepted connection; a caller may ask for more.
    pub latency_ms: u16,
    /// Packets a connection holds past a hole at most.
    pub capacity: usize,
    /// A connection silent this long is broken.
    pub peer_idle: Duration,
}

/// The handshake side of a listening socket.
#[derive(Debug)]
pub struct Listener {
    cookies: CookieJar,
    /// Cookies change every minute counted from here.
    epoch: Instant,
    cfg: ListenerConfig,
}

/// What a handshake packet led to.
#[derive(Debug)]
pub enum Handshaking {
    /// An induction, answered.
    Answered,
    /// A caller's conclusion with a good cookie: the application decides.
    Conclusion(Box<Conclusion>),
    /// Not answered, and why.
    Ignored(&'static str),
}

/// A caller's conclusion: who it is and what it asks.
#[derive(Debug)]
pub struct Conclusion {
    pub peer: SocketAddr,
    /// The caller's socket (with `peer`, what identifies its attempt).
    pub caller_socket: u32,
    /// The stream id, if the caller sent one.
    pub stream_id: Option<String>,
    /// The caller's key material: it encrypts (with the passphrase it was given).
    pub key_material: Option<Vec<u8>>,
    /// A reason to refuse whatever the stream id says: the caller wants what this
    /// listener does not do (an old handshake, stream mode, another congestion
    /// controller, a packet filter, a group) or sent a malformed conclusion.
    pub unacceptable: Option<RejectCode>,
    /// The caller's SRT options (version, flags, latencies).
    pub options: Option<SrtOptions>,
    request: Handshake,
}

impl Listener {
    /// `secret`: random bytes for the cookies.
    pub fn new(cfg: ListenerConfig, secret: [u8; 32], now: Instant) -> Listener {
        Listener {
            cookies: CookieJar::new(secret),
            epoch: now,
            cfg,
        }
    }

    pub fn config(&self) -> &ListenerConfig {
        &self.cfg
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / 60
    }

    /// A handshake packet addressed to the listener (destination socket 0).
    pub fn on_handshake(
        &self,
        now: Instant,
        peer: SocketAddr,
        datagram: &[u8],
        out: &mut Outgoing,
    ) -> Handshaking {
        let Ok(Header::Control(h)) = packet::parse_header(datagram) else {
            return Handshaking::Ignored("not a control packet");
        };
        if h.kind != ControlType::Handshake {
            return Handshaking::Ignored("not a handshake");
        }
        let Ok((hs, rest)) = Handshake::parse(&datagram[HEADER_LEN..]) else {
            return Handshaking::Ignored("short handshake");
        };
        match hs.kind {
            HsType::Induction => {
                let cookie = self.cookies.bake(peer, self.minute(now));
                let response = Handshake {
                    version: handshake::HS_VERSION_5,
                    encryption: 0,
                    extension: handshake::SRT_MAGIC,
                    cookie,
                    ..hs
                };
                let header = ControlHeader {
                    kind: ControlType::Handshake,
                    subtype: 0,
                    info: 0,
                    timestamp: 0,
                    dest: hs.socket_id,
                };
                out.push(|b| {
                    packet::write_control(b, &header);
                    response.write(b);
                });
                Handshaking::Answered
            }
            HsType::Conclusion => {
                if !self.cookies.check(peer, self.minute(now), hs.cookie) {
                    return Handshaking::Ignored("conclusion without a good cookie");
                }
                Handshaking::Conclusion(Box::new(Conclusion::read(peer, hs, rest)))
            }
            _ => Handshaking::Ignored("not a caller's handshake"),
        }
    }
}

impl Conclusion {
    fn read(peer: SocketAddr, request: Handshake, rest: &[u8]) -> Conclusion {
        let mut c = Conclusion {
            peer,
            caller_socket: request.socket_id,
            stream_id: None,
            key_material: None,
            unacceptable: None,
            options: None,
            request,
        };
        if request.version != handshake::HS_VERSION_5 {
            c.unacceptable = Some(RejectCode::VERSION);
            return c;
        }
        let e = match handshake::parse_extensions(rest) {
            Ok(e) => e,
            Err(HsError::LongStreamId | HsError::StreamIdEncoding) => {
                c.unacceptable = Some(RejectCode::BAD_REQUEST);
                return c;
            }
            Err(_) => {
                c.unacceptable = Some(RejectCode::ROGUE);
                return c;
            }
        };
        c.stream_id = e.stream_id;
        c.key_material = e.key_material.map(<[u8]>::to_vec);
        c.options = e.options;
        c.unacceptable = match e.options {
            None => Some(RejectCode::ROGUE),
            Some(o) if o.version < MIN_PEER_VERSION => Some(RejectCode::VERSION),
            Some(o) if o.flags & options::STREAM != 0 => Some(RejectCode::MESSAGEAPI),
            _ if e.congestion.as_deref().is_some_and(|c| c != "live") => {
                Some(RejectCode::CONGESTION)
            }
            _ if e.filter.is_some() => Some(RejectCode::FILTER),
            _ if e.group => Some(RejectCode::GROUP),
            _ if request.extension & ext_flags::KMREQ != 0 && c.key_material.is_none() => {
                Some(RejectCode::ROGUE)
            }
            _ => None,
        };
        c
    }

    /// The latency (ms) a connection accepted now would have: the larger of the
    /// listener's and what the caller asks of its receiver.
    pub fn latency_ms(&self, least: u16) -> u16 {
        self.options.map_or(least, |o| o.send_latency.max(least))
    }

    /// Refuses the caller with `code` (it reads the code as the reason).
    pub fn reject(&self, code: RejectCode, out: &mut Outgoing) {
        let response = Handshake {
            kind: HsType::Rejection(code),
            ..self.request
        };
        let header = ControlHeader {
            kind: ControlType::Handshake,
            subtype: 0,
            info: 0,
            timestamp: 0,
            dest: self.caller_socket,
        };
        out.push(|b| {
            packet::write_control(b, &header);
            response.write(b);
        });
    }

    /// Accepts the caller as socket `socket_id` (with `decrypter` when it encrypts):
    /// the response goes out, and the connection receives from now on.
    pub fn accept(
        &self,
        now: Instant,
        socket_id: u32,
        cfg: &ListenerConfig,
        decrypter: Option<Decrypter>,
        out: &mut Outgoing,
    ) -> Connection {
        let latency = self.latency_ms(cfg.latency_ms);
        let peer_options = self.options.unwrap_or(SrtOptions {
            version: 0,
            flags: 0,
            recv_latency: 0,
            send_latency: 0,
        });
        let mut flags =
            options::TSBPDRCV | options::CRYPT | options::TLPKTDROP | options::NAKREPORT;
        if peer_options.flags & options::REXMITFLG != 0 {
            flags |= options::REXMITFLG;
        }
        if peer_options.flags & options::TSBPDRCV != 0 {
            flags |= options::TSBPDSND;
        }
        let km = self.key_material.as_deref().filter(|_| decrypter.is_some());
        let key_len = km
            .and_then(|k| KeyMaterial::parse(k).ok())
            .map_or(0, |k| (k.key_len / 8) as u16);
        let response = Handshake {
            version: handshake::HS_VERSION_5,
            encryption: key_len,
            extension: ext_flags::HSREQ | if km.is_some() { ext_flags::KMREQ } else { 0 },
            isn: self.request.isn,
            mss: self.request.mss.min(MAX_MSS),
            flow_window: self.request.flow_window.min(cfg.capacity as u32),
            kind: HsType::Conclusion,
            socket_id,
            cookie: self.request.cookie,
            peer_ip: handshake::peer_ip_field(self.peer.ip()),
        };
        let header = ControlHeader {
            kind: ControlType::Handshake,
            subtype: 0,
            info: 0,
            timestamp: 0,
            dest: self.caller_socket,
        };
        let mut bytes = Vec::with_capacity(128);
        packet::write_control(&mut bytes, &header);
        response.write(&mut bytes);
        SrtOptions {
            version: SRT_VERSION,
            flags,
            recv_latency: latency,
            send_latency: peer_options.recv_latency,
        }
        .write(&mut bytes, cmd::HSRSP);
        if let Some(km) = km {
            handshake::write_block(&mut bytes, cmd::KMRSP, km);
        }
        out.push(|b| b.extend_from_slice(&bytes));
        let receiver = Receiver::new(
            ReceiverConfig {
                latency: Duration::from_millis(latency as u64),
                capacity: cfg.capacity,
                peer_idle: cfg.peer_idle,
            },
            self.request.isn,
            self.caller_socket,
            now,
        );
        Connection {
            peer: self.peer,
            caller_socket: self.caller_socket,
            socket_id,
            latency_ms: latency,
            encrypted: decrypter.is_some(),
            receiver,
            decrypter,
            response: bytes,
            undecrypted: 0,
            key_refreshes: 0,
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The caller sent a shutdown.
    Shutdown,
    /// Nothing arrived for the configured time.
    Idle,
}

/// A connection's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    pub receiver: ReceiverStats,
    /// Packets that could not be decrypted (their key unknown).
    pub undecrypted: u64,
    /// Key refreshes taken.
    pub key_refreshes: u64,
    pub latency_ms: u16,
    pub encrypted: bool,
}

/// An accepted connection (the receiving side).
pub struct Connection {
    pub peer: SocketAddr,
    pub caller_socket: u32,
    pub socket_id: u32,
    latency_ms: u16,
    encrypted: bool,
    receiver: Receiver,
    decrypter: Option<Decrypter>,
    /// The conclusion response, sent again when the caller repeats its conclusion.
    response: Vec<u8>,
    undecrypted: u64,
    key_refreshes: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("socket_id", &self.socket_id)
            .finish()
    }
}

impl Connection {
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            receiver: self.receiver.stats(),
            undecrypted: self.undecrypted,
            key_refreshes: self.key_refreshes,
            latency_ms: self.latency_ms,
            encrypted: self.encrypted,
        }
    }

    /// The caller repeated its conclusion (the response was lost): sends it again.
    pub fn repeat_response(&self, out: &mut Outgoing) {
        out.push(|b| b.extend_from_slice(&self.response));
    }

    /// A packet addressed to this connection. Payloads in sequence go to `deliver`;
    /// `Some` when the caller ended the connection.
    pub fn on_packet(
        &mut self,
        now: Instant,
        datagram: &mut [u8],
        out: &mut Outgoing,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Option<Closed> {
        let Ok(header) = packet::parse_header(datagram) else {
            return None;
        };
        self.receiver.heard(now);
        match header {
            Header::Data(d) => {
                let payload = &mut datagram[HEADER_LEN..];
                if d.key != 0 {
                    let decrypted = self
                        .decrypter
                        .as_ref()
                        .is_some_and(|k| k.decrypt(d.seq, d.key, payload));
                    if !decrypted {
                        self.undecrypted += 1;
                        return None;
                    }
                } else if self.encrypted {
                    // Plain data on an encrypted connection is not the caller's.
                    self.undecrypted += 1;
                    return None;
                }
                self.receiver
                    .on_data(now, d.seq, d.retransmitted, payload, out, deliver);
                None
            }
            Header::Control(c) => {
                let cif = &datagram[HEADER_LEN..];
                match c.kind {
                    ControlType::AckAck => self.receiver.on_ackack(now, c.info),
                    ControlType::Shutdown => return Some(Closed::Shutdown),
                    ControlType::DropReq => {
                        if let Ok((first, last)) = packet::parse_drop_request(cif) {
                            self.receiver.on_drop_request(first, last, deliver);
                        }
                    }
                    ControlType::UserDefined if c.subtype == cmd::KMREQ => {
                        self.refresh_keys(cif, out)
                    }
                    // Keep-alives, and what a sender gets (ACK, NAK) or nobody uses.
                    _ => {}
                }
                None
            }
        }
    }

    /// A key material refresh: new keys unwrapped, the message echoed as the answer.
    fn refresh_keys(&mut self, km: &[u8], out: &mut Outgoing) {
        let Some(d) = self.decrypter.as_mut() else {
            return;
        };
        let Ok(parsed) = KeyMaterial::parse(km) else {
            return;
        };
        if d.update(&parsed).is_err() {
            return;
        }
        self.key_refreshes += 1;
        let header = ControlHeader {
            kind: ControlType::UserDefined,
            subtype: cmd::KMRSP,
            info: 0,
            timestamp: 0,
            dest: self.caller_socket,
        };
        out.push(|b| {
            packet::write_control(b, &header);
            b.extend_from_slice(km);
        });
    }

    /// Timers (ACK, NAK, too-late drop, keep-alive); `Some` when the caller went
    /// silent for too long.
    pub fn tick(
        &mut self,
        now: Instant,
        out: &mut Outgoing,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Option<Closed> {
        (!self.receiver.tick(now, out, deliver)).then_some(Closed::Idle)
    }

    /// Tells the caller the connection is over.
    pub fn shutdown(&self, out: &mut Outgoing) {
        let header = ControlHeader {
            kind: ControlType::Shutdown,
            subtype: 0,
            info: 0,
            timestamp: 0,
            dest: self.caller_socket,
        };
        out.push(|b| packet::write_control(b, &header));
    }

    /// The first sequence number not yet handed on.
    pub fn next_expected(&self) -> SeqNo {
        self.receiver.next()
    }
}
