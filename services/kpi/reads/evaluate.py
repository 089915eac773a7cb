"""Exact values of metrics for points in time: stored sums, exact durations, and plan and
spend spread over each point, computed by the catalogue's formulas. In the caller's
connection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.catalogue import (
    DURATION_METRICS,
    USES_PLAN,
    USES_SPEND,
    DurationStats,
    Value,
    compute,
    stored_needed,
)
from services.kpi.fold import durations
from services.kpi.plans import spread
from services.kpi.plans import store as plans_store
from services.kpi.reads import stored as reads
from services.kpi.reads.coverage import cover
from services.kpi.reads.periods import Period
from services.kpi.reads.stored import Slice

SPEND_DIMENSIONS = frozenset({"channel", "campaign"})


@dataclass(frozen=True)
class Scope:
    """What a read is about: filters, an optional grouping, and the time zone of dates."""

    tz: ZoneInfo
    filters: Mapping[str, str]
    group_by: str | None = None

    @property
    def slice(self) -> Slice:
        return Slice(self.filters, self.group_by)

    @property
    def dimensions(self) -> set[str]:
        return set(self.filters) | ({self.group_by} if self.group_by else set())


# (point index, group) -> metric name -> exact value
Values = dict[tuple[int, str | None], dict[str, Value]]


async def duration_stats(
    conn: AsyncConnection,
    generation: int,
    points: Sequence[Period],
    stored: Mapping[tuple[int, str | None], reads.Sums],
    names: Iterable[str],
    where: Slice,
) -> dict[tuple[int, str | None, str], DurationStats]:
    """Median and p90 of each duration metric per (point, group): the bin counts say which
    bins hold the ranks needed; the database returns just those values."""
    wanted: list[reads.Wanted] = []
    plans: list[tuple[tuple[int, str | None, str], int, dict[int, reads.Wanted]]] = []
    for (point, group), sums in stored.items():
        p = points[point]
        # Each duration's bin counts, in one pass over the sums (they hold every metric).
        histograms: dict[str, dict[int, int]] = {}
        for (m, b), v in sums.items():
            if b and v:
                histograms.setdefault(m, {})[b] = int(v)
        for metric in names:
            histogram = histograms.get(metric, {})
            n = sum(histogram.values())
            located = durations.locate(histogram, durations.needed_ranks(n))
            by_rank = {
                rank: (metric, b, p.start, p.end, group, index)
                for rank, (b, index) in located.items()
            }
            wanted.extend(by_rank.values())
            plans.append(((point, group, metric), n, by_rank))
    values = await reads.duration_values(conn, generation, wanted, where)
    out: dict[tuple[int, str | None, str], DurationStats] = {}
    for key, n, by_rank in plans:
        ranked = {rank: values[w] for rank, w in by_rank.items()}
        out[key] = durations.stats_from_ranks(n, ranked.__getitem__)
    return out


@dataclass
class Money:
    """Plan per point, spend per (point, group); None where the scope's dimensions rule them out."""

    plan: dict[int, Decimal]
    spend: dict[tuple[int, str | None], Decimal]
    plan_applies: bool
    spend_applies: bool

    def plan_of(self, point: int) -> Decimal | None:
        return self.plan.get(point, Decimal(0)) if self.plan_applies else None

    def spend_of(self, point: int, group: str | None) -> Decimal | None:
        return self.spend.get((point, group), Decimal(0)) if self.spend_applies else None


async def plan_and_spend(
    conn: AsyncConnection, points: Sequence[Period], scope: Scope, names: set[str]
) -> Money:
    """Plans carry no dimension and spend carries channel and campaign only: filtered or
    grouped by another dimension, they are unknown (None), not zero."""
    money = Money(
        {},
        {},
        plan_applies=bool(names & USES_PLAN) and not scope.dimensions,
        spend_applies=bool(names & USES_SPEND) and scope.dimensions <= SPEND_DIMENSIONS,
    )
    if not (money.plan_applies or money.spend_applies):
        return money
    shares = [spread.share_fractions(p, scope.tz) for p in points]
    months = sorted({m for s in shares for m in s})
    if money.plan_applies:
        amounts = await plans_store.monthly_plans(conn, months)
        money.plan = {i: spread.spread(amounts, s) for i, s in enumerate(shares)}
    if money.spend_applies:
        by_group: dict[str | None, list[tuple[str, Decimal]]] = {}
        for month, channel, campaign, amount in await plans_store.monthly_spend(
            conn, months, scope.filters
        ):
            group = {"channel": channel, "campaign": campaign}.get(scope.group_by or "")
            by_group.setdefault(group, []).append((month, amount))
        money.spend = {
            (i, group): spread.spread(amounts, s)
            for i, s in enumerate(shares)
            for group, amounts in by_group.items()
        }
    return money


async def evaluate(
    conn: AsyncConnection,
    generation: int,
    points: Sequence[Period],
    names: Sequence[str],
    scope: Scope,
) -> Values:
    """Exact values of `names` for each point: the consecutive buckets of a timeseries, or a
    period and its comparisons (which may overlap)."""
    stored_names = stored_needed(list(names))
    stored = await reads.sums(
        conn,
        generation,
        [(p.start, cover(p.start, p.end, scope.slice.grains)) for p in points],
        stored_names,
        scope.slice,
    )
    money = await plan_and_spend(conn, points, scope, set(names))
    groups: set[str | None] = {None}
    if scope.group_by:
        # Every group any point has, so each group's series is complete; spend may know a
        # channel that brought no lead yet.
        groups = {g for _, g in stored} | {g for _, g in money.spend}
    duration_names = [n for n in DURATION_METRICS if n in stored_names]
    stats = (
        await duration_stats(conn, generation, points, stored, duration_names, scope.slice)
        if duration_names
        else {}
    )
    out: Values = {}
    for i in range(len(points)):
        for group in groups:
            sums = {m: v for (m, b), v in stored.get((i, group), {}).items() if b == 0}
            point_stats = {
                m: stats.get((i, group, m), DurationStats(None, None, 0)) for m in duration_names
            }
            out[(i, group)] = {
                name: compute(name, sums, point_stats, money.plan_of(i), money.spend_of(i, group))
                for name in names
            }
    return out
