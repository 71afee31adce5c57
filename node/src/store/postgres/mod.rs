//! The Postgres store (Supabase in production). Works with the default table that
//! `streamgate migrate` creates or with an existing table whose name and columns are
//! configured; keys stored as SHA-256 hex or plain. Startup checks that the table and
//! every configured column exist with a usable type and says exactly what is missing.
//!
//! Every statement is sent unnamed (`query_typed`: Parse/Bind/Execute in one round
//! trip, nothing prepared by name), so the direct connection, Supabase's session pooler
//! and its transaction pooler all work. `sslmode` from the URL is honoured with libpq's
//! meaning ([`tls`]). Statements run on a small [`pool`] of connections that live on
//! the node's main runtime. Errors are classified by SQLSTATE ([`errors`]): connection
//! trouble, serialization failures and lock timeouts are retryable; the rest is not.
//!
//! One file per role of the store: [`schema`] (the start-up check and `migrate`),
//! [`channels`] (keys, names, relay targets), [`status`] (live status, the clock it is
//! written in), [`fleet`] (the nodes registry and cross-node statements).

mod channels;
mod errors;
mod fleet;
mod pool;
mod schema;
mod status;
mod tls;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;
use tracing::warn;
use uuid::Uuid;

use super::{ChannelStore, StoreError};
use crate::config::DatabaseConfig;
use errors::{classify, pg_error_text};
use pool::Pool;
use schema::Mapping;
pub use schema::DEFAULT_SCHEMA;
pub use tls::{split_sslmode, TlsMode};
/// Channels in a Postgres table.
pub struct PgStore {
    pool: std::sync::Arc<Pool>,
    /// `host:port` for messages (never the password).
    endpoint: String,
    settings: DatabaseConfig,
    node_id: String,
    mapping: std::sync::OnceLock<Mapping>,
    /// A `text` id column may hold a UUID spelled otherwise than this node does
    /// (upper case, no hyphens, braces): the spelling read from the table for each
    /// channel read, so that a statement names the row as the table spells it.
    id_spellings: quick_cache::sync::Cache<Uuid, String>,
    /// The database's clock minus this node's, in microseconds, as last measured
    /// ([`PgStore::measure_clock`]): times this node stamps (when a publish started or
    /// ended) are written in the database's clock, so that publishes stamped by
    /// different nodes compare by one clock, whatever the skew between the machines.
    clock_offset_us: std::sync::atomic::AtomicI64,
}

/// Stored id spellings remembered at most (the channels read most recently stay).
const ID_SPELLINGS: usize = 100_000;

type Param<'a> = (&'a (dyn ToSql + Sync), Type);

