//! Configuration: one TOML file (every key documented in `streamgate.example.toml`),
//! `STREAMGATE_<SECTION>_<KEY>` environment overrides, `.env` support. Loaded and
//! validated once at start; unknown keys, in the file or the environment, are errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "STREAMGATE_";
/// Config file used when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "streamgate.toml";

/// A configuration problem, phrased for the operator: which key, what is wrong, how
/// to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key {key} = {value}: {problem}")]
    Invalid {
        key: &'static str,
        value: String,
        problem: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub rtmp: RtmpConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub status: StatusConfig,
    pub relay: RelayConfig,
    pub thumbnails: ThumbnailConfig,
    pub log: LogConfig,
}

/// `[rtmp]`: the ingest listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    pub listen: String,
    pub app: String,
    pub max_connections: usize,
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    pub chunk_size: u32,
    pub max_message_size: u32,
    pub max_chunk_streams: usize,
    pub max_partial_bytes: usize,
    /// Ingest threads (each a single-threaded runtime); 0: one per core.
    pub workers: usize,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:1935".into(),
            app: "live".into(),
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            chunk_size: 4096,
            max_message_size: 8 * 1024 * 1024,
            max_chunk_streams: 64,
            max_partial_bytes: 16 * 1024 * 1024,
            workers: 0,
        }
    }
}

/// `[http]`: API, health, (later) thumbnails and metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
        }
    }
}

/// `[database]`: where channels live, and (Postgres) how the table is shaped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    /// Postgres: table holding the channels (optionally schema-qualified).
    pub table: String,
    pub id_column: String,
    pub name_column: String,
    pub key_column: String,
    /// `"sha256"` (hex digest stored) or `"plain"` (the key itself stored).
    pub key_storage: String,
    pub live_column: String,
    /// Optional columns: `""` when the table has none.
    pub live_since_column: String,
    pub last_seen_column: String,
    pub session_column: String,
    pub node_column: String,
    pub relay_targets_column: String,
    /// CA certificates (PEM) for `sslmode=verify-ca|verify-full`.
    pub ca_file: String,
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    #[serde(with = "duration_str")]
    pub query_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite:./data/streamgate.db".into(),
            table: "channels".into(),
            id_column: "id".into(),
            name_column: "name".into(),
            key_column: "stream_key_hash".into(),
            key_storage: "sha256".into(),
            live_column: "is_live".into(),
            live_since_column: "live_since".into(),
            last_seen_column: "last_seen".into(),
            session_column: "live_session".into(),
            node_column: "live_node".into(),
            relay_targets_column: "relay_targets".into(),
            ca_file: String::new(),
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        }
    }
}

impl DatabaseConfig {
    /// Whether the table mapping is the default one (the schema `migrate` creates).
    pub fn is_default_schema(&self) -> bool {
        let d = DatabaseConfig::default();
        (
            &self.table,
            &self.id_column,
            &self.name_column,
            &self.key_column,
            &self.key_storage,
            &self.live_column,
            &self.live_since_column,
            &self.last_seen_column,
            &self.session_column,
            &self.node_column,
            &self.relay_targets_column,
        ) == (
            &d.table,
            &d.id_column,
            &d.name_column,
            &d.key_column,
            &d.key_storage,
            &d.live_column,
            &d.live_since_column,
            &d.last_seen_column,
            &d.session_column,
            &d.node_column,
            &d.relay_targets_column,
        )
    }
}

/// `[auth]`: stream key checks, their cache, and brute-force protection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    #[serde(with = "duration_str")]
    pub recheck_interval: Duration,
    /// Answers younger than this are served from the cache without the database.
    #[serde(with = "duration_str")]
    pub cache_ttl: Duration,
    /// When the database is unreachable, a key seen valid this recently is admitted.
    #[serde(with = "duration_str")]
    pub stale_ttl: Duration,
    /// Whether to admit recently valid keys while the database is unreachable.
    pub admit_cached_when_unavailable: bool,
    /// Most cached answers.
    pub cache_size: usize,
    /// Wrong keys from one IP within `failure_window` before it is refused.
    pub max_failures: u32,
    #[serde(with = "duration_str")]
    pub failure_window: Duration,
    /// How long a refused IP stays refused (before the handshake).
    #[serde(with = "duration_str")]
    pub ban_duration: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            recheck_interval: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(10),
            stale_ttl: Duration::from_secs(600),
            admit_cached_when_unavailable: true,
            cache_size: 100_000,
            max_failures: 10,
            failure_window: Duration::from_secs(60),
            ban_duration: Duration::from_secs(300),
        }
    }
}

