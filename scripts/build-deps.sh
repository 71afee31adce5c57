#!/usr/bin/env bash
# What building streamgate needs besides the Rust toolchain: a C/C++ compiler (SQLite,
# ring, mimalloc and openh264 are C/C++), pkg-config, and nasm (openh264's SIMD
# assembly: without it the thumbnail decoder runs without its SSE2/AVX2 kernels, 2-3 %
# more CPU per thumbnail as measured in BENCHMARKS.md). Installs them on Debian/Ubuntu; elsewhere says what to install.
#
# openh264's build script decides once whether to assemble: a build made before nasm
# was installed stays without assembly until openh264 is built again, so when this
# script installs nasm it also clears openh264's cached build.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v cc >/dev/null || need+=(gcc)
command -v c++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v pkg-config >/dev/null || need+=(pkg-config)
case "$(uname -m)" in
  x86_64|i?86) command -v nasm >/dev/null || need+=(nasm) ;;
esac
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null; }; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "build-deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [[ " ${need[*]} " == *" nasm "* ]]; then
    cargo clean -q -p openh264-sys2 2>/dev/null || true
    cargo clean -q -p openh264-sys2 --release 2>/dev/null || true
  fi
else
  echo "build-deps: missing ${need[*]}: install them with your system's packages (a C and C++ compiler, make, pkg-config, nasm) and run this again" >&2
  exit 1
fi
