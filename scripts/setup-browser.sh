#!/usr/bin/env bash
# Debian's chromium for the HTML report's browser test. Idempotent; needs root (as on CI) or sudo.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "maskwatch: installing Debian's chromium for the browser test" >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
