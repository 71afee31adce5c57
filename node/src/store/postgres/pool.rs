//! A small pool of Postgres connections that live on one runtime. Connecting (socket,
//! TLS, startup) and driving each connection happen as tasks of the runtime the store
//! was created on (the node's main runtime), whichever thread asks for a connection:
//! an ingest thread that authorizes a key never becomes the home of the database I/O.
//! Each caller holds its own connection for one statement, so a slow statement delays
//! no one else's, and a statement past its deadline costs only its own connection.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::debug;

use crate::store::StoreError;

/// Connections to one database, at most `size` at once.
pub(super) struct Pool {
    config: Config,
    tls: MakeRustlsConnect,
    /// Where connections are made and driven.
    runtime: Handle,
    /// Connections not in use.
    idle: Mutex<Vec<Client>>,
    /// One permit per connection in use or being made.
    slots: std::sync::Arc<Semaphore>,
    /// How long a caller waits for a free connection.
    wait: Duration,
    /// `host:port`, for messages (never the password).
    endpoint: String,
}

/// A connection lent to one caller; it goes back to the pool when dropped, unless
/// [`Lease::discard`] said it is broken.
pub(super) struct Lease<'a> {
    pool: &'a Pool,
    client: Option<Client>,
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
        Ok(Pool {
            config,
            tls,
            runtime,
            idle: Mutex::new(Vec::new()),
            slots: std::sync::Arc::new(Semaphore::new(size.max(1))),
            wait,
            endpoint,
        })
    }

    /// A connection: an idle one that is still open, or a new one.
    pub(super) async fn get(&self) -> Result<Lease<'_>, StoreError> {
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
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Lease {
            pool: self,
            client: Some(client),
            _slot: slot,
        })
    }

    /// Opens a connection as a task of the pool's runtime and leaves its driver there.
    async fn connect(&self) -> Result<Client, StoreError> {
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let made = self
            .runtime
            .spawn(async move {
                let (client, connection) = config.connect(tls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        debug!(error = %e, "postgres connection ended");
                    }
                });
                Ok::<_, tokio_postgres::Error>(client)
            })
            .await;
        match made {
            Ok(Ok(client)) => Ok(client),
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

    /// Asks the server to cancel what `client` is running (best effort, in the
    /// background): a statement abandoned at its deadline stops using the database.
    fn cancel(&self, client: &Client) {
        let token = client.cancel_token();
        let tls = self.tls.clone();
        self.runtime.spawn(async move {
            if let Err(e) = token.cancel_query(tls).await {
                debug!(error = %e, "could not cancel an abandoned postgres statement");
            }
        });
    }
}

impl Lease<'_> {
    pub(super) fn client(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }

    /// The connection is broken or busy with an abandoned statement: close it instead
    /// of returning it to the pool.
    pub(super) fn discard(mut self, cancel_running: bool) {
        if let Some(client) = self.client.take() {
            if cancel_running {
                self.pool.cancel(&client);
            }
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                self.pool.idle.lock().push(client);
            }
        }
    }
}
