#!/usr/bin/env bash
# Every figure of BENCHMARKS.md, in one go (about 20 minutes on a 2-core machine).
# Output: the tables, as Markdown, on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p streamgate -p streamgate-bench
B=target/release/sgbench
for n in 100 500 1000 2000; do
  $B compare --streams "$n" --profile p360 --seconds 20 --ramp 200
done
for n in 20 50; do
  $B compare --streams "$n" --profile p1080 --seconds 20 --ramp 50
done
$B storm --streams 1000 --within-ms 1000
$B auth --streams 300
$B auth --streams 300 --postgres
$B fleet-load --nodes 10 --channels 100 --seconds 60
$B fleet-load --nodes 10 --channels 1000 --seconds 60
