#!/usr/bin/env bash
# From `git clone` to a live stream on a bare Debian with only the Rust toolchain: the
# README's first command (scripts/run.sh) on a fresh machine, timed.
#
# The "machine" is a buildah container (host network) of the image the suite makes in
# node/tests/image.rs: Debian bookworm from mmdebstrap plus this machine's Rust
# toolchain, nothing else (run that test first). git is installed first (not timed: a
# machine that clones has it), then the clock runs over: clone (from this checkout's
# committed HEAD), scripts/run.sh (build deps, ffmpeg, release build, serve) until the
# node says ready, a channel, and a real ffmpeg publish until /api/v1/streams shows it
# live. Prints each step's seconds and the total.
#
#   bash bench/clone-to-live.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
base="localhost/streamgate-test-rust:$(rustc --version | awk '{print $2}')"
buildah inspect --type image "$base" >/dev/null 2>&1 || {
  echo "no $base: run 'cargo test -p streamgate --test image' first (it makes it)" >&2
  exit 1
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rtmp=$(port); http=$(port); srt=$(port)
work=$(mktemp -d)
git clone -q --bare "$repo" "$work/streamgate.git"
c=$(buildah from --quiet "$base")
node_pid=""
cleanup() {
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null || true
  buildah rm "$c" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mnt=$(buildah mount "$c")
cp -a "$work/streamgate.git" "$mnt/tmp/streamgate.git"
buildah umount "$c" >/dev/null
run() {
  buildah run --isolation chroot --network host \
    --env STREAMGATE_RTMP_LISTEN="127.0.0.1:$rtmp" \
    --env STREAMGATE_HTTP_LISTEN="127.0.0.1:$http" \
    --env STREAMGATE_SRT_LISTEN="127.0.0.1:$srt" \
    "$c" -- "$@"
}
run sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git >/dev/null'

t0=$(date +%s.%N)
lap() { printf '%-44s %6.1f s\n' "$1" "$(echo "$(date +%s.%N) - $t0" | bc)"; }
run git clone -q /tmp/streamgate.git /root/streamgate
lap "git clone"
run bash -c 'cd /root/streamgate && scripts/run.sh' >"$work/node.log" 2>&1 &
node_pid=$!
until grep -q "ready" "$work/node.log" 2>/dev/null; do
  kill -0 "$node_pid" 2>/dev/null || { tail -30 "$work/node.log"; exit 1; }
  sleep 1
done
lap "scripts/run.sh: node ready"
key=$(run bash -c 'cd /root/streamgate && ./target/release/streamgate channel create clone-to-live --json' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["stream_key"])')
lap "channel created"
ffmpeg -nostdin -v error -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine \
  -c:v libx264 -preset veryfast -g 60 -c:a aac -t 30 -f flv "rtmp://127.0.0.1:$rtmp/live/$key" &
ff=$!
until curl -fsS "http://127.0.0.1:$http/api/v1/streams" | grep -q clone-to-live; do sleep 0.2; done
lap "live in /api/v1/streams (total)"
kill "$ff" 2>/dev/null || true
grep -F "$key" "$work/node.log" && { echo "the key appeared in the node's output" >&2; exit 1; }
exit 0
