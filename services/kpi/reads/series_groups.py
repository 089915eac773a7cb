"""Which groups a grouped timeseries shows, and the sums it reads for them: the top groups by
rank, as many as fit in an answer's points, and "(other)" holding the rest (see
services/kpi/reads/series.py)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.catalogue import (
    DURATION_METRICS,
    LTV_CLIENTS,
    USES_SPEND,
    DurationStats,
    stored_needed,
)
from services.kpi.reads import stored
from services.kpi.reads.coverage import Coverage, cover
from services.kpi.reads.evaluate import Money, Scope, duration_stats, plan_and_spend
from services.kpi.reads.periods import Period
from services.kpi.reads.stored import Slice, Sums

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


def occupied(
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


def group_order(g: Group) -> tuple[bool, str]:
    return (g is not None, g or "")


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
    return await stored.sums(conn, generation, covered, metrics, where)


@dataclass
class Grouped:
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
    found, total = await stored.rank_groups(
        conn,
        generation,
        whole,
        stored_names,
        [m for m in ranked_by if m != SPEND],
        where,
        limit=limit,
    )
    rank: dict[Group, Decimal] = {g or None: r for g, r in found}
    # A group that spend names beyond those rows ranks after them (or by its spend below);
    # it is one more group unless it has stored data too.
    extra = [g for g in spend_total if g not in rank]
    if extra:
        among = Slice(where.filters, where.group_by, groups_in=_stored(extra))
        known, _ = await stored.rank_groups(conn, generation, whole, stored_names, [], among)
        total += len(set(extra) - {g or None for g, _ in known})
        rank.update(dict.fromkeys(extra, Decimal(0)))
    if SPEND in ranked_by:
        for g, amount in spend_total.items():
            rank[g] += amount
    return sorted(rank, key=lambda g: (-rank[g], *group_order(g)))[:limit], total


async def read_groups(
    conn: AsyncConnection,
    generation: int,
    period: Period,
    points: Sequence[Period],
    names: Sequence[str],
    scope: Scope,
    limits: Limits,
) -> Grouped:
    where = scope.slice
    stored_names = sorted(stored_needed(list(names)))
    money = await plan_and_spend(conn, points, scope, set(names))
    spend_total: dict[Group, Decimal] = {}
    for (_, g), amount in money.spend.items():
        if amount:
            spend_total[g] = spend_total.get(g, Decimal(0)) + amount
    candidates, total_groups = await _ranked(
        conn,
        generation,
        period,
        stored_names,
        rank_inputs(names[0]),
        where,
        spend_total,
        limits.max_groups,
    )

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
    return Grouped(
        shown,
        total_groups,
        len(candidates),
        dense,
        label,
        {**sums, **other_sums},
        stats,
        money,
        other_spend,
    )


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
    where = occupied(found, money.spend)
    return [
        sum(
            has_data(name, found.get((p, g)), money.spend_of(p, g))
            for p in where.get(g, ())
            for name in names
        )
        for g in groups
    ]
