//! The container image, built and run for real: `deploy/Dockerfile` built by buildah
//! (`--isolation chroot`, as no Docker engine runs here) from base images made on this
//! machine, a bare Debian by mmdebstrap and that Debian plus the Rust toolchain, passed
//! as the Dockerfile's base-image arguments. The image then runs (`buildah run` with
//! the host network), takes a publish from a real ffmpeg, serves its thumbnail, passes
//! its own HEALTHCHECK command and runs as its unprivileged user. The default image
//! stays within 300 MB; the HEVC variant (`HEVC_THUMBNAILS=true`) decodes HEVC with the
//! ffmpeg it carries. Sizes and times are printed in the suite's log.
//!
//! The base images are kept between runs (named by the toolchain's version); the build
//! itself uses buildah's layer cache, so a second run rebuilds only what changed. What
//! it leaves in buildah's storage (the bases, the two images, about 2.5 GB of build
//! layers per source version) is freed with `buildah rmi --prune`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// A line for the suite's log even when the test passes (libtest captures `eprintln!`
/// of passing tests, not writes to the standard error itself): sizes and times.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "image test: {}", format!($($arg)*));
    }};
}

const DEBIAN: &str = "localhost/streamgate-test-debian:bookworm";
const MAX_IMAGE_BYTES: u64 = 300_000_000;

/// Builds run one at a time (the second reuses the first's build stage), counted.
static BUILD: Mutex<usize> = Mutex::new(0);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn buildah(args: &[&str]) -> Output {
    require("buildah", "buildah");
    Command::new("buildah").args(args).output().unwrap()
}

