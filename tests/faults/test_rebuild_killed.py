"""A KPI rebuild SIGKILLed mid-way, twice, then restarted, gives the live fold's numbers.

The rebuild folds windows in memory, writes each in concurrent transactions, records its
progress after them, stages its aggregate increments and adds them beside the windows and
at the switch (services/kpi/fold/rebuild.py). Small windows and a small compaction
threshold put every one of those steps in the path of the kills. The KPI runs as a process
of its own, on a private PostgreSQL server and Kafka broker.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.faults.cluster import Cluster, postgres_bin
from tests.fixtures.kpi.kafka import publish
from tests.fixtures.kpi.scenario import generate

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(
        postgres_bin() is None and not os.environ.get("CI"),
        reason="PostgreSQL server binaries are not installed (CI installs them)",
    ),
    pytest.mark.timeout(600),
]

PERIODS = [("2026-01-01", "2026-04-01"), ("2026-02-10", "2026-03-20"), ("2026-03-01", "2026-03-02")]
SMALL_REBUILD = {
    "LEADFLOW_KPI_REBUILD_MAX_RECORDS": "20",
    "LEADFLOW_KPI_REBUILD_WINDOW_EVENTS": "60",
    "LEADFLOW_KPI_REBUILD_COMPACT_DELTAS": "120",
    "LEADFLOW_KPI_RETIRED_GRACE_SECONDS": "3600",
}
DEV = {"Authorization": "Bearer dev"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    built = Cluster.create(tmp_path, SMALL_REBUILD, {"intake": 0, "qualifier": 0, "kpi": 1})
    try:
        yield built
    finally:
        built.destroy()


async def _until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached in {seconds}s")


async def _answers(url: str) -> list[Any]:
    async with httpx.AsyncClient(base_url=url, headers=DEV, timeout=30) as http:
        out = []
        for start, end in PERIODS:
            r = await http.get("/v1/kpi/summary", params={"from": start, "to": end})
            r.raise_for_status()
            out.append(r.json()["metrics"])
        r = await http.get("/v1/kpi/funnel", params={"from": "2026-01-01", "to": "2026-04-01"})
        r.raise_for_status()
        out.append(r.json())
        return out


async def _status(url: str, status_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, headers=DEV, timeout=30) as http:
        r = await http.get(status_url)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body


async def test_a_rebuild_killed_twice_gives_the_live_folds_numbers(cluster: Cluster) -> None:
    s = generate(13, first=date(2026, 1, 1), last=date(2026, 4, 1), per_month=100)
    events = [e for e in s.waves[0] if getattr(e.data, "currency", "RUB") == "RUB"]  # type: ignore[attr-defined]
    await publish(cluster.broker.bootstrap_servers, events)
    kpi = cluster.replicas["kpi"][0]

    async def live_folded() -> bool:
        # The inbox row of an event commits with its fold. Every lead received is not enough:
        # the other topics' events can still be on their way (a CI run once read 764 of 1,266).
        conn = await asyncpg.connect(cluster.postgres.dsn("kpi"))
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM inbox") == len(events))
        finally:
            await conn.close()

    await _until(live_folded, "the live fold of every event")
    before = await _answers(kpi.url)

    async with httpx.AsyncClient(base_url=kpi.url, headers=DEV, timeout=30) as http:
        r = await http.post("/v1/admin/rebuild")
        assert r.status_code == 202, r.text
        status_url = r.json()["status_url"]

    kills: list[int] = []
    for _ in range(2):
        done_so_far = (await _status(kpi.url, status_url))["offsets_done"] or 0

        async def moved_on(after: int = done_so_far) -> bool:
            body = await _status(kpi.url, status_url)
            done, total = body["offsets_done"] or 0, body["offsets_total"] or 0
            return body["status"] == "running" and after < done < total

        await _until(moved_on, "the rebuild's progress")
        await asyncio.to_thread(kpi.kill)  # SIGKILL: transactions under way die with it
        kills.append(await _progress(cluster))
        await asyncio.to_thread(kpi.start)

    async def finished() -> bool:
        return (await _status(kpi.url, status_url))["status"] == "done"

    await _until(finished, "the rebuild's switch")
    # Both kills landed mid-way, with windows folded before them and after.
    total = (await _status(kpi.url, status_url))["offsets_total"]
    assert all(0 < done < total for done in kills), (kills, total)
    conn = await asyncpg.connect(cluster.postgres.dsn("kpi"))
    try:
        assert await conn.fetchval("SELECT count(*) FROM kpi_fact_deltas") == 0
        # The rebuilt generation's tables are the live one's, row for row.
        for table, columns in (
            (
                "kpi_aggregates",
                "rollup, grain, bucket_start, metric, bin, source, channel, "
                "campaign, route, definition_version, value",
            ),
            (
                "kpi_facts",
                "lead_id, metric, item, at, value, bin, source, channel, campaign, "
                "route, definition_version",
            ),
            ("kpi_leads", "lead_id, state::text"),
            ("kpi_fine_counts", "metric, bin, grain, bucket_start, sub, count, total, squares"),
        ):
            rows = {}
            for generation in (1, 2):
                where = f"generation = {generation}"
                if table == "kpi_aggregates":
                    where += " AND value <> 0"
                if table == "kpi_fine_counts":
                    where += " AND (count, total, squares) <> (0, 0, 0)"
                found = await conn.fetch(f"SELECT {columns} FROM {table} WHERE {where}")
                rows[generation] = {tuple(r) for r in found}
            only_live, only_rebuilt = (
                sorted(rows[a] - rows[b], key=repr) for a, b in ((1, 2), (2, 1))
            )
            assert rows[1] and not only_live and not only_rebuilt, (table, only_live, only_rebuilt)
    finally:
        await conn.close()
    assert _differences(before, await _answers(kpi.url)) == []


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two answers differ, as `path: a != b` (the whole answers are too long to read)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(a.keys() | b.keys())
            for d in _differences(a.get(k), b.get(k), f"{path}.{k}")
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


async def _progress(cluster: Cluster) -> int:
    conn = await asyncpg.connect(cluster.postgres.dsn("kpi"))
    try:
        done = await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM kpi_rebuild_progress WHERE generation = 2"
        )
        return int(done)
    finally:
        await conn.close()
