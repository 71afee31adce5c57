//! Test harness: runs the real `streamgate` binary on 127.0.0.1 with port 0, captures
//! everything it prints (for the key-leak checks), talks HTTP to it, publishes with real
//! ffmpeg / GStreamer, and cleans up every process it started, by PID.

// Helpers shared by several test binaries: not every binary uses every one, and
// `pub` here means "for the tests", not an exported API.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("streamgate-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails the test with a clear message when a required program is missing: tests
/// never skip silently.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is required by this test and is not on PATH: install it with `apt-get install -y {package}` (scripts/setup-test-deps.sh does this)"
    );
}

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
    pub http_port: u16,
    /// Node output plus API answers.
    pub transcript: Transcript,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_streamgate")
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
        std::fs::write(&config, text).unwrap();
        let mut node = Node {
            child: None,
            dir,
            config,
            rtmp_port: 0,
            http_port: 0,
            transcript: Transcript::default(),
        };
        node.spawn();
        node
    }

    /// Starts (or restarts) the process on the same config and database.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(bin());
        // The node sees only its config file: no overrides from the developer's shell.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("STREAMGATE_")) {
            cmd.env_remove(k);
        }
        let mut child = cmd
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
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let t = self.transcript.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("SG_TEST_ECHO").is_some() {
                        eprintln!("[node] {line}");
                    }
                    t.push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let (mut rtmp, mut http) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(15);
        while rtmp.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    rtmp = rtmp.or_else(|| port_from(&line, "RTMP"));
                    http = http.or_else(|| port_from(&line, "HTTP"));
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("node did not start; output:\n{}", self.transcript.text());
                }
            }
        }
        self.rtmp_port = rtmp.unwrap();
        self.http_port = http.unwrap();
        self.child = Some(child);
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
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).expect("connect http");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
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

/// Sends a signal by PID with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Waits up to `timeout` for a child to exit.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    wait_for(timeout, || child.try_wait().ok().flatten())
}

/// A background process killed on drop.
pub struct Proc {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                *sink.lock().unwrap() = s.clone();
            }
        });
        Proc { child, stderr }
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ffmpeg publishing a moving H.264 + AAC test pattern for `seconds`.
pub fn ffmpeg_publish(url: &str, size: &str, seconds: u32) -> Proc {
    ffmpeg_publish_pix(url, size, seconds, "yuv420p")
}

