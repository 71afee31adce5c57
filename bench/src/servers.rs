//! The servers under test, each started on free loopback ports in a temporary folder
//! and stopped by PID: streamgate (release binary beside `sgbench`), nginx-rtmp
//! (Debian's nginx + libnginx-mod-rtmp, `push` to the sink) and SRS (`SRS_BIN`,
//! `forward` to the sink).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use streamgate::config::DatabaseUrl;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// streamgate as the comparison runs it: relay only, thumbnails off.
    Streamgate,
    /// streamgate with thumbnails on (its default).
    StreamgateThumbs,
    /// streamgate with `rtmp.workers` ingest threads.
    StreamgateWorkers(usize),
    /// streamgate with `rtmp.placement = "spread"` (round-robin over the threads).
    StreamgateSpread,
    /// streamgate with `health.enabled = false` (the cost of stream health).
    StreamgateNoHealth,
    Nginx,
    Srs,
    /// The floor: a TCP proxy between the publishers and the sink that parses nothing
    /// (nginx's `stream` module, one worker).
    BytePipe,
}

impl ServerKind {
    pub fn name(self) -> String {
        match self {
            ServerKind::Streamgate => "streamgate".into(),
            ServerKind::StreamgateThumbs => "streamgate+thumbnails".into(),
            ServerKind::StreamgateWorkers(n) => format!("streamgate workers={n}"),
            ServerKind::StreamgateSpread => "streamgate placement=spread".into(),
            ServerKind::StreamgateNoHealth => "streamgate health=off".into(),
            ServerKind::Nginx => "nginx-rtmp".into(),
            ServerKind::Srs => "srs".into(),
            ServerKind::BytePipe => "byte-pipe".into(),
        }
    }
}

/// An SRT listener for the generated callers (every one comes from 127.0.0.1, as the
/// per-address RTMP caps are raised for them).
pub const SRT_SECTION: &str =
    "[srt]\nlisten = \"127.0.0.1:0\"\nmax_handshakes_per_address = 1000000\n";

/// The SRS binary: `SRS_BIN`, or the one beside this repository
/// (`../shared/peers/srs/srs`).
pub fn srs_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SRS_BIN") {
        return Ok(p.into());
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/srs/srs");
    anyhow::ensure!(
        beside.is_file(),
        "no SRS binary at {} (set SRS_BIN, or leave srs out of --servers)",
        beside.display()
    );
    Ok(beside)
}

/// A publisher's key, and the name its stream arrives under at the sink.
#[derive(Debug, Clone)]
pub struct ChannelKey {
    pub key: String,
    pub sink_name: String,
}

/// A running server.
pub struct Server {
    pub pid: u32,
    pub rtmp_addr: SocketAddr,
    /// Where SRT publishers send (servers started for SRT).
    pub srt_addr: Option<SocketAddr>,
    /// Processes beside `pid` whose CPU counts too (the SRT floor: one
    /// srt-live-transmit per stream).
    pub more_pids: Vec<u32>,
    /// streamgate's HTTP API (none for the peers).
    pub http_addr: Option<SocketAddr>,
    pub channels: Vec<ChannelKey>,
    child: Mutex<Option<Child>>,
    dir: PathBuf,
}

