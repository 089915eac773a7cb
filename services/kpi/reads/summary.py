"""The summary (every metric, its comparisons and deltas) and the funnel answers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.catalogue import CATALOGUE, FUNNEL_STAGES, METRICS, Unit
from services.kpi.reads import periods
from services.kpi.reads.evaluate import Scope, evaluate
from services.kpi.reads.formatting import comparison, write
from services.kpi.reads.periods import Period
from services.kpi.store import generations


def iso(dt: datetime, tz: ZoneInfo) -> str:
    return dt.astimezone(tz).isoformat()


def period_json(p: Period, tz: ZoneInfo) -> dict[str, str]:
    return {"from": iso(p.start, tz), "to": iso(p.end, tz)}


ALL_METRICS: tuple[str, ...] = tuple(m.name for m in CATALOGUE)


async def summary(
    conn: AsyncConnection, period: Period, scope: Scope, names: Sequence[str] = ALL_METRICS
) -> dict[str, Any]:
    generation = await generations.active_generation(conn)
    compared = {
        "value": period,
        "previous": periods.previous(period, scope.tz),
        "year_ago": periods.year_ago(period, scope.tz),
    }
    found = await evaluate(conn, generation, list(compared.values()), names, scope)
    values = {label: found[(i, None)] for i, label in enumerate(compared)}
    metrics: dict[str, Any] = {}
    for name in names:
        unit = METRICS[name].unit
        now, before, ago = (values[k][name] for k in ("value", "previous", "year_ago"))
        d_prev, pct_prev = comparison(now, before, unit)
        d_ago, pct_ago = comparison(now, ago, unit)
        metrics[name] = {
            "unit": unit.value,
            "value": write(now, unit),
            "previous": write(before, unit),
            "year_ago": write(ago, unit),
            "delta_previous": d_prev,
            "delta_previous_pct": pct_prev,
            "delta_year_ago": d_ago,
            "delta_year_ago_pct": pct_ago,
        }
    return {
        **period_json(period, scope.tz),
        "tz": scope.tz.key,
        "filters": dict(scope.filters),
        "periods": {k: period_json(p, scope.tz) for k, p in compared.items()},
        "metrics": metrics,
    }


async def funnel(conn: AsyncConnection, period: Period, scope: Scope) -> dict[str, Any]:
    generation = await generations.active_generation(conn)
    found = await evaluate(conn, generation, [period], FUNNEL_STAGES, scope)
    values = found[(0, None)]
    stages: list[dict[str, Any]] = []
    first: Decimal | None = None
    before: Decimal | None = None
    for name in FUNNEL_STAGES:
        count = values[name]
        assert isinstance(count, Decimal)
        first = count if first is None else first
        stages.append(
            {
                "stage": name,
                "count": int(count),
                "step_conversion": write(_ratio(count, before), Unit.RATIO),
                "conversion_from_first": write(_ratio(count, first), Unit.RATIO),
            }
        )
        before = count
    return {
        **period_json(period, scope.tz),
        "tz": scope.tz.key,
        "filters": dict(scope.filters),
        "stages": stages,
    }


def _ratio(a: Decimal, b: Decimal | None) -> Decimal | None:
    return None if b is None or b == 0 else a / b
