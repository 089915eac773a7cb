"""What folding writes: lead states, fact rows and aggregate increments, in bulk, and the
inbox rows of the events a batch applies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.fold import lead_state
from services.kpi.fold.facts import (
    BY_DIMENSIONS,
    DAY,
    DIMENSIONS,
    HOUR,
    MONTH,
    ROLLUP_GRAINS,
    Changes,
    Dims,
    FactDelta,
    aggregate_amount,
)
from services.kpi.store.tables import aggregates, facts, leads
from shared.db import utcnow

_AGG_KEYS = tuple(c.name for c in aggregates.primary_key.columns)
_FACT_KEYS = ("generation", "lead_id", "metric", "item")


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
    "generation",
    "lead_id",
    "metric",
    "item",
    "at",
    "value",
    "bin",
    "sub",
    "source",
    "channel",
    "campaign",
    "route",
    "definition_version",
)


async def write_changes(conn: AsyncConnection, generation: int, changes: Changes) -> None:
    """Write what a batch changed: lead states, fact rows, and aggregate increments.

    Rows are written in key order (see _bulk_upsert), so writers cannot deadlock.
    """
    await write_lead_rows(conn, generation, changes)
    await add_fact_deltas(conn, generation, changes.fact_deltas)


async def write_lead_rows(conn: AsyncConnection, generation: int, changes: Changes) -> None:
    """The lead states and fact rows of `changes` (not the aggregates)."""
    await _bulk_upsert(
        conn,
        leads,
        ("generation", "lead_id", "state"),
        [(generation, lid, lead_state.to_json(st)) for lid, st in changes.states.items()],
        conflict=("generation", "lead_id"),
        update={"state": "excluded.state"},
    )
    if changes.delete_facts:
        keys = sorted(changes.delete_facts)
        await conn.exec_driver_sql(
            "DELETE FROM kpi_facts AS f USING unnest($2::text[], $3::text[], $4::text[]) "
            "AS u(lead_id, metric, item) WHERE f.generation = $1 AND f.lead_id = u.lead_id "
            "AND f.metric = u.metric AND f.item = u.item",
            (generation, *([k[i] for k in keys] for i in range(3))),
        )
    await _bulk_upsert(
        conn,
        facts,
        _FACT_COLUMNS,
        [
            (generation, lid, metric, item, f.at, f.value, f.bin, f.sub, *f.dims)
            for lid, metric, item, f in changes.upsert_facts
        ],
        conflict=_FACT_KEYS,
        update={c: f"excluded.{c}" for c in _FACT_COLUMNS if c not in _FACT_KEYS},
    )


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
_FINE_KEYS = ("generation", "metric", "bin", "grain", "bucket_start", "sub")
# A fact delta's columns (u: a relation of them), as arrays in parameters $2 onwards.
_DELTA_COLUMNS = ("metric", "at", "bin", "sub", "seconds", "amount", *DIMENSIONS)
_DELTA_ARRAYS = (
    "$2::text[], $3::timestamptz[], $4::int2[], $5::int2[], $6::numeric[], $7::numeric[], "
    + ", ".join(f"${i}::text[]" for i in range(8, 8 + len(DIMENSIONS)))
)


def _add_deltas_from(source: str) -> str:
    """Add the fact deltas that the statement `source` yields (a WITH query's body) to the
    aggregates, their rows expanded and summed, and the durations among them to the counts
    of their bin's part per day and month (kpi_fine_counts). Each table's rows are taken in key
    order, in one statement of one shape, so writers cannot deadlock. $1: the generation."""
    return (
        f"WITH u AS ({source}), "
        f"fine AS (INSERT INTO kpi_fine_counts ({', '.join(_FINE_KEYS)}, count, total, squares) "
        "SELECT $1, u.metric, u.bin, g.grain, date_trunc(g.unit, u.at, 'UTC'), u.sub, "
        "sum(u.amount), sum(u.amount * u.seconds), sum(u.amount * u.seconds * u.seconds) "
        # A duration's delta is 1 or -1 (fold.aggregate_amount); a NULL part was counted by
        # migration 0008 from the facts. Durations moved within their part can leave its
        # count and sum as they were and change only its sum of squares.
        f"FROM u CROSS JOIN (VALUES ('{DAY}', 'day'), ('{MONTH}', 'month')) AS g(grain, unit) "
        "WHERE u.bin > 0 AND u.sub IS NOT NULL GROUP BY 2, 3, 4, 5, 6 "
        "HAVING sum(u.amount) <> 0 OR sum(u.amount * u.seconds) <> 0 "
        "OR sum(u.amount * u.seconds * u.seconds) <> 0 ORDER BY 2, 3, 4, 5, 6 "
        f"ON CONFLICT ({', '.join(_FINE_KEYS)}) "
        "DO UPDATE SET count = kpi_fine_counts.count + excluded.count, "
        "total = kpi_fine_counts.total + excluded.total, "
        "squares = kpi_fine_counts.squares + excluded.squares) "
        f"INSERT INTO kpi_aggregates ({', '.join(_AGG_KEYS)}, value) "
        f"SELECT $1, k.rollup, k.grain, k.bucket_start, u.metric, u.bin, "
        f"{', '.join(f'k.{d}' for d in DIMENSIONS)}, sum(u.amount) "
        f"FROM u CROSS JOIN LATERAL (VALUES {_aggregate_rows_sql()}) "
        f"AS k(rollup, grain, bucket_start, {', '.join(DIMENSIONS)}) "
        f"GROUP BY {_AGG_KEY_POSITIONS} HAVING sum(u.amount) <> 0 ORDER BY {_AGG_KEY_POSITIONS} "
        f"ON CONFLICT ({', '.join(_AGG_KEYS)}) "
        "DO UPDATE SET value = kpi_aggregates.value + excluded.value"
    )


# The batch's changed facts go to the database as arrays; five times fewer values travel
# and are encoded than the aggregate rows they make.
_ADD_FACT_DELTAS = _add_deltas_from(
    f"SELECT * FROM unnest({_DELTA_ARRAYS}) AS u({', '.join(_DELTA_COLUMNS)})"
)
_STAGE_FACT_DELTAS = (
    f"INSERT INTO kpi_fact_deltas (generation, {', '.join(_DELTA_COLUMNS)}) "
    f"SELECT $1, u.* FROM unnest({_DELTA_ARRAYS}) AS u"
)
_COMPACT_FACT_DELTAS = _add_deltas_from(
    f"DELETE FROM kpi_fact_deltas WHERE generation = $1 RETURNING {', '.join(_DELTA_COLUMNS)}"
)


def _delta_arrays(deltas: Sequence[FactDelta]) -> list[list[Any]]:
    metric: list[str] = []
    at: list[datetime] = []
    bins: list[int] = []
    subs: list[int] = []
    seconds: list[Decimal | None] = []
    amount: list[Decimal] = []
    dims: list[Dims] = []
    for m, fact, sign in deltas:
        a = aggregate_amount(m, fact)
        metric.append(m)
        at.append(fact.at)
        bins.append(fact.bin)
        subs.append(fact.sub)
        seconds.append(fact.value if fact.bin else None)
        amount.append(a if sign > 0 else -a)
        dims.append(fact.dims)
    columns = (list(column) for column in zip(*dims, strict=True))
    return [metric, at, bins, subs, seconds, amount, *columns]


async def add_fact_deltas(
    conn: AsyncConnection, generation: int, deltas: Sequence[FactDelta]
) -> None:
    """Add what the facts that changed make to their aggregate rows and fine counts, in one
    statement (so in key order: writers cannot deadlock on those rows)."""
    if deltas:
        await conn.exec_driver_sql(_ADD_FACT_DELTAS, (generation, *_delta_arrays(deltas)))


async def stage_fact_deltas(
    conn: AsyncConnection, generation: int, deltas: Sequence[FactDelta]
) -> None:
    """Append the fact deltas to `kpi_fact_deltas` instead, for `compact_fact_deltas` to add
    later: a rebuild's generation answers no read before it is compacted, and appending
    rows without a key costs a fraction of upserting the five aggregate rows of each."""
    if deltas:
        await conn.exec_driver_sql(_STAGE_FACT_DELTAS, (generation, *_delta_arrays(deltas)))


async def compact_fact_deltas(conn: AsyncConnection, generation: int) -> None:
    """Add the staged fact deltas of `generation` to its aggregates and fine counts and
    delete them, in one statement (one aggregate over all of them, as the database's floor
    does). Deltas staged by transactions not committed yet stay."""
    await conn.exec_driver_sql(_COMPACT_FACT_DELTAS, (generation,))


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