impl Server {
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().expect("child").take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    pub async fn start(
        kind: ServerKind,
        n: usize,
        sink_port: Option<u16>,
    ) -> anyhow::Result<Server> {
        match kind {
            // Pinned to one core: one ingest thread.
            ServerKind::Streamgate if crate::pin::enabled() => {
                Self::start_streamgate_with(n, sink_port, None, None, 1).await
            }
            ServerKind::Streamgate => Self::start_streamgate(n, sink_port, None, None).await,
            ServerKind::StreamgateThumbs => {
                Self::start_streamgate(n, sink_port, None, Some("enabled = true")).await
            }
            ServerKind::StreamgateWorkers(w) => {
                Self::start_streamgate_with(n, sink_port, None, None, w).await
            }
            ServerKind::StreamgateSpread => {
                let bin = sibling_binary("streamgate")?;
                Self::start_streamgate_config(&bin, n, sink_port, None, None, 0, "spread", "").await
            }
            ServerKind::StreamgateNoHealth => {
                let bin = sibling_binary("streamgate")?;
                let workers = if crate::pin::enabled() { 1 } else { 0 };
                let health = "[health]\nenabled = false\n";
                Self::start_streamgate_config(
                    &bin, n, sink_port, None, None, workers, "pack", health,
                )
                .await
            }
            ServerKind::Nginx => Self::start_nginx(n, sink_port),
            ServerKind::Srs => Self::start_srs(n, sink_port),
            ServerKind::BytePipe => Self::start_byte_pipe(
                n,
                sink_port.ok_or_else(|| anyhow::anyhow!("the byte pipe needs a sink"))?,
            ),
        }
    }

    /// streamgate with `n` channels (SQLite, or the given Postgres), relaying to the sink.
    /// Thumbnails are off unless `thumbnails` gives the `[thumbnails]` settings: the peers
    /// make none, so the relay comparison is relay against relay.
    pub async fn start_streamgate(
        n: usize,
        sink_port: Option<u16>,
        pg: Option<&PrivatePostgres>,
        thumbnails: Option<&str>,
    ) -> anyhow::Result<Server> {
        Self::start_streamgate_with(n, sink_port, pg, thumbnails, 0).await
    }

    /// [`Server::start_streamgate`] with `rtmp.workers` ingest threads (0: one per
    /// core, the default).
    pub async fn start_streamgate_with(
        n: usize,
        sink_port: Option<u16>,
        pg: Option<&PrivatePostgres>,
        thumbnails: Option<&str>,
        workers: usize,
    ) -> anyhow::Result<Server> {
        let bin = sibling_binary("streamgate")?;
        Self::start_streamgate_config(&bin, n, sink_port, pg, thumbnails, workers, "pack", "").await
    }

