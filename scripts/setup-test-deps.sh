#!/usr/bin/env bash
# Installs the real components the test suite runs against, from Debian's packages:
# ffmpeg/ffprobe (publisher, checks; RTMP and SRT), GStreamer (a second RTMP and SRT
# client), libsrt's srt-live-transmit (a third SRT client) and libsrt itself (the
# benchmark's libsrt callers), nginx with the
# RTMP module (relay upstream), PostgreSQL (channel store), systemd's verifier (the
# unit in deploy/), Chromium with its WebDriver (the dashboard test), OBS Studio on a
# virtual display (an RTMPS publish), libfaketime (a node whose clock is off) and
# promtool (the alert rules in deploy/ are checked), buildah and mmdebstrap (the
# container image is built from a Debian made here, and run).
# Installs only what is missing; fails loudly when it cannot install.
set -euo pipefail

packages=(
  ffmpeg
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  srt-tools libsrt1.5-openssl
  nginx libnginx-mod-rtmp libnginx-mod-stream
  postgresql
  systemd
  chromium chromium-driver
  obs-studio xvfb xauth
  faketime
  prometheus
  python3
  buildah mmdebstrap
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-test-deps: all test components present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup-test-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "setup-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages start nginx and a PostgreSQL cluster on their default ports;
# tests start their own instances on free ports, so stop the packaged ones.
$SUDO systemctl stop nginx 2>/dev/null || $SUDO service nginx stop 2>/dev/null || true
$SUDO systemctl stop prometheus 2>/dev/null || $SUDO service prometheus stop 2>/dev/null || true
echo "setup-test-deps: done"
