//! Command line: `serve`, and channel administration (`channel create|list|rotate-key|
//! delete`). The stream key is printed exactly once, by `create` and `rotate-key`.

use std::path::PathBuf;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::channel::{SrtPassphrase, ThumbnailId};
use crate::config::{Config, LogFormat, TargetTemplate};
use crate::{app, store};

#[derive(Debug, Parser)]
#[command(
    name = "streamgate",
    version,
    about = "Secure live-ingest node: RTMP in, stream key to public UUID"
)]
pub struct Cli {
    /// Config file (default: ./streamgate.toml when it exists, else built-in defaults).
    #[arg(long, global = true, env = "STREAMGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node.
    Serve,
    /// Manage channels.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Validate the configuration and print it with every default filled in.
    CheckConfig,
    /// Check everything the node needs (database and table, ffmpeg, thumbnail folder,
    /// RTMPS certificate, relay targets, open-files limit, kernel settings) and say
    /// what to fix; exits non-zero when something would stop streams.
    Check,
    /// Create the default channels table (Postgres) or database file (SQLite).
    Migrate,
    /// Ask this node's own `/healthz` (admin.listen, else http.listen, over TLS when
    /// http.tls); exit 0 when it answers 200 within 2 s. The container's HEALTHCHECK.
    Healthcheck,
    /// Internal: the thumbnail decoder subprocess (started by `serve`).
    #[command(hide = true)]
    ThumbnailWorker,
    /// Internal: runs PROGRAM with limits on address space and CPU time (how `serve`
    /// starts decoders).
    #[command(hide = true)]
    RunLimited {
        #[arg(long)]
        memory_mib: u64,
        #[arg(long)]
        cpu_seconds: u64,
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Create a channel and print its stream key (shown only this once).
    Create {
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List channels (never prints keys).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Give a channel a new stream key; a live publish with the old key is ended.
    RotateKey {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Set the channel's own extra relay targets (used with relay.per_channel_targets),
    /// one URL a line, from standard input or --file (never from the command line:
    /// they may embed third-party keys, which must not land in `ps` or a shell
    /// history). No URL clears them. They are never printed.
    SetRelayTargets {
        id: Uuid,
        /// Read the URLs from this file instead of standard input.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Set the passphrase SRT publishers of the channel must encrypt with (10 to 79
    /// characters), read from the first line of standard input (never from the
    /// command line, where `ps` and the shell history would keep it). `--clear`
    /// removes it. A publish already live keeps going; the next one needs it.
    SetSrtPassphrase {
        id: Uuid,
        /// Remove the passphrase: SRT publishes of the channel are not encrypted.
        #[arg(long)]
        clear: bool,
    },
    /// Delete a channel; a live publish is ended.
    Delete { id: Uuid },
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if config.log.format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    // Loading's warnings go to the log of `serve`, to standard error otherwise (the
    // other commands print their results on standard output).
    if !matches!(command, Command::Serve) {
        for w in &config.warnings {
            eprintln!("streamgate: warning: {w}");
        }
    }
    match command {
        Command::Serve => {
            init_logging(&config);
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            app::serve(config).await
        }
        Command::Check => {
            let findings = crate::check::run(&config).await;
            for f in &findings {
                println!("{f}");
            }
            let failed = findings
                .iter()
                .filter(|f| f.verdict == crate::check::Verdict::Fail)
                .count();
            anyhow::ensure!(
                failed == 0,
                "{failed} problem(s) would stop streams (the FAIL lines above)"
            );
            Ok(())
        }
        Command::CheckConfig => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Command::Channel(cmd) => channel(cmd, &config).await,
        Command::Migrate => {
            println!("{}", store::migrate(&config).await?);
            Ok(())
        }
        Command::Healthcheck => {
            println!("{}", crate::healthcheck::run(&config).await?);
            Ok(())
        }
        Command::ThumbnailWorker | Command::RunLimited { .. } => {
            anyhow::bail!(
                "internal subcommand: run by `streamgate serve`, not with a configuration"
            )
        }
    }
}

async fn channel(cmd: ChannelCommand, config: &Config) -> anyhow::Result<()> {
    let store = store::open(config).await?;
    match cmd {
        ChannelCommand::Create { name, json } => {
            let name = name.trim();
            anyhow::ensure!(!name.is_empty(), "channel name must not be empty");
            let (ch, key) = store.create_channel(name).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "id": ch.id, "name": ch.name, "stream_key": key.expose() })
                );
            } else {
                println!("channel created");
                println!("  id:         {}", ch.id);
                println!("  name:       {}", ch.name);
                println!("  thumbnail:  {}", ThumbnailId::of(&ch.id).file_name());
                println!("  stream key: {}", key.expose());
                println!();
                println!("The stream key is shown only now. In OBS: Server rtmp://HOST:PORT/{}, Stream Key as above.", config.rtmp.app);
            }
        }
        ChannelCommand::List { json } => {
            let list = store.list_channels().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<36}  {:<5}  {:<25}  NAME", "ID", "LIVE", "LIVE SINCE");
                for c in list {
                    let since = c
                        .live_since
                        .filter(|_| c.is_live)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    println!(
                        "{:<36}  {:<5}  {:<25}  {}",
                        c.id,
                        if c.is_live { "yes" } else { "no" },
                        since,
                        c.name
                    );
                }
            }
        }
        ChannelCommand::RotateKey { id, json } => {
            let key = store
                .rotate_key(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no channel with id {id}"))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "id": id, "stream_key": key.expose() })
                );
            } else {
                println!("new stream key for {id}: {}", key.expose());
                println!("A live publish with the old key ends within auth.recheck_interval.");
            }
        }
        ChannelCommand::SetRelayTargets { id, file } => {
            let text = match &file {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
                None => std::io::read_to_string(std::io::stdin())?,
            };
            // One URL a line; blank lines and # comments are skipped.
            let urls: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            anyhow::ensure!(
                urls.len() <= config.relay.max_channel_targets,
                "{} relay targets given; relay.max_channel_targets allows {}",
                urls.len(),
                config.relay.max_channel_targets
            );
            for (i, u) in urls.iter().enumerate() {
                TargetTemplate::new(u)
                    .map_err(|e| anyhow::anyhow!("relay target {} {e}", i + 1))?;
            }
            anyhow::ensure!(
                store.set_relay_targets(id, &urls).await?,
                "no channel with id {id}"
            );
            println!("channel {id}: {} extra relay target(s) set", urls.len());
            if !config.relay.per_channel_targets && !urls.is_empty() {
                println!("note: relay.per_channel_targets is false in this configuration; they are not used until it is true.");
            }
        }
        ChannelCommand::SetSrtPassphrase { id, clear } => {
            let passphrase = if clear {
                None
            } else {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                let line = line.trim_end_matches(['\r', '\n']);
                anyhow::ensure!(
                    !line.is_empty(),
                    "no passphrase on standard input (e.g. `printf '%s\\n' \"$PASSPHRASE\" | streamgate channel set-srt-passphrase {id}`; --clear removes it)"
                );
                Some(SrtPassphrase::new(line).map_err(|e| anyhow::anyhow!("{e}"))?)
            };
            anyhow::ensure!(
                store.set_srt_passphrase(id, passphrase.as_ref()).await?,
                "no channel with id {id}"
            );
            match passphrase {
                Some(_) => println!("channel {id}: SRT passphrase set; SRT publishers must encrypt with it (ffmpeg/OBS: &passphrase=...), RTMP publishers are not affected"),
                None => println!("channel {id}: SRT passphrase removed"),
            }
        }
        ChannelCommand::Delete { id } => {
            anyhow::ensure!(store.delete_channel(id).await?, "no channel with id {id}");
            // A running node ends a live publish and removes the thumbnail too.
            crate::thumbs::remove_deleted(&config.thumbnails.dir, &id).await;
            println!("channel {id} deleted");
        }
    }
    Ok(())
}
