//! The PROXY protocol, read from connections that come from a configured trusted proxy
//! (`rtmp.trusted_proxies`): a load balancer in front of the node says who the real
//! client is, so limits, key-guess delays and logs use the client's address, not the
//! balancer's. From any other address a PROXY header is not looked for (a client could
//! claim any address with it). The header itself is parsed by the sans-IO
//! [`proxy_protocol`] crate (fuzzed); this reads it from the socket, dropping a long
//! version 2 header's TLVs as they arrive instead of holding them.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

pub use proxy_protocol::{parse, ProxiedPeer, ProxyError};
use proxy_protocol::{V1_MAX, V2_ADDRESSES_MAX};

/// Bytes read at once while skipping a version 2 header's TLVs.
const SKIP_CHUNK: usize = 512;

/// Reads the header from `io` under no deadline of its own (the caller bounds it);
/// returns it and the bytes that followed it (the start of the RTMP handshake). The
/// TLVs of a long version 2 header are read and dropped, never held.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<(ProxiedPeer, BytesMut), ProxyError> {
    let mut buf = BytesMut::with_capacity(256);
    let (peer, len) = loop {
        if let Some(found) = parse(&buf)? {
            break found;
        }
        // Neither a version 1 line nor a version 2 address block is longer.
        if buf.len() > 16 + V2_ADDRESSES_MAX + V1_MAX {
            return Err(ProxyError::TooLong);
        }
        read_some(io, &mut buf).await?;
    };
    let mut skip = len;
    while buf.len() < skip {
        skip -= buf.len();
        buf.clear();
        buf.reserve(SKIP_CHUNK.min(skip));
        read_some(io, &mut buf).await?;
    }
    let _ = buf.split_to(skip);
    Ok((peer, buf))
}

async fn read_some<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) -> Result<(), ProxyError> {
    let n = io
        .read_buf(buf)
        .await
        .map_err(|e| ProxyError::Io(e.to_string()))?;
    if n == 0 {
        return Err(ProxyError::Closed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v.push(0x20 | cmd);
        v.push(family);
        v.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        v.extend_from_slice(addresses);
        v
    }

    /// A header with the most TLVs its length field allows (AWS NLB and HAProxy send
    /// hundreds of bytes of them): answered once the addresses are in, and read over a
    /// stream with the TLVs dropped as they come, what follows it kept.
    #[tokio::test]
    async fn a_version_2_header_may_be_as_long_as_its_length_field_says() {
        use tokio::io::AsyncWriteExt;
        let mut a = vec![192, 0, 2, 10, 198, 51, 100, 1];
        a.extend_from_slice(&56324u16.to_be_bytes());
        a.extend_from_slice(&1935u16.to_be_bytes());
        // One TLV (type 0xEE, custom) filling the rest of a 65535-byte payload.
        let tlv_len = u16::MAX as usize - a.len() - 3;
        a.push(0xEE);
        a.extend_from_slice(&(tlv_len as u16).to_be_bytes());
        a.extend(std::iter::repeat_n(0x5a, tlv_len));
        let h = v2(1, 0x11, &a);
        assert_eq!(h.len(), 16 + 65535);
        let client = ProxiedPeer::Client("192.0.2.10:56324".parse().unwrap());
        assert_eq!(parse(&h[..28]).unwrap(), Some((client, h.len())));
        assert_eq!(parse(&h[..27]).unwrap(), None);

        let (mut tx, mut rx) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            tx.write_all(&h).await.unwrap();
            tx.write_all(b"\x03after").await.unwrap();
        });
        let (peer, rest) = read_header(&mut rx).await.unwrap();
        writer.await.unwrap();
        assert_eq!(peer, client);
        assert!(b"\x03after".starts_with(&rest), "{rest:?}");
        assert!(
            rest.capacity() <= 4 * SKIP_CHUNK,
            "the TLVs were not held: {}",
            rest.capacity()
        );
    }
}
