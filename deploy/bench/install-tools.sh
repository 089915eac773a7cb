#!/usr/bin/env bash
# The benchmark's load generator: wrk, from Debian's packages.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "wrk is missing: install it with 'apt-get install wrk' (needs root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq wrk >&2
