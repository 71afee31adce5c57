//! Configuration: one TOML file (every key documented in `streamgate.example.toml`),
//! `STREAMGATE_<SECTION>_<KEY>` environment overrides, `.env` support. Loaded once at
//! start into typed sections (addresses are `SocketAddr`, choices are enums, relay
//! targets are checked templates), then validated; an unknown key in the file is an
//! error that names the key and the fix, an unknown `STREAMGATE_*` variable a warning.

mod admin;
mod auth;
mod database;
mod duration;
mod env;
mod health;
mod log;
mod relay;
mod rtmp;
mod srt;
mod target;
mod thumbnails;
mod webhooks;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use admin::{AdminConfig, Secret};
pub use auth::{host_name, AuthConfig, StatusConfig};
pub use database::{DatabaseConfig, DatabaseUrl, KeyStorage};
pub use health::{BFramesVerdict, HealthConfig};
pub use log::{LogConfig, LogFormat};
pub use relay::RelayConfig;
pub use rtmp::{HttpConfig, Placement, RtmpConfig, RtmpsConfig};
pub use srt::SrtConfig;
pub use target::{RelayUrl, TargetError, TargetTemplate, TemplateValues, PLACEHOLDERS};
pub use thumbnails::{ThumbnailConfig, ThumbnailDecoder};
pub use webhooks::{secret_bytes, WebhookEvent, WebhookUrl, WebhooksConfig};

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

/// A value that breaks a rule of `key`.
fn invalid(key: &'static str, value: impl ToString, problem: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        problem: problem.to_string(),
    }
}

/// Durations that must not be zero.
fn positive(key: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(invalid(
            key,
            "\"0s\"",
            "must be longer than zero, e.g. \"5s\"",
        ));
    }
    Ok(())
}

/// A chunk size an RTMP peer accepts (RTMP 1.0 5.4.1: 1 to 2^31-1; below 128 nobody
/// sends, above 16777215 no message needs).
fn chunk_size(key: &'static str, size: u32, good: u32) -> Result<(), ConfigError> {
    if !(128..=16_777_215).contains(&size) {
        return Err(invalid(
            key,
            size,
            &format!("must be between 128 and 16777215 ({good} is a good value)"),
        ));
    }
    Ok(())
}

/// An optional file of PEM certificates: empty, or a file that exists.
fn pem_file(key: &'static str, path: &str) -> Result<(), ConfigError> {
    if !path.is_empty() && !Path::new(path).is_file() {
        return Err(invalid(
            key,
            format!("{path:?}"),
            "is not a readable file (PEM certificates)",
        ));
    }
    Ok(())
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub rtmp: RtmpConfig,
    pub rtmps: RtmpsConfig,
    pub srt: SrtConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub status: StatusConfig,
    pub relay: RelayConfig,
    pub thumbnails: ThumbnailConfig,
    pub health: HealthConfig,
    pub webhooks: WebhooksConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// What loading found worth saying but not fatal (an unknown `STREAMGATE_*`
    /// variable); the caller prints or logs them.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads `path` (or the default file when present, or nothing), applies `.env` and
    /// `STREAMGATE_*` overrides, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        // `.env` of the working directory only: dotenvy's default would also search
        // every parent directory.
        let _ = dotenvy::from_path(".env");
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
        let warnings = env::apply_env(&mut table, env)?;
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Parse {
                    path: origin.to_string(),
                    message: format!("{key}: {}", e.inner().message()),
                }
            })?;
        config.warnings = warnings;
        config.validate()
    }

    /// Checks the rules that span values (ranges, non-zero durations, files that must
    /// exist); the types checked the rest while parsing.
    pub fn validate(self) -> Result<Config, ConfigError> {
        self.rtmp.validate()?;
        self.rtmps.validate()?;
        self.srt.validate()?;
        self.health.validate()?;
        self.webhooks.validate()?;
        self.http.validate()?;
        self.database.validate()?;
        self.auth.validate()?;
        self.status.validate()?;
        self.relay.validate()?;
        self.thumbnails.validate()?;
        self.admin.validate()?;
        self.log.validate()?;
        if self.http.tls && self.http.tls_files(&self.rtmps).0.as_os_str().is_empty() {
            return Err(invalid(
                "http.tls",
                "true",
                "needs a certificate: set http.cert_file and http.key_file, or rtmps.cert_file and rtmps.key_file (used when http's are empty)",
            ));
        }
        if self.auth.max_failure_delay + self.auth.timeout >= self.rtmp.auth_deadline {
            return Err(invalid(
                "auth.max_failure_delay",
                humantime::format_duration(self.auth.max_failure_delay),
                "plus auth.timeout must be shorter than rtmp.auth_deadline (a delayed key lookup has to fit in it)",
            ));
        }
        Ok(self)
    }
}

