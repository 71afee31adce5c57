//! The real `streamgate` binary on 127.0.0.1 with port 0: its config, its output
//! (every line kept, for the key-leak checks), its HTTP API and its SQLite file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{signal, wait_child, wait_for, TempDir};

/// Everything the node printed and every HTTP answer the tests received.
#[derive(Default, Clone)]
pub struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    pub fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

/// A running node.
pub struct Node {
    pub child: Option<Child>,
    pub dir: TempDir,
    pub config: PathBuf,
    pub rtmp_port: u16,
    /// The RTMPS port, when `[rtmps]` is enabled.
    pub rtmps_port: Option<u16>,
    /// The admin/metrics port, when `admin.listen` is set.
    pub admin_port: Option<u16>,
    /// The SRT port (UDP), unless `srt.enabled` is false.
    pub srt_port: Option<u16>,
    pub http_port: u16,
    /// Node output plus API answers.
    pub transcript: Transcript,
    /// Extra environment of the process (e.g. a faked clock).
    pub env: Vec<(String, String)>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_streamgate")
}

/// `streamgate --config <config>`, for the test to add a command and run.
pub fn streamgate(config: &std::path::Path) -> Command {
    let mut c = Command::new(bin());
    c.arg("--config").arg(config);
    c
}

/// The port of a "<what> listening" log line, in text or JSON log format.
fn port_from(line: &str, what: &str) -> Option<u16> {
    let addr = if let Some(i) = line.find(&format!("{what} listening addr=")) {
        line[i..]
            .split('=')
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_string()
    } else if line.contains(&format!("\"message\":\"{what} listening\"")) {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["fields"]["addr"].as_str()?.to_string()
    } else {
        return None;
    };
    addr.rsplit(':').next()?.parse().ok()
}

impl Node {
    /// Writes a config (ports 0, SQLite in a temp dir, debug logs) plus `extra` TOML
    /// sections, and starts `streamgate serve`.
    pub fn start(extra: &str) -> Node {
        Self::start_with_env(extra, &[])
    }

    /// [`Node::start`] with extra environment variables for the process.
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Node {
        let dir = TempDir::new("node");
        let config = dir.0.join("streamgate.toml");
        let db = dir.0.join("data/streamgate.db");
        let mut text = if extra.contains("[database]") {
            format!("{extra}\n")
        } else {
            format!("[database]\nurl = \"sqlite:{}\"\n\n{extra}\n", db.display())
        };
        if !extra.contains("[log]") {
            text.push_str("[log]\nlevel = \"debug\"\n");
        }
        if !extra.contains("[rtmp]") {
            text.push_str("[rtmp]\nlisten = \"127.0.0.1:0\"\n");
        }
        if !extra.contains("[http]") {
            text.push_str("[http]\nlisten = \"127.0.0.1:0\"\n");
        }
        if !extra.contains("[srt]") {
            text.push_str("[srt]\nlisten = \"127.0.0.1:0\"\n");
        }
        std::fs::write(&config, text).unwrap();
        Node::spawned(dir, config, env)
    }

