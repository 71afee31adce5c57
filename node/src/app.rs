//! Wiring of `streamgate serve`: builds the parts in dependency order, starts their
//! tasks, and runs the shutdown order (stop accepting, end publishes, drain
//! connections and relays, write the last status updates, exit). No policy lives here.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::{Authorizer, FleetTakeover};
use crate::config::Config;
use crate::heartbeat::Heartbeat;
use crate::http::{self, HttpState};
use crate::hub::{EndReason, Hub, PublishObserver};
use crate::ingest::tls::TlsIdentity;
use crate::ingest::{IngestContext, IngestWorkers, Listener};
use crate::outbox::StatusOutbox;
use crate::relay::RelayManager;
use crate::revocation::KeyWatch;
use crate::store::NodeAnnouncement;
use crate::{store, thumbs};

/// Raises the soft open-files limit to the hard limit: each publisher is a socket.
fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!(nofile = n, "open-files limit"),
        Err(e) => warn!(error = %e, "cannot raise the open-files limit"),
    }
}

/// Installs the SIGTERM and SIGINT handlers now (before the node says it is ready, so a
/// stop right after that is a clean shutdown, not the default action), and returns
/// what completes at the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    })
}

/// On SIGHUP, re-reads the certificates (RTMPS's, and HTTPS's when it has its own):
/// new handshakes get the new one, live streams and open connections keep theirs.
async fn reload_on_sighup(
    identities: Vec<(&'static str, std::sync::Arc<TlsIdentity>)>,
    cancel: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    if identities.is_empty() {
        return;
    }
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP: the TLS certificates are not reloadable");
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = hup.recv() => for (name, identity) in &identities {
                match identity.reload() {
                    Ok(()) => info!("{name} certificate reloaded"),
                    Err(e) => warn!(error = %e, "{name} certificate not reloaded; the previous one stays"),
                }
            },
        }
    }
}

/// Histogram buckets of the latencies we record, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the Prometheus recorder (before anything records).
fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)?
        // Gauges are set from snapshots right before each scrape; one not set since
        // (a channel that ended) is dropped.
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(std::time::Duration::from_secs(1)),
        )
        .install_recorder()?;
    crate::metric::describe();
    crate::metric::start_at_zero();
    Ok(handle)
}

