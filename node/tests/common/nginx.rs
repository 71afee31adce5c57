//! nginx with the RTMP module as the relay upstream (writing HLS), and a tiny HTTP
//! server that records `on_publish` hook calls.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{free_port, require, signal, wait_child, wait_for, TempDir};

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
        let body = format!(
            "rtmp {{ server {{ listen 127.0.0.1:{}; access_log {d}/access.log; {apps} }} }}\n",
            self.port
        );
        let rtmp = testkit::nginx::module("rtmp").unwrap_or_else(|e| panic!("{e}"));
        testkit::nginx::write_config(&self.dir.0, &[rtmp], 256, "info", &body).unwrap();
    }

    /// Starts (or restarts) the process on the same port and folders.
    pub fn spawn(&mut self) {
        let child = testkit::nginx::spawn(&self.dir.0).unwrap_or_else(|e| panic!("{e}"));
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

/// nginx's `stream` module as an L4 load balancer in front of one upstream, adding a
/// PROXY protocol (v1) header to every connection when `proxy_protocol` is set.
pub struct StreamProxy {
    pub child: Option<Child>,
    pub dir: TempDir,
    pub port: u16,
    /// The balancer's SRT port (UDP), for [`StreamProxy::balance`].
    pub srt_port: Option<u16>,
}

/// The address [`StreamProxy::balance`] connects to the nodes from (what they trust as
/// their balancer): distinct from the clients' 127.0.0.1 and 127.0.0.2.
pub const BALANCER_SOURCE: &str = "127.0.0.3";

impl StreamProxy {
    pub fn start(upstream_port: u16, proxy_protocol: bool) -> StreamProxy {
        let pp = if proxy_protocol {
            "proxy_protocol on;"
        } else {
            ""
        };
        StreamProxy::run(|port| {
            format!(
                "stream {{ server {{ listen 127.0.0.1:{port}; proxy_pass 127.0.0.1:{upstream_port}; {pp} }} }}\n"
            )
        })
    }

    /// The balancer of `deploy/nginx-stream.conf` (the file operators deploy) in front
    /// of two nodes, with its host names and ports replaced by the nodes' loopback
    /// ports; it connects to them from [`BALANCER_SOURCE`] (RTMP; SRT's datagrams come
    /// from nginx's own address). `rtmp` and `srt`: the nodes' ports.
    pub fn balance(rtmp: (u16, u16), srt: (u16, u16)) -> StreamProxy {
        let deployed = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/nginx-stream.conf"
        ))
        .unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut proxy = StreamProxy::run(|port| {
            let mut conf = deployed.clone();
            for (from, to) in [
                ("server node-a:1935", format!("server 127.0.0.1:{}", rtmp.0)),
                ("server node-b:1935", format!("server 127.0.0.1:{}", rtmp.1)),
                (
                    "listen 1935;",
                    format!("listen 127.0.0.1:{port}; proxy_bind {BALANCER_SOURCE};"),
                ),
                ("server node-a:8890", format!("server 127.0.0.1:{}", srt.0)),
                ("server node-b:8890", format!("server 127.0.0.1:{}", srt.1)),
                ("listen 8890 udp;", format!("listen 127.0.0.1:{udp} udp;")),
            ] {
                assert!(
                    conf.contains(from),
                    "deploy/nginx-stream.conf lost {from:?}"
                );
                conf = conf.replace(from, &to);
            }
            conf
        });
        proxy.srt_port = Some(udp);
        proxy
    }

    /// nginx with the stream module and the `stream { }` block `conf(port)` writes.
    fn run(conf: impl FnOnce(u16) -> String) -> StreamProxy {
        require("nginx", "nginx libnginx-mod-stream");
        let stream = testkit::nginx::module("stream").unwrap_or_else(|e| panic!("{e}"));
        let dir = TempDir::new("nginx-stream");
        let port = free_port();
        testkit::nginx::write_config(&dir.0, &[stream], 256, "info", &conf(port)).unwrap();
        let child = testkit::nginx::spawn(&dir.0).unwrap_or_else(|e| panic!("{e}"));
        let proxy = StreamProxy {
            child: Some(child),
            dir,
            port,
            srt_port: None,
        };
        wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "nginx stream did not listen on {port}: {}",
                std::fs::read_to_string(proxy.dir.0.join("error.log")).unwrap_or_default()
            )
        });
        proxy
    }
}

impl Drop for StreamProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
