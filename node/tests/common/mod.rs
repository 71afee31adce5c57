//! Test harness, one module per thing it drives: the node binary ([`node`]), ffmpeg /
//! ffprobe ([`encoders`]), nginx-rtmp and an HTTP hook ([`nginx`]), a private
//! PostgreSQL cluster ([`postgres`]), our own raw RTMP publisher ([`publisher`]) and
//! clients that behave as attackers do ([`hostile`]).
//! Everything runs on 127.0.0.1 with probed ports, and every process a test starts is
//! stopped by PID when its handle drops.

// Helpers shared by several test binaries: not every binary uses every one, and
// `pub` here means "for the tests", not an exported API.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod encoders;
pub mod hostile;
pub mod middlebox;
pub mod nginx;
pub mod node;
pub mod postgres;
pub mod publisher;
pub mod source;
pub mod srt;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use self::srt::*;
pub use encoders::*;
pub use hostile::*;
pub use middlebox::*;
pub use nginx::*;
pub use node::*;
pub use postgres::*;
pub use publisher::*;

/// Runs `cmd` to its end and asserts it succeeded (failing with what it printed on
/// stderr); returns its output.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

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

/// A temporary directory removed on drop (unless it is another's, see `shared`).
pub struct TempDir(pub PathBuf, bool);

impl TempDir {
    /// The same directory, not removed when this handle drops.
    pub fn shared(&self) -> TempDir {
        TempDir(self.0.clone(), false)
    }

    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("streamgate-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p, true)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
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

/// The value of one series in a Prometheus scrape: `series` is the whole name with its
/// labels as the exporter prints them (`name` or `name{a="b"}`), matched exactly (a
/// name that is the prefix of another never matches the other).
pub fn metric_value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
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

/// The environment that runs a process with its wall clock `offset_s` seconds ahead
/// (libfaketime, Debian's `faketime`; its monotonic clock is left alone): a machine
/// whose clock is off.
pub fn skewed_clock(offset_s: i64) -> Vec<(&'static str, String)> {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    assert!(
        Path::new(lib).exists(),
        "{lib} is required by this test: install it with `apt-get install -y faketime` (scripts/setup-test-deps.sh does this)"
    );
    vec![
        ("LD_PRELOAD", lib.to_string()),
        ("FAKETIME", format!("{offset_s:+}s")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
    ]
}
