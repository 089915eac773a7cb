"""The stored result does not depend on delivery order or on writers racing, on both backends.

Each example folds the same events into two fresh generations of the real tables: once in
business-time order in one transaction, once shuffled, cut into batches and partly
delivered twice (one transaction per batch, no inbox: the fold itself is idempotent).
The tables must then hold the same rows. And several writers folding the same leads at
once (replicas; a rebuild beside the live consumer) must lose no update.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kpi.fold.apply import FOLD_VERSION, fold_into
from services.kpi.fold.consumer import in_transaction
from services.kpi.fold.durations import bin_and_sub
from services.kpi.fold.facts import Fact, FactDelta
from services.kpi.fold.window import FoldWindow
from services.kpi.store import writes
from services.kpi.store.tables import aggregates, fact_deltas, facts, fine_counts, leads
from shared.db import create_engine
from shared.events import Event
from shared.migrations import migrate
from tests.fixtures.kpi.scenario import generate
from tests.unit.test_kpi_order import Store, histories

_generations = itertools.count(100)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate, "kpi", database_url)
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _tables(engine: AsyncEngine, generation: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        out: dict[str, Any] = {}
        for table in (aggregates, fine_counts, facts, leads):
            cols = [c for c in table.columns if c.name != "generation"]
            rows = await conn.execute(sa.select(*cols).where(table.c.generation == generation))
            # A lead's state is a JSON object: compared as its canonical text.
            found = {
                tuple(
                    orjson.dumps(v, option=orjson.OPT_SORT_KEYS) if isinstance(v, dict) else v
                    for v in r
                )
                for r in rows
            }
            if table is aggregates:
                found = {r for r in found if Decimal(r[-1]) != 0}  # a row back at zero is none
            if table is fine_counts:
                found = {r for r in found if r[-3] or r[-2] or r[-1]}
            out[table.name] = found
        return out


async def _fold(engine: AsyncEngine, generation: int, batch: list[Event]) -> None:
    async def work(conn: Any) -> None:
        await fold_into(conn, generation, FOLD_VERSION, batch)

    await in_transaction(engine, work)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), events=histories())
async def test_delivery_order_does_not_change_the_tables(
    engine: AsyncEngine, data: st.DataObject, events: list[Event]
) -> None:
    in_order, shuffled = next(_generations), next(_generations)
    await _fold(engine, in_order, sorted(events, key=lambda e: (e.time, e.id)))
    again = data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
    delivered = data.draw(st.permutations(events + again))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(delivered)), max_size=5)))
    for lo, hi in zip([0, *cuts], [*cuts, len(delivered)], strict=True):
        await _fold(engine, shuffled, delivered[lo:hi])
    expected = await _tables(engine, in_order)
    if any(e.type != "lead.erased" for e in events):
        assert expected["kpi_leads"]  # the tables are compared with something in them
    assert await _tables(engine, shuffled) == expected


async def test_writers_racing_on_the_same_leads_lose_nothing(
    engine: AsyncEngine,
) -> None:
    rng = random.Random(5)
    s = generate(7, first=date(2026, 1, 1), last=date(2026, 5, 1), per_month=12)
    events: list[Event] = s.events  # type: ignore[assignment]
    in_order, raced = next(_generations), next(_generations)
    await _fold(engine, in_order, sorted(events, key=lambda e: (e.time, e.id)))

    async def writer(seed: int) -> None:
        mine = events[:]
        random.Random(seed).shuffle(mine)
        for i in range(0, len(mine), 25):
            await _fold(engine, raced, mine[i : i + 25])

    # Four writers, each with every event (as replicas overlapping in a rebalance, or the
    # live consumer beside a rebuild): rows are locked, merges are idempotent.
    await asyncio.gather(*(writer(rng.randrange(10**6)) for _ in range(4)))
    expected = await _tables(engine, in_order)
    assert len(expected["kpi_leads"]) > 40 and len(expected["kpi_facts"]) > 100
    assert await _tables(engine, raced) == expected


async def _fold_window(
    engine: AsyncEngine, generation: int, reads: list[list[Event]], *, stage: bool
) -> None:
    window = FoldWindow()
    for read in reads:
        window.add(read)

    async def work(conn: Any) -> None:
        await window.write(conn, generation, FOLD_VERSION, stage=stage)

    await in_transaction(engine, work)


async def count_staged(engine: AsyncEngine, generation: int) -> int:
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(fact_deltas.c.generation == generation)
        return int(await conn.scalar(query) or 0)


async def _compact(engine: AsyncEngine, generation: int) -> None:
    async with engine.begin() as conn:
        await writes.compact_fact_deltas(conn, generation)


@pytest.mark.parametrize("stage", [False, True], ids=["aggregates", "staged"])
async def test_windows_racing_with_batches_give_the_tables_of_one_fold(
    engine: AsyncEngine, stage: bool
) -> None:
    # A rebuild folds windows of many reads in one transaction, beside the live consumer's
    # batches on the same generation (every event twice: the overlap a rebuild has). Staged,
    # its aggregate increments wait in kpi_fact_deltas for compactions (one racing too).
    s = generate(8, first=date(2026, 1, 1), last=date(2026, 5, 1), per_month=12)
    events: list[Event] = s.events  # type: ignore[assignment]
    in_order, raced = next(_generations), next(_generations)
    await _fold(engine, in_order, sorted(events, key=lambda e: (e.time, e.id)))

    async def rebuild() -> None:
        mine = events[:]
        random.Random(1).shuffle(mine)
        for n, i in enumerate(range(0, len(mine), 120)):
            window = mine[i : i + 120]
            reads = [window[j : j + 17] for j in range(0, 120, 17)]
            await asyncio.gather(
                _fold_window(engine, raced, reads, stage=stage),
                *([_compact(engine, raced)] if n % 3 == 2 else []),
            )
            if n == 0:  # the increments wait, staged or not
                assert bool(await count_staged(engine, raced)) is stage

    async def live() -> None:
        mine = events[:]
        random.Random(2).shuffle(mine)
        for i in range(0, len(mine), 25):
            await _fold(engine, raced, mine[i : i + 25])

    await asyncio.gather(rebuild(), live())
    if stage:
        await _compact(engine, raced)
        assert not await count_staged(engine, raced)
    expected = await _tables(engine, in_order)
    assert len(expected["kpi_leads"]) > 40 and len(expected["kpi_facts"]) > 100
    assert await _tables(engine, raced) == expected


async def test_the_stored_aggregates_are_the_pure_folds_expansion(engine: AsyncEngine) -> None:
    # The database expands the changed facts into aggregate rows in SQL: the rows must be
    # what the pure fold (Changes.aggregates) says.
    s = generate(11, first=date(2025, 11, 1), last=date(2026, 4, 1), per_month=15)
    events: list[Event] = s.events  # type: ignore[assignment]
    generation = next(_generations)
    shuffled = events[:]
    random.Random(11).shuffle(shuffled)
    for i in range(0, len(shuffled), 40):
        await _fold(engine, generation, shuffled[i : i + 40])
    model = Store()
    model.apply(events)
    expected = {
        (
            k.rollup,
            k.grain,
            k.bucket_start,
            k.metric,
            k.bin,
            k.source,
            k.channel,
            k.campaign,
            k.route,
            k.definition_version,
            v,
        )
        for k, v in model.sums().items()
    }
    assert len(expected) > 500
    tables = await _tables(engine, generation)
    stored = {(*r[:-1], Decimal(r[-1])) for r in tables["kpi_aggregates"]}
    assert stored == expected
    # The counts of each duration bin's part: the pure fold's too, and its facts' (a
    # percentile finds the part that holds its rank by them, then reads its facts).
    counts = {
        (k.metric, k.bin, k.grain, k.bucket_start, k.sub, *v) for k, v in model.counts().items()
    }
    assert len(counts) > 50
    assert tables["kpi_fine_counts"] == counts
    async with engine.connect() as conn:
        from_facts = await conn.exec_driver_sql(
            "SELECT metric, bin, g.grain, date_trunc(g.unit, at, 'UTC'), sub, count(*), "
            "sum(value), sum(value * value) FROM kpi_facts "
            "CROSS JOIN (VALUES ('d', 'day'), ('m', 'month')) AS g(grain, unit) "
            f"WHERE generation = {generation} AND bin > 0 GROUP BY 1, 2, 3, 4, 5"
        )
        assert set(map(tuple, from_facts)) == counts


async def test_durations_trading_places_in_a_part_change_its_sum_of_squares(
    engine: AsyncEngine,
) -> None:
    # Two leads' durations in one part of a bin become equal: the part's count and sum stay,
    # its sum of squares falls. A percentile answers from the counts alone when count *
    # squares = sum^2 (every duration equal), so a stale sum of squares would answer wrong.
    at = datetime(2026, 3, 2, 10, tzinfo=UTC)

    def fact(seconds: int) -> Fact:
        bin_, sub = bin_and_sub(Decimal(seconds))
        return Fact(at, Decimal(seconds), ("web", "form", "", "sales", "v1"), bin_, sub)

    low, high, middle = fact(1_000_000), fact(1_000_020), fact(1_000_010)
    assert low.bin == high.bin == middle.bin and low.sub == high.sub == middle.sub
    generation = next(_generations)
    metric = "lead_lifetime"
    async with engine.begin() as conn:
        await writes.add_fact_deltas(
            conn, generation, [FactDelta(metric, low, 1), FactDelta(metric, high, 1)]
        )
    async with engine.begin() as conn:
        moved = [(low, -1), (middle, 1), (high, -1), (middle, 1)]
        await writes.add_fact_deltas(conn, generation, [FactDelta(metric, f, s) for f, s in moved])
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(fine_counts.c.grain, fine_counts.c.count, fine_counts.c.total)
            .add_columns(fine_counts.c.squares)
            .where(fine_counts.c.generation == generation)
        )
        found = {(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows}
    assert found == {(g, 2, 2_000_020, 2 * 1_000_010**2) for g in ("d", "m")}
