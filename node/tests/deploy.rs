//! The deployment files, checked with the real tools this machine has: systemd's own
//! verifier on the unit, nginx on the thumbnail site (and serving a thumbnail), a YAML
//! parse of the compose file held against what docs/operating.md says, the node itself on
//! the environment the compose file gives it, and the kernel on sysctl.conf.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap()
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    require("systemd-analyze", "systemd");
    let unit = read("streamgate@.service");
    for line in [
        "LimitNOFILE=1048576",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/streamgate",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "Type=notify",
        "NotifyAccess=main",
        "RestartPreventExitStatus=2",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    // Verified as an instance, with ExecStart pointing at this build.
    let dir = TempDir::new("unit");
    let path = dir.0.join("streamgate@blue.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/streamgate", bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains(&path.display().to_string()),
        "systemd has remarks about the unit: {stderr}"
    );
}

/// `Type=notify`: the node sends READY=1 (with its pid) once every listener is bound,
/// and STOPPING=1 on SIGTERM; a configuration error exits with the status the unit
/// does not restart on.
#[test]
fn the_node_tells_systemd_when_it_is_ready_and_a_config_error_is_not_restarted() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new("notify");
    let path = dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut node = Node::start_with_env(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within 20 s");
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(message, format!("READY=1\nMAINPID={}", node.pid()));
    // Every listener answers once READY came.
    for port in [node.rtmp_port, node.http_port, node.admin_port.unwrap()] {
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("bound before READY");
    }
    assert!(node.terminate());
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");

    // A configuration error: status 2, with the key named; no READY.
    let cfg = write_file(&dir.0, "bad.toml", "[rtmp]\nchunk_size = 1\n");
    let out = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .env("NOTIFY_SOCKET", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rtmp.chunk_size"));
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        socket.recv(&mut buf).is_err(),
        "no READY from a node that did not start"
    );
}

