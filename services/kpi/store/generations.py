"""Generations of the folded tables: which one answers reads, which one is being built, and
how far a rebuild has folded each partition."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.store.tables import (
    aggregates,
    fact_deltas,
    facts,
    fine_counts,
    generations,
    leads,
    rebuild_progress,
)

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


# Read by every summary, timeseries and funnel: through SQLAlchemy's statement machinery
# it cost about a millisecond of CPU, several times the database's work.
_ACTIVE_SQL = "SELECT generation FROM kpi_generations WHERE status = $1"


async def active_generation(conn: AsyncConnection) -> int:
    found = (await conn.exec_driver_sql(_ACTIVE_SQL, (ACTIVE,))).scalar()
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
            generation=generation,
            status=BUILDING,
            fold_version=fold_version,
            requested_by=requested_by,
            created_at=now,
        )
    )
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


async def lock_for_switch(conn: AsyncConnection, generation: int) -> bool:
    """Lock the active generation and the one being built (live batches, which share-lock
    them, wait until the caller's transaction ends); whether `generation` is still being
    built."""
    g = generations.c
    locked = await conn.execute(
        sa.select(g.generation, g.status)
        .where(g.status.in_((ACTIVE, BUILDING)))
        .order_by(g.generation)
        .with_for_update()
    )
    statuses = {int(r.generation): r.status for r in locked}
    return statuses.get(generation) == BUILDING


async def switch_to(conn: AsyncConnection, generation: int, now: datetime) -> None:
    """Make a caught-up generation the active one, in the transaction that `lock_for_switch`
    found it still being built in."""
    g = generations.c
    await conn.execute(
        generations.update().where(g.status == ACTIVE).values(status=RETIRED, retired_at=now)
    )
    await conn.execute(
        generations.update()
        .where(g.generation == generation)
        .values(status=ACTIVE, activated_at=now)
    )


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
    for table in (aggregates, fine_counts, fact_deltas, facts, leads, rebuild_progress):
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
                (
                    stmt.excluded.next_offset > rebuild_progress.c.next_offset,
                    stmt.excluded.next_offset,
                ),
                else_=rebuild_progress.c.next_offset,
            )
        },
    )
    await conn.execute(
        stmt,
        [
            {"generation": generation, "topic": t, "partition": p, "next_offset": o}
            for (t, p), o in sorted(positions.items())
        ],
    )
