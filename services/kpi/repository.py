"""Every query of the KPI service."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi import lead_state, pg_reads
from services.kpi.coverage import Coverage
from services.kpi.fold import (
    BY_DIMENSIONS,
    DAY,
    DIMENSIONS,
    HOUR,
    MONTH,
    ROLLUP_GRAINS,
    TOTAL,
    Changes,
    Dims,
    FactDelta,
    aggregate_amount,
)
from services.kpi.tables import (
    aggregates,
    facts,
    generations,
    leads,
    plans,
    rebuild_progress,
    spend,
)
from shared.db import utcnow

ACTIVE, BUILDING, RETIRED, CANCELLED = "active", "building", "retired", "cancelled"
_AGG_KEYS = tuple(c.name for c in aggregates.primary_key.columns)
_FACT_KEYS = ("generation", "lead_id", "metric", "item")


# Generations


@dataclass(frozen=True)
class Generation:
    generation: int
    status: str
    fold_version: int
    requested_by: str | None
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    purged_at: datetime | None
    targets: dict[str, dict[str, int]] | None


def _generation(row: Any) -> Generation:
    return Generation(**row._mapping)


async def active_generation(conn: AsyncConnection) -> int:
    found = await pg_reads.generation_with_status(conn, ACTIVE)
    if found is None:
        raise RuntimeError("no active KPI generation: run the migrations (leadflow migrate kpi)")
    return int(found)


async def lock_generations_to_fold(conn: AsyncConnection) -> list[tuple[int, int]]:
    """The generations a live batch writes, with their fold versions: the active one and one
    being built.

    The rows are share-locked until the batch commits, so a switch (which
    updates them) waits for batches under way and no batch writes a retired generation.
    """
    g = generations.c
    stmt = (
        sa.select(g.generation, g.fold_version)
        .where(g.status.in_((ACTIVE, BUILDING)))
        .order_by(g.generation)
        .with_for_update(read=True)
    )
    return [(int(r[0]), int(r[1])) for r in await conn.execute(stmt)]


async def lock_if_building(conn: AsyncConnection, generation: int) -> int | None:
    """The fold version of `generation`, share-locked, if it is still being built."""
    g = generations.c
    stmt = (
        sa.select(g.status, g.fold_version)
        .where(g.generation == generation)
        .with_for_update(read=True)
    )
    row = (await conn.execute(stmt)).first()
    return int(row[1]) if row is not None and row[0] == BUILDING else None


async def adopt_fold_rules_if_empty(
    conn: AsyncConnection, generation: int, fold_version: int
) -> bool:
    """Give a generation nothing has been folded into yet (a fresh install's first) the
    current fold rules; whether it changed. The caller's transaction holds the row lock
    until it commits.

    The row lock comes first: it waits for live batches under way (they share-lock the row)
    and keeps new ones out until commit, so the emptiness read next is final.
    """
    g = generations.c
    stmt = sa.select(g.fold_version).where(g.generation == generation).with_for_update()
    current = await conn.scalar(stmt)
    if current is None or current == fold_version:
        return False
    for table in (leads, facts):
        if await conn.scalar(sa.select(sa.literal(1)).where(table.c.generation == generation)):
            return False
    await conn.execute(
        generations.update().where(g.generation == generation).values(fold_version=fold_version)
    )
    return True


async def get_generation(conn: AsyncConnection, generation: int) -> Generation | None:
    row = (
        await conn.execute(sa.select(generations).where(generations.c.generation == generation))
    ).first()
    return None if row is None else _generation(row)


async def list_generations(conn: AsyncConnection) -> list[Generation]:
    rows = await conn.execute(sa.select(generations).order_by(generations.c.generation.desc()))
    return [_generation(r) for r in rows]


async def building_generation(conn: AsyncConnection) -> Generation | None:
    row = (
        await conn.execute(sa.select(generations).where(generations.c.status == BUILDING))
    ).first()
    return None if row is None else _generation(row)


async def create_generation(
    conn: AsyncConnection, *, fold_version: int, requested_by: str, now: datetime
) -> int:
    """A new generation to build; IntegrityError when one is being built already."""
    top = await conn.scalar(sa.select(sa.func.max(generations.c.generation)))
    generation = int(top or 0) + 1
    await conn.execute(
        generations.insert().values(
            generation=generation, status=BUILDING, fold_version=fold_version,
            requested_by=requested_by, created_at=now,
        )
    )  # fmt: skip
    return generation


async def set_targets(
    conn: AsyncConnection, generation: int, targets: Mapping[str, Mapping[str, int]]
) -> None:
    g = generations.c
    await conn.execute(
        generations.update()
        .where(g.generation == generation, g.targets.is_(None))
        .values(targets={t: dict(p) for t, p in targets.items()})
    )


async def switch_to(conn: AsyncConnection, generation: int, now: datetime) -> bool:
    """Make a caught-up generation the active one, in the caller's transaction."""
    g = generations.c
    locked = await conn.execute(
        sa.select(g.generation, g.status)
        .where(g.status.in_((ACTIVE, BUILDING)))
        .order_by(g.generation)
        .with_for_update()
    )
    statuses = {int(r.generation): r.status for r in locked}
    if statuses.get(generation) != BUILDING:
        return False
    await conn.execute(
        generations.update().where(g.status == ACTIVE).values(status=RETIRED, retired_at=now)
    )
    await conn.execute(
        generations.update()
        .where(g.generation == generation)
        .values(status=ACTIVE, activated_at=now)
    )
    return True


async def cancel(conn: AsyncConnection, generation: int, now: datetime) -> bool:
    g = generations.c
    result = await conn.execute(
        generations.update()
        .where(g.generation == generation, g.status == BUILDING)
        .values(status=CANCELLED, retired_at=now)
    )
    return result.rowcount == 1


async def generations_to_purge(conn: AsyncConnection, retired_before: datetime) -> list[int]:
    g = generations.c
    rows = await conn.scalars(
        sa.select(g.generation).where(
            g.status.in_((RETIRED, CANCELLED)),
            g.purged_at.is_(None),
            g.retired_at <= retired_before,
        )
    )
    return [int(v) for v in rows]


async def purge(conn: AsyncConnection, generation: int, now: datetime) -> None:
    """Delete a retired generation's rows (its row stays, as history)."""
    for table in (aggregates, facts, leads, rebuild_progress):
        await conn.execute(table.delete().where(table.c.generation == generation))
    await conn.execute(
        generations.update().where(generations.c.generation == generation).values(purged_at=now)
    )


# Rebuild progress


async def progress(conn: AsyncConnection, generation: int) -> dict[str, dict[str, int]]:
    p = rebuild_progress.c
    out: dict[str, dict[str, int]] = {}
    rows = await conn.execute(
        sa.select(p.topic, p.partition, p.next_offset).where(p.generation == generation)
    )
    for topic, partition, next_offset in rows:
        out.setdefault(topic, {})[str(partition)] = int(next_offset)
    return out


async def save_progress(
    conn: AsyncConnection, generation: int, positions: Mapping[tuple[str, int], int]
) -> None:
    """Record how far each partition is folded; a position never moves back."""
    if not positions:
        return
    stmt = postgresql.insert(rebuild_progress)
    stmt = stmt.on_conflict_do_update(
        index_elements=["generation", "topic", "partition"],
        set_={
            "next_offset": sa.case(
                (stmt.excluded.next_offset > rebuild_progress.c.next_offset,
                 stmt.excluded.next_offset),
                else_=rebuild_progress.c.next_offset,
            )
        },
    )  # fmt: skip
    await conn.execute(
        stmt,
        [
            {"generation": generation, "topic": t, "partition": p, "next_offset": o}
            for (t, p), o in sorted(positions.items())
        ],
    )


# Folding


# Bulk writes. A batch writes thousands of rows; going through SQLAlchemy's per-row parameter
# processing costs more than the database's work. So each bulk write is one statement: an
# INSERT ... SELECT FROM unnest(<one array per column>).

_PG_ARRAY = {
    sa.SmallInteger: "int2", sa.BigInteger: "int8", sa.Integer: "int4", sa.Numeric: "numeric",
    sa.Text: "text", sa.String: "text", sa.JSON: "text", sa.DateTime: "timestamptz",
}  # fmt: skip


def _pg_array(column: sa.Column[Any]) -> str:
    kind = column.type
    impl = getattr(kind, "impl", kind)  # a TypeDecorator (UtcDateTime) by what it wraps
    for base, name in _PG_ARRAY.items():
        if isinstance(impl, base):
            return name
    raise TypeError(f"no array type for {column}")  # pragma: no cover


async def _bulk_upsert(
    conn: AsyncConnection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: Sequence[str],
    update: Mapping[str, str],
) -> None:
    """INSERT rows, or on a key conflict SET col = expr (SQL; `{t}` is the table's name).

    The rows are taken in key order (ORDER BY), so concurrent writers lock rows in one order
    and cannot deadlock.
    """
    if not rows:
        return
    name = table.name
    assignments = ", ".join(f"{col} = {expr.format(t=name)}" for col, expr in update.items())
    action = f"DO UPDATE SET {assignments}" if update else "DO NOTHING"
    target = f"INSERT INTO {name} ({', '.join(columns)})"
    cols = [table.c[c] for c in columns]
    arrays = ", ".join(f"${i}::{_pg_array(c)}[]" for i, c in enumerate(cols, 1))
    select = ", ".join(
        f"u.{c.name}::json" if isinstance(c.type, sa.JSON) else f"u.{c.name}" for c in cols
    )
    sql = (
        f"{target} SELECT {select} FROM unnest({arrays}) AS u({', '.join(columns)}) "
        f"ORDER BY {', '.join(f'u.{c}' for c in conflict)} "
        f"ON CONFLICT ({', '.join(conflict)}) {action}"
    )
    json_at = {i for i, c in enumerate(cols) if isinstance(c.type, sa.JSON)}
    for i in range(0, len(rows), 20_000):
        chunk = rows[i : i + 20_000]
        params = tuple(
            [orjson.dumps(r[j]).decode() if j in json_at else r[j] for r in chunk]
            for j in range(len(columns))
        )
        await conn.exec_driver_sql(sql, params)


async def lock_leads(
    conn: AsyncConnection, generation: int, lead_ids: Iterable[str]
) -> dict[str, lead_state.LeadState | None]:
    """Lock and read the state rows of these leads.

    Missing rows are created, then every row is locked, in key order, so two writers on one
    lead (two replicas, or a rebuild beside the live consumer) take turns and never deadlock.
    """
    ids = sorted(set(lead_ids))
    out: dict[str, lead_state.LeadState | None] = {}
    if not ids:
        return out
    # Missing rows first (an insert racing another writer's waits for it to commit), then
    # every row locked; both in key order.
    await conn.exec_driver_sql(
        "INSERT INTO kpi_leads (generation, lead_id, state) "
        "SELECT $1, u.lead_id, NULL FROM unnest($2::text[]) AS u(lead_id) ORDER BY 2 "
        "ON CONFLICT (generation, lead_id) DO NOTHING",
        (generation, ids),
    )
    result = await conn.exec_driver_sql(
        "SELECT lead_id, state FROM kpi_leads WHERE generation = $1 "
        "AND lead_id = ANY($2::text[]) ORDER BY lead_id FOR UPDATE",
        (generation, ids),
    )
    rows: list[Any] = list(result)
    for lead_id, doc in rows:
        if isinstance(doc, str | bytes):
            doc = orjson.loads(doc)
        out[lead_id] = lead_state.from_json(lead_id, doc) if doc else None
    return out


_FACT_COLUMNS = (
    "generation", "lead_id", "metric", "item", "at", "value", "bin", "source", "channel",
    "campaign", "route", "definition_version",
)  # fmt: skip


async def write_changes(conn: AsyncConnection, generation: int, changes: Changes) -> None:
    """Write what a batch changed: lead states, fact rows, and aggregate increments.

    Rows are written in key order (see _bulk_upsert), so writers cannot deadlock.
    """
    await _bulk_upsert(
        conn, leads, ("generation", "lead_id", "state"),
        [(generation, lid, lead_state.to_json(st)) for lid, st in changes.states.items()],
        conflict=("generation", "lead_id"), update={"state": "excluded.state"},
    )  # fmt: skip
    if changes.delete_facts:
        keys = sorted(changes.delete_facts)
        await conn.exec_driver_sql(
            "DELETE FROM kpi_facts AS f USING unnest($2::text[], $3::text[], $4::text[]) "
            "AS u(lead_id, metric, item) WHERE f.generation = $1 AND f.lead_id = u.lead_id "
            "AND f.metric = u.metric AND f.item = u.item",
            (generation, *([k[i] for k in keys] for i in range(3))),
        )
    await _bulk_upsert(
        conn, facts, _FACT_COLUMNS,
        [
            (generation, lid, metric, item, f.at, f.value, f.bin, *f.dims)
            for lid, metric, item, f in changes.upsert_facts
        ],
        conflict=_FACT_KEYS,
        update={c: f"excluded.{c}" for c in _FACT_COLUMNS if c not in _FACT_KEYS},
    )  # fmt: skip
    await _add_fact_deltas(conn, generation, changes.fact_deltas)


def _aggregate_rows_sql() -> str:
    """The expansion of a fact into its aggregate rows: fold.aggregate_keys in SQL.

    A row per kept (rollup, grain), its bucket the UTC hour, day or month of the fact, by
    the fact's dimensions or in the totals (dimensions '').
    """
    trunc = {HOUR: "hour", DAY: "day", MONTH: "month"}
    dims = ", ".join(f"u.{d}" for d in DIMENSIONS)
    total = ", ".join("''" for _ in DIMENSIONS)
    return ", ".join(
        f"({rollup}::int2, '{grain}', date_trunc('{trunc[grain]}', u.at, 'UTC'), "
        f"{dims if rollup == BY_DIMENSIONS else total})"
        for rollup, grains in sorted(ROLLUP_GRAINS.items())
        for grain in grains
    )


# The key columns but the generation (a constant), by their position in the SELECT list.
_AGG_KEY_POSITIONS = ", ".join(str(i) for i in range(2, len(_AGG_KEYS) + 1))
# The batch's changed facts go to the database as arrays; it expands each into its aggregate
# rows, sums them per row and adds the sums, in key order (so writers cannot deadlock). Five
# times fewer values travel and are encoded than the aggregate rows they make.
_ADD_FACT_DELTAS = (
    f"INSERT INTO kpi_aggregates ({', '.join(_AGG_KEYS)}, value) "
    f"SELECT $1, k.rollup, k.grain, k.bucket_start, u.metric, u.bin, "
    f"{', '.join(f'k.{d}' for d in DIMENSIONS)}, sum(u.amount) "
    "FROM unnest($2::text[], $3::timestamptz[], $4::int2[], $5::numeric[], "
    f"{', '.join(f'${i}::text[]' for i in range(6, 6 + len(DIMENSIONS)))}) "
    f"AS u(metric, at, bin, amount, {', '.join(DIMENSIONS)}) "
    f"CROSS JOIN LATERAL (VALUES {_aggregate_rows_sql()}) "
    f"AS k(rollup, grain, bucket_start, {', '.join(DIMENSIONS)}) "
    f"GROUP BY {_AGG_KEY_POSITIONS} HAVING sum(u.amount) <> 0 ORDER BY {_AGG_KEY_POSITIONS} "
    f"ON CONFLICT ({', '.join(_AGG_KEYS)}) "
    "DO UPDATE SET value = kpi_aggregates.value + excluded.value"
)


async def _add_fact_deltas(
    conn: AsyncConnection, generation: int, deltas: Sequence[FactDelta]
) -> None:
    if not deltas:
        return
    metric: list[str] = []
    at: list[datetime] = []
    bins: list[int] = []
    amount: list[Decimal] = []
    dims: list[Dims] = []
    for m, fact, sign in deltas:
        a = aggregate_amount(m, fact)
        metric.append(m)
        at.append(fact.at)
        bins.append(fact.bin)
        amount.append(a if sign > 0 else -a)
        dims.append(fact.dims)
    by_dimension = [list(column) for column in zip(*dims, strict=True)]
    await conn.exec_driver_sql(
        _ADD_FACT_DELTAS, (generation, metric, at, bins, amount, *by_dimension)
    )


async def claim_events(conn: AsyncConnection, claims: Sequence[tuple[str, str, str]]) -> set[str]:
    """Record (event_id, event_type, topic) in the inbox; the ids that were new.

    shared.inbox.claim_events as one statement over arrays: a batch's thousands of ids skip
    SQLAlchemy's per-row parameter processing. `ON CONFLICT DO
    NOTHING ... RETURNING` answers only the rows this transaction inserted, so two replicas
    racing on one event cannot both apply it; ids are inserted in key order.
    """
    if not claims:
        return set()
    unique = {eid: (eid, etype, topic) for eid, etype, topic in claims}
    ids, types, topics = (list(column) for column in zip(*unique.values(), strict=True))
    result = await conn.exec_driver_sql(
        "INSERT INTO inbox (event_id, event_type, topic, applied_at) "
        "SELECT u.event_id, u.event_type, u.topic, $4 "
        "FROM unnest($1::text[], $2::text[], $3::text[]) AS u(event_id, event_type, topic) "
        "ORDER BY 1 ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        (ids, types, topics, utcnow()),
    )
    return {row[0] for row in result}


# Reading


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
        rows = await pg_reads.aggregate_sums(
            conn, generation, where.rollup, buckets, metric_list, filters, where.group_by,
            where.groups_in,
        )  # fmt: skip
        for point, metric, bin_, group, amount in rows:
            _add_sum(out, point, group, metric, bin_, amount)
    edges = [(i, *r) for i, (_, cov) in enumerate(points) for r in cov.facts]
    if edges:
        rows = await pg_reads.edge_facts(
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
                a.generation == generation, a.rollup == where.rollup,
                a.metric.in_(metric_list), sa.or_(*ranges), *_where_dims(aggregates, where),
            )
        )  # fmt: skip
    if cov.facts:
        # A duration's aggregate counts it in its bin; a count or sum adds its value.
        amount = sa.case((f.bin > 0, sa.literal(1, sa.Numeric)), else_=f.value)
        branches.append(
            sa.select(f[group_by].label("grp"), f.metric, amount.label("amount")).where(
                f.generation == generation, f.metric.in_(metric_list),
                sa.or_(*[sa.and_(f.at >= lo, f.at < hi) for lo, hi in cov.facts]),
                *_where_dims(facts, where),
            )
        )  # fmt: skip
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
# Consecutive durations of one bin and period: (..., first index, count).
Run = tuple[str, int, datetime, datetime, str | None, int, int]
# Indexes this close share a read: reading the few between costs less than sorting again.
RUN_GAP = 32


