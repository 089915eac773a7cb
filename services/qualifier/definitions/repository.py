"""Definition versions: stored, numbered one at a time, one active; and the stored leads a
back-test reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import definitions, leads
from shared.db import AnyRow

# Advisory lock id: a transaction-scoped lock that serializes versioning across replicas.
_DEFINITIONS_LOCK = 0x1EAD0DEF


async def active_definition(conn: AsyncConnection) -> AnyRow | None:
    """The active version's number and creation time, without its document."""
    return (
        await conn.execute(
            sa.select(definitions.c.version, definitions.c.created_at).where(
                definitions.c.status == "active"
            )
        )
    ).first()


async def has_definitions(conn: AsyncConnection) -> bool:
    return bool(await conn.scalar(sa.select(sa.func.count()).select_from(definitions)))


async def lock_definitions(conn: AsyncConnection) -> None:
    """Creating and publishing versions one at a time keeps numbers dense and one active."""
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_DEFINITIONS_LOCK)))


async def highest_definition_version(conn: AsyncConnection) -> int:
    """The highest version number so far (0 on an empty table)."""
    highest = await conn.scalar(sa.select(sa.func.max(definitions.c.version)))
    return int(highest or 0)


async def insert_definition(
    conn: AsyncConnection,
    *,
    version: int,
    name: str,
    status: str,
    document: dict[str, Any],
    source_text: str,
    at: datetime,
    by: str | None,
) -> bool:
    """Insert a definition version; False if that version exists already (a racing replica)."""
    result = await conn.execute(
        postgresql.insert(definitions)
        .on_conflict_do_nothing()
        .values(
            version=version,
            name=name,
            status=status,
            document=document,
            source_text=source_text,
            created_at=at,
            created_by=by,
            published_at=at if status == "active" else None,
            published_by=by if status == "active" else None,
        )
    )
    return bool(result.rowcount)


async def list_definitions(conn: AsyncConnection) -> list[AnyRow]:
    d = definitions
    return list(
        (
            await conn.execute(
                sa.select(
                    d.c.version,
                    d.c.name,
                    d.c.status,
                    d.c.created_at,
                    d.c.created_by,
                    d.c.published_at,
                    d.c.published_by,
                ).order_by(d.c.version)
            )
        ).all()
    )


async def get_definition(conn: AsyncConnection, version: int) -> AnyRow | None:
    return (
        await conn.execute(sa.select(definitions).where(definitions.c.version == version))
    ).first()


async def activate_definition(
    conn: AsyncConnection, version: int, *, at: datetime, by: str | None
) -> None:
    """Retire the active version and activate `version`, in the caller's transaction."""
    d = definitions
    await conn.execute(d.update().where(d.c.status == "active").values(status="retired"))
    await conn.execute(
        d.update()
        .where(d.c.version == version)
        .values(status="active", published_at=at, published_by=by)
    )


async def leads_for_backtest(
    conn: AsyncConnection, *, since: datetime, until: datetime, after: str | None, limit: int
) -> list[AnyRow]:
    """One page of leads received in [since, until), by lead id (keyset paging)."""
    stmt = (
        sa.select(leads.c.lead_id, leads.c.snapshot, leads.c.feedback, leads.c.erased_at)
        .where(leads.c.received_at >= since, leads.c.received_at < until)
        .order_by(leads.c.lead_id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(leads.c.lead_id > after)
    return list((await conn.execute(stmt)).all())
