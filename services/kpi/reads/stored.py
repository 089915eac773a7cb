"""The reads of stored numbers: sums of aggregates and edge facts, ranked groups, and
exact durations, over a slice of the dimensions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.fold import durations
from services.kpi.fold.facts import BY_DIMENSIONS, ROLLUP_GRAINS, TOTAL
from services.kpi.reads import sql
from services.kpi.reads.coverage import Coverage
from services.kpi.store.tables import aggregates, facts


@dataclass(frozen=True)
class Slice:
    """Which rows a read looks at: dimension filters, and an optional dimension to group by.

    `groups_in` keeps only these values of `group_by` (the groups an answer shows);
    `groups_not_in` every value but these (the rest, read as one group). Values as stored:
    '' for none.
    """

    filters: Mapping[str, str]
    group_by: str | None = None
    groups_in: tuple[str, ...] | None = None
    groups_not_in: tuple[str, ...] | None = None

    @property
    def rollup(self) -> int:
        return BY_DIMENSIONS if self.filters or self.group_by else TOTAL

    @property
    def grains(self) -> tuple[str, ...]:
        return ROLLUP_GRAINS[self.rollup]


def _where_dims(table: sa.Table, where: Slice) -> list[sa.ColumnElement[bool]]:
    out = [table.c[name] == value for name, value in where.filters.items()]
    if where.group_by and where.groups_in is not None:
        out.append(table.c[where.group_by].in_(where.groups_in))
    if where.group_by and where.groups_not_in is not None:
        out.append(table.c[where.group_by].not_in(where.groups_not_in))
    return out


# (metric, bin) -> summed value; for a duration, bin >= 1 and the value is a count.
Sums = dict[tuple[str, int], Decimal]


async def sums(
    conn: AsyncConnection,
    generation: int,
    points: Sequence[tuple[datetime, Coverage]],
    metrics: Iterable[str],
    where: Slice,
) -> dict[tuple[int, str | None], Sums]:
    """Sums per (point, group) of stored metrics over each point's coverage (points may
    overlap: a period and its comparisons), in one read of the aggregates and one of the
    facts at the edges: each point's ranges go as arrays to two prepared statements."""
    metric_list = sorted(set(metrics))
    out: dict[tuple[int, str | None], Sums] = {}
    if not metric_list or not points:
        return out
    filters = dict(where.filters)
    buckets = [(i, *b) for i, (_, cov) in enumerate(points) for b in cov.buckets]
    if buckets:
        rows = await sql.aggregate_sums(
            conn,
            generation,
            where.rollup,
            buckets,
            metric_list,
            filters,
            where.group_by,
            where.groups_in,
        )
        for point, metric, bin_, group, amount in rows:
            _add_sum(out, point, group, metric, bin_, amount)
    edges = [(i, *r) for i, (_, cov) in enumerate(points) for r in cov.facts]
    if edges:
        rows = await sql.edge_facts(
            conn, generation, edges, metric_list, filters, where.group_by, where.groups_in
        )
        for point, metric, bin_, group, value in rows:
            # A duration's aggregate counts it in its bin; a count or sum adds its value.
            _add_sum(out, point, group, metric, bin_, 1 if bin_ else value)
    return out


def _add_sum(
    out: dict[tuple[int, str | None], Sums],
    point: int,
    group: str | None,
    metric: str,
    bin_: int,
    amount: Any,
) -> None:
    if not amount:
        # A row back at zero (a lead that moved to another route) is no data: it must not
        # make an empty group appear.
        return
    key = (point, group if group != "" else None)
    bucket = out.setdefault(key, {})
    bucket[(metric, bin_)] = bucket.get((metric, bin_), Decimal(0)) + Decimal(amount)