/// `ffmpeg_publish` with another pixel format (e.g. 10-bit `yuv420p10le`).
pub fn ffmpeg_publish_pix(url: &str, size: &str, seconds: u32, pix_fmt: &str) -> Proc {
    require("ffmpeg", "ffmpeg");
    Proc::spawn(Command::new("ffmpeg").args([
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=30"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "30",
        "-pix_fmt",
        pix_fmt,
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-t",
        &seconds.to_string(),
        "-f",
        "flv",
        url,
    ]))
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

/// Path helper for test data written by the tests themselves.
pub fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// A free TCP port on 127.0.0.1 (probed; the caller binds it right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real nginx with the RTMP module, on loopback, writing HLS per application.
pub struct Nginx {
    pub child: Option<Child>,
    pub dir: TempDir,
    pub port: u16,
    pub apps: Vec<String>,
}

impl Nginx {
    /// Starts nginx-rtmp with one HLS application per name in `apps`; `on_publish`
    /// makes nginx call that URL for every publish (as operators do for auth).
    pub fn start(apps: &[&str], on_publish: Option<&str>) -> Nginx {
        require("nginx", "nginx libnginx-mod-rtmp");
        let module = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
        assert!(
            Path::new(module).exists(),
            "{module} is missing: install it with `apt-get install -y libnginx-mod-rtmp`"
        );
        let dir = TempDir::new("nginx");
        let mut nginx = Nginx {
            child: None,
            dir,
            port: 0,
            apps: apps.iter().map(|s| s.to_string()).collect(),
        };
        nginx.port = free_port();
        nginx.write_config(on_publish);
        nginx.spawn();
        nginx
    }

    fn write_config(&self, on_publish: Option<&str>) {
        let d = self.dir.0.display();
        let mut apps = String::new();
        for app in &self.apps {
            std::fs::create_dir_all(self.hls_dir(app)).unwrap();
            let hook = on_publish
                .map(|u| format!("on_publish {u};"))
                .unwrap_or_default();
            apps.push_str(&format!(
                "application {app} {{ live on; hls on; hls_path {}; hls_fragment 1s; hls_playlist_length 30s; hls_cleanup off; {hook} }}\n",
                self.hls_dir(app).display()
            ));
        }
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\nevents {{ worker_connections 256; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{}; access_log {d}/access.log; {apps} }} }}\n",
            self.port
        );
        std::fs::write(self.dir.0.join("nginx.conf"), conf).unwrap();
    }

    /// Starts (or restarts) the process on the same port and folders.
    pub fn spawn(&mut self) {
        let d = &self.dir.0;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .unwrap_or_else(|| panic!("nginx did not listen on {port}: {}", self.error_log()));
    }

    pub fn hls_dir(&self, app: &str) -> PathBuf {
        self.dir.0.join(format!("hls-{app}"))
    }

    /// The playlist of `name` in `app`, once it lists a segment.
    pub fn wait_playlist(&self, app: &str, name: &str, timeout: Duration) -> PathBuf {
        let p = self.hls_dir(app).join(format!("{name}.m3u8"));
        wait_for(timeout, || {
            std::fs::read_to_string(&p)
                .ok()
                .filter(|s| s.contains("#EXTINF"))
                .map(|_| ())
        })
        .unwrap_or_else(|| {
            panic!(
                "no HLS playlist {} appeared; nginx log:\n{}",
                p.display(),
                self.error_log()
            )
        });
        p
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("access.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash of the upstream.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait, so that logs are complete.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            if wait_child(&mut c, Duration::from_secs(5)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Streams ffprobe finds in a file or playlist: (codec_type, codec_name, width, height).
pub fn ffprobe_streams(path: &Path) -> Vec<(String, String, Option<u64>, Option<u64>)> {
    require("ffprobe", "ffmpeg");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or_default().to_string(),
                s["codec_name"].as_str().unwrap_or_default().to_string(),
                s["width"].as_u64(),
                s["height"].as_u64(),
            )
        })
        .collect()
}

/// A tiny HTTP server recording request bodies and answering 200 (an `on_publish`
/// hook, as operators run next to nginx-rtmp).
pub struct HookServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl HookServer {
    pub fn start() -> HookServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sink = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { return };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n]);
                    if let Some(h) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&data[..h]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if data.len() >= h + 4 + len {
                            break;
                        }
                    }
                }
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&data).to_string());
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        HookServer { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/on_publish", self.port)
    }

    pub fn all(&self) -> String {
        self.requests.lock().unwrap().join("\n")
    }
}

/// A publisher made of our own client session over a blocking socket: it does exactly
/// what the test says (e.g. go silent), unlike ffmpeg.
pub struct RawPublisher {
    sock: TcpStream,
    session: rtmp::ClientSession,
    buf: bytes::BytesMut,
}

impl RawPublisher {
    pub fn write_out(&mut self) {
        let out = self.session.output().take_contiguous();
        self.sock.write_all(&out).unwrap();
    }

