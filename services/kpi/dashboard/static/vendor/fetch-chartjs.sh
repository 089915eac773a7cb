#!/usr/bin/env bash
# Refresh the vendored Chart.js UMD build from the npm registry (no build step at run time).
# Usage: bash services/kpi/dashboard/static/vendor/fetch-chartjs.sh [version]
# To move to another version: pass it, review the diff, then update VERSION and INTEGRITY below
# (`npm view chart.js@<version> dist.integrity`) so the next refresh is checked against it.
set -euo pipefail
VERSION="${1:-4.6.1}"
INTEGRITY="sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/fDNWeSqqqArixMJWkWNN6fcYvPU3HneSANFNYtRi61g=="
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack "chart.js@${VERSION}" --silent >/dev/null 2>&1
tarball="chart.js-${VERSION}.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$VERSION" = "4.6.1" ] && [ "$actual" != "$INTEGRITY" ]; then
  echo "integrity mismatch for $tarball: $actual" >&2
  exit 1
fi
tar xzf "$tarball"
cp package/dist/chart.umd.min.js "$here/chart.umd.min.js"
cp package/LICENSE.md "$here/chart.js.LICENSE.md"
echo "vendored chart.js ${VERSION} (${actual}) into ${here}"