    /// The streamgate binary at `bin`, with `rtmp.workers` and `rtmp.placement`, and
    /// `sections` (more TOML: [`SRT_SECTION`] for an SRT listener, `[health]`...).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_streamgate_config(
        bin: &Path,
        n: usize,
        sink_port: Option<u16>,
        pg: Option<&PrivatePostgres>,
        thumbnails: Option<&str>,
        workers: usize,
        placement: &str,
        sections: &str,
    ) -> anyhow::Result<Server> {
        let dir = temp_dir("sg");
        let mut config = streamgate::config::Config::default();
        config.database.url = match pg {
            Some(pg) => DatabaseUrl::Postgres(pg.url()),
            None => DatabaseUrl::Sqlite(dir.join("sg.db")),
        };
        let database = format!("url = \"{}\"", config.database.url);
        let store = match pg {
            Some(pg) => {
                let p = streamgate::store::postgres::PgStore::new(
                    &pg.url(),
                    &config.database,
                    "bench".into(),
                )?;
                p.migrate().await?;
                drop(p);
                streamgate::store::open(&config).await?
            }
            None => streamgate::store::open(&config).await?,
        };
        let mut channels = Vec::with_capacity(n);
        for i in 0..n {
            let (ch, key) = store.create_channel(&format!("bench-{i}")).await?;
            channels.push(ChannelKey {
                key: key.expose().to_string(),
                sink_name: ch.id.to_string(),
            });
        }
        drop(store);
        // SG_RELAY_EXTRA: more [relay] settings, for experiments (e.g. "send_buffer = 0").
        let extra = std::env::var("SG_RELAY_EXTRA").unwrap_or_default();
        let relay = sink_port
            .map(|p| {
                format!(
                    "[relay]\ntargets = [\"rtmp://127.0.0.1:{p}/live/{{channel_id}}\"]\n{extra}\n"
                )
            })
            .unwrap_or_default();
        let thumbnails = thumbnails.unwrap_or("enabled = false");
        // The default is left out, so that builds from before the setting existed run
        // too (`sgbench ab` against an older build).
        let placement = match placement {
            "pack" => String::new(),
            other => format!("placement = \"{other}\"\n"),
        };
        // SG_RTMP_EXTRA: more [rtmp] settings, for experiments (e.g.
        // "busy_wakeup_interval = \"0s\""). The node's own STREAMGATE_* variables are
        // not passed on (below), so that the shell's settings never leak into a run.
        let rtmp_extra = std::env::var("SG_RTMP_EXTRA")
            .map(|extra| format!("{extra}\n"))
            .unwrap_or_default();
        let text = format!(
            "[rtmp]\nlisten = \"127.0.0.1:0\"\nmax_connections = 20000\nworkers = {workers}\n{placement}{rtmp_extra}\
             max_connections_per_address = 20000\nmax_pending = 20000\nmax_pending_per_address = 20000\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [database]\n{database}\n[thumbnails]\n{thumbnails}\n\
             [log]\nlevel = \"warn,streamgate::ingest=info,streamgate::app=info,streamgate::srt=info\"\n{relay}{sections}",
        );
        let cfg = dir.join("sg.toml");
        std::fs::write(&cfg, text)?;
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("STREAMGATE_")) {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for what in ["RTMP", "HTTP", "SRT"] {
                    if let Some(rest) = line.split(&format!("{what} listening addr=")).nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send((what, addr));
                    }
                }
                if line.contains("ERROR") {
                    eprintln!("[streamgate] {line}");
                }
            }
        });
        let (mut rtmp, mut http, mut srt_addr) = (None, None, None);
        while rtmp.is_none() || http.is_none() || (sections.contains("[srt]") && srt_addr.is_none())
        {
            let (what, addr) = rx
                .recv_timeout(Duration::from_secs(20))
                .map_err(|_| anyhow::anyhow!("streamgate did not start"))?;
            let addr: SocketAddr = addr.parse()?;
            match what {
                "RTMP" => rtmp = Some(addr),
                "SRT" => srt_addr = Some(addr),
                _ => http = Some(addr),
            }
        }
        Ok(Server {
            pid: child.id(),
            srt_addr,
            more_pids: Vec::new(),
            rtmp_addr: rtmp.expect("set above"),
            http_addr: http,
            channels,
            child: Mutex::new(Some(child)),
            dir,
        })
    }

    fn start_nginx(n: usize, sink_port: Option<u16>) -> anyhow::Result<Server> {
        let dir = temp_dir("nginx");
        let port = free_port()?;
        let push = sink_port
            .map(|p| format!("push rtmp://127.0.0.1:{p}/live;"))
            .unwrap_or_default();
        let child = spawn_nginx(
            &dir,
            "rtmp",
            20000,
            &format!(
                "rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
                 application live {{ live on; {push} }} }} }}\n"
            ),
        )?;
        // nginx-rtmp has no key check here: the name is the key, and push keeps it.
        Server::keyless(child, port, n, dir)
    }

    fn start_srs(n: usize, sink_port: Option<u16>) -> anyhow::Result<Server> {
        let bin = srs_binary()?;
        // SRS refuses to start unless max_connections plus its own 128 descriptors fit
        // the open-files limit (which it inherits from this process).
        let (nofile, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
        let max_connections = nofile.saturating_sub(256).min(20000);
        anyhow::ensure!(
            max_connections as usize > n * 2,
            "the open-files limit ({nofile}) is too low for SRS with {n} publishers"
        );
        let dir = temp_dir("srs");
        let port = free_port()?;
        let forward = sink_port
            .map(|p| format!("forward {{ enabled on; destination 127.0.0.1:{p}; }}"))
            .unwrap_or_default();
        std::fs::write(
            dir.join("srs.conf"),
            format!(
                "listen {port}; max_connections {max_connections}; daemon off; srs_log_tank console; srs_log_level warn;\n\
                 pid {}/srs.pid;\nvhost __defaultVhost__ {{ {forward} }}\n",
                dir.display()
            ),
        )?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(dir.join("srs.conf"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Server::keyless(child, port, n, dir)
    }

    /// The floor: nginx's `stream` module proxying every publisher's connection to the
    /// sink, bytes unchanged (the publisher's RTMP session is with the sink itself).
    fn start_byte_pipe(n: usize, sink_port: u16) -> anyhow::Result<Server> {
        let dir = temp_dir("pipe");
        let port = free_port()?;
        let child = spawn_nginx(
            &dir,
            "stream",
            40000,
            &format!(
                "stream {{ server {{ listen 127.0.0.1:{port}; proxy_pass 127.0.0.1:{sink_port}; }} }}\n"
            ),
        )?;
        Server::keyless(child, port, n, dir)
    }

    /// [`Server::keyless`] for a peer started elsewhere (its RTMP port `port`).
    pub fn keyless_child(
        child: Child,
        port: u16,
        n: usize,
        dir: PathBuf,
    ) -> anyhow::Result<Server> {
        Server::keyless(child, port, n, dir)
    }

    /// A peer server without key checks, once it listens: `n` random stream names,
    /// relayed under the same name.
    fn keyless(child: Child, port: u16, n: usize, dir: PathBuf) -> anyhow::Result<Server> {
        let server = Server {
            pid: child.id(),
            srt_addr: None,
            more_pids: Vec::new(),
            rtmp_addr: ([127, 0, 0, 1], port).into(),
            http_addr: None,
            channels: (0..n)
                .map(|i| {
                    let key = format!("bench{i}_{}", uuid::Uuid::new_v4().simple());
                    ChannelKey {
                        sink_name: key.clone(),
                        key,
                    }
                })
                .collect(),
            child: Mutex::new(Some(child)),
            dir,
        };
        // On failure `server` is dropped, which stops the process.
        wait_port(port)?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx in the foreground, one worker, with the module `module` (`rtmp`, `stream`)
/// loaded and `block` (its `rtmp` or `stream` section) as its configuration, in `dir`.
fn spawn_nginx(dir: &Path, module: &str, connections: u32, block: &str) -> anyhow::Result<Child> {
    let module = testkit::nginx::module(module).map_err(anyhow::Error::msg)?;
    testkit::nginx::write_config(dir, &[module], connections, "warn", block)?;
    testkit::nginx::spawn(dir).map_err(anyhow::Error::msg)
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sgbench-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("server did not listen on {port}")
}

/// A binary built beside this one (target/<profile>/NAME).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SG_STREAMGATE_BIN") {
        return Ok(p.into());
    }
    let me = std::env::current_exe()?;
    for dir in me.ancestors().skip(1).take(3) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!("cannot find the {name} binary next to {}; build it (cargo build --release) or set SG_STREAMGATE_BIN", me.display())
}

/// A private PostgreSQL server for the auth and fleet benchmarks (the test kit's, on
/// its `postgres` database).
pub struct PrivatePostgres(testkit::postgres::Postgres);

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<PrivatePostgres> {
        Ok(PrivatePostgres(
            testkit::postgres::Postgres::try_start().map_err(anyhow::Error::msg)?,
        ))
    }

    pub fn url(&self) -> String {
        self.0.url("postgres")
    }

    /// Runs SQL with psql; returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.0
            .psql_result("postgres", sql)
            .map_err(|e| anyhow::anyhow!("psql: {e}"))
    }

    /// The server's main process (its backends are its children).
    pub fn postmaster_pid(&self) -> anyhow::Result<u32> {
        self.0.postmaster_pid().map_err(anyhow::Error::msg)
    }
}