/// `deploy/prometheus-alerts.yml` and `deploy/grafana-dashboard.json` are valid (the
/// rules and every panel's query through `promtool check rules`), and every series and
/// label they use is in the /metrics of a node that relays, thumbnails, writes its
/// status and has webhooks: no alert or panel watches something that does not exist.
#[test]
fn the_alert_rules_and_the_dashboard_use_only_real_series() {
    require("promtool", "prometheus");
    let promtool = |file: &Path| {
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(file)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {said}", file.display());
        said
    };
    assert!(promtool(&deploy("prometheus-alerts.yml")).contains("SUCCESS: 9 rules found"));
    let rules = read("prometheus-alerts.yml");
    let mut queries: Vec<String> = rules
        .split("expr:")
        .skip(1)
        .map(|e| e.split("\n      ").next().unwrap_or(e).to_string())
        .collect();
    // Every panel query, as a recording rule, with Grafana's variables filled in.
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana-dashboard.json")).expect("the dashboard is JSON");
    let panel_queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
        })
        .collect();
    assert!(panel_queries.len() >= 15, "{}", panel_queries.len());
    let dir = TempDir::new("grafana");
    let mut recording = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (i, q) in panel_queries.iter().enumerate() {
        recording.push_str(&format!(
            "      - record: grafana_panel_{i}\n        expr: {}\n",
            serde_json::to_string(q).unwrap()
        ));
    }
    let file = write_file(&dir.0, "panels.yml", &recording);
    assert!(promtool(&file).contains(&format!("SUCCESS: {} rules found", panel_queries.len())));
    queries.extend(panel_queries);

    let dead = free_port();
    let node = Node::start(&format!(
        "[relay]\ntargets = [\"rtmp://127.0.0.1:{dead}/live/{{channel_id}}\"]\n\
         [thumbnails]\ndir = \"thumbs\"\ninterval = \"2s\"\nwidth = 160\n\
         [webhooks]\nurls = [\"http://127.0.0.1:{dead}/hooks\"]\nallow_private_targets = true\n\
         secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
    ));
    let (id, key) = node.create_channel("watched");
    let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 6);
    wait_for(Duration::from_secs(15), || {
        node.stream(&id)
            .filter(|s| !s["thumbnail_updated_at"].is_null())
            .map(|_| ())
    })
    .expect("a thumbnail");
    let (_, _, body) = node.http_get("/metrics");
    let scrape = String::from_utf8_lossy(&body).to_string();
    let lines_of = |name: &str| -> Vec<&str> {
        scrape
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
            })
            .collect()
    };
    let mut checked = 0;
    for query in &queries {
        let names = series_names(query);
        for name in &names {
            assert!(
                !lines_of(name).is_empty(),
                "{name} (in `{query}`) is not in /metrics:\n{scrape}"
            );
        }
        // Labels the query groups by or selects on: on one of its series.
        for label in query_labels(query) {
            if ["instance", "job", "le"].contains(&label.as_str()) {
                continue;
            }
            assert!(
                names.iter().any(|n| lines_of(n)
                    .iter()
                    .any(|l| l.contains(&format!("{label}=\"")))),
                "label {label} (in `{query}`) is on none of its series"
            );
        }
        checked += names.len();
    }
    assert!(checked >= 25, "{checked}");
    assert!(scrape.contains(&format!(
        "streamgate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    let _ = ff.wait(Duration::from_secs(20));
    node.assert_never_printed(&key);
}

/// The node's series a query names (`streamgate_*`, `process_*`).
fn series_names(query: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, _) in query.match_indices(|c: char| c.is_ascii_lowercase()) {
        let before = query[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let word: String = query[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if (word.starts_with("streamgate_") || word.starts_with("process_")) && !out.contains(&word)
        {
            out.push(word);
        }
    }
    out
}

/// The labels of a query's `by (...)` clauses and `{...}` selectors.
fn query_labels(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in query.split("by (").skip(1) {
        let list = &part[..part.find(')').unwrap()];
        out.extend(list.split(',').map(|l| l.trim().to_string()));
    }
    for part in query.split('{').skip(1) {
        let selector = &part[..part.find('}').unwrap_or(part.len())];
        for matcher in selector.split(',') {
            let key: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !key.is_empty() {
                out.push(key);
            }
        }
    }
    out
}

#[test]
fn nginx_serves_the_thumbnail_folder_as_the_snippet_says() {
    require("nginx", "nginx");
    let dir = TempDir::new("nginx-site");
    let thumbs = dir.0.join("thumbs");
    std::fs::create_dir_all(&thumbs).unwrap();
    let name = "0123456789abcdef0123456789abcdef.jpg";
    std::fs::write(thumbs.join(name), [0xFF, 0xD8, 0xFF, 0xD9]).unwrap();
    std::fs::write(thumbs.join("secret.txt"), "no").unwrap();
    let snippet = read("nginx-thumbs.conf")
        .replace("/var/lib/streamgate/thumbs", &thumbs.display().to_string());
    let snippet_path = dir.0.join("streamgate-thumbs.conf");
    std::fs::write(&snippet_path, snippet).unwrap();
    let port = free_port();
    let site = read("nginx-thumbs-site.conf")
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "/etc/nginx/snippets/streamgate-thumbs.conf",
            &snippet_path.display().to_string(),
        );
    let d = dir.0.display();
    let conf = dir.0.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{}}\nhttp {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; \
             fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n{site}\n}}\n"
        ),
    )
    .unwrap();
    run_ok(
        Command::new("nginx")
            .arg("-t")
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf),
    );
    let nginx = Proc::spawn(
        Command::new("nginx")
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf),
    );
    let get = |path: &str| {
        wait_for(Duration::from_secs(10), || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).ok()?;
            Some(String::from_utf8_lossy(&answer).into_owned())
        })
        .unwrap_or_else(|| {
            panic!(
                "nginx does not answer {path}: {} {}",
                std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default(),
                nginx.stderr.lock().unwrap()
            )
        })
    };
    let ok = get(&format!("/thumbs/{name}"));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let head = ok.to_ascii_lowercase();
    assert!(
        head.contains("cache-control: no-store, no-cache, must-revalidate, max-age=0"),
        "{ok}"
    );
    assert!(head.contains("access-control-allow-origin: *"), "{ok}");
    assert!(head.contains("content-type: image/jpeg"), "{ok}");
    for bad in [
        "/thumbs/secret.txt",
        "/thumbs/../nginx.conf",
        "/",
        "/thumbs/",
    ] {
        let answer = get(bad);
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"),
            "{bad}: {answer}"
        );
    }
}

