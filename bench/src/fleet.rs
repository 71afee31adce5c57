//! `sgbench fleet-load`: the Postgres load a fleet generates, simulated. N simulated
//! nodes, each carrying M live channels, run the node's own store code against a
//! private PostgreSQL at the node's intervals: every heartbeat the node's announce,
//! the `last_seen` refresh of its channels and the dead-node sweep; every re-check the
//! key/session read of its channels; and, as channels end and start (each session
//! lasting `session_minutes` on average), the publish-time statements (key lookup,
//! the "live elsewhere?" read) and the offline + live writes. Reported: statements
//! per second by kind with their latency, rows written per second and the server's
//! CPU, over a window after a warm-up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamgate::config::Config;
use streamgate::key::StreamKey;
use streamgate::store::postgres::PgStore;
use streamgate::store::{
    ChannelDirectory, FleetRegistry, NodeAnnouncement, StatusStore, StatusUpdate,
};
use uuid::Uuid;

use crate::servers::PrivatePostgres;
use crate::stats::{cpu_seconds, Samples};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetLoad {
    pub nodes: usize,
    pub channels_per_node: usize,
    pub heartbeat: Duration,
    pub recheck: Duration,
    pub dead_after_beats: u32,
    /// Mean length of a publish session.
    pub session: Duration,
    pub warmup: Duration,
    pub window: Duration,
}

/// Statement kinds, in the order they are reported.
const KINDS: [&str; 8] = [
    "announce (heartbeat)",
    "last_seen (heartbeat)",
    "sweep (heartbeat)",
    "re-check",
    "key lookup (publish)",
    "live elsewhere? (publish)",
    "status write (publish/end)",
    "all",
];

#[derive(Default)]
struct Counters {
    count: [AtomicU64; KINDS.len()],
    errors: AtomicU64,
    latency: [Samples; KINDS.len()],
}

impl Counters {
    /// Runs one statement and records it under `kind`.
    async fn timed<T, E>(
        &self,
        kind: usize,
        statement: impl std::future::Future<Output = Result<T, E>>,
    ) {
        let t = Instant::now();
        let ok = statement.await.is_ok();
        self.record(kind, t, ok);
    }

