//! `streamgate`: the binary. Everything lives in the library; see `cli.rs`.

use std::process::ExitCode;

use clap::Parser;
use streamgate::cli::{self, Cli};
use streamgate::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, cli::Command::ThumbnailWorker) {
        // A subprocess of `serve`: no configuration, no runtime, just stdin/stdout.
        return match streamgate::thumbs::worker::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("streamgate thumbnail-worker: {e}");
                ExitCode::FAILURE
            }
        };
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
