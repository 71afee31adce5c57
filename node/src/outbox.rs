//! Live/offline writes, off the video path. `push` never waits: it replaces the pending
//! update of that channel (coalescing: only the latest state per channel is kept, so
//! the outbox holds at most one entry per channel) and wakes the writer. The writer
//! writes in the order the updates were numbered, and retries what failed with
//! exponential backoff while the failure is one that retrying can fix (the database is
//! unreachable or busy); a failed write goes back only if no newer update of that
//! channel arrived meanwhile. A write the database refuses outright (a schema or
//! permission problem) is logged as an error and counted, not retried forever.
//!
//! An offline ends only sessions this node knows, and among them always those whose
//! live the table may hold: the last one written, and those whose live write failed
//! in a way that may still have reached the table (a timeout). So however many times a
//! channel publishes during an outage (an update carries at most
//! [`crate::store::MAX_SUPERSEDED`] superseded sessions), its final offline matches
//! the row.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};
use uuid::Uuid;

use crate::store::{StatusStore, StatusUpdate};

/// First retry delay after a failed write.
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// Pending status updates, one per channel.
#[derive(Default)]
pub struct StatusOutbox {
    /// Latest unwritten update per channel.
    pending: Mutex<HashMap<Uuid, StatusUpdate>>,
    /// Wakes the writer.
    wake: Notify,
    /// Updates the database refused for good (not retried).
    refused: AtomicU64,
    /// The session whose "live" was last written, per channel live on this node:
    /// once the table has our live, a different session there is a newer publish
    /// (another node took over); before, it is only our write still on its way.
    written_live: Mutex<HashMap<Uuid, Uuid>>,
    /// Per channel, the sessions of this node whose live the table may hold: the
    /// last live written, and the lives whose write failed after it may have been
    /// sent (at most [`MAX_UNCERTAIN`], the latest). An offline of the channel ends
    /// them too; the entry goes once an offline is written.
    table_may_hold: Mutex<HashMap<Uuid, Vec<Uuid>>>,
}

/// Sessions whose live write failed uncertainly remembered per channel.
const MAX_UNCERTAIN: usize = 8;

impl StatusOutbox {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Queues an update. Never blocks on the database.
    pub fn push(&self, update: StatusUpdate) {
        let mut pending = self.pending.lock();
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
        self.pending.lock().len()
    }

    /// Updates the database refused for good since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The session whose "live" of this channel the table has accepted (or found
    /// superseded), if that channel is still live on this node.
    pub fn written_live(&self, channel_id: &Uuid) -> Option<Uuid> {
        self.written_live.lock().get(channel_id).copied()
    }

    fn record_written(&self, update: &StatusUpdate) {
        let mut written = self.written_live.lock();
        if update.live {
            written.insert(update.channel_id, update.session_id);
        } else if written
            .get(&update.channel_id)
            .is_some_and(|s| update.ending_sessions().contains(s))
        {
            written.remove(&update.channel_id);
        }
    }

    /// Everything pending, oldest first, leaving the outbox empty (what the writer
    /// writes; tests look at it too).
    pub fn take_all(&self) -> Vec<StatusUpdate> {
        let mut v: Vec<StatusUpdate> = self.pending.lock().drain().map(|(_, u)| u).collect();
        v.sort_by_key(|u| u.seq);
        v
    }

    /// An offline ends the sessions whose live the table may hold too.
    fn end_what_the_table_may_hold(&self, update: &mut StatusUpdate) {
        if update.live {
            return;
        }
        if let Some(held) = self.table_may_hold.lock().get(&update.channel_id) {
            for s in held {
                if *s != update.session_id && !update.supersedes.contains(s) {
                    update.supersedes.push(*s);
                }
            }
        }
    }

