//! Any node serves any thumbnail: `/thumbs/<id>.jpg` of a channel live on another
//! node of the fleet is fetched from that node, so one public host name in front of
//! the fleet serves them all.
//!
//! Which node carries which channel comes from the registry (the channels table's node
//! column and the nodes table's `http_url`), read at most every [`MAP_FRESH`] by one
//! background task; a request never waits for the database longer than [`MAP_WAIT`]
//! (the first one after start), and a silent database leaves the last map in use.
//! A fetch has [`FETCH_DEADLINE`] for everything, at most [`MAX_FETCHES`] run at once,
//! concurrent requests for one thumbnail share one fetch, and its answer (a JPEG or
//! "not there") is served from the cache for [`FRESH`]. A fetch carries [`FORWARDED`],
//! and a request carrying it is never forwarded again: no loops between nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderValue, ETAG, HOST, LAST_MODIFIED};
use parking_lot::Mutex;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use crate::channel::ThumbnailId;
use crate::client_tls::http1;
use crate::log_budget::LogBudget;
use crate::store::FleetRegistry;

/// How long a fetched answer is served before the node that holds it is asked again.
pub const FRESH: Duration = Duration::from_secs(2);
/// How long the map of which node carries which channel is used before it is read
/// again.
pub const MAP_FRESH: Duration = Duration::from_secs(2);
/// How long a request waits for the map when it has none yet or it is being read.
pub const MAP_WAIT: Duration = Duration::from_millis(500);
/// One fetch, all of it: connect, request, the whole answer.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(1);
/// Fetches in flight at once; more wait for a slot within their deadline.
pub const MAX_FETCHES: usize = 32;
/// Largest thumbnail taken from another node.
pub const MAX_BYTES: usize = 2 << 20;
/// Thumbnails (and "not there" answers) kept.
pub const CACHE_ENTRIES: usize = 1024;
/// The header of a node's fetch: its answer comes from the local folder only.
pub const FORWARDED: &str = "x-streamgate-fleet";

/// A thumbnail fetched from the node that holds it, with its validators.
#[derive(Debug, Clone)]
pub struct Remote {
    pub body: Bytes,
    pub etag: Option<HeaderValue>,
    pub last_modified: Option<HeaderValue>,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    base: String,
    thumb: Option<Remote>,
}

#[derive(Default)]
struct Locations {
    read_at: Option<Instant>,
    reading: bool,
    /// Thumbnail file name → the base URL of the node that carries the channel.
    map: HashMap<String, String>,
}

/// The fleet's thumbnails, as this node serves them.
pub struct FleetThumbnails {
    registry: Arc<dyn FleetRegistry>,
    dead_after: Duration,
    node_id: String,
    locations: Mutex<Locations>,
    read: watch::Sender<u64>,
    cache: quick_cache::sync::Cache<String, Arc<Entry>>,
    fetches: Semaphore,
    tls: tokio_rustls::TlsConnector,
    /// A node that is down fails every fetch of its thumbnails: one line per 10 s.
    log: Mutex<LogBudget>,
}

impl FleetThumbnails {
    pub fn new(
        registry: Arc<dyn FleetRegistry>,
        dead_after: Duration,
        node_id: String,
    ) -> anyhow::Result<Arc<FleetThumbnails>> {
        Ok(Arc::new(FleetThumbnails {
            registry,
            dead_after,
            node_id,
            locations: Mutex::new(Locations::default()),
            read: watch::channel(0).0,
            cache: quick_cache::sync::Cache::new(CACHE_ENTRIES),
            fetches: Semaphore::new(MAX_FETCHES),
            tls: crate::client_tls::connector("", "http.advertise")?,
            log: Mutex::new(LogBudget::new(1, Duration::from_secs(10))),
        }))
    }

    /// The thumbnail `name` (`<id>.jpg`) of a channel live on another node, or `None`
    /// when no live node carries it or it did not answer in time.
    pub async fn get(self: &Arc<Self>, name: &str) -> Option<Remote> {
        let base = self.where_is(name).await?;
        for _ in 0..2 {
            match self.cache.get_value_or_guard_async(name).await {
                Ok(e) if e.base == base && e.at.elapsed() < FRESH => {
                    metrics::counter!(crate::metric::FLEET_THUMBNAILS, "result" => "cached")
                        .increment(1);
                    return e.thumb.clone();
                }
                Ok(_) => {
                    self.cache.remove(name);
                }
                Err(guard) => {
                    let thumb = self.fetch(&base, name).await;
                    let _ = guard.insert(Arc::new(Entry {
                        at: Instant::now(),
                        base,
                        thumb: thumb.clone(),
                    }));
                    return thumb;
                }
            }
        }
        None
    }

