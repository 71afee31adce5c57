//! Live/offline writes, off the video path. `push` never waits: it replaces the pending
//! update of that channel (coalescing: only the latest state per channel is kept, so
//! the outbox holds at most one entry per channel) and wakes the writer. The writer
//! retries failed writes with exponential backoff until the database accepts them; a
//! failed write is put back only if no newer update for that channel arrived meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::store::{ChannelStore, StatusUpdate};

/// First retry delay after a failed write.
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// Pending status updates, one per channel.
#[derive(Default)]
pub struct StatusOutbox {
    /// Latest unwritten update per channel.
    pending: Mutex<HashMap<Uuid, StatusUpdate>>,
    /// Wakes the writer.
    wake: Notify,
}

impl StatusOutbox {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Queues an update. Never blocks on the database.
    pub fn push(&self, update: StatusUpdate) {
        let mut pending = self.pending.lock().expect("outbox lock");
        match pending.get_mut(&update.channel_id) {
            // A retried, older update: the newer one stays, and inherits its sessions.
            Some(existing) if existing.seq > update.seq => existing.absorb(&update),
            Some(existing) => {
                let mut newer = update;
                newer.absorb(existing);
                *existing = newer;
            }
            None => {
                pending.insert(update.channel_id, update);
            }
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// Updates not yet written.
    pub fn pending_len(&self) -> usize {
        self.pending.lock().expect("outbox lock").len()
    }

    pub(crate) fn take_all(&self) -> Vec<StatusUpdate> {
        let mut v: Vec<StatusUpdate> = self
            .pending
            .lock()
            .expect("outbox lock")
            .drain()
            .map(|(_, u)| u)
            .collect();
        v.sort_by_key(|u| u.seq);
        v
    }

    /// Writes everything pending once. Failed updates go back (unless superseded).
    /// Returns whether all writes succeeded.
    pub async fn write_pending(&self, store: &dyn ChannelStore) -> bool {
        let mut ok = true;
        for update in self.take_all() {
            match store.apply_status(&update).await {
                Ok(()) => {
                    debug!(channel_id = %update.channel_id, live = update.live, session = %update.session_id, superseded = update.supersedes.len(), "status written")
                }
                Err(e) => {
                    ok = false;
                    warn!(channel_id = %update.channel_id, live = update.live, error = %e, "status write failed; will retry");
                    self.push(update);
                }
            }
        }
        ok
    }

    /// The writer loop: runs until `cancel`, then returns (the caller flushes).
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn ChannelStore>,
        max_backoff: Duration,
        cancel: CancellationToken,
    ) {
        let mut backoff = INITIAL_BACKOFF;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
            }
            while !self.write_pending(store.as_ref()).await {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
            backoff = INITIAL_BACKOFF;
        }
    }

    /// Keeps writing until everything is written or `deadline` passes (shutdown).
    pub async fn flush(&self, store: &dyn ChannelStore, deadline: Duration) -> bool {
        let attempt = async {
            let mut backoff = INITIAL_BACKOFF;
            while !self.write_pending(store).await {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        };
        tokio::time::timeout(deadline, attempt).await.is_ok()
    }
}