fn buildah_ok(args: &[&str]) -> String {
    let out = buildah(args);
    assert!(
        out.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn image_exists(tag: &str) -> bool {
    buildah(&["inspect", "--type", "image", tag])
        .status
        .success()
}

/// A bare Debian bookworm (minbase, without documentation), made by mmdebstrap from
/// Debian's packages: what `debian:bookworm-slim` is, made here.
fn debian_base() -> &'static str {
    if !image_exists(DEBIAN) {
        require("mmdebstrap", "mmdebstrap");
        let dir = TempDir::new("rootfs");
        let tar = dir.0.join("rootfs.tar");
        let started = Instant::now();
        run_ok(
            Command::new("mmdebstrap")
                .args(["--variant=minbase", "--quiet"])
                .args([
                    "--dpkgopt=path-exclude=/usr/share/man/*",
                    "--dpkgopt=path-exclude=/usr/share/locale/*",
                    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
                    "--dpkgopt=path-exclude=/usr/share/doc/*",
                    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                    "--dpkgopt=path-exclude=/usr/share/info/*",
                ])
                .arg("bookworm")
                .arg(&tar)
                .arg("http://deb.debian.org/debian"),
        );
        let c = buildah_ok(&["from", "scratch"]);
        buildah_ok(&["add", "--quiet", &c, tar.to_str().unwrap(), "/"]);
        buildah_ok(&["config", "--cmd", "/bin/bash", &c]);
        buildah_ok(&["commit", "--quiet", "--rm", &c, DEBIAN]);
        report!("debian base made in {:.0?}", started.elapsed());
    }
    DEBIAN
}

/// The Debian above plus this machine's Rust toolchain (no C compiler, no nasm: the
/// Dockerfile must install what building needs), as the official `rust` image is
/// Debian plus rustup's toolchain. The machine's CA bundle comes along for cargo,
/// whose downloads pass through this sandbox's TLS proxy.
fn rust_builder() -> String {
    let version = String::from_utf8(
        Command::new("rustc")
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let tag = format!(
        "localhost/streamgate-test-rust:{}",
        version.split_whitespace().nth(1).unwrap()
    );
    if !image_exists(&tag) {
        let sysroot = String::from_utf8(
            Command::new("rustc")
                .args(["--print", "sysroot"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let c = buildah_ok(&["from", debian_base()]);
        let mnt = buildah_ok(&["mount", &c]);
        let dest = Path::new(&mnt).join("usr/local/rust");
        std::fs::create_dir_all(&dest).unwrap();
        for part in ["bin", "lib", "libexec"] {
            run_ok(
                Command::new("cp")
                    .arg("-a")
                    .arg(Path::new(sysroot.trim()).join(part))
                    .arg(&dest),
            );
        }
        std::fs::copy(
            "/etc/ssl/certs/ca-certificates.crt",
            Path::new(&mnt).join("usr/local/share/host-ca-bundle.crt"),
        )
        .unwrap();
        buildah_ok(&["umount", &c]);
        buildah_ok(&[
            "config",
            "--env",
            "PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "CARGO_HOME=/usr/local/cargo",
            "--env",
            "CARGO_HTTP_CAINFO=/usr/local/share/host-ca-bundle.crt",
            &c,
        ]);
        buildah_ok(&["commit", "--quiet", "--rm", &c, &tag]);
    }
    tag
}

/// Builds `deploy/Dockerfile` as `tag` (docker format: OCI images drop HEALTHCHECK).
fn build(tag: &str, extra: &[&str]) {
    let mut built = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let builder = rust_builder();
    let dir = TempDir::new("bud");
    let log = dir.0.join("build.log");
    let started = Instant::now();
    let status = Command::new("buildah")
        .args([
            "bud",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--layers",
        ])
        .args(["--format", "docker", "--file", "deploy/Dockerfile"])
        .args(["--build-arg", &format!("BUILD_IMAGE={builder}")])
        .args(["--build-arg", &format!("RUNTIME_IMAGE={}", debian_base())])
        .args(extra)
        .args(["--tag", tag, "."])
        .current_dir(repo())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.0.join("build.err")).unwrap())
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default()
        + &std::fs::read_to_string(dir.0.join("build.err")).unwrap_or_default();
    assert!(
        status.success(),
        "buildah bud {tag} failed; the end of its output:\n{}",
        text.lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    report!("image {tag} built in {:.0?}", started.elapsed());
    // The second build of the run (the other variant: only the runtime stage differs)
    // takes the dependency layer and the binary from the cache.
    *built += 1;
    if *built == 2 {
        let lines: Vec<&str> = text.lines().collect();
        for step in [
            "&& cargo build --release --locked -p streamgate",
            "strip target/release",
        ] {
            let at = lines
                .iter()
                .position(|l| l.contains("STEP") && l.contains(step))
                .unwrap_or_else(|| panic!("no step with {step:?} in the build's output"));
            assert!(
                lines
                    .get(at + 1)
                    .is_some_and(|l| l.starts_with("--> Using cache")),
                "the second build did not reuse the layer of {step:?}:\n{}",
                lines[at..(at + 3).min(lines.len())].join("\n")
            );
        }
    }
}

/// The image's size in bytes (its layers, uncompressed), as `buildah images` (and
/// `docker images`) shows it: "233 MB".
fn size_of(tag: &str) -> u64 {
    let json: serde_json::Value =
        serde_json::from_str(&buildah_ok(&["images", "--json", tag])).unwrap();
    let shown = json[0]["size"].as_str().unwrap_or_default();
    let (number, unit) = shown
        .split_once(' ')
        .unwrap_or_else(|| panic!("no size in {json}"));
    let scale = match unit {
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => panic!("unknown unit in {shown:?}"),
    };
    (number.parse::<f64>().unwrap() * scale) as u64
}

/// The image's Docker configuration (user, entrypoint, health check).
fn image_config(tag: &str) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_str(&buildah_ok(&["inspect", "--type", "image", tag])).unwrap();
    json["Docker"]["config"].clone()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A working container of an image, removed on drop; commands run in it as its
/// configured user, on the host network.
struct Container {
    id: String,
    env: Vec<String>,
}

impl Container {
    fn of(tag: &str, env: &[(&str, String)]) -> Container {
        let id = buildah_ok(&["from", "--quiet", tag]);
        let env = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Container { id, env }
    }

    fn command(&self, argv: &[String]) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.args(["run", "--isolation", "chroot", "--network", "host"]);
        for e in &self.env {
            cmd.args(["--env", e]);
        }
        cmd.arg(&self.id).arg("--").args(argv);
        cmd
    }

    fn run(&self, argv: &[&str]) -> Output {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        self.command(&argv).output().unwrap()
    }

    fn run_ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "{argv:?} in the container: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = buildah(&["rm", &self.id]);
    }
}

/// The node of `tag` running its image's own ENTRYPOINT and CMD, with its listeners on
/// probed ports; returns the container, the node's process and its HTTP port.
fn start(tag: &str, config: &serde_json::Value) -> (Container, Proc, u16, u16) {
    let (rtmp, http) = (free_port(), free_port());
    let srt = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let container = Container::of(
        tag,
        &[
            ("STREAMGATE_RTMP_LISTEN", format!("127.0.0.1:{rtmp}")),
            ("STREAMGATE_HTTP_LISTEN", format!("127.0.0.1:{http}")),
            ("STREAMGATE_SRT_LISTEN", format!("127.0.0.1:{srt}")),
            ("STREAMGATE_THUMBNAILS_INTERVAL", "2s".to_string()),
        ],
    );
    // The health check fails while nothing serves (it can fail).
    let health = health_command(config);
    let refused = container.command(&health).output().unwrap();
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("Connection refused"),
        "the health check passed with no node running: {refused:?}"
    );
    let mut argv = strings(&config["Entrypoint"]);
    argv.extend(strings(&config["Cmd"]));
    let node = Proc::spawn(&mut container.command(&argv));
    wait_for(Duration::from_secs(30), || {
        container
            .command(&health)
            .output()
            .unwrap()
            .status
            .success()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the image's health check never passed:\n{}", node.stderr()));
    (container, node, rtmp, http)
}

/// The HEALTHCHECK's command, as Docker runs it (`CMD` form: the arguments as they are).
fn health_command(config: &serde_json::Value) -> Vec<String> {
    let test = strings(&config["Healthcheck"]["Test"]);
    assert_eq!(test[0], "CMD", "exec form: no shell needed");
    test[1..].to_vec()
}

fn thumbnail_path(channel_id: &str) -> String {
    use md5::{Digest, Md5};
    format!(
        "/thumbs/{}.jpg",
        hex::encode(Md5::digest(channel_id.as_bytes()))
    )
}

/// Waits for `/thumbs/<md5(id)>.jpg` to be served; returns the JPEG.
fn served_thumbnail(http: u16, channel_id: &str, node: &Proc) -> Vec<u8> {
    let path = thumbnail_path(channel_id);
    wait_for(Duration::from_secs(30), || {
        match http_get_from(
            "127.0.0.1".parse().unwrap(),
            http,
            &path,
            Duration::from_secs(2),
        ) {
            Ok((200, body, _)) if body.starts_with(&[0xff, 0xd8]) => Some(body),
            _ => None,
        }
    })
    .unwrap_or_else(|| panic!("no thumbnail at {path}:\n{}", node.stderr()))
}

fn create_channel(container: &Container, name: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(&container.run_ok(&[
        "streamgate",
        "channel",
        "create",
        name,
        "--json",
    ]))
    .unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["stream_key"].as_str().unwrap().to_string(),
    )
}

/// The node's own process under `buildah run` (same PID namespace here): the
/// descendant of `root` running `/usr/local/bin/streamgate serve`.
fn node_pid(root: u32) -> u32 {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
    };
    wait_for(Duration::from_secs(10), || {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            if cmdline != b"/usr/local/bin/streamgate\0serve\0" {
                return None;
            }
            let mut p = pid;
            while let Some(up) = parent_of(p) {
                if up == root {
                    return Some(pid);
                }
                if up <= 1 {
                    break;
                }
                p = up;
            }
            None
        })
    })
    .expect("the node's process under buildah run")
}

