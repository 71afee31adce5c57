//! Writing a session's output queue to a socket.

use std::io::IoSlice;
use std::time::Duration;

use rtmp::OutputQueue;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Most slices handed to one vectored write.
const MAX_IOV: usize = 64;

/// Why a queued write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer did not read for {0:?}")]
    Timeout(Duration),
}

/// Writes what is queued as far as `write` takes it without waiting: `write` is one
/// non-blocking vectored write (e.g. `sendmsg` on a socket; given a single slice when
/// the queue is one contiguous buffer, so that it can use a plain `send`); its
/// `WouldBlock` ends the loop with the rest still queued. Returns the bytes written.
pub fn write_available(
    out: &mut OutputQueue,
    mut write: impl FnMut(&[IoSlice<'_>]) -> std::io::Result<usize>,
) -> std::io::Result<u64> {
    let mut written = 0u64;
    while !out.is_empty() {
        let result = match out.as_contiguous() {
            // The usual case: one buffer.
            Some(bytes) => write(&[IoSlice::new(bytes)]),
            None => {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let n = out.io_slices(&mut slices);
                write(&slices[..n])
            }
        };
        match result {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                out.advance(k);
                written += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Writes everything queued with vectored writes (header and payload slices, no
/// copies), under one deadline. Returns the bytes written.
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn writes_every_slice_in_order() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut out = OutputQueue::new();
        out.push_slice(b"head");
        out.push(Bytes::from(vec![7u8; 1000]));
        out.push_slice(b"tail");
        let reader = tokio::spawn(async move {
            let mut v = Vec::new();
            b.read_to_end(&mut v).await.unwrap();
            v
        });
        let n = write_queued(&mut a, &mut out, Duration::from_secs(5))
            .await
            .unwrap();
        drop(a);
        let got = reader.await.unwrap();
        assert_eq!(n, 1008);
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[1004..], b"tail");
        assert!(out.is_empty());
    }

    #[test]
    fn write_available_stops_at_would_block_and_keeps_the_rest() {
        let mut out = OutputQueue::new();
        out.push_slice(b"head");
        out.push(Bytes::from(vec![7u8; 100]));
        let mut taken = Vec::new();
        let mut budget = 50usize;
        let n = write_available(&mut out, |slices| {
            if budget == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let mut k = 0;
            for s in slices {
                let m = s.len().min(budget - k);
                taken.extend_from_slice(&s[..m]);
                k += m;
                if k == budget {
                    break;
                }
            }
            budget -= k;
            Ok(k)
        })
        .unwrap();
        assert_eq!(n, 50);
        assert_eq!(&taken[..4], b"head");
        assert_eq!(out.len(), 54);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_does_not_read_times_out() {
        let (mut a, _b) = tokio::io::duplex(16);
        let mut out = OutputQueue::new();
        out.push(Bytes::from(vec![0u8; 1024]));
        let err = write_queued(&mut a, &mut out, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::Timeout(d) if d == Duration::from_secs(3)));
    }
}
