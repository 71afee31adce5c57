//! Socket helpers shared by ingest and relay.

use std::io::IoSlice;
use std::time::Duration;

use rtmp::OutputQueue;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Most slices handed to one vectored write.
const MAX_IOV: usize = 64;

/// A byte stream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a queued write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer did not read for {0:?}")]
    Timeout(Duration),
}

/// Writes everything queued with vectored writes (header and payload slices, no
/// copies), under one deadline.
pub async fn write_queued<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut OutputQueue,
    deadline: Duration,
) -> Result<u64, WriteError> {
    if out.is_empty() {
        return Ok(0);
    }
    let total = out.len() as u64;
    let write = async {
        while !out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = out.io_slices(&mut slices);
            let written = io.write_vectored(&slices[..n]).await?;
            if written == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
            }
            out.advance(written);
        }
        io.flush().await
    };
    tokio::time::timeout(deadline, write)
        .await
        .map_err(|_| WriteError::Timeout(deadline))??;
    Ok(total)
}
