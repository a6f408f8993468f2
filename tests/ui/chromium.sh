#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the browser tests of
# `jobkit ui` (tests/ui/), unless both are already on PATH. Needs root for
# apt-get; run by the README's test command and so by CI. No browser is ever
# downloaded by a test: Selenium drives this system Chromium.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  echo "chromium.sh: $(chromium --version 2>/dev/null | head -1) already installed; skipping apt"
  exit 0
fi
[[ $(id -u) == 0 ]] || { echo "chromium.sh: installing chromium needs root (apt-get)" >&2; exit 1; }
log="${TMPDIR:-/tmp}/jobkit-chromium-apt.log"
echo "chromium.sh: apt-get install chromium chromium-driver (log: $log)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >"$log" 2>&1
apt-get install -y -q --no-install-recommends chromium chromium-driver >>"$log" 2>&1 \
  || { tail -20 "$log" >&2; exit 1; }
chromium --version
