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
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi import periods, repository
from services.kpi.coverage import Coverage, cover
from services.kpi.metrics import (
    DURATION_METRICS,
    LTV_CLIENTS,
    METRICS,
    USES_SPEND,
    DurationStats,
    Value,
    compute,
    stored_needed,
)
from services.kpi.periods import Bucket, Period
from services.kpi.presentation import Json, write
from services.kpi.repository import Slice, Sums
from services.kpi.service import (
    Money,
    Scope,
    duration_stats,
    evaluate,
    iso,
    period_json,
    plan_and_spend,
)

OTHER = "(other)"
# Spend is no stored metric: groups ranked by it are ranked by the spend table.
SPEND = "spend"
# What ranks the groups of a series: the volume behind its first metric. A count, an amount
# or a duration (by its count) ranks by itself; a rate by what it is divided by.
RANK_BY: dict[str, tuple[str, ...]] = {
    "brief_rate": ("leads_contacted",),
    "lead_quality_rate": ("sal", "sales_rejected"),
    "win_rate": ("deals_won", "deals_lost"),
    "average_check": ("payments_count",),
    "plan": (),  # null in any grouped series: by name alone
    "plan_fulfilment": ("revenue",),
    "ltv": (LTV_CLIENTS,),
    "spend": (SPEND,),
    "cost_per_lead": ("leads_received",),
    "cost_per_sal": ("sal",),
    "roi": (SPEND,),
}
_COARSER = {"day": "grain=week or grain=month, ", "week": "grain=month, ", "month": ""}

Group = str | None  # as answered: None is a lead without a route yet
Cell = tuple[int, Group]  # (point, group)
Stats = dict[tuple[int, Group, str], DurationStats]


class SeriesTooLarge(ValueError):
    """One series (every bucket of every metric asked) holds more points than an answer may."""


@dataclass(frozen=True)
class Limits:
    max_groups: int
    max_points: int


def rank_inputs(name: str) -> tuple[str, ...]:
    return RANK_BY.get(name, (name,))


def check_size(buckets: int, names: Sequence[str], grain: str, limits: Limits) -> None:
    size = buckets * len(names)
    if size > limits.max_points:
        raise SeriesTooLarge(
            f"this series has {buckets} buckets x {len(names)} metrics = {size} points, more "
            f"than the {limits.max_points} an answer may hold "
            f"(LEADFLOW_KPI_TIMESERIES_MAX_POINTS): ask for {_COARSER.get(grain, '')}"
            "a shorter period, or fewer metrics"
        )


def other_label(shown: Sequence[Group]) -> str:
    """ "(other)", unless a shown group is named so (anyone can name a campaign)."""
    label, n = OTHER, 1
    while label in shown:
        n += 1
        label = f"(other {n})"
    return label


@functools.cache
def _inputs(name: str) -> frozenset[str]:
    return frozenset(stored_needed([name]))


def has_data(name: str, sums: Sums | None, spend: Decimal | None) -> bool:
    """Whether anything happened in a cell for `name`: a stored number it is computed from,
    or spend. An empty cell is worth what the metric is with nothing counted."""
    if spend and name in USES_SPEND:
        return True
    if not sums:
        return False
    needed = _inputs(name)
    return any(v and m in needed for (m, _), v in sums.items())


def fold_other(
    total: Mapping[Cell, Sums], shown: Mapping[Cell, Sums], label: str
) -> dict[Cell, Sums]:
    """ "(other)" per point: the ungrouped total less the shown groups."""
    rest = {point: dict(sums) for (point, _), sums in total.items()}
    for (point, _), sums in shown.items():
        left = rest.setdefault(point, {})
        for key, v in sums.items():
            left[key] = left.get(key, Decimal(0)) - v
    out: dict[Cell, Sums] = {}
    for point, sums in rest.items():
        nonzero = {k: v for k, v in sums.items() if v}
        if nonzero:
            out[(point, label)] = nonzero
    return out


