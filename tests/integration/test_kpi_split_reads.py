"""A large duration read on PostgreSQL is split between two connections sharing a snapshot:
the answer is the one a single connection gives, and both halves see the same database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kpi.fold.apply import FOLD_VERSION, fold_into
from services.kpi.fold.consumer import in_transaction
from services.kpi.main import prepare_active_generation
from services.kpi.reads import sql, summary
from services.kpi.reads.evaluate import Scope
from services.kpi.reads.periods import Period
from services.kpi.store import generations
from services.kpi.store.tables import facts
from shared.db import create_engine
from shared.events import Event
from shared.migrations import migrate
from tests.fixtures.kpi.scenario import generate

UTC_ZONE = ZoneInfo("UTC")
QUARTER = Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
# A read by dimension reads the durations of whole bins (an unfiltered one finds most of its
# ranks in the counts of the bins' parts, and reads few): runs enough to split.
SCOPE = Scope(UTC_ZONE, {"route": "sales"})


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate, "kpi", database_url)
    engine = create_engine(database_url)
    generation = await prepare_active_generation(engine)
    s = generate(3, first=date(2025, 9, 1), last=date(2026, 4, 1), per_month=40)
    events: list[Event] = s.events  # type: ignore[assignment]

    async def fold(conn: AsyncConnection) -> None:
        await fold_into(conn, generation, FOLD_VERSION, events)

    await in_transaction(engine, fold)
    try:
        yield engine
    finally:
        await engine.dispose()


def _watch(monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[int]]:
    """Record each duration read's runs, and how many runs went to a second connection."""
    reads: list[Any] = []
    on_sibling: list[int] = []
    read, on_driver = sql.duration_runs, sql._read_runs_on_driver

    async def watched_read(conn: Any, generation: int, runs: Any, *args: Any) -> Any:
        reads.append(runs)
        return await read(conn, generation, runs, *args)

    async def watched_driver(driver: Any, sql: str, generation: int, runs: Any, *a: Any) -> Any:
        on_sibling.append(len(runs))
        return await on_driver(driver, sql, generation, runs, *a)

    monkeypatch.setattr(sql, "duration_runs", watched_read)
    monkeypatch.setattr(sql, "_read_runs_on_driver", watched_driver)
    return reads, on_sibling


async def _summary(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        return await summary.summary(conn, QUARTER, SCOPE)


async def test_a_split_read_answers_as_one_connection_does(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads, on_sibling = _watch(monkeypatch)
    monkeypatch.setattr(sql, "SPLIT_RUNS_FROM", 10**6)
    whole = await _summary(engine)
    assert on_sibling == [] and len(reads[0]) >= 8
    monkeypatch.setattr(sql, "SPLIT_RUNS_FROM", 2)
    split = await _summary(engine)
    assert on_sibling == [len(reads[1]) - len(reads[1]) // 2]
    assert split == whole
    medians = [
        m["value"]["median"] for m in whole["metrics"].values() if isinstance(m["value"], dict)
    ]
    assert any(v is not None for v in medians)  # the durations compared are real ones


async def test_both_halves_read_the_readers_snapshot(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads, _ = _watch(monkeypatch)
    monkeypatch.setattr(sql, "SPLIT_RUNS_FROM", 2)
    await _summary(engine)
    runs = reads[0]
    async with engine.connect() as reader:
        await reader.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        generation = await generations.active_generation(reader)  # the snapshot is taken
        before = await sql.duration_runs(reader, generation, runs, {}, None)
        # Another writer commits, for every run's bin and period, a duration smaller than all.
        async with engine.begin() as writer:
            await writer.execute(
                sa.insert(facts),
                [
                    {
                        "generation": generation,
                        "lead_id": f"late-{n}",
                        "metric": metric,
                        "item": "",
                        "at": lo,
                        "value": 0,
                        "bin": bin_,
                        "sub": max(sub, 0),
                        "source": "web_form",
                        "channel": "",
                        "campaign": "",
                        "route": "sales",
                        "definition_version": "1",
                    }
                    for n, (metric, bin_, sub, lo, *_rest) in enumerate(runs)
                ],
            )
        split = await sql.duration_runs(reader, generation, runs, {}, None)
    assert split == before
    async with engine.connect() as fresh:
        after = await sql.duration_runs(fresh, generation, runs, {}, None)
    assert after != before  # the new rows are there for a later reader
