//! A small pool of Postgres connections that live on one runtime. Connecting (socket,
//! TLS, startup) and driving each connection happen as tasks of the runtime the store
//! was created on (the node's main runtime), whichever thread asks for a connection:
//! an ingest thread that authorizes a key never becomes the home of the database I/O.
//! Each caller holds its own connection for one statement, so a slow statement delays
//! no one else's, and a statement past its deadline costs only its own connection.
//!
//! Every step has a deadline: waiting for a free connection (`query_timeout`), the
//! whole connect (TCP, TLS and the startup exchange: `connect_timeout`; tokio-postgres
//! bounds only the TCP connect), each statement (`query_timeout`, the caller's), and
//! the cancel request sent for an abandoned statement. A connection given up on (its
//! statement passed the deadline, or it broke) is dropped with its driver task, so a
//! blackholed connection is closed, never waited on.
//!
//! The pool also knows whether the database answers ([`Health`]): a connect that fails
//! or does not finish in time marks it down; then statements fail at once with the
//! reason, idle connections (suspect) are dropped, and a prober tries a fresh
//! connection every [`PROBE_EVERY`] until one answers, which marks it up again and
//! wakes whoever waits for that (the outbox, the heartbeat).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::{debug, info, warn};

use crate::store::{Health, StoreError};

/// How often a down database is tried again.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Probes in flight at most (each may wait for the whole connect deadline).
const MAX_PROBES: usize = 8;

/// An open connection and the task that drives it.
struct Conn {
    client: Client,
    driver: AbortHandle,
}

impl Conn {
    /// Closes the connection at once (its driver task, and so its socket, end).
    fn close(self) {
        self.driver.abort();
    }
}

/// Connections to one database, at most `size` at once.
pub(super) struct Pool {
    config: Config,
    tls: MakeRustlsConnect,
    /// Where connections are made and driven.
    runtime: Handle,
    /// Connections not in use.
    idle: Mutex<Vec<Conn>>,
    /// One permit per connection in use or being made.
    slots: Arc<Semaphore>,
    /// How long a caller waits for a free connection.
    wait: Duration,
    /// The deadline of a whole connect (TCP, TLS, startup).
    connect_timeout: Duration,
    /// `host:port`, for messages (never the password).
    endpoint: String,
    /// Whether the database answers.
    pub(super) health: Arc<Health>,
    /// Why the database is down, and since when (set while it is).
    down: Mutex<Option<(String, Instant)>>,
    /// A prober is running.
    probing: AtomicBool,
}

/// A connection lent to one caller; it goes back to the pool when dropped, unless
/// [`Lease::discard`] said it is broken.
pub(super) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _slot: OwnedSemaphorePermit,
}

