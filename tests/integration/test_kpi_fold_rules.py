"""Fold rules per generation: a generation keeps the value bins it
was created with (percentiles rank bins by number, so one generation must not mix two
sets); a fresh install's empty generation takes the current ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.kpi.fold.apply import FOLD_VERSION
from services.kpi.fold.durations import bin_edges, bin_of, stats
from services.kpi.store import generations as generation_rows
from services.kpi.store.tables import facts, generations
from shared.events import Event, Route
from tests.fixtures.kpi import events as ev
from tests.fixtures.kpi.harness import Harness

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# First responses (minutes) chosen so the two rule sets bin them differently.
MINUTES = (61, 62, 64, 67, 70, 90, 125, 300)


def _contacted_after(minutes: int, n: int) -> list[Event]:
    lead = ev.snapshot(at=T + timedelta(hours=n))
    d = ev.dims(lead, Route.sales, 1)
    return [
        ev.received(lead),
        ev.routed(lead, Route.sales),
        ev.contacted(lead, d, at=lead.received_at + timedelta(minutes=minutes)),
    ]


async def _fold_version(kpi: Harness) -> int:
    rows = await kpi.rows(generations, generations.c.generation == 1)
    return int(rows[0].fold_version)


async def _adopt(kpi: Harness) -> bool:
    async with kpi.runtime.engine.begin() as conn:
        return await generation_rows.adopt_fold_rules_if_empty(conn, 1, FOLD_VERSION)


async def _set_fold_version(kpi: Harness, fold_version: int) -> None:
    async with kpi.runtime.engine.begin() as conn:
        await conn.execute(generations.update().values(fold_version=fold_version))


async def test_an_empty_generation_takes_the_current_rules(kpi: Harness) -> None:
    assert FOLD_VERSION != 1
    assert await _fold_version(kpi) == FOLD_VERSION  # the harness started as the service
    await _set_fold_version(kpi, 1)  # what the migration creates
    assert await _adopt(kpi) is True
    assert await _fold_version(kpi) == FOLD_VERSION
    assert await _adopt(kpi) is False  # nothing left to change

    for n, minutes in enumerate(MINUTES):
        await kpi.receive(*_contacted_after(minutes, n))
    await _check_folded_by(kpi, bin_edges(FOLD_VERSION))


async def test_a_used_generation_keeps_folding_by_its_own_rules(kpi: Harness) -> None:
    old, new = bin_edges(1), bin_edges(FOLD_VERSION)
    assert {bin_of(Decimal(m * 60), old) for m in MINUTES} != {
        bin_of(Decimal(m * 60), new) for m in MINUTES
    }
    await _set_fold_version(kpi, 1)  # a generation built by the rules of v1
    await kpi.receive(*_contacted_after(MINUTES[0], 0))
    assert await _adopt(kpi) is False  # it holds facts binned by v1
    assert await _fold_version(kpi) == 1
    for n, minutes in enumerate(MINUTES[1:], start=1):
        await kpi.receive(*_contacted_after(minutes, n))

    await _check_folded_by(kpi, old)


async def _check_folded_by(kpi: Harness, edges: tuple[int, ...]) -> None:
    """Every first response binned by `edges`, and its percentiles exact."""
    rows = await kpi.rows(facts, facts.c.metric == "first_response_time")
    assert sorted(r.bin for r in rows) == sorted(bin_of(Decimal(m * 60), edges) for m in MINUTES)
    expected = stats([Decimal(m * 60) for m in MINUTES])
    found = (await kpi.values("2026-03-01", "2026-04-01"))["first_response_time"]
    assert found == {
        "median": float(expected.median or 0),
        "p90": float(expected.p90 or 0),
        "count": len(MINUTES),
    }
