#!/usr/bin/env bash
# Builds the node and runs it on the embedded default: RTMP on :1935, HTTP on :8080,
# channels in ./data/streamgate.db (SQLite, created on first use), thumbnails in
# ./data/thumbs. Uses ./streamgate.toml when it exists. Arguments replace the default
# `serve`, e.g.
#   scripts/run.sh channel create my-channel
set -euo pipefail
cd "$(dirname "$0")/.."
# A compiler, pkg-config and nasm (openh264's assembly) for the build.
bash scripts/build-deps.sh
# H.264 thumbnails need nothing else; HEVC thumbnails need ffmpeg.
if ! command -v ffmpeg >/dev/null; then
  if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "run.sh: installing ffmpeg (for HEVC thumbnails)"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "run.sh: ffmpeg not found and cannot install it: HEVC streams get no thumbnails (H.264 ones do)" >&2
  fi
fi
cargo build --release --bin streamgate
if [ $# -eq 0 ]; then set -- serve; fi
exec ./target/release/streamgate "$@"