/// Drains the histograms' buffers now and then (the exporter's upkeep).
async fn metrics_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Takes the instance lock (an exclusive lock on `path`): `true` when no other
/// instance holds it. When one does (a restart in progress), the lock is taken over in
/// the background once it goes. The file must stay open while the node runs.
fn instance_lock(path: &std::path::Path) -> anyhow::Result<(std::fs::File, bool)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create {} ({e}): check status.lock_file",
                dir.display()
            )
        })?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open {} ({e}): check status.lock_file",
                path.display()
            )
        })?;
    match file.try_lock() {
        Ok(()) => Ok((file, true)),
        Err(std::fs::TryLockError::WouldBlock) => {
            let waiter = file.try_clone()?;
            std::thread::spawn(move || {
                let _ = waiter.lock();
                // Held from now on: the next instance knows this one runs.
                std::mem::forget(waiter);
            });
            Ok((file, false))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow::anyhow!(
            "cannot lock {} ({e}): check status.lock_file",
            path.display()
        )),
    }
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    raise_nofile_limit();
    let prometheus = install_metrics()?;
    let process = Arc::new(metrics_process::Collector::default());
    process.describe();
    // The store is opened here, on the main runtime: its connections live on it.
    let store = store::open(&config).await?;
    // This node's name in the tables (the host name unless configured).
    let node_id = config.status.node_id();
    // Crash recovery is for the instance that runs alone: during a restart the old
    // instance still streams, and writes its own offlines when it goes.
    let (_instance_lock, alone) = instance_lock(&config.status.lock_file)?;
    if alone {
        match store.mark_all_offline().await {
            Ok(0) => {}
            Ok(n) => info!(
                channels = n,
                "marked offline the channels left live by a previous run"
            ),
            Err(e) => warn!(error = %e, "cannot mark stale live channels offline"),
        }
    } else {
        info!("another instance is running (a restart): its channels are left to it");
    }

    let cancel = CancellationToken::new();
    let stop_accepting = CancellationToken::new();
    tokio::spawn(metrics_upkeep(prometheus.clone(), cancel.clone()));
    let tracker = TaskTracker::new();
    let outbox = StatusOutbox::new();
    // The outbox writer outlives the connections so their final updates are written.
    let outbox_stop = CancellationToken::new();
    let outbox_task = tokio::spawn(outbox.clone().run(
        store.clone(),
        store.health(),
        config.status.retry_max_backoff,
        outbox_stop.clone(),
    ));

    let relay = RelayManager::new(config.relay.clone())?;
    if !config.relay.targets.is_empty() {
        info!(
            targets = config.relay.targets.len(),
            "relaying every live stream"
        );
    }
    let hub = Hub::new(
        outbox.clone(),
        vec![relay.clone() as Arc<dyn PublishObserver>],
        config.rtmp.takeover_silence,
    );
    // Webhooks see every event from the first publish on.
    let webhooks = crate::webhooks::Webhooks::new(&config.webhooks, node_id.clone())?;
    let webhooks_stop = CancellationToken::new();
    if let Some(w) = &webhooks {
        hub.events().set_sink(w.clone());
        w.start(webhooks_stop.clone());
    }
    hub.track_health(config.health.enabled);
    let health = config
        .health
        .enabled
        .then(|| crate::health::HealthMonitor::new(hub.clone(), &config.health));
    if let Some(h) = &health {
        tokio::spawn(h.clone().run(cancel.clone()));
    }
    let thumbnails = thumbs::start(&config.thumbnails, hub.clone(), cancel.clone()).await?;
    let authorizer = Arc::new(Authorizer::new(
        store.clone(),
        store.clone(),
        config.auth.clone(),
        hub.clone(),
        FleetTakeover::of(&config.rtmp, &config.status),
    ));
    let admin_auth = authorizer.clone();
    let key_watch = KeyWatch {
        hub: hub.clone(),
        store: store.clone(),
        auth: authorizer.clone(),
        interval: config.auth.recheck_interval,
        thumbnail_dir: config
            .thumbnails
            .enabled
            .then(|| config.thumbnails.dir.clone()),
    };
    tokio::spawn(key_watch.run(cancel.clone()));
    let http_url = Arc::new(std::sync::OnceLock::new());
    let heartbeat = Heartbeat {
        hub: hub.clone(),
        registry: store.clone(),
        status: store.clone(),
        health: store.health(),
        every: config.status.heartbeat_interval,
        dead_after: config.status.dead_after(),
        announcement: NodeAnnouncement {
            address: config.status.advertised_address(config.rtmp.listen.port()),
            http_url: http_url.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: chrono::Utc::now(),
        },
    };
    // Registered before the first publish is accepted.
    heartbeat.beat().await;
    tokio::spawn(heartbeat.run(cancel.clone()));

    let ctx = Arc::new(IngestContext::new(
        config.rtmp.clone(),
        hub.clone(),
        authorizer,
    ));
    let workers = IngestWorkers::start(
        config.rtmp.workers,
        config.rtmp.placement,
        config.rtmp.busy_wakeup_interval,
    )?;
    let listener = Listener::bind(ctx.clone(), workers.clone(), config.rtmp.listen, None).await?;
    let rtmps_identity = if config.rtmps.enabled {
        Some(
            TlsIdentity::load(&config.rtmps.cert_file, &config.rtmps.key_file)
                .map_err(|e| anyhow::anyhow!("rtmps: {e}"))?,
        )
    } else {
        None
    };
    // HTTPS: its own certificate, or RTMPS's (then one identity, reloaded once).
    let https_identity = if config.http.tls {
        let (cert, key) = config.http.tls_files(&config.rtmps);
        match &rtmps_identity {
            Some(id) if config.http.cert_file.is_empty() => Some(id.clone()),
            _ => {
                Some(TlsIdentity::load(&cert, &key).map_err(|e| anyhow::anyhow!("http.tls: {e}"))?)
            }
        }
    } else {
        None
    };
    let mut reloadable = Vec::new();
    if let Some(id) = &rtmps_identity {
        reloadable.push(("RTMPS", id.clone()));
    }
    if let Some(id) = &https_identity {
        if !reloadable.iter().any(|(_, r)| Arc::ptr_eq(r, id)) {
            reloadable.push(("HTTPS", id.clone()));
        }
    }
    tokio::spawn(reload_on_sighup(reloadable, cancel.clone()));
    let rtmps = if let Some(identity) = rtmps_identity {
        Some(
            Listener::bind(
                ctx.clone(),
                workers.clone(),
                config.rtmps.listen,
                Some(identity),
            )
            .await?,
        )
    } else {
        None
    };
    // SRT: its sockets close when the node stops accepting (UDP has no connection an
    // old instance could keep: a second instance on the port would get the packets of
    // streams it does not know), after telling each publisher, so they reconnect to
    // the instance that takes over.
    if config.srt.enabled {
        crate::srt::SrtIngest::start(
            &config.srt,
            &config.rtmp,
            ctx.clone(),
            &workers,
            stop_accepting.clone(),
            &tracker,
        )?;
    }
    let http_addr = config.http.listen;
    let http_listener = crate::listen::bind(http_addr).map_err(|e| {
        anyhow::anyhow!("cannot listen for HTTP on {http_addr} ({e}): check http.listen")
    })?;
    info!(addr = %http_listener.local_addr()?, tls = config.http.tls, "HTTP listening");
    let _ = http_url.set(
        config
            .http
            .advertised_url(http_listener.local_addr()?, crate::config::host_name()),
    );
    // A fleet (Postgres with a nodes registry): any node serves any thumbnail.
    let fleet_thumbnails = if config.database.has_fleet_registry() {
        Some(crate::thumbs::fleet::FleetThumbnails::new(
            store.clone(),
            config.status.dead_after(),
            node_id.clone(),
        )?)
    } else {
        None
    };
    let router = http::router(HttpState {
        hub: hub.clone(),
        thumbnails_dir: config.thumbnails.dir.clone(),
        fleet_thumbnails,
        thumbnails,
        health: health.clone(),
        node: config.http.show_node.then(|| node_id.clone()),
        event_streams: http::EventStreamCaps::new(
            config.http.event_streams(),
            config.http.event_streams_per_address(),
        ),
        cors: http::cors::CorsPolicy::new(&config.http.cors_origins),
    });
    let admin_router = http::admin::router(http::admin::AdminState {
        hub: hub.clone(),
        auth: admin_auth,
        admission: ctx.admission.clone(),
        outbox: outbox.clone(),
        prometheus,
        process,
        per_channel_metrics: config.admin.per_channel_metrics,
        token: config.admin.token.clone(),
        registry: store.clone(),
        node_id,
        dead_after: config.status.dead_after(),
        ingest: workers.clone(),
        token_failures: Arc::new(crate::auth::FailureLimiter::new(&config.auth)),
        health,
        webhooks: webhooks.clone(),
    });
    let limits = http::server::HttpLimits::of(&config.http);
    let grace = config.status.shutdown_grace;
    // What a reserved connection (taken while the public slots are full) serves: the
    // health check and the operator's routes.
    let operator_routes = axum::Router::new()
        .route("/healthz", axum::routing::get(http::healthz))
        .merge(admin_router.clone())
        .fallback(http::reserved_only);
    // /metrics and the admin API: on their own private address, or beside the rest.
    let (public, admin_task) = match config.admin.listen {
        Some(addr) => {
            let listener = crate::listen::bind(addr).map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen for admin/metrics on {addr} ({e}): check admin.listen"
                )
            })?;
            info!(addr = %listener.local_addr()?, "admin listening");
            // The dashboard there reads the public API from its own origin.
            let task = tokio::spawn(http::server::serve(
                listener,
                http::server::Routes {
                    all: admin_router.merge(router.clone()),
                    reserved: operator_routes,
                    tls: None,
                },
                limits,
                stop_accepting.clone(),
                cancel.clone(),
                grace,
            ));
            let public = http::server::Routes {
                all: router,
                reserved: axum::Router::new()
                    .route("/healthz", axum::routing::get(http::healthz))
                    .fallback(http::reserved_only),
                tls: https_identity,
            };
            (public, Some(task))
        }
        None => (
            http::server::Routes {
                all: router.merge(admin_router),
                reserved: operator_routes,
                tls: https_identity,
            },
            None,
        ),
    };
    let http_task = tokio::spawn(http::server::serve(
        http_listener,
        public,
        limits,
        stop_accepting.clone(),
        cancel.clone(),
        grace,
    ));
    let ingest_task =
        tokio::spawn(listener.run(stop_accepting.clone(), cancel.clone(), tracker.clone()));
    let rtmps_task =
        rtmps.map(|l| tokio::spawn(l.run(stop_accepting.clone(), cancel.clone(), tracker.clone())));

    // Every listener is bound and serving: a blue/green restart (systemd's
    // `Type=notify`) may stop the old instance now.
    let shutdown = shutdown_signal()?;
    crate::listen::notify(&format!("READY=1\nMAINPID={}", std::process::id()));
    info!("ready");
    shutdown.await;
    crate::listen::notify("STOPPING=1");
    // First stop accepting: a second instance on the same ports takes every new
    // connection from now on. Live publishes may go on for the drain time.
    stop_accepting.cancel();
    let _ = ingest_task.await;
    if let Some(t) = rtmps_task {
        let _ = t.await;
    }
    let drain = config.rtmp.drain_timeout;
    if !drain.is_zero() && !hub.list().is_empty() {
        info!(drain = %humantime::format_duration(drain), live = hub.list().len(), "no longer accepting; live publishes may go on for rtmp.drain_timeout");
        let _ = tokio::time::timeout(drain, async {
            while !hub.list().is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
        .await;
    }
    // Then end what is left: publishers reconnect (OBS does), to the other instance.
    info!("shutting down");
    cancel.cancel();
    hub.end_all(EndReason::Shutdown);
    tracker.close();
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
    // The backend hears of the last offlines.
    if let Some(w) = &webhooks {
        if !w.drain(grace).await {
            warn!(
                pending = w.pending(),
                "webhook deliveries still waiting at exit"
            );
        }
        webhooks_stop.cancel();
    }
    // Gone from the fleet's registry (an instance of a restart that still runs
    // registers the node again at its next beat).
    match tokio::time::timeout(grace, store.retire_node()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(error = %e, "cannot remove this node from the nodes table; the others will declare it dead")
        }
        Err(_) => warn!(
            "cannot remove this node from the nodes table in time; the others will declare it dead"
        ),
    }
    let _ = tokio::time::timeout(grace, http_task).await;
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(grace, t).await;
    }
    Ok(())
}
