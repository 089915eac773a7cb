"""Timeseries answers: a point per bucket, metric and group, bounded however many groups exist.

Campaigns come from `utm_campaign` of anonymous form posts, so anyone can make thousands of
groups; built densely, three years of days times those groups took the process's memory and
held its event loop. So a grouped series shows at most `max_groups` groups, those with the
most behind its first metric, and folds the rest into one "(other)" group; when every bucket
of every group would make more than `max_points` points, cells where nothing happened are
left out, and if that is still too many, fewer groups are shown. A series whose buckets
times metrics alone pass `max_points` is refused (`SeriesTooLarge`). The answer says what it
left out.

The database ranks and counts the groups, and only the shown groups' rows are read, a few
groups at a time while their points still fit; "(other)" is the ungrouped total less the
shown groups (its durations are read as those of every group but the shown ones). The
points, a CPU-bound step, are built off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.catalogue import (
    DURATION_METRICS,
    METRICS,
    DurationStats,
    Value,
    compute,
    stored_needed,
)
from services.kpi.reads import periods
from services.kpi.reads.evaluate import Scope, evaluate
from services.kpi.reads.formatting import Json, write
from services.kpi.reads.periods import Bucket, Period
from services.kpi.reads.series_groups import (
    Cell,
    Group,
    Grouped,
    Limits,
    check_size,
    group_order,
    has_data,
    occupied,
    rank_inputs,
    read_groups,
)
from services.kpi.reads.summary import iso, period_json
from services.kpi.store import generations

# Building the points (CPU only: run off the event loop)

CellValue = Callable[[int, Group, str], tuple[bool, Value]]


def _points(
    names: Sequence[str],
    buckets: Sequence[Bucket],
    tz: ZoneInfo,
    groups: Sequence[tuple[Group, Sequence[int] | None]],
    cell: CellValue,
) -> list[dict[str, Json | str]]:
    """The points of each group, at the given bucket indexes (None: every bucket)."""
    starts = [iso(b.start, tz) for b in buckets]
    ends = [iso(b.end, tz) for b in buckets]
    rows: list[dict[str, Json | str]] = []
    for name in names:
        unit = METRICS[name].unit
        for group, at in groups:
            for i in range(len(buckets)) if at is None else at:
                b = buckets[i]
                keep, value = cell(i, group, name)
                if keep:
                    rows.append(
                        {
                            "metric": name,
                            "start": starts[i],
                            "end": ends[i],
                            "label": b.label,
                            "group": group,
                            "value": write(value, unit),
                        }
                    )
    return rows


def _grouped_cells(found: Grouped, names: Sequence[str]) -> CellValue:
    money = found.money
    durations = [n for n in DURATION_METRICS if n in stored_needed(list(names))]
    stored: dict[Cell, tuple[dict[str, Decimal], dict[str, DurationStats]]] = {}

    def cell(point: int, group: Group, name: str) -> tuple[bool, Value]:
        sums = found.sums.get((point, group))
        if group is not None and group == found.label:
            spend = found.other_spend.get(point, Decimal(0)) if money.spend_applies else None
        else:
            spend = money.spend_of(point, group)
        if not found.dense and not has_data(name, sums, spend):
            return False, None
        if (point, group) not in stored:
            stored[(point, group)] = (
                {m: v for (m, b), v in (sums or {}).items() if b == 0},
                {
                    m: found.stats.get((point, group, m), DurationStats(None, None, 0))
                    for m in durations
                },
            )
        counts, stats = stored[(point, group)]
        return True, compute(name, counts, stats, money.plan_of(point), spend)

    return cell


def _grouped_points(found: Grouped) -> list[tuple[Group, Sequence[int] | None]]:
    """The groups in order ("(other)" last), each with the buckets to answer: every one when
    dense, else those with sums or spend (the others are empty)."""
    groups = sorted(found.shown, key=group_order) + ([found.label] if found.label else [])
    if found.dense:
        return [(g, None) for g in groups]
    other = {(p, found.label): a for p, a in found.other_spend.items()}
    where = occupied(found.sums, {**found.money.spend, **other})
    return [(g, sorted(where.get(g, ()))) for g in groups]


def _grouped_rows(
    found: Grouped, names: Sequence[str], buckets: Sequence[Bucket], tz: ZoneInfo
) -> list[dict[str, Json | str]]:
    return _points(names, buckets, tz, _grouped_points(found), _grouped_cells(found, names))


def _truncated(found: Grouped, names: Sequence[str], limits: Limits) -> dict[str, Any] | None:
    if found.label is None:
        return None
    out: dict[str, Any] = {
        "groups": {
            "limit": limits.max_groups,
            "shown": len(found.shown),
            "omitted": found.total_groups - len(found.shown),
            "other": found.label,
            "ranked_by": " + ".join(rank_inputs(names[0])) or "name",
        }
    }
    if len(found.shown) < found.candidates:
        out["points"] = {"limit": limits.max_points}
    return out


async def timeseries(
    conn: AsyncConnection,
    period: Period,
    grain: str,
    names: Sequence[str],
    scope: Scope,
    limits: Limits,
) -> dict[str, Any]:
    """One point per bucket of each metric (per group: the top groups and "(other)")."""
    # Calendar arithmetic over up to a thousand buckets: tens of milliseconds, off the loop.
    buckets = await asyncio.to_thread(periods.buckets, period, grain, scope.tz)
    check_size(len(buckets), names, grain, limits)
    generation = await generations.active_generation(conn)
    points = [Period(b.start, b.end) for b in buckets]
    truncated: dict[str, Any] | None = None
    sparse = False
    if scope.group_by is None:
        values = await evaluate(conn, generation, points, names, scope)
        groups: list[tuple[Group, Sequence[int] | None]] = [(None, None)]

        def cell(point: int, group: Group, name: str) -> tuple[bool, Value]:
            return True, values[(point, None)][name]

        rows = await asyncio.to_thread(_points, names, buckets, scope.tz, groups, cell)
    else:
        found = await read_groups(conn, generation, period, points, names, scope, limits)
        rows = await asyncio.to_thread(_grouped_rows, found, names, buckets, scope.tz)
        truncated = _truncated(found, names, limits)
        sparse = not found.dense
    return {
        **period_json(period, scope.tz),
        "tz": scope.tz.key,
        "grain": grain,
        "metrics": list(names),
        "units": {n: METRICS[n].unit.value for n in names},
        "group_by": scope.group_by,
        "filters": dict(scope.filters),
        "sparse": sparse,
        "truncated": truncated,
        "points": rows,
    }
