"""A percentile reads one part of a bin (or none, when the part's durations are equal), and
answers what the whole sorted period would.

Thousands of durations crowd three value bins over four months; the fold's own write path
stores them (facts, aggregates, counts per part). For periods aligned to months, cut by
days and hours, or in a :30 time zone, every rank of a bin read through its part must be
the value at that rank among the period's durations, sorted. A read by dimension (no
counts per part) reads the whole bin; a store whose counts are short of a rank falls back
to the whole bin too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kpi.fold.durations import bin_and_sub, bin_of
from services.kpi.fold.facts import Changes, Dims, Fact, FactDelta
from services.kpi.reads import sql, stored
from services.kpi.reads.stored import Slice
from services.kpi.store import writes
from shared.db import create_engine
from shared.migrations import migrate

GENERATION = 1
METRIC = "first_response_time"
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 120
SOURCES = ("web_form", "webinar")


def _durations(rng: random.Random) -> list[tuple[datetime, Decimal, str]]:
    # 3,600-3,800 s: three 2% bins, each cut in 32 parts; microseconds, so values rarely tie.
    return [
        (
            START + timedelta(seconds=rng.randrange(DAYS * 86400)),
            Decimal(rng.randrange(3_600_000_000, 3_800_000_000)) / 10**6,
            rng.choice(SOURCES),
        )
        for _ in range(8000)
    ]


async def _write(engine: AsyncEngine, durations: list[tuple[datetime, Decimal, str]]) -> None:
    changes = Changes()
    for n, (at, seconds, source) in enumerate(durations):
        fact = Fact(at, seconds, Dims(source, "", "", "sales", "1"), *bin_and_sub(seconds))
        changes.upsert_facts.append((f"lead-{n}", METRIC, "", fact))
        changes.fact_deltas.append(FactDelta(METRIC, fact, 1))
    # In batches, as the fold writes them: the counts add up across statements.
    async with engine.begin() as conn:
        for i in range(0, len(durations), 2000):
            part = Changes(
                upsert_facts=changes.upsert_facts[i : i + 2000],
                fact_deltas=changes.fact_deltas[i : i + 2000],
            )
            await writes.write_changes(conn, GENERATION, part)


@contextlib.asynccontextmanager
async def _stored(
    database_url: str, durations: list[tuple[datetime, Decimal, str]]
) -> AsyncIterator[tuple[AsyncEngine, list[Any]]]:
    await asyncio.to_thread(migrate, "kpi", database_url)
    engine = create_engine(database_url)
    await _write(engine, durations)
    try:
        yield engine, durations
    finally:
        await engine.dispose()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[tuple[AsyncEngine, list[Any]]]:
    async with _stored(database_url, _durations(random.Random(21))) as stored_:
        yield stored_


@pytest.fixture
async def minutes(database_url: str) -> AsyncIterator[tuple[AsyncEngine, list[Any]]]:
    """Durations of whole minutes (50 to 70), as people and the bench's history answer: each
    part of these 2% bins holds one value at most."""
    rng = random.Random(5)
    durations = [
        (
            START + timedelta(seconds=rng.randrange(DAYS * 86400)),
            Decimal(60 * rng.randrange(50, 71)),
            rng.choice(SOURCES),
        )
        for _ in range(8000)
    ]
    async with _stored(database_url, durations) as stored_:
        yield stored_


KOLKATA = ZoneInfo("Asia/Kolkata")
PERIODS = [
    (START, datetime(2026, 4, 1, tzinfo=UTC)),  # a quarter: months only
    (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),  # a month
    (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 8, tzinfo=UTC)),  # days only
    (datetime(2026, 1, 20, 7, tzinfo=UTC), datetime(2026, 3, 3, 5, tzinfo=UTC)),  # both
    (datetime(2026, 2, 1, tzinfo=KOLKATA), datetime(2026, 4, 1, tzinfo=KOLKATA)),  # :30 zone
]
PERIOD_IDS = ["quarter", "month", "week", "cut", "kolkata"]


def _wanted(
    durations: list[Any], lo: datetime, hi: datetime, source: str | None
) -> tuple[list[stored.Wanted], dict[stored.Wanted, Decimal]]:
    """Every rank of every bin in [lo, hi), and the value each must read."""
    values = sorted(v for at, v, s in durations if lo <= at < hi and source in (None, s))
    by_bin: dict[int, list[Decimal]] = {}
    for v in values:
        by_bin.setdefault(bin_of(v), []).append(v)
    assert len(by_bin) >= 3 and max(map(len, by_bin.values())) > 16  # ranks to find
    expected = {
        (METRIC, b, lo, hi, None, i): v for b, vs in by_bin.items() for i, v in enumerate(vs)
    }
    return list(expected), expected


async def _read(
    engine: AsyncEngine, wanted: list[stored.Wanted], where: Slice
) -> dict[stored.Wanted, Decimal]:
    async with engine.connect() as conn:
        return await stored.duration_values(conn, GENERATION, wanted, where)


def _watch_runs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    runs: list[Any] = []
    read = sql.duration_runs

    async def watched(conn: Any, generation: int, batch: Any, *args: Any) -> Any:
        runs.extend(batch)
        return await read(conn, generation, batch, *args)

    monkeypatch.setattr(sql, "duration_runs", watched)
    return runs


@pytest.mark.parametrize("period", PERIODS, ids=PERIOD_IDS)
async def test_every_rank_read_through_its_part_is_the_periods_sorted_value(
    store: tuple[AsyncEngine, list[Any]],
    period: tuple[datetime, datetime],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, durations = store
    wanted, expected = _wanted(durations, *period, None)
    runs = _watch_runs(monkeypatch)
    found = await _read(engine, wanted, Slice({}))
    assert found == expected
    # Each read was of one part, and the parts split the bins: many reads, none of a bin.
    assert runs and all(run[2] != sql.EVERY_PART for run in runs)
    assert len({(run[1], run[2]) for run in runs}) > 3 * 20


@pytest.mark.parametrize("period", PERIODS, ids=PERIOD_IDS)
async def test_a_part_of_equal_durations_answers_from_its_counts(
    minutes: tuple[AsyncEngine, list[Any]],
    period: tuple[datetime, datetime],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, durations = minutes
    wanted, expected = _wanted(durations, *period, None)
    runs = _watch_runs(monkeypatch)
    found = await _read(engine, wanted, Slice({}))
    assert found == expected
    assert runs == []  # no duration read: every part held one value
    # By dimension, the same values, read from the facts.
    wanted, expected = _wanted(durations, *period, "webinar")
    found = await _read(engine, wanted, Slice({"source": "webinar"}))
    assert found == expected and runs


async def test_a_read_by_dimension_reads_whole_bins(
    store: tuple[AsyncEngine, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, durations = store
    lo, hi = PERIODS[3]
    wanted, expected = _wanted(durations, lo, hi, "webinar")
    runs = _watch_runs(monkeypatch)
    found = await _read(engine, wanted, Slice({"source": "webinar"}))
    assert found == expected
    assert runs and all(run[2] == sql.EVERY_PART for run in runs)


async def test_counts_short_of_a_rank_fall_back_to_the_whole_bin(
    store: tuple[AsyncEngine, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, durations = store
    lo, hi = PERIODS[1]
    wanted, expected = _wanted(durations, lo, hi, None)
    top_bin = max(w[1] for w in wanted)
    async with engine.begin() as conn:
        # The counts of one bin's month lost (a store damaged by hand): its ranks are beyond.
        await conn.exec_driver_sql(
            "DELETE FROM kpi_fine_counts WHERE bin = $1 AND bucket_start = $2", (top_bin, lo)
        )
    runs = _watch_runs(monkeypatch)
    found = await _read(engine, wanted, Slice({}))
    assert found == expected
    parts = Counter(run[2] == sql.EVERY_PART for run in runs)
    assert parts[True] and parts[False]  # the damaged bin whole, the others by part
    assert {run[1] for run in runs if run[2] == sql.EVERY_PART} == {top_bin}
