//! What every connection task of the ingest shares: the configuration, the hub, the
//! authorizer, the per-address counts, the connection permits, the byte counter.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::admission::{Admission, AdmissionLimits};
use crate::auth::Authorizer;
use crate::config::RtmpConfig;
use crate::hub::Hub;
use crate::metric;

/// What every connection task shares.
pub struct IngestContext {
    pub config: RtmpConfig,
    pub hub: Arc<Hub>,
    pub auth: Arc<Authorizer>,
    /// Per-address and pending connection counts.
    pub admission: Arc<Admission>,
    /// One permit per open connection, RTMP, RTMPS and SRT together.
    pub(crate) connections: Arc<Semaphore>,
    /// Bytes read from clients (a handle, so a read costs one atomic add).
    pub(crate) ingest_bytes: metrics::Counter,
}

impl IngestContext {
    pub fn new(config: RtmpConfig, hub: Arc<Hub>, auth: Arc<Authorizer>) -> IngestContext {
        let admission = Admission::new(AdmissionLimits {
            per_address: config.max_connections_per_address,
            pending_per_address: config.max_pending_per_address,
            pending: config.max_pending,
        });
        IngestContext {
            connections: Arc::new(Semaphore::new(config.max_connections)),
            ingest_bytes: metrics::counter!(metric::INGEST_BYTES),
            config,
            hub,
            auth,
            admission,
        }
    }
}
