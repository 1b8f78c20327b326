#!/usr/bin/env bash
# Installs everything PPGN Studio needs on a fresh machine: the pinned Python packages and,
# for the browser tests, Debian's Chromium (Playwright drives it; no browser download).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -r requirements.txt
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null || \
      echo "warning: could not install chromium; browser tests will be skipped" >&2
  fi
fi