/// `[status]`: live/offline writes to the database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Identifies this node in the table (crash recovery marks offline only its own
    /// channels). Empty: the host name.
    pub node_id: String,
    /// How often `last_seen` of live channels is refreshed.
    #[serde(with = "duration_str")]
    pub heartbeat_interval: Duration,
    #[serde(with = "duration_str")]
    pub retry_max_backoff: Duration,
    #[serde(with = "duration_str")]
    pub shutdown_grace: Duration,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            heartbeat_interval: Duration::from_secs(30),
            retry_max_backoff: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// `[relay]`: pass-through forwarding to upstream RTMP servers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// URL templates; placeholders `{channel_id}`, `{thumb_id}`, `{name}`.
    pub targets: Vec<String>,
    /// Also relay to each channel's own extra targets from the store.
    pub per_channel_targets: bool,
    pub chunk_size: u32,
    pub queue_max_bytes: usize,
    #[serde(with = "duration_str")]
    pub queue_max_delay: Duration,
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    #[serde(with = "duration_str")]
    pub reconnect_min: Duration,
    #[serde(with = "duration_str")]
    pub reconnect_max: Duration,
    /// Kernel send buffer per upstream socket (0: the kernel's auto-tuning).
    pub send_buffer: u32,
    /// Extra CA certificates (PEM) trusted for rtmps:// targets.
    pub ca_file: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            per_channel_targets: false,
            chunk_size: 60_000,
            queue_max_bytes: 4 * 1024 * 1024,
            queue_max_delay: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            send_buffer: 256 * 1024,
            ca_file: String::new(),
        }
    }
}

/// `[thumbnails]`: one JPEG per live channel, refreshed every `interval`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ThumbnailConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// Output width in pixels (height keeps the aspect ratio; never upscaled).
    pub width: u32,
    /// JPEG quality, 1 (smallest) to 100 (best).
    pub quality: u8,
    /// Concurrent ffmpeg processes; 0 means half the cores (at least 1).
    pub workers: usize,
    /// An ffmpeg still running after this is killed.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// `"worker"`: H.264 by our own long-lived worker processes, other codecs by
    /// ffmpeg; `"ffmpeg"`: every thumbnail by a short-lived ffmpeg.
    pub decoder: String,
    /// The ffmpeg program (name on PATH or absolute path).
    pub ffmpeg: String,
}

impl Default for ThumbnailConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from("./data/thumbs"),
            interval: Duration::from_secs(10),
            width: 640,
            quality: 80,
            workers: 0,
            timeout: Duration::from_secs(5),
            decoder: "worker".into(),
            ffmpeg: "ffmpeg".into(),
        }
    }
}

impl ThumbnailConfig {
    /// `workers` with 0 resolved to half the cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        (cores / 2).max(1)
    }
}

impl StatusConfig {
    /// `node_id`, or the host name when empty.
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "streamgate".into())
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// Durations written like `"10s"`, `"1500ms"`, `"2m"`.
mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}): write it like \"10s\", \"500ms\" or \"2m\""
            ))
        })
    }
}

/// Which database backend a URL selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite(PathBuf),
    Postgres,
}

/// A SQL identifier, optionally schema-qualified: letters, digits and `_`.
fn valid_identifier(s: &str, qualified: bool) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (parts.len() == 1 || (qualified && parts.len() == 2)) && parts.iter().all(|p| ok_part(p))
}

impl Config {
    /// Loads `path` (or the default file when present, or nothing), applies `.env` and
    /// `STREAMGATE_*` overrides, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let _ = dotenvy::dotenv();
        let (table, origin) = match path {
            Some(p) => (read_table(p)?, p.display().to_string()),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => (
                read_table(Path::new(DEFAULT_CONFIG_FILE))?,
                DEFAULT_CONFIG_FILE.to_string(),
            ),
            None => (toml::Table::new(), "(defaults)".to_string()),
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_table(table, &origin, &env)
    }