    /// Connects and publishes; `Err` carries the server's refusal or the I/O failure.
    pub fn publish(port: u16, app: &str, key: &str) -> Result<RawPublisher, String> {
        let io = |e: std::io::Error| e.to_string();
        let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        let mut hs = rtmp::handshake::ClientHandshake::new(rtmp::handshake::HandshakeKind::Simple);
        let mut out = bytes::BytesMut::new();
        hs.start(&mut out);
        sock.write_all(&out).map_err(io)?;
        out.clear();
        let mut buf = bytes::BytesMut::new();
        let mut tmp = [0u8; 8192];
        while !hs.read(&mut buf, &mut out).map_err(|e| e.to_string())? {
            let n = sock.read(&mut tmp).map_err(io)?;
            if n == 0 {
                return Err("closed during the handshake".into());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        sock.write_all(&out).map_err(io)?;
        let tc_url = format!("rtmp://127.0.0.1:{port}/{app}");
        let mut p = RawPublisher {
            sock,
            session: rtmp::ClientSession::new(rtmp::ClientConfig::new(app, &tc_url, key)),
            buf,
        };
        p.session.start();
        p.write_out();
        loop {
            let mut events = Vec::new();
            p.session.handle_bytes(&mut p.buf, &mut events).unwrap();
            p.write_out();
            match events.into_iter().next() {
                Some(rtmp::ClientEvent::Publishing) => return Ok(p),
                Some(rtmp::ClientEvent::Rejected { code, description }) => {
                    return Err(format!("{code}: {description}"))
                }
                None => {}
            }
            let n = p.sock.read(&mut tmp).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed".into());
            }
            p.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Sends one media message (8 audio, 9 video) with our client session.
    pub fn send(&mut self, type_id: u8, timestamp: u32, body: &[u8]) {
        self.session
            .send_media(type_id, timestamp, bytes::Bytes::copy_from_slice(body));
        self.write_out();
    }

    /// Blocks until the server closes the connection; returns how long that took.
    pub fn wait_closed(&mut self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        self.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut tmp = [0u8; 4096];
        while start.elapsed() < timeout {
            match self.sock.read(&mut tmp) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(start.elapsed()),
            }
        }
        None
    }
}

/// A private PostgreSQL server (Debian's binaries) on a free loopback port, in a
/// temporary folder; stopped, by its data directory, on drop.
pub struct Postgres {
    pub dir: TempDir,
    pub port: u16,
    bin: PathBuf,
    as_postgres_user: bool,
}

fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|_| panic!("PostgreSQL is required: install it with `apt-get install -y postgresql` (scripts/setup-test-deps.sh does this)"))
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = pg_bin_dir();
        let dir = TempDir::new("pg");
        let uid = Command::new("id").arg("-u").output().unwrap();
        let as_postgres_user = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if as_postgres_user {
            // initdb refuses to run as root; the cluster belongs to `postgres`.
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let pg = Postgres {
            dir,
            port: free_port(),
            bin,
            as_postgres_user,
        };
        let data = pg.dir.0.join("data");
        let out = pg
            .cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args(["--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start_server();
        pg
    }

    fn cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// A server that accepts only TLS connections, with a self-signed certificate for
    /// localhost / 127.0.0.1; returns it and the certificate's PEM.
    pub fn start_tls_only() -> (Postgres, String) {
        let pg = Postgres::start();
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let data = pg.dir.0.join("data");
        std::fs::write(data.join("server.crt"), cert.cert.pem()).unwrap();
        std::fs::write(data.join("server.key"), cert.key_pair.serialize_pem()).unwrap();
        std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n";
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        std::fs::write(data.join("postgresql.conf"), conf + "\nssl = on\n").unwrap();
        if pg.as_postgres_user {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()
                .unwrap();
            assert!(st.success());
        }
        pg.stop_server();
        pg.start_server();
        (pg, cert.cert.pem())
    }

    /// Starts (or restarts) the server on the same data and port.
    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.0.display()
        );
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-o", &opts, "-l"])
            .arg(self.dir.0.join("server.log"))
            .args(["-w", "-t", "30", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the server at once (an outage).
    pub fn stop_server(&self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    /// Runs SQL with psql as `postgres`; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_result(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// Like `psql`, but returns the error output instead of failing.
    pub fn psql_result(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// A fresh database for one test.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name.to_string()
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_server();
    }
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
