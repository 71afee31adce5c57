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
    handshake_over(s)
}

/// [`handshake`] over any stream (TLS, say), under its own read deadline.
pub fn handshake_over(s: &mut (impl Read + Write)) -> std::io::Result<()> {
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

pub use testkit::proc::{open_fds, rss_kib};

/// The highest resident memory of a process, in KiB, sampled every 100 ms for `during`.
pub fn peak_rss_kib(pid: u32, during: Duration) -> u64 {
    let mut peak = 0;
    let until = Instant::now() + during;
    while Instant::now() < until {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    peak
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
        Self::with_prefix(source, to, Vec::new())
    }

    /// [`SourceForwarder::start`] that sends `prefix` to the node first, in pieces of
    /// 100 bytes with a pause between them (a PROXY header as a balancer would send
    /// it, arriving as the network splits it).
    pub fn with_prefix(source: IpAddr, to: u16, prefix: Vec<u8>) -> SourceForwarder {
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

/// A GET of `path` on 127.0.0.1:`port` from `source`, answered within `timeout`:
/// (status, body, how long the answer took), or why there was none.
pub fn http_get_from(
    source: IpAddr,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>, Duration), String> {
    http_request_from(source, port, "GET", path, "", timeout)
}

/// [`http_get_from`] with any method and extra header lines (each ending in CRLF).
pub fn http_request_from(
    source: IpAddr,
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>, Duration), String> {
    let started = Instant::now();
    let mut s = connect_from(source, port).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n{headers}\r\n")
            .as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("no answer within {timeout:?}: {e}"))?;
    let took = started.elapsed();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head: {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    Ok((status, raw[split + 4..].to_vec(), took))
}

/// Opens `n` connections from `source` to 127.0.0.1:`port` that each ask for
/// `/api/v1/events` and then never read; returns those the node kept open (after
/// `settle`, the others were answered and closed).
pub fn idle_event_streams(source: IpAddr, port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = connect_from(source, port).ok()?;
            s.write_all(
                b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
            )
            .ok()?;
            Some(s)
        })
        .collect()
}

/// A connection from `source` that sends `n` pipelined requests for `path` and never
/// reads an answer (in a thread of its own, so a node that stops reading stops only
/// that thread). Its receive buffer is small, so the node soon has nowhere to put the
/// answers.
pub fn pipelined_non_reader(source: IpAddr, port: u16, path: &str, n: usize) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(&SocketAddr::new(source, 0).into()).unwrap();
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let s: TcpStream = sock.into();
    let mut w = s.try_clone().unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(n);
    std::thread::spawn(move || {
        let _ = w.set_write_timeout(Some(Duration::from_secs(30)));
        let _ = w.write_all(request.as_bytes());
    });
    s
}