async def rank_groups(
    conn: AsyncConnection,
    generation: int,
    cov: Coverage,
    metrics: Sequence[str],
    rank_metrics: Sequence[str],
    where: Slice,
    *,
    limit: int | None = None,
) -> tuple[list[tuple[str, Decimal]], int]:
    """The values of `where.group_by` that have data for `metrics` over a coverage, by the
    total of `rank_metrics` (a duration counts its leads) largest first, then by name (code
    point order): the first `limit` with their totals (stored values, '' for none), and how
    many there are in all.

    The database ranks and counts them, so however many groups a store holds (campaigns come
    from anonymous form posts) only `limit` rows come back.
    """
    group_by = where.group_by
    assert group_by is not None
    if not metrics or not (cov.buckets or cov.facts):
        return [], 0
    a, f = aggregates.c, facts.c
    metric_list = sorted(set(metrics))
    branches: list[Any] = []
    if cov.buckets:
        ranges = [
            sa.and_(a.grain == grain, a.bucket_start >= lo, a.bucket_start < hi)
            for grain, lo, hi in cov.buckets
        ]
        branches.append(
            sa.select(a[group_by].label("grp"), a.metric, a.value.label("amount")).where(
                a.generation == generation,
                a.rollup == where.rollup,
                a.metric.in_(metric_list),
                sa.or_(*ranges),
                *_where_dims(aggregates, where),
            )
        )
    if cov.facts:
        # A duration's aggregate counts it in its bin; a count or sum adds its value.
        amount = sa.case((f.bin > 0, sa.literal(1, sa.Numeric)), else_=f.value)
        branches.append(
            sa.select(f[group_by].label("grp"), f.metric, amount.label("amount")).where(
                f.generation == generation,
                f.metric.in_(metric_list),
                sa.or_(*[sa.and_(f.at >= lo, f.at < hi) for lo, hi in cov.facts]),
                *_where_dims(facts, where),
            )
        )
    rows_of: Any = sa.union_all(*branches) if len(branches) > 1 else branches[0]
    u = rows_of.subquery()
    rank_list = sorted(set(rank_metrics))
    rank: Any = (
        sa.func.sum(sa.case((u.c.metric.in_(rank_list), u.c.amount), else_=0))
        if rank_list
        else None
    )
    # A group whose every row is back at zero (its leads moved to another route) has no data.
    has_data = sa.func.sum(sa.case((u.c.amount != 0, 1), else_=0)) > 0
    name = u.c.grp.collate("C")  # code point order, whatever the database's collation
    stmt = (
        sa.select(u.c.grp, rank if rank is not None else sa.null(), sa.func.count().over())
        .group_by(u.c.grp)
        .having(has_data)
        .order_by(*([rank.desc()] if rank is not None else []), name)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = (await conn.execute(stmt)).all()
    ranked = [(str(r[0]), Decimal(str(r[1] or 0))) for r in rows]
    return ranked, int(rows[0][2]) if rows else 0


# One duration to find: (metric, value bin, period start, period end, group, index in bin).
Wanted = tuple[str, int, datetime, datetime, str | None, int]
# Consecutive durations of one part of a bin (sql.EVERY_PART: of the bin) and period:
# (metric, bin, part, start, end, group, first index in the part, count).
Run = tuple[str, int, int, datetime, datetime, str | None, int, int]
# Where a wanted duration is read: (metric, bin, part, start, end, group, index in the part).
Place = tuple[str, int, int, datetime, datetime, str | None, int]
# Indexes this close share a read: reading the few between costs less than sorting again.
RUN_GAP = 32


def _runs(places: Iterable[Place]) -> list[Run]:
    by_read: dict[tuple[str, int, int, datetime, datetime, str | None], list[int]] = {}
    for metric, bin_, sub, start, end, group, index in places:
        by_read.setdefault((metric, bin_, sub, start, end, group), []).append(index)
    runs: list[Run] = []
    for read, indexes in by_read.items():
        indexes.sort()
        first = last = indexes[0]
        for index in indexes[1:]:
            if index - last > RUN_GAP:
                runs.append((*read, first, last - first + 1))
                first = index
            last = index
        runs.append((*read, first, last - first + 1))
    return runs


async def _places(
    conn: AsyncConnection, generation: int, wanted: Sequence[Wanted], where: Slice
) -> dict[Wanted, Place | Decimal]:
    """Which part of its bin holds each wanted duration, and its index there; or its value,
    when every duration of that part in the period is equal. The parts are counted in total
    only (kpi_fine_counts), so a read by dimension reads the whole bin."""
    every: dict[Wanted, Place | Decimal] = {w: (w[0], w[1], sql.EVERY_PART, *w[2:]) for w in wanted}
    if where.rollup != TOTAL or not wanted:
        return every
    reads = list(dict.fromkeys((m, b, start, end) for m, b, start, end, _, _ in wanted))
    counts = await sql.part_counts(conn, generation, reads)
    at = {read: n for n, read in enumerate(reads)}
    out: dict[Wanted, Place | Decimal] = {}
    for w in wanted:
        metric, bin_, start, end, group, index = w
        parts = counts.get(at[(metric, bin_, start, end)], {})
        try:
            [(sub, inner)] = durations.locate(
                {sub: part.n for sub, part in parts.items()}, [index]
            ).values()
        except ValueError:
            # Counts short of the rank (a store whose counts and facts disagree): the whole bin.
            out[w] = every[w]
            continue
        only = parts[sub].only
        out[w] = only if only is not None else (metric, bin_, sub, start, end, group, inner)
    return out


async def duration_values(
    conn: AsyncConnection, generation: int, wanted: Sequence[Wanted], where: Slice
) -> dict[Wanted, Decimal]:
    """The seconds of each wanted duration: the `index`-th smallest (from 0) of `metric`'s
    durations in value bin `bin` that close within [start, end) (and are in `group` of
    `where.group_by`, or, with `where.groups_not_in`, in none of those groups).

    The database picks them (ORDER BY ... LIMIT count OFFSET first): it reads only the
    rows within the period of the part of the bin that holds the rank (every part, for a
    read by dimension), and only the few values asked for travel back; close indexes of one
    part and period (a median's two ranks) come from one sorted read. A part whose
    durations in the period are all equal needs no read: its counts give the value.
    """
    unique = list(dict.fromkeys(wanted))
    places = await _places(conn, generation, unique, where)
    runs = _runs(p for p in places.values() if not isinstance(p, Decimal))
    found_at: dict[Place, Decimal] = {}
    if runs:
        found = await sql.duration_runs(
            conn, generation, runs, dict(where.filters), where.group_by, where.groups_not_in
        )
        for n, values in found.items():
            metric, bin_, sub, start, end, group, first, _ = runs[n]
            for i, value in enumerate(values):
                found_at[(metric, bin_, sub, start, end, group, first + i)] = value
    out: dict[Wanted, Decimal] = {}
    for w in unique:
        place = places[w]
        if isinstance(place, Decimal):
            out[w] = place
        elif place in found_at:
            out[w] = found_at[place]
    return out
