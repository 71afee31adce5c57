//! Why a relay connection ended, and what of it the public API may show.

use std::time::Duration;

use rtmp::SessionError;
use rtmp_io::{PublishError, WriteError};

/// Why a relay connection ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("a channel's own target may not reach a private, loopback or link-local address (relay.allow_private_targets)")]
    Forbidden,
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream refused: {code} {description}")]
    Refused { code: String, description: String },
    #[error("upstream closed the connection")]
    Closed,
    #[error("upstream stalled: {0}")]
    Write(#[from] WriteError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] SessionError),
    #[error("handshake: {0}")]
    Handshake(#[from] rtmp::handshake::HandshakeError),
}

impl RelayError {
    /// What the public API may show: a short fixed reason, plus the upstream's status
    /// code reduced to letters, digits and dots (an upstream's own text is never
    /// passed on).
    pub fn public_reason(&self) -> String {
        match self {
            RelayError::Connect(_) => "cannot connect".into(),
            RelayError::Forbidden => "destination not allowed".into(),
            RelayError::Tls(_) => "TLS failed".into(),
            RelayError::Timeout(_) => "no answer in time".into(),
            RelayError::Refused { code, .. } => {
                let code: String = code
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .take(64)
                    .collect();
                format!("upstream refused: {code}")
            }
            RelayError::Closed => "upstream closed the connection".into(),
            RelayError::Write(_) => "upstream stalled".into(),
            RelayError::Io(_) => "connection lost".into(),
            RelayError::Protocol(_) | RelayError::Handshake(_) => "protocol error".into(),
        }
    }
}

impl From<PublishError> for RelayError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Io(e) => RelayError::Io(e),
            PublishError::Write(e) => RelayError::Write(e),
            PublishError::Handshake(e) => RelayError::Handshake(e),
            PublishError::Protocol(e) => RelayError::Protocol(e),
            PublishError::Refused { code, description } => {
                RelayError::Refused { code, description }
            }
            PublishError::Closed => RelayError::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstreams_text_never_reaches_the_api() {
        let e = RelayError::Refused {
            code: "NetStream.Publish.BadName\n<script>".into(),
            description: "whatever the upstream says, with a key sk_live_123".into(),
        };
        assert_eq!(
            e.public_reason(),
            "upstream refused: NetStream.Publish.BadNamescript"
        );
        assert_eq!(
            RelayError::Closed.public_reason(),
            "upstream closed the connection"
        );
    }
}
