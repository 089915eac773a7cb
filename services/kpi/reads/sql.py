"""The hot reads: fixed statements over arrays of ranges, prepared once.

Built with SQLAlchemy, a read's statement has a shape that depends on how many ranges its
periods split into, and building, caching and compiling it cost more than the database's
work. Here the ranges travel as arrays, so every read is one of a few statement texts
(one per set of filters and grouping), which asyncpg prepares once per connection.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.fold.durations import SUBS
from services.kpi.fold.facts import DAY, DIMENSIONS, MONTH
from services.kpi.reads.coverage import cover
from shared.db import as_columns

# (point, metric, value bin, group or None, amount)
Row = tuple[int, str, int, str | None, Decimal]
# (metric, value bin, part of it or EVERY_PART, lo, hi, group, first index, count)
Runs = Sequence[tuple[str, int, int, datetime, datetime, str | None, int, int]]


def _checked(names: Sequence[str]) -> None:
    # Dimension names become SQL text: only the known ones.
    if not set(names) <= set(DIMENSIONS):
        raise ValueError(f"unknown dimensions {sorted(set(names) - set(DIMENSIONS))}")


def _filters(alias: str, filters: Sequence[str], first: int) -> str:
    return "".join(f" AND {alias}.{name} = ${first + i}" for i, name in enumerate(filters))


def _among(alias: str, group_by: str | None, among: bool, param: int) -> str:
    # Only the groups an answer shows (an array parameter after the filters).
    return f" AND {alias}.{group_by} = ANY(${param}::text[])" if among and group_by else ""


# Each range is its own index scan (LATERAL): joined to the ranges as a set, the planner
# would scan the whole table for a handful of buckets.
@lru_cache(maxsize=64)
def _aggregates_sql(filters: tuple[str, ...], group_by: str | None, among: bool = False) -> str:
    group = f"a.{group_by}" if group_by else "NULL::text"
    return (
        "SELECT r.point, s.metric, s.bin, s.grp, sum(s.amount) "
        "FROM unnest($2::int4[], $3::text[], $4::timestamptz[], $5::timestamptz[]) "
        "AS r(point, grain, lo, hi) "
        f"CROSS JOIN LATERAL (SELECT a.metric, a.bin, {group} AS grp, sum(a.value) AS amount "
        "FROM kpi_aggregates AS a WHERE a.generation = $1 AND a.rollup = $6 "
        "AND a.grain = r.grain AND a.bucket_start >= r.lo AND a.bucket_start < r.hi "
        f"AND a.metric = ANY($7::text[]){_filters('a', filters, 8)}"
        f"{_among('a', group_by, among, 8 + len(filters))} GROUP BY 1, 2, 3) AS s "
        "GROUP BY 1, 2, 3, 4"
    )


@lru_cache(maxsize=64)
def _facts_sql(filters: tuple[str, ...], group_by: str | None, among: bool = False) -> str:
    group = f"f.{group_by}" if group_by else "NULL::text"
    return (
        "SELECT r.point, s.metric, s.bin, s.grp, s.value "
        "FROM unnest($2::int4[], $3::timestamptz[], $4::timestamptz[]) AS r(point, lo, hi) "
        f"CROSS JOIN LATERAL (SELECT f.metric, f.bin, {group} AS grp, f.value "
        "FROM kpi_facts AS f WHERE f.generation = $1 AND f.at >= r.lo AND f.at < r.hi "
        f"AND f.metric = ANY($5::text[]){_filters('f', filters, 6)}"
        f"{_among('f', group_by, among, 6 + len(filters))}) AS s"
    )


async def aggregate_sums(
    conn: AsyncConnection,
    generation: int,
    rollup: int,
    ranges: Sequence[tuple[int, str, datetime, datetime]],
    metrics: Sequence[str],
    filters: dict[str, str],
    group_by: str | None,
    groups_in: Sequence[str] | None = None,
) -> list[Row]:
    """Sums per (point, metric, bin, group) of the aggregate buckets of `grain` starting in
    [lo, hi), for each (point, grain, lo, hi) of `ranges` (of the groups `groups_in` only,
    when given)."""
    names = tuple(sorted(filters))
    _checked([*names, *([group_by] if group_by else [])])
    among = groups_in is not None
    result = await conn.exec_driver_sql(
        _aggregates_sql(names, group_by, among),
        (
            generation,
            *as_columns(ranges, 4),
            rollup,
            list(metrics),
            *(filters[n] for n in names),
            *([list(groups_in)] if groups_in is not None else []),
        ),
    )
    rows: list[Any] = list(result)
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def edge_facts(
    conn: AsyncConnection,
    generation: int,
    ranges: Sequence[tuple[int, datetime, datetime]],
    metrics: Sequence[str],
    filters: dict[str, str],
    group_by: str | None,
    groups_in: Sequence[str] | None = None,
) -> list[Row]:
    """The facts (point, metric, bin, group, value) at in [lo, hi), for each (point, lo, hi)
    (of the groups `groups_in` only, when given)."""
    names = tuple(sorted(filters))
    _checked([*names, *([group_by] if group_by else [])])
    result = await conn.exec_driver_sql(
        _facts_sql(names, group_by, groups_in is not None),
        (
            generation,
            *as_columns(ranges, 3),
            list(metrics),
            *(filters[n] for n in names),
            *([list(groups_in)] if groups_in is not None else []),
        ),
    )
    rows: list[Any] = list(result)
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


# A run's part that stands for all of them: a read by dimension reads whole bins.
EVERY_PART = -1
_ALL_PARTS = "{" + ",".join(str(p) for p in range(SUBS)) + "}"


@lru_cache(maxsize=64)
def _durations_sql(filters: tuple[str, ...], group_by: str | None, besides: bool = False) -> str:
    # `besides`: the durations of every group but those of an array parameter after the
    # filters, as one group (an answer's "(other)"). A run reads one part of its bin
    # (durations.sub_of), or with part EVERY_PART all of them: one index scan per part, so
    # the index (.., bin, sub, at, value) is read for the period's rows only.
    group = f" AND f.{group_by} = w.grp" if group_by else ""
    if besides and group_by:
        group = f" AND NOT (f.{group_by} = ANY(${11 + len(filters)}::text[]))"
    return (
        "SELECT w.n, v.vals "
        "FROM unnest($2::int4[], $3::text[], $4::int2[], $5::int2[], $6::timestamptz[], "
        "$7::timestamptz[], $8::text[], $9::int4[], $10::int4[]) "
        "AS w(n, metric, bin, sub, lo, hi, grp, off, cnt) "
        "CROSS JOIN LATERAL (SELECT array_agg(x.value ORDER BY x.value) AS vals FROM ("
        "SELECT f.value FROM kpi_facts AS f WHERE f.generation = $1 "
        "AND f.metric = w.metric AND f.bin = w.bin AND f.bin > 0 "
        f"AND f.sub = ANY(CASE WHEN w.sub = {EVERY_PART} THEN '{_ALL_PARTS}'::int2[] "
        "ELSE ARRAY[w.sub] END) AND f.at >= w.lo AND f.at < w.hi"
        f"{_filters('f', filters, 11)}{group} "
        "ORDER BY f.value LIMIT w.cnt OFFSET w.off) AS x) AS v"
    )


# How many durations each part of a bin holds in a period, and their one value when they
# are all equal (count * sum of squares = sum^2): the days' and months' counts from
# kpi_fine_counts (w.grain), the rest (w.grain '': the hours or minutes at the period's
# edges) counted from the facts, one index scan per part.
_PART_COUNTS_SQL = (
    "SELECT w.n, c.sub, sum(c.cnt)::int8, CASE WHEN sum(c.cnt) > 0 "
    "AND sum(c.cnt) * sum(c.squares) = sum(c.total) * sum(c.total) "
    "THEN round(sum(c.total) / sum(c.cnt), 6) END "
    "FROM unnest($2::int4[], $3::text[], $4::int2[], $5::text[], $6::timestamptz[], "
    "$7::timestamptz[]) AS w(n, metric, bin, grain, lo, hi) "
    "CROSS JOIN LATERAL ("
    "SELECT k.sub, k.count AS cnt, k.total, k.squares FROM kpi_fine_counts AS k "
    "WHERE w.grain <> '' AND k.generation = $1 AND k.metric = w.metric AND k.bin = w.bin "
    "AND k.grain = w.grain AND k.bucket_start >= w.lo AND k.bucket_start < w.hi "
    "UNION ALL "
    "SELECT f.sub, count(*), sum(f.value), sum(f.value * f.value) FROM kpi_facts AS f "
    "WHERE w.grain = '' AND f.generation = $1 AND f.metric = w.metric AND f.bin = w.bin "
    f"AND f.bin > 0 AND f.sub = ANY('{_ALL_PARTS}'::int2[]) AND f.at >= w.lo AND f.at < w.hi "
    "GROUP BY f.sub) AS c "
    "GROUP BY 1, 2"
)


class PartCount(NamedTuple):
    n: int  # how many durations
    only: Decimal | None  # the value of every duration counted, when they are all equal


async def part_counts(
    conn: AsyncConnection,
    generation: int,
    reads: Sequence[tuple[str, int, datetime, datetime]],
) -> dict[int, dict[int, PartCount]]:
    """For each (metric, bin, lo, hi), by its position in `reads`: how many of the bin's
    durations closing in [lo, hi) each of its parts holds (in total: no dimensions), and
    their value if they are all equal."""
    rows: list[tuple[int, str, int, str, datetime, datetime]] = []
    for n, (metric, bin_, lo, hi) in enumerate(reads):
        cov = cover(lo, hi, (DAY, MONTH))
        rows.extend((n, metric, bin_, grain, b_lo, b_hi) for grain, b_lo, b_hi in cov.buckets)
        rows.extend((n, metric, bin_, "", f_lo, f_hi) for f_lo, f_hi in cov.facts)
    out: dict[int, dict[int, PartCount]] = {}
    if not rows:
        return out
    result = await conn.exec_driver_sql(_PART_COUNTS_SQL, (generation, *as_columns(rows, 6)))
    found: list[Any] = list(result)
    for n, sub, count, only in found:
        if count:
            out.setdefault(int(n), {})[int(sub)] = PartCount(int(count), only)
    return out


# A read of this many runs or more is split between the reading connection and a second
# one that shares its snapshot, so the database reads the halves at once: at a million
# leads a quarter's summary spent 20 ms here on one core, two thirds of its time, when
# every run read a whole bin (a read by dimension still does). The second connection costs
# about half a millisecond (checkout, snapshot), so small reads stay on one.
SPLIT_RUNS_FROM = 8


async def duration_runs(
    conn: AsyncConnection,
    generation: int,
    runs: Runs,
    filters: dict[str, str],
    group_by: str | None,
    groups_not_in: Sequence[str] | None = None,
) -> dict[int, list[Decimal]]:
    """For each run (metric, bin, part, lo, hi, group, first index, count), by its position
    in `runs`: the durations from the first index (from 0) on, in order, of that bin's part
    (EVERY_PART: of the bin) closing in [lo, hi), in the group (with `groups_not_in`: in none
    of those groups). One sorted read gives every rank of a run (a median's two)."""
    names = tuple(sorted(filters))
    _checked([*names, *([group_by] if group_by else [])])
    besides = groups_not_in is not None and group_by is not None
    sql = _durations_sql(names, group_by, besides)
    values: list[Any] = [filters[n] for n in names]
    if besides:
        assert groups_not_in is not None
        values.append(list(groups_not_in))
    if len(runs) < SPLIT_RUNS_FROM:
        return await _read_runs(conn, sql, generation, runs, 0, values)
    # The second transaction reads the database as this one sees it (pg_export_snapshot).
    # It runs on the driver's connection: SQLAlchemy would prepare the SET statement (its
    # text differs every time) and begin in a round trip of its own.
    snapshot = _snapshot_id((await conn.exec_driver_sql(_EXPORT_SQL)).scalar_one())
    half = len(runs) // 2
    async with conn.engine.connect() as sibling:
        driver: asyncpg.Connection = (await sibling.get_raw_connection()).driver_connection
        async with driver.transaction(isolation="repeatable_read", readonly=True):
            await driver.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            first, second = await asyncio.gather(
                _read_runs(conn, sql, generation, runs[:half], 0, values),
                _read_runs_on_driver(driver, sql, generation, runs[half:], half, values),
            )
    return {**first, **second}


_EXPORT_SQL = "SELECT pg_export_snapshot()"


def _snapshot_id(text: str) -> str:
    # An id the server made ('00000003-0000001B-1'); checked, as it becomes SQL text.
    if not re.fullmatch(r"[0-9A-F]+(-[0-9A-F]+)+", text):
        raise ValueError(f"unexpected snapshot id {text!r}")
    return text


def _run_params(generation: int, runs: Runs, first_n: int, filters: Sequence[Any]) -> list[Any]:
    rows: list[tuple[Any, ...]] = [
        (first_n + i, metric, bin_, sub, lo, hi, group or "", first, count)
        for i, (metric, bin_, sub, lo, hi, group, first, count) in enumerate(runs)
    ]
    return [generation, *as_columns(rows, 9), *filters]


def _found(rows: Sequence[Any]) -> dict[int, list[Decimal]]:
    return {int(r[0]): [Decimal(v) for v in (r[1] or [])] for r in rows}


async def _read_runs(
    conn: AsyncConnection,
    sql: str,
    generation: int,
    runs: Runs,
    first_n: int,
    filters: Sequence[Any],
) -> dict[int, list[Decimal]]:
    result = await conn.exec_driver_sql(sql, tuple(_run_params(generation, runs, first_n, filters)))
    return _found(list(result))


async def _read_runs_on_driver(
    driver: asyncpg.Connection,
    sql: str,
    generation: int,
    runs: Runs,
    first_n: int,
    filters: Sequence[Any],
) -> dict[int, list[Decimal]]:
    return _found(await driver.fetch(sql, *_run_params(generation, runs, first_n, filters)))