impl Pool {
    /// Must be called on the runtime that is to own the connections.
    pub(super) fn new(
        config: Config,
        tls: MakeRustlsConnect,
        size: usize,
        wait: Duration,
        endpoint: String,
    ) -> Result<Pool, StoreError> {
        let runtime = Handle::try_current().map_err(|e| {
            StoreError::unavailable("the Postgres store must be created inside the node's runtime")
                .with_source(e)
        })?;
        let connect_timeout = config.get_connect_timeout().copied().unwrap_or(wait);
        Ok(Pool {
            config,
            tls,
            runtime,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(size.max(1))),
            wait,
            connect_timeout,
            endpoint,
            health: Arc::new(Health::new()),
            down: Mutex::new(None),
            probing: AtomicBool::new(false),
        })
    }

    /// A connection: an idle one that is still open, or a new one. While the database
    /// is down, fails at once with the reason (the prober finds out when it is back).
    pub(super) async fn get(self: &Arc<Self>) -> Result<Lease<'_>, StoreError> {
        if let Some((why, since)) = self.down.lock().clone() {
            return Err(StoreError::unavailable(format!(
                "{why} (for {}s; tried again every {}s)",
                since.elapsed().as_secs(),
                PROBE_EVERY.as_secs()
            )));
        }
        let slot = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                StoreError::unavailable(format!(
                    "every connection to Postgres at {} stayed busy for {:?}",
                    self.endpoint, self.wait
                ))
            })?
            .expect("the pool's semaphore is never closed");
        let reused = {
            let mut idle = self.idle.lock();
            idle.retain(|c| !c.client.is_closed());
            idle.pop()
        };
        let conn = match reused {
            Some(c) => c,
            None => match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    self.mark_down(&e);
                    return Err(e);
                }
            },
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            _slot: slot,
        })
    }

    /// Opens a connection as a task of the pool's runtime and leaves its driver there,
    /// all within the connect deadline.
    async fn connect(&self) -> Result<Conn, StoreError> {
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let deadline = self.connect_timeout;
        let made = self
            .runtime
            .spawn(async move {
                let (client, connection) =
                    match tokio::time::timeout(deadline, config.connect(tls)).await {
                        Ok(r) => r?,
                        Err(_) => return Ok(None),
                    };
                let driver = tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        debug!(error = %e, "postgres connection ended");
                    }
                });
                Ok::<_, tokio_postgres::Error>(Some(Conn {
                    client,
                    driver: driver.abort_handle(),
                }))
            })
            .await;
        match made {
            Ok(Ok(Some(conn))) => Ok(conn),
            Ok(Ok(None)) => Err(StoreError::unavailable(format!(
                "{}: check database.url, and whatever is between this node and the database (a pooler, a proxy, a firewall)",
                self.silent_reason().await
            ))),
            Ok(Err(e)) => {
                // A server that answered said why; say that, and what to check.
                let text = super::pg_error_text(&e);
                let what = if e.as_db_error().is_some() {
                    format!(
                        "Postgres at {} refused the connection: {text}",
                        self.endpoint
                    )
                } else {
                    format!("cannot reach Postgres at {} ({text})", self.endpoint)
                };
                Err(StoreError::unavailable(format!("{what}: check database.url")).with_source(e))
            }
            Err(e) => Err(StoreError::unavailable(format!(
                "connecting to Postgres at {} was interrupted (the node is stopping)",
                self.endpoint
            ))
            .with_source(e)),
        }
    }

    /// What did not answer when a connect passed its deadline: a TCP connection to the
    /// same address says whether the server's port accepts at all.
    async fn silent_reason(&self) -> String {
        let tcp_ok = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => {
                let port = self.config.get_ports().first().copied().unwrap_or(5432);
                matches!(
                    tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::TcpStream::connect((host.as_str(), port))
                    )
                    .await,
                    Ok(Ok(_))
                )
            }
            _ => false,
        };
        let within = humantime::format_duration(self.connect_timeout);
        if tcp_ok {
            format!(
                "Postgres at {} accepts TCP connections but did not answer the TLS and startup exchange within {within} (database.connect_timeout)",
                self.endpoint
            )
        } else {
            format!(
                "Postgres at {} did not answer within {within} (database.connect_timeout)",
                self.endpoint
            )
        }
    }

    /// The database did not answer: statements fail at once from now on, idle
    /// connections (likely dead too) are dropped, and the prober starts.
    fn mark_down(self: &Arc<Self>, e: &StoreError) {
        {
            let mut down = self.down.lock();
            if down.is_some() {
                return;
            }
            *down = Some((e.to_string(), Instant::now()));
        }
        for conn in self.idle.lock().drain(..) {
            conn.close();
        }
        self.health.set(false);
        warn!(endpoint = %self.endpoint, error = %e, every = ?PROBE_EVERY, "Postgres does not answer; statements fail at once until it does, and it is tried again every second");
        if !self.probing.swap(true, Ordering::AcqRel) {
            let pool = self.clone();
            self.runtime.spawn(async move { pool.probe().await });
        }
    }

    /// Tries a fresh connection and one statement every [`PROBE_EVERY`] until the
    /// database answers; then it is up again. Attempts overlap (each has the whole
    /// connect deadline, at most [`MAX_PROBES`] at once), so a database that comes
    /// back is seen within about a second, not after an attempt stuck on the dead path
    /// has timed out.
    async fn probe(self: Arc<Self>) {
        let mut attempts = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick(), if attempts.len() < MAX_PROBES => {
                    let pool = self.clone();
                    attempts.spawn(async move { pool.probe_once().await });
                }
                Some(done) = attempts.join_next() => match done {
                    Ok(Ok(conn)) => {
                        attempts.abort_all();
                        let since = self.down.lock().take().map(|(_, since)| since);
                        self.idle.lock().push(conn);
                        self.probing.store(false, Ordering::Release);
                        self.health.set(true);
                        info!(endpoint = %self.endpoint, down_for = ?since.map(|s| s.elapsed()), "Postgres answers again");
                        return;
                    }
                    Ok(Err(e)) => {
                        if let Some((why, _)) = self.down.lock().as_mut() {
                            *why = e.to_string();
                        }
                        debug!(endpoint = %self.endpoint, error = %e, "Postgres still does not answer");
                    }
                    Err(_) => {}
                },
            }
        }
    }

    /// One probe: a fresh connection that answers `SELECT 1` in time.
    async fn probe_once(&self) -> Result<Conn, StoreError> {
        let conn = self.connect().await?;
        match tokio::time::timeout(self.wait, conn.client.simple_query("SELECT 1")).await {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(e)) => {
                conn.close();
                Err(StoreError::unavailable(super::pg_error_text(&e)))
            }
            Err(_) => {
                conn.close();
                Err(StoreError::unavailable(format!(
                    "Postgres at {} connected but did not answer a statement within {:?}",
                    self.endpoint, self.wait
                )))
            }
        }
    }

    /// Asks the server to cancel what `client` is running (best effort, in the
    /// background, within the connect deadline): a statement abandoned at its deadline
    /// stops using the database.
    fn cancel(&self, client: &Client) {
        let token = client.cancel_token();
        let tls = self.tls.clone();
        let deadline = self.connect_timeout;
        self.runtime.spawn(async move {
            match tokio::time::timeout(deadline, token.cancel_query(tls)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!(error = %e, "could not cancel an abandoned postgres statement")
                }
                Err(_) => {
                    debug!("the cancel request for an abandoned postgres statement got no answer")
                }
            }
        });
    }
}

impl Lease<'_> {
    pub(super) fn client(&self) -> &Client {
        &self.conn.as_ref().expect("present until dropped").client
    }

    /// The connection is broken or busy with an abandoned statement: close it (its
    /// driver and socket with it) instead of returning it to the pool.
    pub(super) fn discard(mut self, cancel_running: bool) {
        if let Some(conn) = self.conn.take() {
            if cancel_running {
                self.pool.cancel(&conn.client);
            }
            conn.close();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.client.is_closed() {
                conn.close();
            } else {
                self.pool.idle.lock().push(conn);
            }
        }
    }
}