impl Config {
    /// The whole configuration as TOML, with every default filled in, as it may be
    /// shown (`check-config`): the database password, the admin token, the webhook
    /// secret and the queries of webhook URLs, and the literal parts of relay targets
    /// (which may be third parties' keys) masked.
    pub fn redacted_toml(&self) -> String {
        let mut value = toml::Value::try_from(self).expect("the config serializes");
        if let Some(db) = value.get_mut("database").and_then(|d| d.as_table_mut()) {
            db.insert("url".into(), self.database.url.redacted().into());
        }
        if let Some(admin) = value.get_mut("admin").and_then(|a| a.as_table_mut()) {
            if !self.admin.token.is_empty() {
                admin.insert("token".into(), "***".into());
            }
        }
        if let Some(relay) = value.get_mut("relay").and_then(|r| r.as_table_mut()) {
            let targets: Vec<toml::Value> = self
                .relay
                .targets
                .iter()
                .map(|t| t.redacted().into())
                .collect();
            relay.insert("targets".into(), targets.into());
        }
        if let Some(hooks) = value.get_mut("webhooks").and_then(|w| w.as_table_mut()) {
            if !self.webhooks.secret.is_empty() {
                hooks.insert("secret".into(), "***".into());
            }
            let urls: Vec<toml::Value> = self
                .webhooks
                .urls
                .iter()
                .map(|u| u.shown().into())
                .collect();
            hooks.insert("urls".into(), urls.into());
        }
        toml::to_string_pretty(&value).expect("TOML values print")
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
        assert_eq!(c.rtmp.listen.port(), 1935);
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(
            c.database.url,
            DatabaseUrl::Sqlite("./data/streamgate.db".into())
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
        // ...and it documents every key.
        let example: toml::Table = text.parse().unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        for (section, keys) in defaults.as_table().unwrap() {
            for key in keys.as_table().unwrap().keys() {
                assert!(
                    example.get(section).and_then(|s| s.get(key)).is_some(),
                    "streamgate.example.toml does not document {section}.{key}"
                );
            }
        }
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
        assert_eq!(c.http.listen, "127.0.0.1:9000".parse().unwrap());
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
        // An unknown variable is ignored with a warning naming it and the closest
        // setting (Kubernetes injects STREAMGATE_PORT & co. into a Service's pods).
        let c = load(
            "",
            &[
                ("STREAMGATE_RTMP_MAX_CONNECTION", "5"),
                ("STREAMGATE_SERVICE_HOST", "10.0.0.1"),
                ("STREAMGATE_PORT", "tcp://10.0.0.1:1935"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.rtmp.max_connections,
            RtmpConfig::default().max_connections
        );
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("STREAMGATE_RTMP_MAX_CONNECTION ")
                && c.warnings[0].contains("did you mean STREAMGATE_RTMP_MAX_CONNECTIONS?"),
            "{:?}",
            c.warnings
        );
        assert!(c.warnings[1].contains("STREAMGATE_SERVICE_HOST"));
        assert!(
            c.warnings.iter().all(|w| w.len() < 300),
            "one short line each"
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
        let e = load("[auth]\nban_duration = \"0s\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.ban_duration"), "{e}");
        let e = load("[auth]\nmax_failure_delay = \"9s\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rtmp.auth_deadline"), "{e}");
        let e = load("[rtmp]\nbusy_wakeup_interval = \"50ms\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rtmp.busy_wakeup_interval") && e.contains("at most 10ms"),
            "{e}"
        );
        let c = load("[rtmp]\nbusy_wakeup_interval = \"0s\"\n", &[]).unwrap();
        assert_eq!(
            c.rtmp.busy_wakeup_interval,
            Duration::ZERO,
            "0 turns it off"
        );
    }

    #[test]
    fn choices_are_enums_and_wrong_ones_list_the_valid_ones() {
        let c = load(
            "[database]\nkey_storage = \"plain\"\nurl = \"postgres://u:pw@db/x\"\n[thumbnails]\ndecoder = \"ffmpeg\"\n[log]\nformat = \"json\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.database.key_storage, KeyStorage::Plain);
        assert_eq!(c.thumbnails.decoder, ThumbnailDecoder::Ffmpeg);
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(
            !format!("{c:?}").contains("pw"),
            "no password in debug output"
        );
        for (text, key, valid) in [
            (
                "[database]\nkey_storage = \"md5\"\n",
                "database.key_storage",
                "sha256",
            ),
            (
                "[thumbnails]\ndecoder = \"gpu\"\n",
                "thumbnails.decoder",
                "worker",
            ),
            ("[log]\nformat = \"xml\"\n", "log.format", "json"),
        ] {
            let e = load(text, &[]).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(valid), "{e}");
        }
    }

    #[test]
    fn relay_targets_are_checked_templates_and_errors_hide_the_query() {
        let c = load(
            "[relay]\ntargets = [\"rtmp://origin/live/{channel_id}\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.relay.targets.len(), 1);
        let e = load(
            "[relay]\ntargets = [\"rtmp://origin/{channel_id}?token=s3cret\"]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("relay.targets") && e.contains("application"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn check_config_output_hides_passwords_and_relay_keys() {
        let c = load(
            "[database]\nurl = \"postgres://u:hunter2@db/x\"\n[relay]\ntargets = [\"rtmp://cdn/live2/3rd-party-key\", \"rtmp://o/live/{channel_id}\"]\n[admin]\ntoken = \"admin-secret-admin-secret\"\n\
             [webhooks]\nurls = [\"https://backend.example/hooks?token=hook-t0ken\"]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
            &[],
        )
        .unwrap();
        let shown = c.redacted_toml();
        assert!(
            !shown.contains("hunter2") && !shown.contains("3rd-party-key"),
            "{shown}"
        );
        assert!(shown.contains("rtmp://o:1935/live/{channel_id}"), "{shown}");
        for secret in ["hook-t0ken", "MfKQ9r8", "admin-secret"] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
        assert!(
            shown.contains("https://backend.example:443/hooks?***"),
            "{shown}"
        );
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("3rd-party-key"),
            "{debug}"
        );
        assert!(
            !debug.contains("hook-t0ken") && !debug.contains("MfKQ9r8"),
            "{debug}"
        );
    }
}
