#!/usr/bin/env bash
# Every figure of BENCHMARKS.md, in one go (about 30 minutes on a 2-core machine).
# Output: the tables, as Markdown, on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p streamgate -p streamgate-bench
B=target/release/sgbench
# Every relay table: streamgate (relay only, and with thumbnails as by default),
# nginx-rtmp, SRS (../shared/peers/srs/srs, or SRS_BIN) and the byte-pipe floor.
ALL=streamgate,streamgate-thumbs,nginx,srs,floor
for n in 500 1000 2000; do
  $B compare --streams "$n" --profile p360 --seconds 20 --ramp 200 --servers $ALL
done
for n in 20 50; do
  $B compare --streams "$n" --profile p1080 --seconds 20 --ramp 50 --servers $ALL
done
# Scaling with cores: one ingest thread, then two.
$B compare --streams 1000 --profile p360 --seconds 20 --ramp 200 --servers streamgate-w1,streamgate-w2
$B storm --streams 1000 --within-ms 1000
$B auth --streams 300
$B auth --streams 300 --postgres
$B fleet-load --nodes 10 --channels 100 --seconds 60
$B fleet-load --nodes 10 --channels 1000 --seconds 60
