"""The KPI's Kafka handler: each event applied once, whatever a
batch repeats, and the tables exactly what the pure fold says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.kpi.fold.apply import FOLD_VERSION
from services.kpi.store.tables import aggregates, facts, generations, inbox, leads
from shared.events import Event, Route, Stage
from tests.fixtures.kpi import events as ev
from tests.fixtures.kpi.harness import Harness
from tests.unit.test_kpi_order import Store

T = datetime(2026, 10, 15, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def _history(seed_at: datetime, channel: str) -> list[Event]:
    lead = ev.snapshot(at=seed_at, channel=channel)
    d = ev.dims(lead, Route.sales, 1)
    return [
        ev.received(lead),
        ev.routed(lead, Route.sales),
        ev.contacted(lead, d, at=seed_at + H),
        ev.feedback(lead, d, at=seed_at + 2 * H, accepted=True),
        ev.stage(lead, d, at=seed_at + D, stage=Stage.sql),
        ev.payment(lead, d, at=seed_at + 3 * D, amount="120.50"),
    ]


async def _tables(kpi: Harness) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table in (aggregates, facts, leads):
        rows = await kpi.rows(table)
        out[table.name] = sorted(repr(tuple(r)) for r in rows)
    out["inbox"] = sorted(r.event_id for r in await kpi.rows(inbox))
    return out


async def _aggregates(kpi: Harness) -> dict[tuple[Any, ...], Decimal]:
    rows = await kpi.rows(aggregates)
    return {tuple(r[1:-1]): Decimal(r[-1]) for r in rows if Decimal(r[-1]) != 0}


async def test_a_batch_repeating_applied_events_changes_nothing(kpi: Harness) -> None:
    first = _history(T, "google") + _history(T + 5 * D, "yandex")
    await kpi.receive(*first)
    before = await _tables(kpi)
    assert len(before["inbox"]) == len(first)
    # Redelivered, twice within one batch, in another order.
    await kpi.receive(*reversed(first), first[2], first[0])
    assert await _tables(kpi) == before


async def test_a_batch_mixing_new_and_repeated_events_applies_each_once(kpi: Harness) -> None:
    old = _history(T, "google")
    new = _history(T + 40 * D, "facebook")
    await kpi.receive(*old)
    await kpi.receive(new[0], *old, new[0], *new[1:], new[3])
    model = Store()
    model.apply(old + new)
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
        ): v
        for k, v in model.sums().items()
    }
    assert await _aggregates(kpi) == expected
    ids = [r.event_id for r in await kpi.rows(inbox)]
    assert sorted(ids) == sorted(e.id for e in old + new)
    values = await kpi.values("2026-10-01", "2027-01-01")
    assert values["leads_received"] == 2 and values["payments_count"] == 2
    assert values["revenue"] == 241.0


async def test_a_generation_being_rebuilt_gets_every_live_batch_too(kpi: Harness) -> None:
    # The live handler folds into the active generation and the one being built; both get
    # the same rows, written by the same statements.
    async with kpi.runtime.engine.begin() as conn:
        await conn.execute(
            generations.insert().values(
                generation=2,
                status="building",
                fold_version=FOLD_VERSION,
                requested_by="test",
                created_at=T,
            )
        )
    await kpi.receive(*_history(T, "google"), *_history(T + D, "yandex"))
    by_generation: dict[int, set[str]] = {}
    for table in (aggregates, facts, leads):
        for r in await kpi.rows(table):
            by_generation.setdefault(r.generation, set()).add(f"{table.name}:{tuple(r)[1:]!r}")
    assert set(by_generation) == {1, 2}
    assert by_generation[1] == by_generation[2] and len(by_generation[1]) > 50
