//! The pinned comparison (`--pin`): the generator and the sink (this process) on one
//! core, the server under test and every process it started on another. On a 2-core
//! machine a server then has a core to itself, as it would have on a server machine,
//! and none of them is starved by the load generator (a server that reads late looks
//! cheap when it is starved). streamgate runs with `rtmp.workers = 1` in this mode.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

static PINNED: AtomicBool = AtomicBool::new(false);

/// The core of the generator and the sink, and the core of the server.
pub const GENERATOR_CORE: usize = 0;
pub const SERVER_CORE: usize = 1;

/// Turns the mode on and pins this process (every thread) to [`GENERATOR_CORE`].
pub fn enable() -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()?.get();
    anyhow::ensure!(cores >= 2, "--pin needs 2 cores, this machine has {cores}");
    set(std::process::id(), GENERATOR_CORE)?;
    PINNED.store(true, Ordering::Relaxed);
    Ok(())
}

pub fn enabled() -> bool {
    PINNED.load(Ordering::Relaxed)
}

/// Pins every thread of `pid` to `core` (`taskset -a -p`).
fn set(pid: u32, core: usize) -> anyhow::Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()])
        .output()
        .map_err(|e| anyhow::anyhow!("taskset (util-linux): {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "taskset -a -p -c {core} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The processes started by `pid`, recursively (from `/proc/*/stat`).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The parent is the second field after the command name in parentheses.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found
}

/// When the mode is on: pins `pids` and everything they started to [`SERVER_CORE`].
pub fn server(pids: &[u32]) -> anyhow::Result<()> {
    if !enabled() {
        return Ok(());
    }
    for pid in pids {
        for p in descendants(*pid) {
            set(p, SERVER_CORE)?;
        }
    }
    Ok(())
}
