//! nginx (Debian's, with its dynamic modules) in the foreground, one worker, in a
//! folder of its own: the RTMP module as an upstream or a peer, the `stream` module as
//! a byte pipe or a balancer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The path of a dynamic module (`rtmp`, `stream`), or what to install.
pub fn module(name: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(format!("/usr/lib/nginx/modules/ngx_{name}_module.so"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: install it with `apt-get install -y libnginx-mod-{name}` (scripts/setup-test-deps.sh does this)",
            path.display()
        ))
    }
}

/// Writes `dir/nginx.conf`: foreground, one worker, its logs and pid in `dir`, the
/// `modules` loaded, `worker_connections`, then `body` (an `rtmp { }` or `stream { }`
/// block).
pub fn write_config(
    dir: &Path,
    modules: &[PathBuf],
    worker_connections: u32,
    log_level: &str,
    body: &str,
) -> std::io::Result<()> {
    let d = dir.display();
    let loads: String = modules
        .iter()
        .map(|m| format!("load_module {};\n", m.display()))
        .collect();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile 65536;\n\
             error_log {d}/error.log {log_level};\npid {d}/nginx.pid;\n{loads}\
             events {{ worker_connections {worker_connections}; }}\n{body}"
        ),
    )
}

/// Starts nginx on `dir/nginx.conf` (see [`write_config`]); stop it by its PID.
pub fn spawn(dir: &Path) -> Result<Child, String> {
    Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot start nginx ({e}): install it with `apt-get install -y nginx`")
        })
}