#[test]
fn the_compose_file_is_what_the_readme_says_and_the_node_runs_on_its_environment() {
    let compose = yaml_rust2::YamlLoader::load_from_str(&read("docker-compose.yml"))
        .unwrap()
        .remove(0);
    let services = &compose["services"];
    let sg = &services["streamgate"];
    assert_eq!(
        sg["build"]["dockerfile"].as_str(),
        Some("deploy/Dockerfile")
    );
    assert_eq!(sg["ulimits"]["nofile"]["hard"].as_i64(), Some(1048576));
    // Only namespaced network sysctls can be set in a container.
    let sysctls = sg["sysctls"].as_hash().unwrap();
    assert!(!sysctls.is_empty());
    for (k, _) in sysctls {
        let k = k.as_str().unwrap();
        assert!(k.starts_with("net."), "{k} cannot be set per container");
        assert!(
            Path::new("/proc/sys").join(k.replace('.', "/")).exists(),
            "{k} is not a kernel setting"
        );
    }
    assert!(sg["stop_grace_period"].as_str().is_some());
    let volumes: Vec<&str> = sg["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        volumes.iter().any(|v| v.starts_with("thumbs:")),
        "{volumes:?}"
    );
    // The optional Postgres is a profile; nginx serves the thumbnails from files that exist.
    assert_eq!(
        services["postgres"]["profiles"][0].as_str(),
        Some("postgres")
    );
    for v in services["thumbs"]["volumes"].as_vec().unwrap() {
        let host = v.as_str().unwrap().split(':').next().unwrap();
        if host.starts_with("./") {
            assert!(deploy(host.trim_start_matches("./")).is_file(), "{host}");
        }
    }
    // The environment it gives the node is valid configuration.
    let printed = check_config_with(&sg["environment"]);
    assert!(
        printed.contains("/var/lib/streamgate/thumbs"),
        "the thumbnails volume is where the node writes: {printed}"
    );
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operating.md"))
            .unwrap();
    assert!(readme.contains("docker compose -f deploy/docker-compose.yml up -d"));
    assert!(readme.contains("--profile postgres"));
}

/// Runs `streamgate check-config` on the image's config file (the example one, see
/// the Dockerfile) with the environment a compose service gives the node; returns
/// what it printed (the effective configuration).
fn check_config_with(environment: &yaml_rust2::Yaml) -> String {
    let dir = TempDir::new("compose-env");
    let mut cmd = Command::new(bin());
    cmd.arg("check-config").current_dir(&dir.0).env(
        "STREAMGATE_CONFIG",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../streamgate.example.toml"),
    );
    for (k, v) in environment.as_hash().expect("an environment map") {
        let value = v.as_str().unwrap();
        // ${VAR:-default}: the default.
        let value = value
            .strip_prefix("${")
            .and_then(|r| r.split_once(":-"))
            .map_or(value, |(_, d)| d.trim_end_matches('}'));
        cmd.env(k.as_str().unwrap(), value);
    }
    let out = run_ok(&mut cmd);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A service's key, looked up through a YAML merge key (`<<: *node`) when the service
/// does not set it itself.
fn merged<'a>(service: &'a yaml_rust2::Yaml, key: &str) -> &'a yaml_rust2::Yaml {
    let own = &service[key];
    if own.is_badvalue() {
        &service["<<"][key]
    } else {
        own
    }
}

