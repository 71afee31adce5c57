//! `streamgate check`: everything a node needs, tried before it is needed, with what to
//! do about each thing that is wrong. The configuration was validated when it loaded;
//! this connects to the database and checks its table, runs ffmpeg, writes into the
//! thumbnail folder, loads the RTMPS certificate, reaches each relay target (connect
//! and RTMP handshake, no publish), each webhook URL (connect and TLS) and, in a fleet,
//! each other live node's HTTP listener (where it fetches their thumbnails), and reads
//! the open-files limit and the kernel settings `deploy/sysctl.conf` sets. A failure is something that would stop streams
//! (the command then exits non-zero); a warning is something that limits them.

use std::fmt;
use std::path::Path;

use crate::config::{Config, ThumbnailDecoder};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub verdict: Verdict,
    pub what: String,
    /// What was found, and for a warning or failure, what to do.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        write!(f, "{mark}  {}: {}", self.what, self.detail)
    }
}

fn finding(verdict: Verdict, what: impl Into<String>, detail: impl Into<String>) -> Finding {
    Finding {
        verdict,
        what: what.into(),
        detail: detail.into(),
    }
}

/// Kernel settings worth having on an ingest node: (sysctl, file under /proc/sys,
/// recommended minimum, why).
const KERNEL: [(&str, &str, u64, &str); 5] = [
    (
        "net.core.somaxconn",
        "net/core/somaxconn",
        4096,
        "a connection storm overflows a short accept queue",
    ),
    (
        "net.ipv4.tcp_max_syn_backlog",
        "net/ipv4/tcp_max_syn_backlog",
        8192,
        "half-open connections of a storm are dropped",
    ),
    (
        "net.core.rmem_max",
        "net/core/rmem_max",
        4 * 1024 * 1024,
        "socket receive buffers cannot grow for high-bitrate streams",
    ),
    (
        "net.core.wmem_max",
        "net/core/wmem_max",
        4 * 1024 * 1024,
        "socket send buffers cannot grow for relays",
    ),
    (
        "fs.file-max",
        "fs/file-max",
        100_000,
        "the whole machine runs out of file descriptors",
    ),
];

/// Runs every check; the findings in order.
pub async fn run(config: &Config) -> Vec<Finding> {
    let mut out = vec![finding(
        Verdict::Ok,
        "configuration",
        "valid (every key known, every value in range)",
    )];
    out.push(database(config).await);
    out.extend(thumbnails(config).await);
    if config.rtmps.enabled {
        out.push(
            match crate::ingest::tls::TlsIdentity::load(
                &config.rtmps.cert_file,
                &config.rtmps.key_file,
            ) {
                Ok(_) => finding(Verdict::Ok, "RTMPS certificate", "loaded"),
                Err(e) => finding(
                    Verdict::Fail,
                    "RTMPS certificate",
                    format!("{e}: fix rtmps.cert_file / rtmps.key_file"),
                ),
            },
        );
    }
    out.extend(relay_targets(config).await);
    out.extend(webhooks(config).await);
    out.extend(fleet(config).await);
    out.push(open_files(config));
    out.extend(kernel());
    out
}

async fn database(config: &Config) -> Finding {
    let what = format!("database {}", config.database.url.redacted());
    match crate::store::open(config).await {
        Ok(store) => match store.list_channels().await {
            Ok(list) => finding(
                Verdict::Ok,
                what,
                format!("reached, table checked, {} channel(s)", list.len()),
            ),
            Err(e) => finding(Verdict::Fail, what, e.to_string()),
        },
        Err(e) => finding(Verdict::Fail, what, format!("{e:#}")),
    }
}

