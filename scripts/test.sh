#!/usr/bin/env bash
# The whole test suite: installs the real components the tests use, checks formatting
# and lints, and runs every test (unit, property, end-to-end). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