#[test]
fn the_fleet_compose_file_runs_two_nodes_behind_the_balancer_they_trust() {
    let compose = yaml_rust2::YamlLoader::load_from_str(&read("docker-compose.fleet.yml"))
        .unwrap()
        .remove(0);
    let services = &compose["services"];
    let balancer = &services["balancer"];
    let balancer_ip = balancer["networks"]["fleet"]["ipv4_address"]
        .as_str()
        .expect("the balancer has a fixed address");
    // It runs the balancer of deploy/nginx-stream.conf (the one the fleet test runs).
    let mounts: Vec<&str> = balancer["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(mounts.contains(&"./nginx-stream.conf:/etc/nginx/streamgate-stream.conf:ro"));
    assert!(mounts.contains(&"./nginx-balancer.conf:/etc/nginx/nginx.conf:ro"));
    assert!(read("nginx-balancer.conf").contains("include /etc/nginx/streamgate-stream.conf;"));
    let mut ids = Vec::new();
    for name in ["node-a", "node-b"] {
        let node = &services[name];
        assert_eq!(
            merged(node, "build")["dockerfile"].as_str(),
            Some("deploy/Dockerfile")
        );
        assert_eq!(
            merged(node, "ulimits")["nofile"]["hard"].as_i64(),
            Some(1048576)
        );
        assert!(read("nginx-stream.conf").contains(&format!("server {name}:1935")));
        assert!(read("nginx-stream.conf").contains(&format!("server {name}:8890")));
        let printed = check_config_with(&node["environment"]);
        // Postgres, its own node id, and PROXY headers from the balancer only.
        assert!(
            printed.contains("postgres://postgres:***@postgres:5432"),
            "{printed}"
        );
        assert!(
            printed.contains(&format!("node_id = \"{name}\"")),
            "{printed}"
        );
        assert!(
            printed.contains(&format!("trusted_proxies = [\"{balancer_ip}/32\"]")),
            "{printed}"
        );
        ids.push(name);
    }
    // The tables exist before the nodes start.
    assert_eq!(services["migrate"]["command"][0].as_str(), Some("migrate"));
    assert_eq!(
        merged(&services["node-a"], "depends_on")["migrate"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    // nginx accepts the balancer's configuration (the nodes' names replaced by
    // addresses this machine resolves).
    require("nginx", "nginx libnginx-mod-stream");
    let dir = TempDir::new("nginx-balancer");
    let d = dir.0.display();
    let stream = write_file(
        &dir.0,
        "streamgate-stream.conf",
        &read("nginx-stream.conf")
            .replace("node-a:1935", "127.0.0.1:1")
            .replace("node-b:1935", "127.0.0.1:2")
            .replace("node-a:8890", "127.0.0.1:3")
            .replace("node-b:8890", "127.0.0.1:4")
            .replace(
                "listen 1935;",
                &format!("listen 127.0.0.1:{};", free_port()),
            )
            .replace(
                "listen 8890 udp;",
                &format!("listen 127.0.0.1:{} udp;", free_port()),
            ),
    );
    let conf = write_file(
        &dir.0,
        "nginx.conf",
        &format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n{}",
            read("nginx-balancer.conf")
                .replace("/etc/nginx/streamgate-stream.conf", &stream.display().to_string())
        ),
    );
    run_ok(
        Command::new("nginx")
            .args(["-t", "-p"])
            .arg(&dir.0)
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .arg("-c")
            .arg(&conf),
    );
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operating.md"))
            .unwrap();
    assert!(readme.contains("docker compose -f deploy/docker-compose.fleet.yml up -d"));
}

#[test]
fn every_sysctl_line_says_why_and_names_a_real_setting() {
    let text = read("sysctl.conf");
    let lines: Vec<&str> = text.lines().collect();
    let mut settings = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        settings += 1;
        let key = line.split('=').next().unwrap().trim();
        assert!(
            i > 0 && lines[i - 1].starts_with("# "),
            "{key} has no comment above it"
        );
        assert!(
            Path::new("/proc/sys").join(key.replace('.', "/")).exists(),
            "{key} is not a setting of this kernel"
        );
    }
    assert!(settings >= 6);
}
