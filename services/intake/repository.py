"""Every query of the intake service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.domain import DedupeKey
from services.intake.tables import idempotency_keys, leads
from shared.db import AnyRow, is_postgres
from shared.events import LeadSnapshot


async def lock_identities(conn: AsyncConnection, key: DedupeKey) -> None:
    """Serialize writers on the same person (PostgreSQL; SQLite already serializes writers)."""
    if is_postgres(conn):
        for lock_id in key.lock_ids():
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_id)))


async def lock_idempotency_key(conn: AsyncConnection, principal: str, key: str) -> None:
    if is_postgres(conn):
        await conn.execute(
            sa.select(
                sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(f"{principal}|{key}", 0))
            )
        )


async def find_recent_duplicate(
    conn: AsyncConnection, key: DedupeKey, since: datetime
) -> str | None:
    identity = []
    if key.email:
        identity.append(leads.c.email == key.email)
    if key.phone:
        identity.append(leads.c.phone == key.phone)
    if not identity:
        return None
    return await conn.scalar(
        sa.select(leads.c.lead_id)
        .where(
            leads.c.source == key.source,
            leads.c.origin_id == key.origin_id,
            sa.or_(*identity),
            leads.c.received_at >= since,
        )
        .order_by(leads.c.received_at)
        .limit(1)
    )


async def insert_lead(conn: AsyncConnection, snapshot: LeadSnapshot, key: DedupeKey) -> None:
    await conn.execute(
        leads.insert().values(
            lead_id=snapshot.lead_id,
            source=key.source,
            origin_id=key.origin_id,
            email=key.email,
            phone=key.phone,
            snapshot=snapshot.model_dump(mode="json"),
            occurred_at=snapshot.occurred_at,
            received_at=snapshot.received_at,
        )
    )


async def get_lead(conn: AsyncConnection, lead_id: str) -> AnyRow | None:
    return (
        await conn.execute(
            sa.select(leads.c.snapshot, leads.c.erased_at).where(leads.c.lead_id == lead_id)
        )
    ).first()


async def get_idempotent_response(
    conn: AsyncConnection, principal: str, key: str, not_before: datetime
) -> AnyRow | None:
    t = idempotency_keys
    return (
        await conn.execute(
            sa.select(t.c.request_hash, t.c.status_code, t.c.response).where(
                t.c.principal == principal, t.c.key == key, t.c.created_at >= not_before
            )
        )
    ).first()


async def save_idempotent_response(
    conn: AsyncConnection,
    *,
    principal: str,
    key: str,
    request_hash: str,
    status_code: int,
    response: dict[str, Any],
    now: datetime,
) -> None:
    t = idempotency_keys
    # An expired key may still be stored: the new request takes it over.
    await conn.execute(sa.delete(t).where(t.c.principal == principal, t.c.key == key))
    await conn.execute(
        t.insert().values(
            principal=principal,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response=response,
            created_at=now,
        )
    )