    /// What the table may hold after a write of `update` that succeeded (`Some(true)`),
    /// failed in a way that may still have reached it (`Some(false)`), or certainly did
    /// not (`None`).
    fn record_table(&self, update: &StatusUpdate, outcome: Option<bool>) {
        let mut held = self.table_may_hold.lock();
        match (update.live, outcome) {
            (true, Some(true)) => {
                held.insert(update.channel_id, vec![update.session_id]);
            }
            (true, Some(false)) => {
                let sessions = held.entry(update.channel_id).or_default();
                if !sessions.contains(&update.session_id) {
                    if sessions.len() > MAX_UNCERTAIN {
                        // Keep the one written (first), drop the oldest uncertain.
                        sessions.remove(1);
                    }
                    sessions.push(update.session_id);
                }
            }
            (false, Some(true)) => {
                held.remove(&update.channel_id);
            }
            _ => {}
        }
    }

    /// Writes everything pending once, oldest first. Updates that failed in a way a
    /// retry can fix go back (unless superseded); refused ones are dropped and counted.
    /// Returns whether nothing is left to retry.
    pub async fn write_pending(&self, store: &dyn StatusStore) -> bool {
        let mut done = true;
        for mut update in self.take_all() {
            self.end_what_the_table_may_hold(&mut update);
            let started = std::time::Instant::now();
            let written = store.apply_status(&update).await;
            metrics::histogram!(crate::metric::STATUS_WRITE_SECONDS).record(started.elapsed());
            match written {
                Ok(()) => {
                    self.record_written(&update);
                    self.record_table(&update, Some(true));
                    debug!(channel_id = %update.channel_id, live = update.live, session = %update.session_id, superseded = update.supersedes.len(), "status written")
                }
                Err(e) if e.is_retryable() => {
                    // A connection lost or a deadline passed after the statement was
                    // sent: it may have been applied all the same.
                    self.record_table(&update, Some(false));
                    done = false;
                    metrics::counter!(crate::metric::STATUS_WRITE_FAILURES, "kind" => "retryable")
                        .increment(1);
                    warn!(channel_id = %update.channel_id, live = update.live, error = %e, "status write failed; will retry");
                    self.push(update);
                }
                Err(e) => {
                    if !update.live {
                        self.record_written(&update);
                    }
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(crate::metric::STATUS_WRITE_FAILURES, "kind" => "refused")
                        .increment(1);
                    error!(channel_id = %update.channel_id, live = update.live, error = %e, "status write refused by the database and dropped: retrying cannot help; check the channels table and the database settings");
                }
            }
        }
        done
    }