def _occupied(
    sums: Mapping[Cell, Sums], spend: Mapping[tuple[int, Group], Decimal]
) -> dict[Group, set[int]]:
    """The points where each group has sums or spend: its other cells are empty."""
    out: dict[Group, set[int]] = {}
    for p, g in sums:
        out.setdefault(g, set()).add(p)
    for (p, g), amount in spend.items():
        if amount:
            out.setdefault(g, set()).add(p)
    return out


def _stored(groups: Sequence[Group]) -> tuple[str, ...]:
    return tuple(g or "" for g in groups)


def _order(g: Group) -> tuple[bool, str]:
    return (g is not None, g or "")


# Reading


def _covered(points: Sequence[Period], where: Slice) -> list[tuple[datetime, Coverage]]:
    return [(p.start, cover(p.start, p.end, where.grains)) for p in points]


async def _sums(
    conn: AsyncConnection,
    generation: int,
    covered: Sequence[tuple[datetime, Coverage]],
    metrics: Sequence[str],
    where: Slice,
) -> dict[Cell, Sums]:
    if not metrics:
        return {}
    return await repository.sums(conn, generation, covered, metrics, where)


@dataclass
class _Grouped:
    shown: list[Group]
    total_groups: int
    candidates: int
    dense: bool
    label: str | None  # of "(other)", when groups are left out
    sums: dict[Cell, Sums]
    stats: Stats
    money: Money
    other_spend: dict[int, Decimal]


async def _ranked(
    conn: AsyncConnection,
    generation: int,
    period: Period,
    stored_names: Sequence[str],
    ranked_by: Sequence[str],
    where: Slice,
    spend_total: Mapping[Group, Decimal],
    limit: int,
) -> tuple[list[Group], int]:
    """The first `limit` groups by rank, then name, and how many groups have data."""
    whole = cover(period.start, period.end, where.grains)
    found, total = await repository.rank_groups(
        conn, generation, whole, stored_names, [m for m in ranked_by if m != SPEND], where,
        limit=limit,
    )  # fmt: skip
    rank: dict[Group, Decimal] = {g or None: r for g, r in found}
    # A group that spend names beyond those rows ranks after them (or by its spend below);
    # it is one more group unless it has stored data too.
    extra = [g for g in spend_total if g not in rank]
    if extra:
        among = Slice(where.filters, where.group_by, groups_in=_stored(extra))
        known, _ = await repository.rank_groups(conn, generation, whole, stored_names, [], among)
        total += len(set(extra) - {g or None for g, _ in known})
        rank.update(dict.fromkeys(extra, Decimal(0)))
    if SPEND in ranked_by:
        for g, amount in spend_total.items():
            rank[g] += amount
    return sorted(rank, key=lambda g: (-rank[g], *_order(g)))[:limit], total


async def _grouped(
    conn: AsyncConnection,
    generation: int,
    period: Period,
    points: Sequence[Period],
    names: Sequence[str],
    scope: Scope,
    limits: Limits,
) -> _Grouped:
    where = scope.slice
    stored_names = sorted(stored_needed(list(names)))
    money = await plan_and_spend(conn, points, scope, set(names))
    spend_total: dict[Group, Decimal] = {}
    for (_, g), amount in money.spend.items():
        if amount:
            spend_total[g] = spend_total.get(g, Decimal(0)) + amount
    candidates, total_groups = await _ranked(
        conn, generation, period, stored_names, rank_inputs(names[0]), where, spend_total,
        limits.max_groups,
    )  # fmt: skip

    covered = await asyncio.to_thread(_covered, points, where)  # the same for every read

    async def read(groups: Sequence[Group]) -> dict[Cell, Sums]:
        among = Slice(where.filters, where.group_by, groups_in=_stored(groups))
        return await _sums(conn, generation, covered, stored_names, among)

    per_series = len(points) * len(names)
    with_other = total_groups > len(candidates)
    dense = per_series * (len(candidates) + with_other) <= limits.max_points
    if dense:
        shown, sums = list(candidates), await read(candidates)
    else:
        shown, sums = await _fitting(
            read, candidates, total_groups, len(points), names, money, limits
        )

    label = other_label(shown) if total_groups > len(shown) else None
    other_sums: dict[Cell, Sums] = {}
    other_spend: dict[int, Decimal] = {}
    if label is not None:
        everything = Slice(where.filters)
        covered = await asyncio.to_thread(_covered, points, everything)
        total = await _sums(conn, generation, covered, stored_names, everything)
        other_sums = await asyncio.to_thread(fold_other, total, sums, label)
        for (point, g), amount in money.spend.items():
            if g not in shown:
                other_spend[point] = other_spend.get(point, Decimal(0)) + amount

    stats: Stats = {}
    duration_names = [n for n in DURATION_METRICS if n in stored_names]
    if duration_names:
        each = Slice(where.filters, where.group_by)
        stats = await duration_stats(conn, generation, points, sums, duration_names, each)
        if other_sums:
            rest = Slice(where.filters, where.group_by, groups_not_in=_stored(shown))
            stats |= await duration_stats(
                conn, generation, points, other_sums, duration_names, rest
            )
    return _Grouped(
        shown, total_groups, len(candidates), dense, label, {**sums, **other_sums}, stats,
        money, other_spend,
    )  # fmt: skip