def _runs(wanted: Sequence[Wanted]) -> list[Run]:
    by_read: dict[tuple[str, int, datetime, datetime, str | None], list[int]] = {}
    for metric, bin_, start, end, group, index in wanted:
        by_read.setdefault((metric, bin_, start, end, group), []).append(index)
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


async def duration_values(
    conn: AsyncConnection, generation: int, wanted: Sequence[Wanted], where: Slice
) -> dict[Wanted, Decimal]:
    """The seconds of each wanted duration: the `index`-th smallest (from 0) of `metric`'s
    durations in value bin `bin` that close within [start, end) (and are in `group` of
    `where.group_by`, or, with `where.groups_not_in`, in none of those groups).

    The database picks them (ORDER BY ... LIMIT count OFFSET first): it reads only that
    bin's rows within the period, and only the few values asked for travel back; close
    indexes of one bin and period (a median's two ranks) come from one sorted read.
    """
    out: dict[Wanted, Decimal] = {}
    unique = list(dict.fromkeys(wanted))
    runs = _runs(unique)
    if runs:
        found = await pg_reads.duration_runs(
            conn, generation, runs, dict(where.filters), where.group_by, where.groups_not_in
        )
        for n, values in found.items():
            metric, bin_, start, end, group, first, _ = runs[n]
            for i, value in enumerate(values):
                out[(metric, bin_, start, end, group, first + i)] = value
    return {w: out[w] for w in unique if w in out}


