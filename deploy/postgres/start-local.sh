#!/usr/bin/env bash
# Install (Debian's package) and start a local PostgreSQL for tests and benchmarks, and
# create the role `leadflow` (password `leadflow`) that may create databases.
# Prints the SQLAlchemy URL of its `postgres` database on the last line.
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -q "^$version main$"; then
  pg_createcluster "$version" main >&2
fi
wait_ready() {
  for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p 5432; then break; fi
    sleep 0.5
  done
  pg_isready -h 127.0.0.1 -p 5432 >&2
}

pg_ctlcluster "$version" main start >&2 2>/dev/null || true
wait_ready

su postgres -c "psql -q -v ON_ERROR_STOP=1" >&2 <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'leadflow') THEN
    CREATE ROLE leadflow LOGIN PASSWORD 'leadflow' CREATEDB;
  END IF;
END $$;
-- Tests drop their databases WITH (FORCE), which must end lingering sessions.
GRANT pg_signal_backend TO leadflow;
SQL
# Debian's defaults suit a tiny machine: 128 MB of buffers and a checkpoint every 1 GB of
# WAL, after which each page written again is logged whole. The KPI store of a million
# leads is gigabytes of randomly updated index pages, so those defaults turn the fold into
# WAL writing (docs/benchmarks.md). Settings of the kind any production server gets:
su postgres -c "psql -q -v ON_ERROR_STOP=1" >&2 <<'SQL'
ALTER SYSTEM SET shared_buffers = '1GB';
ALTER SYSTEM SET max_wal_size = '8GB';
ALTER SYSTEM SET checkpoint_timeout = '15min';
ALTER SYSTEM SET wal_compression = 'on';
SQL
if [ "$(su postgres -c "psql -Atc 'SHOW shared_buffers'")" != "1GB" ]; then
  pg_ctlcluster "$version" main restart >&2  # shared_buffers takes a restart
  wait_ready
else
  su postgres -c "psql -q -c 'SELECT pg_reload_conf()'" >/dev/null
fi

echo "postgresql+asyncpg://leadflow:leadflow@127.0.0.1:5432/postgres"