    fn record(&self, kind: usize, started: Instant, ok: bool) {
        let d = started.elapsed();
        for k in [kind, KINDS.len() - 1] {
            self.count[k].fetch_add(1, Ordering::Relaxed);
            self.latency[k].record(d);
        }
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reset(&self) {
        for k in 0..KINDS.len() {
            self.count[k].store(0, Ordering::Relaxed);
            self.latency[k].clear();
        }
        self.errors.store(0, Ordering::Relaxed);
    }
}

/// One simulated node: its store (its own pool, as a node has) and channels.
struct SimNode {
    store: PgStore,
    /// (channel id, its stream key, the current session).
    channels: Vec<(Uuid, StreamKey, Mutex<Uuid>)>,
}

/// Runs the simulation; returns what it measured.
pub async fn run(load: FleetLoad) -> anyhow::Result<FleetReport> {
    let pg = PrivatePostgres::start()?;
    let mut config = Config::default();
    config.database.url = streamgate::config::DatabaseUrl::Postgres(pg.url());
    streamgate::store::migrate(&config).await?;
    let total = load.nodes * load.channels_per_node;
    eprintln!(
        "fleet-load: {} nodes x {} channels ({} live channels), heartbeat {:?}, re-check {:?}, sessions of {:?} on average",
        load.nodes, load.channels_per_node, total, load.heartbeat, load.recheck, load.session
    );
    pg.psql(&format!(
        "INSERT INTO channels (id, name, stream_key_hash, is_live, live_since, last_seen, live_session, live_node) \
         SELECT gen_random_uuid(), 'c' || i, encode(sha256(convert_to('key-' || i, 'UTF8')), 'hex'), \
                true, now(), now(), gen_random_uuid(), 'sim-' || ((i - 1) / {per}) \
         FROM generate_series(1, {total}) i",
        per = load.channels_per_node
    ))?;
    let rows = pg.psql("SELECT id, name, live_session, live_node FROM channels ORDER BY name")?;
    let mut per_node: Vec<Vec<(Uuid, StreamKey, Mutex<Uuid>)>> =
        (0..load.nodes).map(|_| Vec::new()).collect();
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        let node: usize = f[3].trim_start_matches("sim-").parse()?;
        let key = StreamKey::new(format!("key-{}", f[1].trim_start_matches('c')));
        per_node[node].push((
            Uuid::parse_str(f[0])?,
            key,
            Mutex::new(Uuid::parse_str(f[2])?),
        ));
    }
    let mut nodes = Vec::new();
    for (i, channels) in per_node.into_iter().enumerate() {
        let store = PgStore::open(&pg.url(), &config.database, format!("sim-{i}")).await?;
        nodes.push(Arc::new(SimNode { store, channels }));
    }
    let counters = Arc::new(Counters::default());
    let dead_after = load.heartbeat * load.dead_after_beats;
    let announcement = NodeAnnouncement {
        address: "sim:1935".into(),
        http_url: Arc::new(std::sync::OnceLock::from("http://sim:8080".to_string())),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: chrono::Utc::now(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        // Nodes start at different moments: their timers are spread over the interval.
        let share = i as f64 / load.nodes as f64;
        let offset = move |every: Duration| every.mul_f64(share);
        {
            let (node, c, stop, a) = (
                node.clone(),
                counters.clone(),
                stop.clone(),
                announcement.clone(),
            );
            let every = load.heartbeat;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(offset(every)).await;
                let mut tick = tokio::time::interval(every);
                let ids: Vec<Uuid> = node.channels.iter().map(|c| c.0).collect();
                while !stop.is_cancelled() {
                    tick.tick().await;
                    c.timed(0, node.store.announce_node(&a)).await;
                    c.timed(1, node.store.heartbeat(&ids)).await;
                    c.timed(2, node.store.sweep_dead_nodes(dead_after)).await;
                }
            }));
        }
        {
            let (node, c, stop) = (node.clone(), counters.clone(), stop.clone());
            let every = load.recheck;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(offset(every)).await;
                let mut tick = tokio::time::interval(every);
                let ids: Vec<Uuid> = node.channels.iter().map(|c| c.0).collect();
                while !stop.is_cancelled() {
                    tick.tick().await;
                    c.timed(3, node.store.recheck(&ids)).await;
                }
            }));
        }
        {
            // Sessions end and start: channels / session length per second, one at a
            // time in round-robin order.
            let (node, c, stop) = (node.clone(), counters.clone(), stop.clone());
            let per_second = load.channels_per_node as f64 / load.session.as_secs_f64();
            tasks.push(tokio::spawn(async move {
                let every = Duration::from_secs_f64(1.0 / per_second);
                tokio::time::sleep(offset(every)).await;
                let mut tick = tokio::time::interval(every);
                let mut next = 0usize;
                let mut seq = 0u64;
                while !stop.is_cancelled() {
                    tick.tick().await;
                    let (id, key, session) = &node.channels[next % node.channels.len()];
                    next += 1;
                    let new_session = Uuid::new_v4();
                    let old =
                        std::mem::replace(&mut *session.lock().expect("session"), new_session);
                    seq += 2;
                    let update = |live, session_id, seq| StatusUpdate {
                        channel_id: *id,
                        live,
                        session_id,
                        seq,
                        at: chrono::Utc::now(),
                        supersedes: Vec::new(),
                        peer_tag: live.then(|| "0123456789abcdef01234567".to_string()),
                    };
                    let t = Instant::now();
                    let ok = node
                        .store
                        .apply_status(&update(false, old, seq))
                        .await
                        .is_ok();
                    c.record(6, t, ok);
                    let t = Instant::now();
                    let ok = node.store.find_by_key(key).await.is_ok();
                    c.record(4, t, ok);
                    let t = Instant::now();
                    let ok = node.store.live_elsewhere(*id, dead_after).await.is_ok();
                    c.record(5, t, ok);
                    let t = Instant::now();
                    let ok = node
                        .store
                        .apply_status(&update(true, new_session, seq + 1))
                        .await
                        .is_ok();
                    c.record(6, t, ok);
                }
            }));
        }
    }
    tokio::time::sleep(load.warmup).await;
    counters.reset();
    let stat = |pg: &PrivatePostgres| -> anyhow::Result<(f64, f64, f64)> {
        let row = pg.psql(
            "SELECT xact_commit, tup_updated + tup_inserted + tup_deleted, tup_returned + tup_fetched \
             FROM pg_stat_database WHERE datname = 'postgres'",
        )?;
        let f: Vec<f64> = row
            .trim()
            .split('|')
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        Ok((f[0], f[1], f[2]))
    };
    let postmaster = pg.postmaster_pid()?;
    let cpu0 = cpu_seconds(postmaster);
    let s0 = stat(&pg)?;
    let started = Instant::now();
    tokio::time::sleep(load.window).await;
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(postmaster);
    let s1 = stat(&pg)?;
    stop.cancel();
    for t in tasks {
        t.abort();
    }
    let statements = KINDS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let (_, p50, p99, _) = counters.latency[k].summary();
            StatementLoad {
                kind: name,
                per_second: counters.count[k].load(Ordering::Relaxed) as f64 / secs,
                p50_ms: p50,
                p99_ms: p99,
            }
        })
        .collect();
    Ok(FleetReport {
        load,
        statements,
        seconds: secs,
        transactions_per_second: (s1.0 - s0.0) / secs,
        rows_written_per_second: (s1.1 - s0.1) / secs,
        rows_read_per_second: (s1.2 - s0.2) / secs,
        postgres_cpu_percent: (cpu1 - cpu0) / secs * 100.0,
        failed: counters.errors.load(Ordering::Relaxed),
    })
}

