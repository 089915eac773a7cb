"""KPI use cases: fold a batch of events, and answer the summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi import periods, repository
from services.kpi.fold import ROUTE_METRICS, fold
from shared.events import Event

COUNT_METRICS = ("leads_received", *ROUTE_METRICS.values())


async def apply_events(conn: AsyncConnection, events: Sequence[Event]) -> None:
    """Fold already-claimed events into the aggregates, in the caller's transaction."""
    await repository.add_to_buckets(conn, fold(events))


def _number(value: Decimal | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def _comparison(value: Decimal, other: Decimal) -> dict[str, Any]:
    delta = value - other
    return {
        "delta": _number(delta),
        "delta_pct": None if other == 0 else round(float(delta / other * 100), 2),
    }


async def summary(
    conn: AsyncConnection,
    period: periods.Period,
    tz: ZoneInfo,
    filters: Mapping[str, str],
) -> dict[str, Any]:
    prev = periods.previous(period, tz)
    ago = periods.year_ago(period, tz)
    now_totals = await repository.sum_metrics(conn, period.start, period.end, filters)
    prev_totals = await repository.sum_metrics(conn, prev.start, prev.end, filters)
    ago_totals = await repository.sum_metrics(conn, ago.start, ago.end, filters)
    metrics: dict[str, Any] = {}
    for name in COUNT_METRICS:
        value = now_totals.get(name, Decimal(0))
        before = prev_totals.get(name, Decimal(0))
        year = ago_totals.get(name, Decimal(0))
        cmp_prev = _comparison(value, before)
        cmp_year = _comparison(value, year)
        metrics[name] = {
            "value": _number(value),
            "previous": _number(before),
            "year_ago": _number(year),
            "delta_previous": cmp_prev["delta"],
            "delta_previous_pct": cmp_prev["delta_pct"],
            "delta_year_ago": cmp_year["delta"],
            "delta_year_ago_pct": cmp_year["delta_pct"],
        }
    return {
        "from": period.start.isoformat(),
        "to": period.end.isoformat(),
        "tz": tz.key,
        "filters": dict(filters),
        "periods": {
            "previous": {"from": prev.start.isoformat(), "to": prev.end.isoformat()},
            "year_ago": {"from": ago.start.isoformat(), "to": ago.end.isoformat()},
        },
        "metrics": metrics,
    }
