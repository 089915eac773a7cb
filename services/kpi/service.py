"""KPI use cases: fold events into a generation, and answer summary and funnel (and the
reads services/kpi/series.py builds timeseries from).

They run in the caller's connection or transaction; none of them commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi import durations, periods, repository, spread
from services.kpi.coverage import cover
from services.kpi.fold import fold
from services.kpi.lead_state import concerns_kpi
from services.kpi.metrics import (
    CATALOGUE,
    DURATION_METRICS,
    FUNNEL_STAGES,
    METRICS,
    USES_PLAN,
    USES_SPEND,
    DurationStats,
    Unit,
    Value,
    compute,
    stored_needed,
)
from services.kpi.periods import Period
from services.kpi.presentation import comparison, write
from services.kpi.repository import Slice
from shared.events import Event, LeadPaymentReceived

# Bump when the fold's rules change: generations folded by older rules must be rebuilt.
# Each generation keeps folding by the rules it was created with until a rebuild replaces
# it. v2: duration value bins 2% wide instead of 20% (services/kpi/durations.py).
FOLD_VERSION = 2

SPEND_DIMENSIONS = frozenset({"channel", "campaign"})


class UnfoldableEvent(ValueError):
    """An event the KPI cannot count (another currency, a mismatched lead id): parked."""


def check_foldable(event: Event, currency: str) -> None:
    lead_id = event.data.lead_id
    if lead_id != event.subject:
        raise UnfoldableEvent(f"subject {event.subject!r} is not the data's lead {lead_id!r}")
    if isinstance(event, LeadPaymentReceived) and event.data.currency.upper() != currency.upper():
        raise UnfoldableEvent(
            f"payment {event.data.payment_id!r} is in {event.data.currency}, "
            f"not in the deployment's currency {currency}"
        )


def foldable(event: Event, currency: str) -> bool:
    try:
        check_foldable(event, currency)
    except UnfoldableEvent:
        return False
    return True


async def fold_into(
    conn: AsyncConnection, generation: int, fold_version: int, events: Sequence[Event]
) -> int:
    """Fold events into one generation, by the rules it was created with; how many leads
    changed."""
    relevant = [e for e in events if concerns_kpi(e)]
    if not relevant:
        return 0
    edges = durations.bin_edges(fold_version)
    states = await repository.lock_leads(conn, generation, (e.subject for e in relevant))
    changes = fold(states, relevant, edges)
    await repository.write_changes(conn, generation, changes)
    return len(changes.states)


async def apply_live(conn: AsyncConnection, events: Sequence[Event]) -> None:
    """The live consumer's batch: into the active generation and one being rebuilt."""
    for generation, fold_version in await repository.lock_generations_to_fold(conn):
        await fold_into(conn, generation, fold_version, events)


# Reading


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
    stored: Mapping[tuple[int, str | None], repository.Sums],
    names: Iterable[str],
    where: Slice,
) -> dict[tuple[int, str | None, str], DurationStats]:
    """Median and p90 of each duration metric per (point, group): the bin counts say which
    bins hold the ranks needed; the database returns just those values."""
    wanted: list[repository.Wanted] = []
    plans: list[tuple[tuple[int, str | None, str], int, dict[int, repository.Wanted]]] = []
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
    values = await repository.duration_values(conn, generation, wanted, where)
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
        {}, {},
        plan_applies=bool(names & USES_PLAN) and not scope.dimensions,
        spend_applies=bool(names & USES_SPEND) and scope.dimensions <= SPEND_DIMENSIONS,
    )  # fmt: skip
    if not (money.plan_applies or money.spend_applies):
        return money
    shares = [spread.share_fractions(p, scope.tz) for p in points]
    months = sorted({m for s in shares for m in s})
    if money.plan_applies:
        amounts = await repository.monthly_plans(conn, months)
        money.plan = {i: spread.spread(amounts, s) for i, s in enumerate(shares)}
    if money.spend_applies:
        by_group: dict[str | None, list[tuple[str, Decimal]]] = {}
        for month, channel, campaign, amount in await repository.monthly_spend(
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
    stored = await repository.sums(
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


def iso(dt: datetime, tz: ZoneInfo) -> str:
    return dt.astimezone(tz).isoformat()


def period_json(p: Period, tz: ZoneInfo) -> dict[str, str]:
    return {"from": iso(p.start, tz), "to": iso(p.end, tz)}


ALL_METRICS: tuple[str, ...] = tuple(m.name for m in CATALOGUE)


async def summary(
    conn: AsyncConnection, period: Period, scope: Scope, names: Sequence[str] = ALL_METRICS
) -> dict[str, Any]:
    generation = await repository.active_generation(conn)
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
    generation = await repository.active_generation(conn)
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


# Plans and spend


async def put_plan(
    conn: AsyncConnection, month: str, revenue: Decimal, by: str, now: datetime
) -> None:
    await repository.put_plan(conn, month, revenue, by, now)


async def put_spend(
    conn: AsyncConnection,
    month: str,
    channel: str,
    campaign: str,
    amount: Decimal,
    by: str,
    now: datetime,
) -> None:
    await repository.put_spend(conn, month, channel, campaign, amount, by, now)