async def _fitting(
    read: Callable[[Sequence[Group]], Awaitable[dict[Cell, Sums]]],
    candidates: Sequence[Group],
    total_groups: int,
    n_points: int,
    names: Sequence[str],
    money: Money,
    limits: Limits,
) -> tuple[list[Group], dict[Cell, Sums]]:
    """The candidates, in rank order, whose non-empty cells fit in the point limit, keeping
    room for a whole "(other)" series while any group is left out.

    They are read a few at a time, so a read holds little more than the answer may: first
    as many as would fit were every cell full, then as many as would fit were each like the
    last one read (groups come largest first), never more than would make four answers full.
    """
    per_series = n_points * len(names)
    most = max(1, 4 * limits.max_points // per_series)
    shown: list[Group] = []
    sums: dict[Cell, Sums] = {}
    used = 0
    last = per_series
    while len(shown) < len(candidates):
        first = len(shown)
        room = limits.max_points - per_series - used
        chunk = candidates[first : first + min(most, max(1, room // max(1, last)))]
        found = await read(chunk)
        counts = await asyncio.to_thread(_cells, found, chunk, names, money)
        for j, (g, cells) in enumerate(zip(chunk, counts, strict=True), start=first):
            # Showing the last of all groups leaves nothing for "(other)".
            limit = limits.max_points - (0 if j == total_groups - 1 else per_series)
            if used + cells > limit:
                return shown, sums
            used += cells
            last = cells
            shown.append(g)
            sums.update({k: v for k, v in found.items() if k[1] == g})
    return shown, sums


def _cells(
    found: Mapping[Cell, Sums], groups: Sequence[Group], names: Sequence[str], money: Money
) -> list[int]:
    """How many non-empty cells each group has."""
    where = _occupied(found, money.spend)
    return [
        sum(
            has_data(name, found.get((p, g)), money.spend_of(p, g))
            for p in where.get(g, ())
            for name in names
        )
        for g in groups
    ]


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


def _grouped_cells(found: _Grouped, names: Sequence[str]) -> CellValue:
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


def _grouped_points(found: _Grouped) -> list[tuple[Group, Sequence[int] | None]]:
    """The groups in order ("(other)" last), each with the buckets to answer: every one when
    dense, else those with sums or spend (the others are empty)."""
    groups = sorted(found.shown, key=_order) + ([found.label] if found.label else [])
    if found.dense:
        return [(g, None) for g in groups]
    other = {(p, found.label): a for p, a in found.other_spend.items()}
    where = _occupied(found.sums, {**found.money.spend, **other})
    return [(g, sorted(where.get(g, ()))) for g in groups]


def _grouped_rows(
    found: _Grouped, names: Sequence[str], buckets: Sequence[Bucket], tz: ZoneInfo
) -> list[dict[str, Json | str]]:
    return _points(names, buckets, tz, _grouped_points(found), _grouped_cells(found, names))


def _truncated(found: _Grouped, names: Sequence[str], limits: Limits) -> dict[str, Any] | None:
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
    generation = await repository.active_generation(conn)
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
        found = await _grouped(conn, generation, period, points, names, scope, limits)
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
