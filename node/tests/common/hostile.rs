//! Clients that do what an attacker would: raw sockets from a chosen loopback source
//! address, the RTMP handshake and then whatever bytes the test wants, never a key.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtmp::chunk::{ChunkWriter, OutputQueue, RawMessage};
use rtmp::handshake::{ClientHandshake, HandshakeKind};

/// A TCP connection to 127.0.0.1:`port` from `source` (any 127.0.0.0/8 address).
pub fn connect_from(source: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(source, 0).into())?;
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(sock.into())
}

/// Completes the simple handshake on `s`; `Err` when the node closed it first.
pub fn handshake(s: &mut TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut hs = ClientHandshake::new(HandshakeKind::Simple);
    let (mut out, mut buf) = (BytesMut::new(), BytesMut::new());
    hs.start(&mut out);
    s.write_all(&out)?;
    out.clear();
    let mut tmp = [0u8; 4096];
    loop {
        let done = hs
            .read(&mut buf, &mut out)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if done {
            return s.write_all(&out);
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Chunks of `msg` as our writer sends them.
pub fn chunks(writer: &mut ChunkWriter, msg: RawMessage) -> Vec<u8> {
    let mut q = OutputQueue::new();
    writer.write(&msg, &mut q);
    q.take_contiguous().to_vec()
}

/// An acknowledgement message: 4 bytes of payload, the smallest thing worth sending.
pub fn acknowledgement(n: u32) -> RawMessage {
    RawMessage {
        csid: 2,
        timestamp: 0,
        type_id: 3,
        stream_id: 0,
        payload: Bytes::copy_from_slice(&n.to_be_bytes()),
    }
}

/// A connection that finished the handshake and then sends one small message every
/// `every`, in a thread of its own, never publishing, until the node closes it.
pub struct Trickler {
    /// When the node closed it, counted from the connect.
    pub closed_after: Arc<Mutex<Option<Duration>>>,
    stop: Arc<AtomicBool>,
}

impl Trickler {
    /// `Err` when the node refused it before the handshake completed.
    pub fn start(source: IpAddr, port: u16, every: Duration) -> std::io::Result<Trickler> {
        let started = Instant::now();
        let mut s = connect_from(source, port)?;
        handshake(&mut s)?;
        let closed_after = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (closed, halt) = (closed_after.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut writer = ChunkWriter::new();
            s.set_read_timeout(Some(every)).unwrap();
            let mut sink = [0u8; 4096];
            let mut n = 0u32;
            while !halt.load(Ordering::Relaxed) {
                n += 1;
                let sent = s
                    .write_all(&chunks(&mut writer, acknowledgement(n)))
                    .is_ok();
                // The read paces the loop: nothing comes back for an acknowledgement.
                let open = sent
                    && match s.read(&mut sink) {
                        Ok(0) => false,
                        Ok(_) => true,
                        Err(e) => matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ),
                    };
                if !open {
                    *closed.lock().unwrap() = Some(started.elapsed());
                    return;
                }
            }
        });
        Ok(Trickler { closed_after, stop })
    }

    pub fn is_open(&self) -> bool {
        self.closed_after.lock().unwrap().is_none()
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Forwards every connection it accepts (on 127.0.0.1:`port`) to 127.0.0.1:`to` from
/// the source address `source`: a client that cannot choose its source address, like
/// ffmpeg or OBS, appears to the node to come from `source`.
pub struct SourceForwarder {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl SourceForwarder {
    pub fn start(source: IpAddr, to: u16) -> SourceForwarder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let (Ok(client), Ok(upstream)) = (client, connect_from(source, to)) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        SourceForwarder { port, stop }
    }
}

impl Drop for SourceForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Forwards every connection it accepts (on 127.0.0.1:`port`) to 127.0.0.1:`to` from
/// `source`, sending `prefix` first, in pieces of 100 bytes with a pause between them
/// (a PROXY header as a balancer would send it, arriving as the network splits it).
pub struct PrefixForwarder {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl PrefixForwarder {
    pub fn start(source: IpAddr, to: u16, prefix: Vec<u8>) -> PrefixForwarder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let (Ok(client), Ok(mut upstream)) = (client, connect_from(source, to)) else {
                    continue;
                };
                let _ = upstream.set_nodelay(true);
                for piece in prefix.chunks(100) {
                    if upstream.write_all(piece).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        PrefixForwarder { port, stop }
    }
}

impl Drop for PrefixForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
