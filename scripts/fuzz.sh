#!/usr/bin/env bash
# Fuzzing. Always: every fuzz target compiles (on the stable toolchain, `cargo check`).
# Then, when a nightly toolchain is installed (cargo-fuzz needs it), each target runs
# for SECONDS (default 20) with libFuzzer, from its corpus under fuzz/corpus/<target>
# (kept between runs, not committed), and the run fails on any crash. cargo-fuzz is
# installed from crates.io when it is missing. Without a nightly toolchain the targets
# are only compiled, and this says so.
#
#   bash scripts/fuzz.sh            # 20 s per target (what the test suite runs)
#   bash scripts/fuzz.sh 600        # ten minutes per target
#   bash scripts/fuzz.sh 60 amf0    # one target
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
shift || true
cargo check --manifest-path fuzz/Cargo.toml --bins --quiet
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^streamgate-fuzz$')
fi
echo "fuzz: ${#targets[@]} targets compile: ${targets[*]}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly): targets compiled, not run"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  # The MPEG-TS target starts from the start of real captures (PAT, PMT, the first
  # frames), cut to 8 KiB.
  if [ "$t" = mpegts ] && [ -z "$(ls -A fuzz/corpus/mpegts)" ]; then
    for f in crates/media/tests/assets/*.ts; do
      head -c 8192 "$f" > "fuzz/corpus/mpegts/seed-$(basename "$f")"
    done
  fi
  log="$(mktemp)"
  if ! (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1); then
    tail -40 "$log"
    echo "fuzz: $t FAILED (crash input under fuzz/artifacts/$t)" >&2
    exit 1
  fi
  runs="$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || echo '?')"
  echo "fuzz: $t: $runs runs in ${seconds} s, corpus $(find "fuzz/corpus/$t" -type f | wc -l) inputs"
  rm -f "$log"
done
