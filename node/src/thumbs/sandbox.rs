//! How decoder processes start: they parse hostile video, so they get nothing they do
//! not need. The environment is cleared (only `PATH`, to find ffmpeg, and what the
//! caller adds): no database URL or other secret in `/proc/<pid>/environ`. Address
//! space and CPU time are limited by our own binary before it becomes the decoder
//! (`streamgate run-limited ... -- PROGRAM ARGS`, which sets the limits on itself and
//! then execs), so a decoder bug can neither eat the machine's memory nor spin.

use std::ffi::OsString;
use std::path::Path;

/// Limits of one decoder process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Address space, MiB.
    pub memory_mib: u64,
    /// CPU time, seconds (SIGXCPU then, SIGKILL a second later).
    pub cpu_seconds: u64,
}

/// `exe run-limited --memory-mib M --cpu-seconds C -- program args...`, with a cleared
/// environment (`PATH` kept).
pub fn limited_command(
    exe: &Path,
    limits: DecoderLimits,
    program: impl Into<OsString>,
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(exe);
    c.arg("run-limited")
        .arg("--memory-mib")
        .arg(limits.memory_mib.to_string())
        .arg("--cpu-seconds")
        .arg(limits.cpu_seconds.to_string())
        .arg("--")
        .arg(program.into())
        .args(args.into_iter().map(Into::into));
    clear_environment(&mut c);
    c
}

/// Leaves only `PATH` in the environment of `c`.
pub fn clear_environment(c: &mut tokio::process::Command) {
    c.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        c.env("PATH", path);
    }
}

/// `streamgate run-limited`: sets the limits on this process, then replaces it with
/// `program args` (the limits are inherited). Returns only when that failed.
pub fn run_limited(limits: DecoderLimits, program: &OsString, args: &[OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let bytes = limits.memory_mib.saturating_mul(1024 * 1024);
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes) {
        return e;
    }
    let cpu = limits.cpu_seconds;
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu.saturating_add(1)) {
        return e;
    }
    std::process::Command::new(program).args(args).exec()
}
