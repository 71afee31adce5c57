//! Listening sockets, bound with `SO_REUSEPORT` so that a second instance of the node
//! can bind the same ports while the first still runs: the way to restart without
//! refusing anyone (the old instance stops accepting, the new one takes the new
//! connections, see README "Restarting without downtime").

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

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
