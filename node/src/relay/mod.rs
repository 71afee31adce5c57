//! Relay: every live stream is forwarded, unchanged, to the configured upstream RTMP
//! servers under its public name (the key never leaves the node). One task per
//! (stream, target) runs our RTMP client session; ingest feeds it through a bounded
//! [`queue::RelayQueue`] and never waits for it.

pub mod queue;
pub mod session;
pub mod target;

use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use tokio_rustls::TlsConnector;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::RelayConfig;
use crate::hub::{LiveStream, RelayAttachment};
use crate::store::Channel;
use queue::{QueueLimits, RelayQueue};
use target::{RelayUrl, TargetTemplate, TemplateValues};

/// Starts relay tasks for live streams.
pub struct RelayManager {
    config: Arc<RelayConfig>,
    /// Configured templates (validated at start).
    templates: Vec<TargetTemplate>,
    tls: TlsConnector,
    /// Relay tasks, drained at shutdown.
    pub tracker: TaskTracker,
}

/// Builds the TLS client configuration: public web roots plus `ca_file`.
fn tls_connector(config: &RelayConfig) -> anyhow::Result<TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if !config.ca_file.is_empty() {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(&config.ca_file)
            .map_err(|e| anyhow::anyhow!("relay.ca_file {:?}: {e}", config.ca_file))?
        {
            let cert =
                cert.map_err(|e| anyhow::anyhow!("relay.ca_file {:?}: {e}", config.ca_file))?;
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("relay.ca_file {:?}: {e}", config.ca_file))?;
            added += 1;
        }
        anyhow::ensure!(
            added > 0,
            "relay.ca_file {:?} holds no PEM certificate",
            config.ca_file
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(tls)))
}

impl RelayManager {
    pub fn new(config: RelayConfig) -> anyhow::Result<Arc<RelayManager>> {
        let templates = config
            .targets
            .iter()
            .map(|t| TargetTemplate::new(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(RelayManager {
            tls: tls_connector(&config)?,
            config: Arc::new(config),
            templates,
            tracker: TaskTracker::new(),
        }))
    }

    /// Starts one relay task per target for a stream that just went live.
    pub fn attach(&self, stream: &Arc<LiveStream>, channel: &Channel) {
        let channel_id = channel.id.hyphenated().to_string();
        let thumb_id = hex::encode(Md5::digest(channel_id.as_bytes()));
        let values = TemplateValues {
            channel_id: &channel_id,
            thumb_id: &thumb_id,
            name: &channel.name,
        };
        let mut targets: Vec<(RelayUrl, String)> = Vec::new();
        for t in &self.templates {
            match t.render(&values) {
                Ok(url) => {
                    let shown = url.redacted();
                    targets.push((url, shown));
                }
                Err(e) => {
                    warn!(channel_id = %channel.id, error = %e, "relay target does not render for this channel")
                }
            }
        }
        if self.config.per_channel_targets {
            for (i, raw) in channel.relay_targets.iter().enumerate() {
                match TargetTemplate::new(raw).and_then(|t| t.render(&values)) {
                    Ok(url) => {
                        // A per-channel target often embeds a third party's stream key
                        // as its name: never show the name.
                        let shown = format!("{}/***", url.tc_url());
                        targets.push((url, shown));
                    }
                    Err(e) => {
                        warn!(channel_id = %channel.id, index = i, error = %e, "channel relay target unusable")
                    }
                }
            }
        }
        for (url, display_url) in targets {
            let queue = Arc::new(RelayQueue::new(QueueLimits {
                max_bytes: self.config.queue_max_bytes,
                max_delay: self.config.queue_max_delay,
            }));
            let last_error = Arc::new(Mutex::new(None));
            stream.attach_relay(RelayAttachment {
                display_url: display_url.clone(),
                queue: queue.clone(),
                last_error: last_error.clone(),
            });
            let task = session::RelayTask {
                stream: stream.clone(),
                queue,
                url,
                display_url,
                config: self.config.clone(),
                tls: self.tls.clone(),
                last_error,
            };
            self.tracker.spawn(task.run());
        }
    }
}
