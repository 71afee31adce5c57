//! Test support shared by the node's tests and the benchmarks (`sgbench`): real
//! components started on loopback and stopped by PID, and readings of a process from
//! `/proc`. Errors are `String`s that say what to install or check; callers decide
//! whether that fails a test or a benchmark run.

pub mod nginx;
pub mod postgres;
pub mod proc;
pub mod tls;

/// A free TCP port on 127.0.0.1 (probed; the caller binds it right away).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