# Plans and spend


async def put_plan(
    conn: AsyncConnection, month: str, revenue: Decimal, by: str, now: datetime
) -> None:
    """Set a month's plan; the same value again changes nothing (not even `updated_at`)."""
    stmt = postgresql.insert(plans).values(
        month=month, revenue=revenue, updated_at=now, updated_by=by
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["month"],
            set_={"revenue": revenue, "updated_at": now, "updated_by": by},
            where=plans.c.revenue != stmt.excluded.revenue,
        )
    )


async def put_spend(
    conn: AsyncConnection,
    month: str,
    channel: str,
    campaign: str,
    amount: Decimal,
    by: str,
    now: datetime,
) -> None:
    stmt = postgresql.insert(spend).values(
        month=month, channel=channel, campaign=campaign, amount=amount, updated_at=now,
        updated_by=by,
    )  # fmt: skip
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["month", "channel", "campaign"],
            set_={"amount": amount, "updated_at": now, "updated_by": by},
            where=spend.c.amount != stmt.excluded.amount,
        )
    )


def _months(
    column: sa.Column[str], months: Sequence[str] | None, first: str | None, after: str | None
) -> list[sa.ColumnElement[bool]]:
    # YYYY-MM strings sort as the months do.
    where: list[sa.ColumnElement[bool]] = [] if months is None else [column.in_(list(months))]
    if first is not None:
        where.append(column >= first)
    if after is not None:
        where.append(column < after)
    return where


