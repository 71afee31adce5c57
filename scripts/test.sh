#!/usr/bin/env bash
# The whole test suite: installs the real components the tests use, checks formatting
# and lints, and runs every test (unit, property, end-to-end). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-deps.sh
bash scripts/setup-test-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The protocol crates and the node (unit, property, in-process and end-to-end tests),
# then the load smoke test on its own, so that its 20 publishers never share the
# machine with the end-to-end tests.
cargo test --workspace --exclude streamgate-bench
# README's `cargo install --path node` works (from the build above: --debug reuses it).
install_root=$(mktemp -d)
CARGO_TARGET_DIR=target cargo install --quiet --locked --debug --path node --root "$install_root"
"$install_root/bin/streamgate" --version
rm -rf "$install_root"
# One at a time: the relay smoke measures, the fleet simulation loads a database.
cargo test -p streamgate-bench -- --test-threads=1
# Every fuzz target compiles; with a nightly toolchain each runs 20 s (scripts/fuzz.sh).
bash scripts/fuzz.sh 20