    /// The base URL of the node carrying the thumbnail's channel.
    async fn where_is(self: &Arc<Self>, name: &str) -> Option<String> {
        let mut read = self.read.subscribe();
        let (fresh, loaded) = {
            let mut l = self.locations.lock();
            let fresh = l.read_at.is_some_and(|t| t.elapsed() < MAP_FRESH);
            if !fresh && !l.reading {
                l.reading = true;
                tokio::spawn(self.clone().read_map());
            }
            (fresh, l.read_at.is_some())
        };
        if !fresh && !loaded {
            let _ = tokio::time::timeout(MAP_WAIT, read.changed()).await;
        }
        self.locations.lock().map.get(name).cloned()
    }

    /// Reads the registry into the map (the last map stays when it cannot).
    async fn read_map(self: Arc<Self>) {
        let result = self.registry.fleet(self.dead_after).await;
        let mut l = self.locations.lock();
        match result {
            Ok(Some(view)) => {
                let urls: HashMap<&str, &str> = view
                    .nodes
                    .iter()
                    .filter(|n| n.alive && n.id != self.node_id)
                    .filter_map(|n| Some((n.id.as_str(), n.http_url.as_deref()?)))
                    .filter(|(_, url)| !url.is_empty())
                    .collect();
                let map = view
                    .channels
                    .iter()
                    .filter_map(|c| {
                        let url = urls.get(c.node.as_deref()?)?;
                        Some((ThumbnailId::of(&c.channel_id).file_name(), url.to_string()))
                    })
                    .collect();
                l.map = map;
            }
            Ok(None) => l.map.clear(),
            Err(e) => {
                debug!(error = %e, "fleet thumbnails: cannot read the registry; the last map stays")
            }
        }
        l.read_at = Some(Instant::now());
        l.reading = false;
        drop(l);
        self.read.send_modify(|n| *n += 1);
    }

    /// Fetches `name` from the node at `base`, within [`FETCH_DEADLINE`].
    async fn fetch(&self, base: &str, name: &str) -> Option<Remote> {
        let started = tokio::time::Instant::now();
        let attempt = async {
            let _slot = self.fetches.acquire().await.map_err(|e| e.to_string())?;
            self.request(base, name).await
        };
        let (result, label) = match tokio::time::timeout_at(started + FETCH_DEADLINE, attempt).await
        {
            Ok(Ok(Some(thumb))) => (Some(thumb), "fetched"),
            Ok(Ok(None)) => (None, "not_found"),
            Ok(Err(e)) => {
                if self.may_log() {
                    warn!(node = base, error = %e, "fleet thumbnails: the node carrying the channel did not give its thumbnail (served 404; one line per 10 s)");
                }
                (None, "failed")
            }
            Err(_) => {
                if self.may_log() {
                    warn!(node = base, deadline = ?FETCH_DEADLINE, "fleet thumbnails: the node carrying the channel did not answer in time (served 404; one line per 10 s)");
                }
                (None, "timeout")
            }
        };
        metrics::counter!(crate::metric::FLEET_THUMBNAILS, "result" => label).increment(1);
        result
    }

    fn may_log(&self) -> bool {
        self.log.lock().take(|n| {
            warn!(failures = n, "fleet thumbnails: more failed fetches than logged (streamgate_fleet_thumbnails_total counts them all)")
        })
    }

    async fn request(&self, base: &str, name: &str) -> Result<Option<Remote>, String> {
        let uri: hyper::Uri = format!("{base}/thumbs/{name}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let tls = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or("no host")?.to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host = host.trim_matches(['[', ']']);
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        let request = hyper::Request::get(uri.path())
            .header(HOST, uri.authority().map_or(host, |a| a.as_str()))
            .header(FORWARDED, "1")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = http1(tcp, host, tls.then_some(&self.tls))
            .await
            .map_err(|e| e.to_string())?
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s => return Err(format!("answered {s}")),
        }
        let etag = response.headers().get(ETAG).cloned();
        let last_modified = response.headers().get(LAST_MODIFIED).cloned();
        let body = Limited::new(response.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Some(Remote {
            body,
            etag,
            last_modified,
        }))
    }
}