async def list_plans(
    conn: AsyncConnection,
    months: Sequence[str] | None = None,
    *,
    first: str | None = None,
    after: str | None = None,
) -> list[tuple[str, Decimal, datetime, str]]:
    p = plans.c
    stmt = (
        sa.select(p.month, p.revenue, p.updated_at, p.updated_by)
        .where(*_months(p.month, months, first, after))
        .order_by(p.month)
    )
    return [
        (r.month, Decimal(r.revenue), r.updated_at, r.updated_by) for r in await conn.execute(stmt)
    ]


async def monthly_plans(conn: AsyncConnection, months: Sequence[str]) -> list[tuple[str, Decimal]]:
    """(month, revenue) of the plans for these months."""
    return await pg_reads.plans_in(conn, months)


async def monthly_spend(
    conn: AsyncConnection, months: Sequence[str], filters: Mapping[str, str]
) -> list[tuple[str, str, str, Decimal]]:
    """(month, channel, campaign, amount) of the spend for these months, filtered by channel
    or campaign."""
    unknown = set(filters) - {"channel", "campaign"}
    if unknown:
        raise ValueError(f"spend has no {sorted(unknown)}")
    return await pg_reads.spend_in(conn, months, filters.get("channel"), filters.get("campaign"))


async def list_spend(
    conn: AsyncConnection,
    months: Sequence[str] | None = None,
    filters: Mapping[str, str] | None = None,
    *,
    first: str | None = None,
    after: str | None = None,
) -> list[tuple[str, str, str, Decimal, datetime, str]]:
    s = spend.c
    stmt = (
        sa.select(s.month, s.channel, s.campaign, s.amount, s.updated_at, s.updated_by)
        .where(*_months(s.month, months, first, after))
        .order_by(s.month, s.channel, s.campaign)
    )
    for name, value in (filters or {}).items():
        stmt = stmt.where(s[name] == value)
    return [
        (r.month, r.channel, r.campaign, Decimal(r.amount), r.updated_at, r.updated_by)
        for r in await conn.execute(stmt)
    ]