    /// A node on `config` in `dir`, started.
    fn spawned(dir: TempDir, config: PathBuf, env: &[(&str, &str)]) -> Node {
        let mut node = Node {
            child: None,
            dir,
            config,
            rtmp_port: 0,
            rtmps_port: None,
            admin_port: None,
            srt_port: None,
            http_port: 0,
            transcript: Transcript::default(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        node.spawn();
        node
    }

    /// A second instance on the same config, folder and ports (a restart's new
    /// process); the folder stays the first one's.
    pub fn another_instance(&self) -> Node {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Node::spawned(self.dir.shared(), self.config.clone(), &env)
    }

    /// Starts (or restarts) the process on the same config and database.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(bin());
        // The node sees only its config file: no overrides from the developer's shell.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("STREAMGATE_")) {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env_remove("RUST_LOG")
            .current_dir(&self.dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start streamgate");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let t = self.transcript.clone();
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("SG_TEST_ECHO").is_some() {
                        eprintln!("[node] {line}");
                    }
                    t.push(line.clone());
                    let _ = tx.send(line);
                }
            }));
        }
        let (mut rtmp, mut http, mut rtmps, mut admin, mut srt) = (None, None, None, None, None);
        let text = std::fs::read_to_string(&self.config).unwrap_or_default();
        let table: toml::Table = text.parse().unwrap_or_default();
        let want_rtmps = table
            .get("rtmps")
            .and_then(|t| t.get("enabled"))
            .and_then(|e| e.as_bool())
            .unwrap_or(false);
        let want_admin = table
            .get("admin")
            .and_then(|t| t.get("listen"))
            .and_then(|l| l.as_str())
            .is_some_and(|l| !l.is_empty());
        let want_srt = table
            .get("srt")
            .and_then(|t| t.get("enabled"))
            .and_then(|e| e.as_bool())
            .unwrap_or(true);
        let deadline = Instant::now() + Duration::from_secs(15);
        while rtmp.is_none()
            || http.is_none()
            || (want_rtmps && rtmps.is_none())
            || (want_admin && admin.is_none())
            || (want_srt && srt.is_none())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    rtmp = rtmp.or_else(|| port_from(&line, "RTMP"));
                    http = http.or_else(|| port_from(&line, "HTTP"));
                    rtmps = rtmps.or_else(|| port_from(&line, "RTMPS"));
                    admin = admin.or_else(|| port_from(&line, "admin"));
                    srt = srt.or_else(|| port_from(&line, "SRT"));
                }
                // Still starting, unless it exited (a configuration error, say).
                Err(_) if left > Duration::ZERO && child.try_wait().ok().flatten().is_none() => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // The readers end with the process's output: then it is all here.
                    for r in readers {
                        let _ = r.join();
                    }
                    panic!("node did not start; output:\n{}", self.transcript.text());
                }
            }
        }
        self.rtmp_port = rtmp.unwrap();
        self.rtmps_port = rtmps;
        self.admin_port = admin;
        self.srt_port = srt;
        self.http_port = http.unwrap();
        self.child = Some(child);
    }

    /// Whether the process is still running (it did not crash or exit).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `rtmp://127.0.0.1:PORT/live/<key>`.
    pub fn publish_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp_port)
    }

    /// Runs a CLI subcommand against this node's config; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir.0)
            .output()
            .expect("run streamgate cli");
        assert!(
            out.status.success(),
            "streamgate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a CLI subcommand with `input` on its standard input; returns (success,
    /// stdout, stderr).
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> (bool, String, String) {
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run streamgate cli");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Creates a channel; returns (id, key).
    pub fn create_channel(&self, name: &str) -> (String, String) {
        let v: serde_json::Value =
            serde_json::from_str(&self.cli(&["channel", "create", name, "--json"])).unwrap();
        (
            v["id"].as_str().unwrap().to_string(),
            v["stream_key"].as_str().unwrap().to_string(),
        )
    }

    /// A plain HTTP/1.1 GET; returns (status, head, body). The answer is recorded.
    pub fn http_get(&self, path: &str) -> (u16, String, Vec<u8>) {
        self.http_request(self.http_port, "GET", path, "")
    }

    /// Any request to `port` with extra header lines (each ending in CRLF).
    pub fn http_request(
        &self,
        port: u16,
        method: &str,
        path: &str,
        headers: &str,
    ) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect http");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n{headers}\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("http head");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut body = raw[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        self.transcript.push(format!(
            "HTTP {path}: {head}\n{}",
            String::from_utf8_lossy(&body)
        ));
        (status, head, body)
    }

    /// `/api/v1/streams` as JSON.
    pub fn streams(&self) -> Vec<serde_json::Value> {
        let (status, _, body) = self.http_get("/api/v1/streams");
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["streams"].as_array().unwrap().clone()
    }

    /// The live stream of a channel, when listed.
    pub fn stream(&self, channel_id: &str) -> Option<serde_json::Value> {
        self.streams()
            .into_iter()
            .find(|s| s["channel_id"] == channel_id)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.0.join("data/streamgate.db")
    }

    /// (is_live, live_session) of a channel, read straight from SQLite.
    pub fn db_live(&self, channel_id: &str) -> (bool, Option<String>) {
        let c = rusqlite::Connection::open(self.db_path()).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c.query_row(
            "SELECT is_live, live_session FROM channels WHERE id = ?1",
            [channel_id],
            |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?)),
        )
        .unwrap()
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        let status = wait_child(&mut child, Duration::from_secs(15));
        status.is_some_and(|s| s.success())
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asserts that `secret` appears in nothing the node printed or the API answered.
    pub fn assert_never_printed(&self, secret: &str) {
        let text = self.transcript.text();
        assert!(
            !text.is_empty(),
            "the transcript is empty: nothing was checked"
        );
        if let Some(line) = text.lines().find(|l| l.contains(secret)) {
            panic!("the stream key leaked in: {line}");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// Waits until the channel is listed live by the API; returns its entry.
pub fn wait_listed(node: &Node, channel_id: &str, timeout: Duration) -> serde_json::Value {
    wait_for(timeout, || node.stream(channel_id)).unwrap_or_else(|| {
        panic!(
            "channel {channel_id} never listed; node output:\n{}",
            node.transcript.text()
        )
    })
}

/// Waits until SQLite says the channel is live. Status writes are asynchronous (the
/// video never waits for the database), so they land shortly after the stream is listed.
pub fn wait_db_live(node: &Node, channel_id: &str) {
    wait_for(Duration::from_secs(3), || {
        node.db_live(channel_id).0.then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "channel {channel_id} never live in SQLite:\n{}",
            node.transcript.text()
        )
    });
}

/// Waits until the node printed a line containing `needle`.
pub fn wait_logged(node: &Node, needle: &str, timeout: Duration) {
    wait_for(timeout, || node.transcript.contains(needle).then_some(())).unwrap_or_else(|| {
        panic!(
            "the node never logged {needle:?}; output:\n{}",
            node.transcript.text()
        )
    });
}