impl PgStore {
    /// Parses the URL and prepares TLS and the pool; does not connect yet. Call it on
    /// the runtime that is to run the database I/O.
    pub fn new(url: &str, settings: &DatabaseConfig, node_id: String) -> anyhow::Result<PgStore> {
        let (url, mode) = split_sslmode(url).map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("database.url is not a valid Postgres URL ({e}); write postgres://user:password@host:5432/database"))?;
        config.connect_timeout(settings.connect_timeout);
        // A connection whose peer vanished (a middlebox that lost its state, a dead
        // host) is found by the kernel too, not only by the statement deadlines: data
        // unacknowledged for this long, or an idle connection whose keepalives go
        // unanswered, closes it.
        config.tcp_user_timeout(settings.query_timeout * 2 + settings.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(30));
        config.keepalives_interval(std::time::Duration::from_secs(10));
        config.keepalives_retries(3);
        config.application_name("streamgate");
        let local = config.get_hosts().iter().all(is_local_host);
        let mode = effective_tls_mode(mode, local, !settings.ca_file.is_empty());
        config.ssl_mode(match mode {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            TlsMode::Require | TlsMode::Verify => tokio_postgres::config::SslMode::Require,
        });
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(s) => s.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let endpoint = format!("{host}:{port}");
        match mode {
            TlsMode::Verify => {}
            TlsMode::Require => {
                warn!(%endpoint, "the Postgres connection is encrypted but the server is not verified: set sslmode=verify-full and database.ca_file (for Supabase: the certificate from Project Settings → Database → SSL configuration)")
            }
            TlsMode::Disable if !local => {
                warn!(%endpoint, "the Postgres connection is NOT encrypted (sslmode=disable) and leaves this machine: use sslmode=verify-full")
            }
            TlsMode::Disable | TlsMode::Prefer => {}
        }
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls::tls_config(
            mode,
            &settings.ca_file,
        )?);
        // A caller waits for a free connection at most as long as for a statement.
        let pool = std::sync::Arc::new(Pool::new(
            config,
            tls,
            settings.pool_size,
            settings.query_timeout,
            endpoint.clone(),
        )?);
        Ok(PgStore {
            pool,
            endpoint,
            settings: settings.clone(),
            node_id,
            mapping: std::sync::OnceLock::new(),
            id_spellings: quick_cache::sync::Cache::new(ID_SPELLINGS),
            clock_offset_us: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// Connects and checks the table.
    pub async fn open(
        url: &str,
        settings: &DatabaseConfig,
        node_id: String,
    ) -> anyhow::Result<PgStore> {
        let store = Self::new(url, settings, node_id)?;
        store.check_schema().await?;
        Ok(store)
    }

    /// Runs one statement on a connection of its own, under the query deadline. A
    /// broken connection, or one whose statement passed the deadline, is closed; the
    /// next call gets another.
    async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let lease = self.pool.get().await?;
        let result = tokio::time::timeout(
            self.settings.query_timeout,
            lease.client().query_typed(sql, params),
        )
        .await;
        match result {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => {
                if e.is_closed() || lease.client().is_closed() {
                    lease.discard(false);
                    return Err(StoreError::unavailable(format!(
                        "lost the Postgres connection to {}: {}",
                        self.endpoint,
                        pg_error_text(&e)
                    ))
                    .with_source(e));
                }
                Err(classify(e))
            }
            Err(_) => {
                lease.discard(true);
                Err(StoreError::unavailable(format!(
                    "Postgres at {} did not answer within {:?}",
                    self.endpoint, self.settings.query_timeout
                )))
            }
        }
    }

    fn map(&self) -> &Mapping {
        self.mapping.get().expect("schema checked at open")
    }
}

/// Seconds, as Postgres interval arithmetic takes them (`$n * interval '1 second'`).
pub(super) fn seconds(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

/// Whether a Postgres host is this machine (a Unix socket, `localhost` or a loopback
/// address): only there may a connection fall back to plaintext.
fn is_local_host(host: &tokio_postgres::config::Host) -> bool {
    match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// The TLS mode actually used: `prefer` (the default) never falls back to plaintext
/// for a host that is not this machine, and a configured CA means the server is
/// verified whatever the URL says (short of `disable`).
fn effective_tls_mode(asked: TlsMode, local: bool, ca_configured: bool) -> TlsMode {
    match asked {
        TlsMode::Prefer | TlsMode::Require if ca_configured => TlsMode::Verify,
        TlsMode::Prefer if !local => TlsMode::Require,
        other => other,
    }
}

#[async_trait::async_trait]
impl ChannelStore for PgStore {
    fn health(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.pool.health.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_plaintext_fallback_off_this_machine_and_a_ca_means_verify() {
        use tokio_postgres::config::Host;
        assert!(is_local_host(&Host::Tcp("127.0.0.1".into())));
        assert!(is_local_host(&Host::Tcp("localhost".into())));
        assert!(is_local_host(&Host::Tcp("::1".into())));
        assert!(is_local_host(&Host::Unix("/run/postgresql".into())));
        assert!(!is_local_host(&Host::Tcp("db.abc.supabase.co".into())));
        assert!(!is_local_host(&Host::Tcp("10.0.0.5".into())));
        use TlsMode::*;
        assert_eq!(effective_tls_mode(Prefer, false, false), Require);
        assert_eq!(effective_tls_mode(Prefer, true, false), Prefer);
        assert_eq!(effective_tls_mode(Require, false, true), Verify);
        assert_eq!(effective_tls_mode(Prefer, true, true), Verify);
        assert_eq!(effective_tls_mode(Disable, false, true), Disable);
        assert_eq!(effective_tls_mode(Require, false, false), Require);
    }
}
