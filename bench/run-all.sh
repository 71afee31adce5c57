#!/usr/bin/env bash
# Every figure of BENCHMARKS.md, in one go (about 90 minutes on a 2-core machine).
# Output: the tables, as Markdown, on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p streamgate -p streamgate-bench
B=target/release/sgbench
# Every relay table: streamgate (relay only, and with thumbnails as by default),
# nginx-rtmp, SRS (../shared/peers/srs/srs, or SRS_BIN) and the byte-pipe floor, three
# rounds one after the other (the median round, ratios taken within each round).
ALL=streamgate,streamgate-thumbs,nginx,srs,floor
for n in 500 1000 2000; do
  $B compare --streams "$n" --profile p360 --seconds 20 --ramp 200 --servers $ALL --rounds 3
done
for n in 20 50; do
  $B compare --streams "$n" --profile p1080 --seconds 30 --ramp 50 --servers $ALL --rounds 3
done
# The same ratios with the servers relaying at the same time (the machine's drift
# affects them alike): 400 publishers each at 600 kbps, 25 each at 6 Mbps.
$B pair --servers streamgate,nginx,floor --streams 400 --rounds 3
$B pair --servers streamgate,nginx,floor --streams 25 --profile p1080 --ramp 50 --seconds 30 --rounds 3
# Scaling with cores: one ingest thread, two (packed, the default), two spread.
$B compare --streams 1000 --profile p360 --seconds 20 --ramp 200 \
  --servers streamgate-w1,streamgate-w2,streamgate-spread --rounds 3
# The placements with the machine full: packed, round-robin, one thread, nginx-rtmp.
$B pair --servers streamgate,streamgate-spread,streamgate-w1,nginx --streams 300 --rounds 3
# SRT ingest: streamgate, SRS built with SRT (SRS_SRT_BIN, see BENCHMARKS.md "SRT
# ingest" for its build) and srt-live-transmit, one per stream.
if [ -n "${SRS_SRT_BIN:-}" ]; then SRT_PEERS=streamgate,srs; else
  echo "run-all: SRS_SRT_BIN is not set: the SRT tables run without SRS" >&2
  SRT_PEERS=streamgate
fi
$B compare-srt --streams 500 --seconds 20 --rounds 2 --servers $SRT_PEERS,floor
$B compare-srt --streams 1000 --seconds 20 --rounds 2 --servers $SRT_PEERS
# Pinned: generator and sink on core 0, the server on core 1 (streamgate with one
# ingest thread), so that no server is starved by the generator.
for n in 500 1000 2000; do
  $B compare --streams "$n" --profile p360 --seconds 20 --ramp 200 --servers streamgate,nginx,floor --rounds 1 --pin
done
$B compare-srt --streams 500 --seconds 20 --rounds 1 --servers $SRT_PEERS --pin
# Stream health's cost: on against off, one after the other and side by side.
$B compare --streams 1000 --servers streamgate,streamgate-nohealth --rounds 5 --seconds 20
$B pair --servers streamgate,streamgate-nohealth --streams 1000 --rounds 3 --seconds 20
$B storm --streams 1000 --within-ms 1000
$B auth --streams 300
$B auth --streams 300 --postgres
$B fleet-load --nodes 10 --channels 100 --seconds 60
$B fleet-load --nodes 10 --channels 1000 --seconds 60