    /// The writer loop: runs until `cancel`, then returns (the caller flushes). A
    /// retry waits out its backoff, or less: when `health` (the store's) says the
    /// database answers again, what is pending is written at once.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn StatusStore>,
        mut health: Option<tokio::sync::watch::Receiver<bool>>,
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
                    _ = tokio::time::sleep(backoff) => {
                        backoff = (backoff * 2).min(max_backoff);
                    }
                    _ = crate::store::answers_again(&mut health) => {
                        backoff = INITIAL_BACKOFF;
                    }
                }
            }
            backoff = INITIAL_BACKOFF;
        }
    }

    /// Keeps writing until nothing is left to retry or `deadline` passes (shutdown).
    pub async fn flush(&self, store: &dyn StatusStore, deadline: Duration) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::key::StreamKey;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{ChannelDirectory, StoreError, StoreErrorKind};
    use async_trait::async_trait;
    use chrono::Utc;

    /// The real SQLite store, with the failures a test asks for in front of its status
    /// writes (the database "blips" or refuses).
    struct FailingWrites {
        inner: SqliteStore,
        /// Kinds of the next failures, in order; empty: writes go through.
        failures: Mutex<Vec<StoreErrorKind>>,
        /// Every status write attempted: (channel, live, seq).
        attempts: Mutex<Vec<(Uuid, bool, u64)>>,
    }

    impl FailingWrites {
        fn new(failures: &[StoreErrorKind]) -> FailingWrites {
            FailingWrites {
                inner: SqliteStore::open_in_memory().unwrap(),
                failures: Mutex::new(failures.iter().rev().copied().collect()),
                attempts: Mutex::new(Vec::new()),
            }
        }
    }

    #[async_trait]
    impl StatusStore for FailingWrites {
        async fn apply_status(&self, u: &StatusUpdate) -> Result<(), StoreError> {
            self.attempts.lock().push((u.channel_id, u.live, u.seq));
            let failure = self.failures.lock().pop();
            match failure {
                Some(kind) => Err(StoreError::new(kind, "injected by the test")),
                None => self.inner.apply_status(u).await,
            }
        }
        async fn mark_all_offline(&self) -> Result<u64, StoreError> {
            self.inner.mark_all_offline().await
        }
        async fn heartbeat(&self, live: &[Uuid]) -> Result<(), StoreError> {
            self.inner.heartbeat(live).await
        }
    }

    impl FailingWrites {
        async fn create_channel(&self, name: &str) -> (Channel, StreamKey) {
            self.inner.create_channel(name).await.unwrap()
        }
    }

    fn update(channel_id: Uuid, live: bool, session: u128, seq: u64) -> StatusUpdate {
        StatusUpdate {
            channel_id,
            live,
            session_id: Uuid::from_u128(session),
            seq,
            at: Utc::now(),
            supersedes: Vec::new(),
            peer_tag: None,
        }
    }

    async fn is_live(store: &FailingWrites, id: Uuid) -> bool {
        let all = store.inner.list_channels().await.unwrap();
        all.iter().find(|c| c.id == id).unwrap().is_live
    }

    #[test]
    fn coalescing_keeps_the_newest_update_and_the_sessions_it_replaced() {
        let outbox = StatusOutbox::new();
        let id = Uuid::new_v4();
        outbox.push(update(id, true, 1, 1));
        outbox.push(update(id, false, 2, 3));
        outbox.push(update(id, true, 1, 2)); // a retried older update must not win
        assert_eq!(outbox.pending_len(), 1);
        let all = outbox.take_all();
        assert_eq!((all[0].live, all[0].seq), (false, 3));
        // ...but the survivor may end the sessions it replaced.
        assert_eq!(
            all[0].ending_sessions(),
            vec![Uuid::from_u128(2), Uuid::from_u128(1)]
        );
    }

    #[tokio::test]
    async fn writes_go_out_oldest_first() {
        let store = FailingWrites::new(&[]);
        let outbox = StatusOutbox::new();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        outbox.push(update(b, true, 1, 2));
        outbox.push(update(c, true, 2, 3));
        outbox.push(update(a, true, 3, 1));
        assert!(outbox.write_pending(&store).await);
        let order: Vec<u64> = store.attempts.lock().iter().map(|a| a.2).collect();
        assert_eq!(order, vec![1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blip_is_retried_until_written_and_newer_updates_win() {
        let store = Arc::new(FailingWrites::new(&[
            StoreErrorKind::Unavailable,
            StoreErrorKind::Transient,
            StoreErrorKind::Unavailable,
        ]));
        let (ch, _) = store.create_channel("blip").await;
        let outbox = StatusOutbox::new();
        let cancel = CancellationToken::new();
        let writer = tokio::spawn(outbox.clone().run(
            store.clone(),
            None,
            Duration::from_secs(30),
            cancel.clone(),
        ));
        outbox.push(update(ch.id, true, 1, 1));
        // Three failures, each followed by a backoff, then the write lands.
        for _ in 0..100 {
            if is_live(store.as_ref(), ch.id).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            is_live(store.as_ref(), ch.id).await,
            "written after the blip"
        );
        assert_eq!(store.attempts.lock().len(), 4);
        assert_eq!(outbox.pending_len(), 0);
        assert_eq!(outbox.refused(), 0);
        cancel.cancel();
        writer.await.unwrap();
    }

    /// A channel that publishes more often during one outage than an update carries
    /// superseded sessions: its final offline still ends the session the table holds
    /// (the one written before the outage), and the row goes offline. Before, that
    /// session fell off the end of the list and the channel stayed live in the table.
    #[tokio::test]
    async fn many_publishes_during_an_outage_still_end_the_session_the_table_holds() {
        let store = FailingWrites::new(&[]);
        let (ch, _) = store.create_channel("flapping").await;
        let outbox = StatusOutbox::new();
        outbox.push(update(ch.id, true, 0, 1));
        assert!(outbox.write_pending(&store).await);
        assert!(is_live(&store, ch.id).await);
        // The outage: every write fails while the channel ends and starts 100 times.
        *store.failures.lock() = vec![StoreErrorKind::Unavailable; 1000];
        let mut seq = 1;
        outbox.push(update(ch.id, false, 0, {
            seq += 1;
            seq
        }));
        for session in 1..=(crate::store::MAX_SUPERSEDED as u128 + 36) {
            for live in [true, false] {
                seq += 1;
                outbox.push(update(ch.id, live, session, seq));
            }
            if session % 10 == 0 {
                assert!(!outbox.write_pending(&store).await, "still failing");
            }
        }
        // Back: the one offline left ends every session the table may hold.
        store.failures.lock().clear();
        assert!(outbox.write_pending(&store).await);
        assert!(
            !is_live(&store, ch.id).await,
            "the final offline must match the session written before the outage"
        );
    }

    /// A live whose write timed out may have reached the table all the same: the
    /// offline that follows ends that session too.
    #[tokio::test]
    async fn an_offline_ends_a_live_whose_write_may_have_landed() {
        let store = FailingWrites::new(&[]);
        let (ch, _) = store.create_channel("uncertain").await;
        let outbox = StatusOutbox::new();
        // The write lands, but the node hears a timeout.
        store
            .inner
            .apply_status(&update(ch.id, true, 5, 1))
            .await
            .unwrap();
        *store.failures.lock() = vec![StoreErrorKind::Unavailable];
        outbox.push(update(ch.id, true, 5, 1));
        assert!(!outbox.write_pending(&store).await);
        // Then many sessions start and end, all coalesced, before the next write.
        let mut seq = 1;
        for session in 6..(6 + crate::store::MAX_SUPERSEDED as u128 + 10) {
            for live in [true, false] {
                seq += 1;
                outbox.push(update(ch.id, live, session, seq));
            }
        }
        assert!(outbox.write_pending(&store).await);
        assert!(!is_live(&store, ch.id).await);
    }

    #[tokio::test]
    async fn a_refused_write_is_counted_and_not_retried() {
        let store = FailingWrites::new(&[StoreErrorKind::Rejected]);
        let (ch, _) = store.create_channel("refused").await;
        let outbox = StatusOutbox::new();
        outbox.push(update(ch.id, true, 1, 1));
        assert!(
            outbox.write_pending(&store).await,
            "nothing is left to retry"
        );
        assert_eq!(outbox.pending_len(), 0);
        assert_eq!(outbox.refused(), 1);
        assert_eq!(store.attempts.lock().len(), 1);
        // Later updates still go through.
        outbox.push(update(ch.id, true, 2, 2));
        assert!(outbox.write_pending(&store).await);
        assert!(is_live(&store, ch.id).await);
    }

    #[tokio::test]
    async fn a_real_permanent_failure_is_classified_as_such() {
        // The table is gone: SQLite says so, and retrying cannot help.
        let store = SqliteStore::open_in_memory().unwrap();
        store.drop_table_for_test().await;
        let outbox = StatusOutbox::new();
        outbox.push(update(Uuid::new_v4(), true, 1, 1));
        assert!(outbox.write_pending(&store).await);
        assert_eq!(outbox.refused(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_gives_up_at_the_deadline_and_keeps_the_update() {
        let store = FailingWrites::new(&[StoreErrorKind::Unavailable; 1000]);
        let outbox = StatusOutbox::new();
        outbox.push(update(Uuid::new_v4(), false, 1, 1));
        assert!(!outbox.flush(&store, Duration::from_secs(5)).await);
        assert_eq!(outbox.pending_len(), 1, "not lost, still pending");
        assert!(
            store.attempts.lock().len() > 2,
            "retried within the deadline"
        );
    }
}