    /// Builds a config from a parsed file and environment pairs.
    pub fn from_table(
        mut table: toml::Table,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        apply_env(&mut table, env)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Parse {
                    path: origin.to_string(),
                    message: format!("{key}: {}", e.inner().message()),
                }
            })?;
        config.validate()
    }

    /// Checks every value once; errors name the key and the fix.
    pub fn validate(self) -> Result<Config, ConfigError> {
        fn invalid(key: &'static str, value: impl ToString, problem: &str) -> ConfigError {
            ConfigError::Invalid {
                key,
                value: value.to_string(),
                problem: problem.to_string(),
            }
        }
        let r = &self.rtmp;
        if r.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "rtmp.listen",
                format!("{:?}", r.listen),
                "not a socket address; write host:port, e.g. \"0.0.0.0:1935\"",
            ));
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "http.listen",
                format!("{:?}", self.http.listen),
                "not a socket address; write host:port, e.g. \"0.0.0.0:8080\"",
            ));
        }
        if r.app.is_empty() || r.app.contains('/') || r.app.contains('?') {
            return Err(invalid(
                "rtmp.app",
                format!("{:?}", r.app),
                "must be one path segment without '/' or '?', e.g. \"live\"",
            ));
        }
        if r.max_connections == 0 {
            return Err(invalid("rtmp.max_connections", 0, "must be at least 1"));
        }
        for (key, d) in [
            ("rtmp.handshake_timeout", r.handshake_timeout),
            ("rtmp.idle_timeout", r.idle_timeout),
            ("rtmp.write_timeout", r.write_timeout),
            ("auth.timeout", self.auth.timeout),
            ("auth.recheck_interval", self.auth.recheck_interval),
            ("auth.failure_window", self.auth.failure_window),
            ("database.connect_timeout", self.database.connect_timeout),
            ("database.query_timeout", self.database.query_timeout),
            ("status.heartbeat_interval", self.status.heartbeat_interval),
            ("status.retry_max_backoff", self.status.retry_max_backoff),
            ("relay.queue_max_delay", self.relay.queue_max_delay),
            ("relay.connect_timeout", self.relay.connect_timeout),
            ("relay.write_timeout", self.relay.write_timeout),
            ("relay.reconnect_min", self.relay.reconnect_min),
            ("thumbnails.interval", self.thumbnails.interval),
            ("thumbnails.timeout", self.thumbnails.timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(
                    key,
                    "\"0s\"",
                    "must be longer than zero, e.g. \"5s\"",
                ));
            }
        }
        if !(128..=16_777_215).contains(&r.chunk_size) {
            return Err(invalid(
                "rtmp.chunk_size",
                r.chunk_size,
                "must be between 128 and 16777215 (4096 is a good value)",
            ));
        }
        if !(64 * 1024..=16_777_215).contains(&r.max_message_size) {
            return Err(invalid(
                "rtmp.max_message_size",
                r.max_message_size,
                "must be between 65536 and 16777215 bytes (keyframes of high-bitrate streams need a few MiB)",
            ));
        }
        if r.max_chunk_streams < 4 {
            return Err(invalid(
                "rtmp.max_chunk_streams",
                r.max_chunk_streams,
                "must be at least 4",
            ));
        }
        if r.max_partial_bytes < r.max_message_size as usize {
            return Err(invalid(
                "rtmp.max_partial_bytes",
                r.max_partial_bytes,
                "must be at least rtmp.max_message_size",
            ));
        }
        for (i, t) in self.relay.targets.iter().enumerate() {
            if let Err(e) = crate::relay::target::TargetTemplate::new(t) {
                let shown = t.split('?').next().unwrap_or_default();
                return Err(ConfigError::Invalid {
                    key: "relay.targets",
                    value: format!("[{i}] {shown:?}"),
                    problem: format!("{e}"),
                });
            }
        }
        if !(128..=16_777_215).contains(&self.relay.chunk_size) {
            return Err(invalid(
                "relay.chunk_size",
                self.relay.chunk_size,
                "must be between 128 and 16777215 (60000 is a good value)",
            ));
        }
        if self.relay.queue_max_bytes < 64 * 1024 {
            return Err(invalid(
                "relay.queue_max_bytes",
                self.relay.queue_max_bytes,
                "must be at least 65536 (a keyframe must fit)",
            ));
        }
        if self.relay.reconnect_max < self.relay.reconnect_min {
            return Err(invalid(
                "relay.reconnect_max",
                humantime::format_duration(self.relay.reconnect_max),
                "must not be shorter than relay.reconnect_min",
            ));
        }
        if !self.relay.ca_file.is_empty() && !Path::new(&self.relay.ca_file).is_file() {
            return Err(invalid(
                "relay.ca_file",
                format!("{:?}", self.relay.ca_file),
                "is not a readable file (PEM certificates)",
            ));
        }
        let t = &self.thumbnails;
        if !(16..=7680).contains(&t.width) || !t.width.is_multiple_of(2) {
            return Err(invalid(
                "thumbnails.width",
                t.width,
                "must be an even number of pixels between 16 and 7680, e.g. 640",
            ));
        }
        if !(1..=100).contains(&t.quality) {
            return Err(invalid(
                "thumbnails.quality",
                t.quality,
                "must be between 1 and 100 (80 is a good value)",
            ));
        }
        if t.dir.as_os_str().is_empty() {
            return Err(invalid(
                "thumbnails.dir",
                "\"\"",
                "must name a folder, e.g. \"./data/thumbs\"",
            ));
        }
        if !matches!(t.decoder.as_str(), "worker" | "ffmpeg") {
            return Err(invalid(
                "thumbnails.decoder",
                format!("{:?}", t.decoder),
                "must be \"worker\" or \"ffmpeg\"",
            ));
        }
        if t.ffmpeg.is_empty() {
            return Err(invalid(
                "thumbnails.ffmpeg",
                "\"\"",
                "must name the ffmpeg program, e.g. \"ffmpeg\"",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid(
                "log.format",
                format!("{:?}", self.log.format),
                "must be \"text\" or \"json\"",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("{:?}", self.log.level),
                "must be a level (error, warn, info, debug, trace) or a filter like \"info,streamgate=debug\"",
            ));
        }
        let kind = self.database_kind()?;
        let db = &self.database;
        if kind != DatabaseKind::Postgres && !db.is_default_schema() {
            return Err(invalid(
                "database.table",
                format!("{:?}", db.table),
                "table and column settings apply to Postgres only; the SQLite store has a fixed schema",
            ));
        }
        if !matches!(db.key_storage.as_str(), "sha256" | "plain") {
            return Err(invalid(
                "database.key_storage",
                format!("{:?}", db.key_storage),
                "must be \"sha256\" or \"plain\"",
            ));
        }
        if !valid_identifier(&db.table, true) {
            return Err(invalid(
                "database.table",
                format!("{:?}", db.table),
                "must be a table name like \"channels\" or \"public.channels\"",
            ));
        }
        for (key, value, required) in [
            ("database.id_column", &db.id_column, true),
            ("database.name_column", &db.name_column, true),
            ("database.key_column", &db.key_column, true),
            ("database.live_column", &db.live_column, true),
            ("database.live_since_column", &db.live_since_column, false),
            ("database.last_seen_column", &db.last_seen_column, false),
            ("database.session_column", &db.session_column, false),
            ("database.node_column", &db.node_column, false),
            (
                "database.relay_targets_column",
                &db.relay_targets_column,
                false,
            ),
        ] {
            if (required || !value.is_empty()) && !valid_identifier(value, false) {
                let fix = if required {
                    "must be a column name (letters, digits, _)"
                } else {
                    "must be a column name (letters, digits, _) or \"\" when the table has none"
                };
                return Err(invalid(key, format!("{value:?}"), fix));
            }
        }
        if !db.ca_file.is_empty() && !Path::new(&db.ca_file).is_file() {
            return Err(invalid(
                "database.ca_file",
                format!("{:?}", db.ca_file),
                "is not a readable file (PEM certificates)",
            ));
        }
        if self.auth.cache_size == 0 {
            return Err(invalid("auth.cache_size", 0, "must be at least 1"));
        }
        if self.auth.max_failures == 0 {
            return Err(invalid("auth.max_failures", 0, "must be at least 1"));
        }
        Ok(self)
    }

    /// The backend selected by `database.url`.
    pub fn database_kind(&self) -> Result<DatabaseKind, ConfigError> {
        let url = self.database.url.as_str();
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "database.url",
                    value: format!("{url:?}"),
                    problem: "names no file; write \"sqlite:./data/streamgate.db\"".into(),
                });
            }
            return Ok(DatabaseKind::Sqlite(PathBuf::from(path)));
        }
        let scheme = url.split(':').next().unwrap_or_default();
        if matches!(scheme, "postgres" | "postgresql") {
            return Ok(DatabaseKind::Postgres);
        }
        Err(ConfigError::Invalid {
            key: "database.url",
            // Never echo a URL that may carry a password.
            value: format!("\"{scheme}:...\""),
            problem: "unsupported database; use \"sqlite:PATH\" or \"postgres://user:password@host:5432/db\"".into(),
        })
    }

    pub fn rtmp_listen(&self) -> SocketAddr {
        self.rtmp.listen.parse().expect("validated")
    }

    pub fn http_listen(&self) -> SocketAddr {
        self.http.listen.parse().expect("validated")
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Every leaf key of the default config as (env suffix, section, key).
fn env_keys() -> Vec<(String, String, String)> {
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    let mut keys = Vec::new();
    if let toml::Value::Table(t) = defaults {
        for (section, v) in t {
            if let toml::Value::Table(inner) = v {
                for key in inner.keys() {
                    keys.push((
                        format!("{section}_{key}").to_uppercase(),
                        section.clone(),
                        key.clone(),
                    ));
                }
            }
        }
    }
    keys
}

fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let keys = env_keys();
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    for (var, raw) in env {
        let Some(suffix) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if suffix == "CONFIG" {
            continue; // the config file path, read by the CLI
        }
        let Some((_, section, key)) = keys.iter().find(|(s, _, _)| s == suffix) else {
            let mut valid: Vec<String> = keys
                .iter()
                .map(|(s, _, _)| format!("{ENV_PREFIX}{s}"))
                .collect();
            valid.sort();
            return Err(ConfigError::Env {
                var: var.clone(),
                message: format!("no such setting; valid names: {}", valid.join(", ")),
            });
        };
        let default = &defaults[section.as_str()][key.as_str()];
        let value = if default.is_str() {
            toml::Value::String(raw.clone())
        } else {
            let parsed = format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"));
            match parsed {
                Some(v) if v.type_str() == default.type_str() => v,
                _ => {
                    return Err(ConfigError::Env {
                        var: var.clone(),
                        message: format!(
                            "expected a {} like {default}, got {raw:?}",
                            default.type_str()
                        ),
                    })
                }
            }
        };
        let section_table = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key.clone(), value);
            }
            _ => {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: format!("[{section}] in the config file is not a table"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::from_table(text.parse().unwrap(), "test.toml", &env)
    }

    #[test]
    fn defaults_are_valid() {
        let c = load("", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.rtmp_listen().port(), 1935);
        assert_eq!(c.http_listen().port(), 8080);
        assert_eq!(
            c.database_kind().unwrap(),
            DatabaseKind::Sqlite("./data/streamgate.db".into())
        );
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../streamgate.example.toml"
        ))
        .unwrap();
        assert_eq!(load(&text, &[]).unwrap(), Config::default());
    }

    #[test]
    fn file_and_env_overrides() {
        let c = load(
            "[rtmp]\nidle_timeout = \"3s\"\napp = \"ingest\"\n",
            &[
                ("STREAMGATE_RTMP_MAX_CONNECTIONS", "50"),
                ("STREAMGATE_HTTP_LISTEN", "127.0.0.1:9000"),
                ("STREAMGATE_RTMP_APP", "live2"),
                ("OTHER_VAR", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.rtmp.idle_timeout, Duration::from_secs(3));
        assert_eq!(c.rtmp.max_connections, 50);
        assert_eq!(c.http.listen, "127.0.0.1:9000");
        assert_eq!(c.rtmp.app, "live2", "the environment wins over the file");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let e = load("[rtmp]\nidle_timeot = \"3s\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("idle_timeot") && e.contains("idle_timeout"),
            "{e}"
        );
        let e = load("[rtmp]\nidle_timeout = \"3 parsecs\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("idle_timeout") && e.contains("\"10s\""), "{e}");
        let e = load("[rtmp]\nlisten = \"1935\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rtmp.listen") && e.contains("host:port"), "{e}");
        let e = load("", &[("STREAMGATE_RTMP_MAX_CONNECTION", "5")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("STREAMGATE_RTMP_MAX_CONNECTION")
                && e.contains("STREAMGATE_RTMP_MAX_CONNECTIONS"),
            "{e}"
        );
        let e = load("", &[("STREAMGATE_RTMP_MAX_CONNECTIONS", "many")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("integer"), "{e}");
        let e = load("[database]\nurl = \"mysql://user:hunter2@db/x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.url") && !e.contains("hunter2"), "{e}");
        let e = load("[rtmp]\nidle_timeout = \"0s\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rtmp.idle_timeout"), "{e}");
    }
}