/// The real user id a process runs as.
fn uid_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Stops the node as `docker stop` does, SIGTERM to the node's own process (`buildah
/// run` itself would kill it), and returns everything it printed.
fn stop(mut node: Proc) -> String {
    signal(node_pid(node.child.id()), "TERM");
    let status = node.wait(Duration::from_secs(30));
    let printed = node.stderr();
    assert!(
        status.is_some_and(|s| s.success()),
        "the node did not stop cleanly on SIGTERM ({status:?}):\n{printed}"
    );
    printed
}

#[test]
fn the_dockerfile_names_its_bases_as_arguments_with_official_defaults() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    assert!(text.starts_with("# syntax=docker/dockerfile:1\n"));
    for line in [
        "ARG BUILD_IMAGE=rust:1-bookworm",
        "ARG RUNTIME_IMAGE=debian:bookworm-slim",
        "FROM ${BUILD_IMAGE} AS build",
        "FROM ${RUNTIME_IMAGE}",
        "USER streamgate",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
    // The dependency layer comes before the sources are copied.
    let deps = text
        .find("cargo build --release --locked -p streamgate")
        .unwrap();
    assert!(deps < text.find("COPY . .").unwrap());
}

#[test]
fn the_image_builds_on_a_bare_debian_serves_a_thumbnail_and_runs_unprivileged() {
    require("ffmpeg", "ffmpeg");
    let tag = "localhost/streamgate:suite";
    build(tag, &[]);
    let size = size_of(tag);
    report!("image {tag}: {:.1} MB", size as f64 / 1e6);
    assert!(
        size <= MAX_IMAGE_BYTES,
        "the default image is {size} bytes, over {MAX_IMAGE_BYTES}"
    );
    let config = image_config(tag);
    assert_eq!(config["User"], "streamgate");
    assert_eq!(strings(&config["Entrypoint"]), ["streamgate"]);
    assert_eq!(strings(&config["Cmd"]), ["serve"]);

    let (container, node, rtmp, http) = start(tag, &config);
    assert_eq!(uid_of(node_pid(node.child.id())), "10001");
    // No ffmpeg in the default image: H.264 thumbnails need none.
    assert!(!container
        .run(&["sh", "-c", "command -v ffmpeg"])
        .status
        .success());

    let (id, key) = create_channel(&container, "image");
    let mut publisher = ffmpeg_publish(
        &format!("rtmp://127.0.0.1:{rtmp}/live/{key}"),
        "640x360",
        30,
    );
    let jpeg = served_thumbnail(http, &id, &node);
    report!("H.264 thumbnail served: {} bytes", jpeg.len());
    // Written by the node as the image's user, in its working directory.
    let owner = container.run_ok(&[
        "stat",
        "-c",
        "%u %U",
        &format!("/var/lib/streamgate/data{}", thumbnail_path(&id)),
    ]);
    assert_eq!(owner.trim(), "10001 streamgate");
    let (_, streams, _) = http_get_from(
        "127.0.0.1".parse().unwrap(),
        http,
        "/api/v1/streams",
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&streams).contains(&id));

    let _ = publisher.child.kill();
    let printed = stop(node);
    assert!(
        !printed.contains(&key),
        "the key appeared in what the node printed"
    );
    assert!(printed.contains("ffmpeg is not available"), "{printed}");
}

#[test]
fn the_hevc_image_decodes_hevc_with_the_ffmpeg_it_carries() {
    let tag = "localhost/streamgate:suite-hevc";
    build(tag, &["--build-arg", "HEVC_THUMBNAILS=true"]);
    report!("image {tag}: {:.1} MB", size_of(tag) as f64 / 1e6);
    let config = image_config(tag);
    let (container, node, rtmp, http) = start(tag, &config);
    let (id, key) = create_channel(&container, "hevc");
    let (seq, key_frame) = hevc_tags("640x360");
    let mut p = RawPublisher::publish(rtmp, "live", &key).expect("publish");
    p.send(9, 0, &seq);
    let sender = std::thread::spawn(move || {
        for i in 0..20u32 {
            p.send(9, i * 500, &key_frame);
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let jpeg = served_thumbnail(http, &id, &node);
    report!("HEVC thumbnail served: {} bytes", jpeg.len());
    sender.join().unwrap();
    let printed = stop(node);
    assert!(printed.contains("ffmpeg found"), "{printed}");
    assert!(!printed.contains(&key));
}
