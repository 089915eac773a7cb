#!/usr/bin/env bash
# Headless Chromium for the dashboard test (tests/e2e/test_dashboard.py), from Debian's packages.
# Idempotent and quiet: does nothing when chromium is already installed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
run_as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "chromium is missing: install it with 'apt-get install chromium' (needs root)" >&2
    exit 1
  fi
  run_as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${run_as_root[@]}" apt-get update -qq >&2
"${run_as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >&2