/// In a fleet: whether this node reaches the HTTP listener each other live node
/// announced (it fetches their channels' thumbnails there), and what this node
/// announces.
async fn fleet(config: &Config) -> Vec<Finding> {
    if !config.database.has_fleet_registry() {
        return Vec::new();
    }
    let me = config.status.node_id();
    let announced = config
        .http
        .advertised_url(config.http.listen, crate::config::host_name());
    let mut out = vec![finding(
        Verdict::Ok,
        "fleet thumbnails",
        format!("this node ({me}) announces {announced} (http.advertise): the other nodes fetch its thumbnails there"),
    )];
    let Ok(store) = crate::store::open(config).await else {
        return out; // the database finding says why
    };
    let view = match store.fleet(config.status.dead_after()).await {
        Ok(Some(view)) => view,
        Ok(None) => return out,
        Err(e) => {
            out.push(finding(
                Verdict::Warn,
                "fleet thumbnails",
                format!("cannot read the nodes table: {e}"),
            ));
            return out;
        }
    };
    for node in view.nodes.iter().filter(|n| n.alive && n.id != me) {
        let what = format!("fleet node {}", node.id);
        let Some(url) = node.http_url.as_deref().filter(|u| !u.is_empty()) else {
            out.push(finding(
                Verdict::Warn,
                what,
                "announced no http_url (an older version, or a registry without the column: run `streamgate migrate`): its channels' thumbnails are served only by itself",
            ));
            continue;
        };
        let reach = async {
            let uri: axum::http::Uri = url.parse().map_err(|e| format!("{e}"))?;
            let host = uri
                .host()
                .ok_or("no host")?
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        out.push(
            match tokio::time::timeout(std::time::Duration::from_secs(2), reach).await {
                Ok(Ok(())) => finding(Verdict::Ok, what, format!("reached at {url}")),
                Ok(Err(e)) => finding(
                    Verdict::Warn,
                    what,
                    format!("cannot reach {url} ({e}): this node answers 404 for the thumbnails of that node's channels; open its HTTP port to this node, or set http.advertise there to an address this node reaches"),
                ),
                Err(_) => finding(
                    Verdict::Warn,
                    what,
                    format!("no answer from {url} within 2 s: this node answers 404 for the thumbnails of that node's channels; open its HTTP port to this node, or set http.advertise there"),
                ),
            },
        );
    }
    out
}

async fn thumbnails(config: &Config) -> Vec<Finding> {
    let t = &config.thumbnails;
    if !t.enabled {
        return vec![finding(Verdict::Ok, "thumbnails", "off")];
    }
    let mut out = Vec::new();
    let dir = &t.dir;
    out.push(match writable(dir).await {
        Ok(()) => finding(
            Verdict::Ok,
            format!("thumbnail folder {}", dir.display()),
            "writable",
        ),
        Err(e) => finding(
            Verdict::Fail,
            format!("thumbnail folder {}", dir.display()),
            format!(
                "not writable ({e}): the node would not start; fix thumbnails.dir or its permissions"
            ),
        ),
    });
    let ffmpeg = tokio::process::Command::new(&t.ffmpeg)
        .arg("-version")
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    let verdict_missing = match t.decoder {
        ThumbnailDecoder::Ffmpeg => Verdict::Fail,
        ThumbnailDecoder::Worker => Verdict::Warn,
    };
    out.push(match ffmpeg {
        Ok(o) if o.status.success() => finding(
            Verdict::Ok,
            "ffmpeg",
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        Ok(o) => finding(
            verdict_missing,
            "ffmpeg",
            format!("`{} -version` failed ({})", t.ffmpeg, o.status),
        ),
        Err(e) => finding(
            verdict_missing,
            "ffmpeg",
            format!(
                "cannot run {:?} ({e}): install it (apt-get install ffmpeg) or set thumbnails.ffmpeg; without it HEVC streams get no thumbnail",
                t.ffmpeg
            ),
        ),
    });
    out
}

/// Creates the folder if needed, writes and removes a file in it.
async fn writable(dir: &Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let probe = dir.join(format!(".streamgate-check-{}", std::process::id()));
    tokio::fs::write(&probe, b"check").await?;
    tokio::fs::remove_file(&probe).await
}

async fn relay_targets(config: &Config) -> Vec<Finding> {
    if config.relay.targets.is_empty() {
        return vec![finding(Verdict::Ok, "relay", "no targets configured")];
    }
    let relay = match crate::relay::RelayManager::new(config.relay.clone()) {
        Ok(r) => r,
        Err(e) => return vec![finding(Verdict::Fail, "relay", format!("{e:#}"))],
    };
    relay
        .probe_targets()
        .await
        .into_iter()
        .map(|(target, result)| match result {
            Ok(took) => finding(
                Verdict::Ok,
                format!("relay target {target}"),
                format!("connected and handshaken in {} ms", took.as_millis()),
            ),
            Err(e) => finding(
                Verdict::Fail,
                format!("relay target {target}"),
                format!("{e}: check that the upstream runs and that this machine may reach it (relay.targets)"),
            ),
        })
        .collect()
}

/// Each webhook URL: resolved, allowed, connected (and TLS) within `webhooks.timeout`;
/// nothing is sent. A backend that cannot be reached stops no stream: a warning.
async fn webhooks(config: &Config) -> Vec<Finding> {
    let hooks = match crate::webhooks::Webhooks::new(&config.webhooks, String::new()) {
        Ok(Some(h)) => h,
        Ok(None) => return vec![finding(Verdict::Ok, "webhooks", "no URL configured")],
        Err(e) => return vec![finding(Verdict::Fail, "webhooks", format!("{e:#}"))],
    };
    hooks
        .probe()
        .await
        .into_iter()
        .map(|(url, result)| match result {
            Ok(took) => finding(
                Verdict::Ok,
                format!("webhook {url}"),
                format!("connected in {} ms", took.as_millis()),
            ),
            Err(e) => finding(
                Verdict::Warn,
                format!("webhook {url}"),
                format!(
                    "{e}: deliveries will wait and be retried until it answers (webhooks.urls)"
                ),
            ),
        })
        .collect()
}

fn open_files(config: &Config) -> Finding {
    // The node raises its soft limit to the hard one at start.
    let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return finding(Verdict::Warn, "open files", "cannot read the limit");
    };
    // Each connection, each relay upstream, and some for files and the database.
    let targets = config.relay.targets.len() as u64;
    let needed = config.rtmp.max_connections as u64 * (1 + targets)
        + config.http.max_connections as u64
        + 256;
    if hard >= needed {
        finding(
            Verdict::Ok,
            "open files",
            format!("hard limit {hard} (needs about {needed})"),
        )
    } else {
        finding(
            Verdict::Warn,
            "open files",
            format!(
                "hard limit {hard}, below the {needed} that rtmp.max_connections with {targets} relay target(s) may need: raise LimitNOFILE (systemd) or `ulimit -n` / the compose `nofile` ulimit"
            ),
        )
    }
}

fn kernel() -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, file, minimum, why) in KERNEL {
        let Ok(text) = std::fs::read_to_string(Path::new("/proc/sys").join(file)) else {
            out.push(finding(Verdict::Warn, name, "cannot read it"));
            continue;
        };
        let value: u64 = text.trim().parse().unwrap_or(0);
        out.push(if value >= minimum {
            finding(Verdict::Ok, name, value.to_string())
        } else {
            finding(
                Verdict::Warn,
                name,
                format!("{value}, below {minimum}: {why}; apply deploy/sysctl.conf"),
            )
        });
    }
    // Relays take local ports for their upstream connections.
    if let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") {
        let bounds: Vec<u64> = text
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let span = match bounds.as_slice() {
            [low, high] => high.saturating_sub(*low),
            _ => 0,
        };
        out.push(if span >= 40_000 {
            finding(Verdict::Ok, "net.ipv4.ip_local_port_range", text.trim())
        } else {
            finding(
                Verdict::Warn,
                "net.ipv4.ip_local_port_range",
                format!(
                    "{} ({span} ports): relays to one upstream may run out of local ports; apply deploy/sysctl.conf",
                    text.trim()
                ),
            )
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `check` recommends is what deploy/sysctl.conf sets.
    #[test]
    fn deploy_sysctl_conf_meets_every_recommendation() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/sysctl.conf"
        ))
        .unwrap();
        let setting = |name: &str| {
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == name).then(|| v.trim().to_string())
                })
        };
        for (name, _, minimum, _) in KERNEL {
            let value: u64 = setting(name)
                .unwrap_or_else(|| panic!("{name} missing from sysctl.conf"))
                .parse()
                .unwrap();
            assert!(value >= minimum, "{name} = {value} < {minimum}");
        }
        let range = setting("net.ipv4.ip_local_port_range").unwrap();
        let bounds: Vec<u64> = range
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert!(bounds[1] - bounds[0] >= 40_000, "{range}");
    }
}
