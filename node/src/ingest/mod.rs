//! RTMP ingest: the listener (connection cap taken before accept, TCP_NODELAY) and one
//! [`connection`] task per client.

pub mod connection;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::auth::Authorizer;
use crate::config::RtmpConfig;
use crate::hub::Hub;
use crate::relay::RelayManager;

/// What every connection task shares.
pub struct IngestContext {
    pub config: RtmpConfig,
    pub hub: Arc<Hub>,
    pub auth: Arc<Authorizer>,
    pub relay: Arc<RelayManager>,
}

/// Accepts RTMP connections until `cancel`.
pub struct Listener {
    listener: TcpListener,
    /// One permit per open connection.
    limit: Arc<Semaphore>,
    ctx: Arc<IngestContext>,
}

impl Listener {
    pub async fn bind(ctx: Arc<IngestContext>) -> anyhow::Result<Listener> {
        let addr: SocketAddr = ctx.config.listen.parse()?;
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen for RTMP on {addr} ({e}): check rtmp.listen")
        })?;
        Ok(Listener {
            listener,
            limit: Arc::new(Semaphore::new(ctx.config.max_connections)),
            ctx,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self, cancel: CancellationToken, tracker: TaskTracker) {
        info!(addr = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(), app = %self.ctx.config.app, "RTMP listening");
        loop {
            // Take the permit before accepting, so the cap is real.
            let permit = tokio::select! {
                _ = cancel.cancelled() => return,
                p = self.limit.clone().acquire_owned() => p.expect("semaphore never closed"),
            };
            let (socket, peer) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if self
                .ctx
                .auth
                .limiter
                .is_banned(peer.ip(), std::time::Instant::now())
            {
                // Refused before the handshake: a key guesser costs us one accept.
                debug!(%peer, "connection refused: too many wrong stream keys from this address");
                drop(socket);
                continue;
            }
            if let Err(e) = socket.set_nodelay(true) {
                debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            let ctx = self.ctx.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                connection::serve(socket, peer, ctx, cancel).await;
                drop(permit);
            });
        }
    }
}
