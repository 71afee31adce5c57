//! `streamgate`: the binary. Everything lives in the library; see `cli.rs`.

use std::process::ExitCode;

use clap::Parser;
use streamgate::cli::{self, Cli};
use streamgate::config::Config;

/// mimalloc instead of glibc's malloc. With the ingest pump (many connections served
/// in one turn) glibc kept about 2 MiB more free memory resident per 500 publishers
/// (`malloc_trim` gave it back; the live heap was unchanged). At 600 kbps mimalloc
/// holds less than glibc did before the pump; at 6 Mbps it keeps 2-3 MiB more in all
/// (large blocks after their free). Its CPU on the relay path is 0.97x glibc's at
/// 600 kbps and about equal at 6 Mbps (BENCHMARKS.md, "Relay hot path, round 4").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Subprocesses of `serve`: no configuration, no runtime.
    match &cli.command {
        cli::Command::ThumbnailWorker => {
            return match streamgate::thumbs::worker::run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("streamgate thumbnail-worker: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        cli::Command::RunLimited {
            memory_mib,
            cpu_seconds,
            command,
        } => {
            let limits = streamgate::thumbs::sandbox::DecoderLimits {
                memory_mib: *memory_mib,
                cpu_seconds: *cpu_seconds,
            };
            let e = streamgate::thumbs::sandbox::run_limited(limits, &command[0], &command[1..]);
            eprintln!("streamgate run-limited: cannot run {:?}: {e}", command[0]);
            return ExitCode::FAILURE;
        }
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamgate: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(cli::run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
