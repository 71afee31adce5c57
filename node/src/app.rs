//! Wiring of `streamgate serve`: store, outbox, hub, ingest, HTTP, and the shutdown
//! order (stop accepting, end publishes, drain connections, write the last status
//! updates, exit).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::{self, Authorizer};
use crate::config::Config;
use crate::http::{self, HttpState};
use crate::hub::{EndReason, Hub};
use crate::ingest::{IngestContext, IngestWorkers, Listener};
use crate::outbox::StatusOutbox;
use crate::relay::RelayManager;
use crate::store;

/// Raises the soft open-files limit to the hard limit: each publisher is a socket.
fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!(nofile = n, "open-files limit"),
        Err(e) => warn!(error = %e, "cannot raise the open-files limit"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}

/// Refreshes `last_seen` of the live channels; a failure is logged and retried at the
/// next beat (the video never waits for it).
async fn heartbeat(
    hub: Arc<Hub>,
    store: Arc<dyn crate::store::ChannelStore>,
    every: std::time::Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let live: Vec<_> = hub.list().iter().map(|s| s.channel_id).collect();
        if let Err(e) = store.heartbeat(&live).await {
            warn!(error = %e, "heartbeat not written");
        }
    }
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    raise_nofile_limit();
    let store = store::open(&config).await?;
    match store.mark_all_offline().await {
        Ok(0) => {}
        Ok(n) => info!(
            channels = n,
            "marked offline the channels left live by a previous run"
        ),
        Err(e) => warn!(error = %e, "cannot mark stale live channels offline"),
    }

    let outbox = StatusOutbox::new();
    let hub = Hub::new(outbox.clone());
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    // The outbox writer outlives the connections so their final updates are written.
    let outbox_stop = CancellationToken::new();
    let outbox_task = tokio::spawn(outbox.clone().run(
        store.clone(),
        config.status.retry_max_backoff,
        outbox_stop.clone(),
    ));
    let thumbs = &config.thumbnails;
    if thumbs.enabled {
        tokio::fs::create_dir_all(&thumbs.dir).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot create thumbnails.dir {} ({e})",
                thumbs.dir.display()
            )
        })?;
        let ffmpeg = match crate::thumbs::probe_ffmpeg(&thumbs.ffmpeg).await {
            Ok(version) => {
                info!(%version, "ffmpeg found");
                true
            }
            Err(e) if thumbs.decoder == "worker" => {
                warn!(error = %e, "ffmpeg is not available: thumbnails only for H.264 streams; install it (apt-get install ffmpeg) or set thumbnails.ffmpeg for HEVC");
                false
            }
            Err(e) => {
                // Everything but thumbnails still works.
                warn!(error = %e, "thumbnails disabled: ffmpeg is not available; install it (apt-get install ffmpeg) or set thumbnails.ffmpeg");
                false
            }
        };
        let workers = if thumbs.decoder == "worker" {
            Some(crate::thumbs::pool::WorkerPool::of_current_exe(
                thumbs.timeout,
            )?)
        } else {
            None
        };
        if workers.is_some() || ffmpeg {
            let mut tc = thumbs.clone();
            tc.workers = tc.worker_count();
            info!(decoder = %tc.decoder, workers = tc.workers, dir = %tc.dir.display(), "thumbnails on");
            let scheduler =
                crate::thumbs::ThumbnailScheduler::new(tc, hub.clone(), workers, ffmpeg);
            tokio::spawn(scheduler.run(cancel.clone()));
        }
    }
    let authorizer = Arc::new(Authorizer::new(store.clone(), config.auth.clone()));
    tokio::spawn(auth::watch_keys(
        hub.clone(),
        store.clone(),
        authorizer.clone(),
        config.auth.recheck_interval,
        thumbs.enabled.then(|| thumbs.dir.clone()),
        cancel.clone(),
    ));

    let relay = RelayManager::new(config.relay.clone())?;
    if !config.relay.targets.is_empty() {
        info!(
            targets = config.relay.targets.len(),
            "relaying every live stream"
        );
    }
    tokio::spawn(heartbeat(
        hub.clone(),
        store.clone(),
        config.status.heartbeat_interval,
        cancel.clone(),
    ));
    let ctx = Arc::new(IngestContext {
        config: config.rtmp.clone(),
        hub: hub.clone(),
        auth: authorizer.clone(),
        relay: relay.clone(),
    });
    let workers = IngestWorkers::start(config.rtmp.workers)?;
    let listener = Listener::bind(ctx, workers.clone()).await?;
    let http_addr = config.http_listen();
    let http_listener = TcpListener::bind(http_addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen for HTTP on {http_addr} ({e}): check http.listen")
    })?;
    info!(addr = %http_listener.local_addr()?, "HTTP listening");
    let router = http::router(HttpState {
        hub: hub.clone(),
        thumbnails_dir: config.thumbnails.dir.clone(),
    });
    let http_cancel = cancel.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, router)
            .with_graceful_shutdown(http_cancel.cancelled_owned())
            .await
    });
    let ingest_task = tokio::spawn(listener.run(cancel.clone(), tracker.clone()));

    shutdown_signal().await;
    info!("shutting down");
    cancel.cancel();
    hub.end_all(EndReason::Shutdown);
    let _ = ingest_task.await;
    tracker.close();
    let grace = config.status.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!("connections still open after the grace period");
    }
    // Relays unpublish upstream once their streams ended.
    relay.tracker.close();
    if tokio::time::timeout(grace, relay.tracker.wait())
        .await
        .is_err()
    {
        warn!("relays still closing after the grace period");
    }
    workers.stop();
    outbox_stop.cancel();
    let _ = outbox_task.await;
    if outbox.flush(store.as_ref(), grace).await {
        info!("live status written; bye");
    } else {
        warn!(
            pending = outbox.pending_len(),
            "could not write every status update before exit"
        );
    }
    let _ = tokio::time::timeout(grace, http_task).await;
    Ok(())
}
