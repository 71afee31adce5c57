#!/usr/bin/env bash
# Builds the node and runs it on the embedded default: RTMP on :1935, HTTP on :8080,
# channels in ./data/streamgate.db (SQLite, created on first use). Uses
# ./streamgate.toml when it exists. Arguments replace the default `serve`, e.g.
#   scripts/run.sh channel create my-channel
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin streamgate
if [ $# -eq 0 ]; then set -- serve; fi
exec ./target/release/streamgate "$@"