/// One kind of statement, as measured.
#[derive(Debug, Clone)]
pub struct StatementLoad {
    pub kind: &'static str,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What `run` measured.
#[derive(Debug, Clone)]
pub struct FleetReport {
    pub load: FleetLoad,
    /// By kind, in [`KINDS`] order, the last being all of them.
    pub statements: Vec<StatementLoad>,
    pub seconds: f64,
    pub transactions_per_second: f64,
    pub rows_written_per_second: f64,
    pub rows_read_per_second: f64,
    pub postgres_cpu_percent: f64,
    pub failed: u64,
}

impl FleetReport {
    /// The Markdown tables of BENCHMARKS.md.
    pub fn print(&self) {
        let l = &self.load;
        println!(
            "\n### Postgres load: {} nodes x {} live channels ({} channels), heartbeat {:?}, re-check {:?}, sessions of {:?} on average\n",
            l.nodes,
            l.channels_per_node,
            l.nodes * l.channels_per_node,
            l.heartbeat,
            l.recheck,
            l.session
        );
        println!("| statement | per second | p50 ms | p99 ms |");
        println!("| --- | ---: | ---: | ---: |");
        for s in &self.statements {
            println!(
                "| {} | {:.1} | {:.2} | {:.2} |",
                s.kind, s.per_second, s.p50_ms, s.p99_ms
            );
        }
        println!(
            "\nserver side over {:.0} s: {:.1} transactions/s, {:.0} rows written/s, {:.0} rows read/s; \
             Postgres CPU {:.1} % of one core; {} failed statements",
            self.seconds,
            self.transactions_per_second,
            self.rows_written_per_second,
            self.rows_read_per_second,
            self.postgres_cpu_percent,
            self.failed
        );
    }
}
