"""The database's own floor for the fold: the same events loaded with COPY and counted by
one SQL statement, on the same server in the same run (issue 21).

What the floor does per event is the least any fold must: store the event once (with a
unique key, as the inbox does) and add it to aggregate rows (per event type, UTC day and
source, as the fold's rows are per metric, bucket and dimension). It skips what the fold
adds beyond that: per-lead state, facts, five grains of rows, exactly-once batches.

    .venv/bin/python -m bench.floor --leads 10000 [--dsn postgresql://...]

runs it alone (on a fresh embedded server unless --dsn names a database); `make bench`
runs it beside the fold (bench/__main__.py) on the fold's server.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import asyncpg

from shared.events import _Envelope

_COLUMNS = ("event_id", "event_type", "lead_id", "at", "source", "amount")


class FloorFile:
    """The events as CSV rows for COPY, written while they are produced (untimed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = open(path, "w", newline="")  # noqa: SIM115 - closed in close()
        self._csv = csv.writer(self._file)
        self.rows = 0

    def add(self, event: _Envelope) -> None:
        data: Any = getattr(event, "data", None)
        source = getattr(data, "source", None) or getattr(
            getattr(data, "dimensions", None), "source", ""
        )
        amount = getattr(data, "amount", None)
        self._csv.writerow(
            (
                event.id,
                event.type,
                event.subject,
                event.time.isoformat(),
                source if isinstance(source, str) else "",
                "" if amount is None else str(amount),
            )
        )
        self.rows += 1

    def close(self) -> None:
        self._file.close()


_SETUP = """
DROP TABLE IF EXISTS floor_events, floor_aggregates;
CREATE TABLE floor_events (
    event_id text PRIMARY KEY, event_type text NOT NULL, lead_id text NOT NULL,
    at timestamptz NOT NULL, source text NOT NULL, amount numeric
);
CREATE TABLE floor_aggregates (
    metric text, day timestamptz, source text, events bigint, amount numeric,
    PRIMARY KEY (metric, day, source)
);
"""
_AGGREGATE = """
INSERT INTO floor_aggregates
SELECT event_type, date_trunc('day', at, 'UTC'), source, count(*), sum(amount)
FROM floor_events GROUP BY 1, 2, 3
"""


async def database_floor(dsn: str, floor_file: FloorFile) -> dict[str, Any]:
    """COPY the file's events into a table and aggregate them in one statement, timed."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_SETUP)
        started = time.monotonic()
        await conn.copy_to_table(
            "floor_events", source=floor_file.path, columns=_COLUMNS, format="csv", null=""
        )
        copied = time.monotonic()
        await conn.execute(_AGGREGATE)
        done = time.monotonic()
        groups = await conn.fetchval("SELECT count(*) FROM floor_aggregates")
        await conn.execute("DROP TABLE floor_events, floor_aggregates")
    finally:
        await conn.close()
    seconds = done - started
    return {
        "events": floor_file.rows,
        "copy_seconds": round(copied - started, 2),
        "aggregate_seconds": round(done - copied, 2),
        "seconds": round(seconds, 2),
        "events_per_s": round(floor_file.rows / seconds, 1),
        "aggregate_rows": int(groups or 0),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from bench import events as synthetic

    root = Path(tempfile.mkdtemp(prefix="leadflow-floor-"))
    floor_file = FloorFile(root / "events.csv")
    for event in synthetic.histories(args.leads):
        floor_file.add(event)
    floor_file.close()
    if args.dsn:
        return await database_floor(args.dsn, floor_file)
    from cli import postgres_server

    server = postgres_server.ServerConfig(data_dir=root)
    await asyncio.to_thread(postgres_server.start, server)
    try:
        return await database_floor(server.dsn("kpi"), floor_file)
    finally:
        await asyncio.to_thread(postgres_server.stop, server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--dsn", default=None, help="a database to use instead of a new server")
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
