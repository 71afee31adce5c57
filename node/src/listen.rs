//! Listening sockets, bound with `SO_REUSEPORT` so that a second instance of the node
//! can bind the same ports while the first still runs: the way to restart without
//! refusing anyone (the old instance stops accepting, the new one takes the new
//! connections, see docs/operating.md, "Restarting without downtime"); and the readiness the
//! service manager waits for once every listener is bound (`notify`).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tracing::warn;

/// Connections the kernel queues for `accept`.
const BACKLOG: u32 = 4096;

/// Binds `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` and listens.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts, without waiting, what the kernel has queued already: called by a listener
/// that is about to close, so that those connections are served instead of reset.
pub fn queued(listener: &TcpListener) -> Vec<(tokio::net::TcpStream, SocketAddr)> {
    use futures_util::FutureExt;
    let mut out = Vec::new();
    while let Some(Ok(conn)) = listener.accept().now_or_never() {
        out.push(conn);
    }
    out
}

/// Tells the service manager how the node is doing (systemd's `Type=notify`
/// protocol: a datagram such as `READY=1` to the socket named by `NOTIFY_SOCKET`, a
/// path or, with a leading `@`, an abstract name). Without `NOTIFY_SOCKET` (not run by
/// systemd, or `Type=simple`) nothing is sent.
pub fn notify(state: &str) {
    use std::os::unix::net::UnixDatagram;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &target),
        }
    });
    if let Err(e) = sent {
        warn!(error = %e, state, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
