"""The partner delivery queue: rows owed, leased, finished, listed, requeued, cancelled."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import partner_deliveries
from shared.db import AnyRow


def delivery_row(
    *,
    delivery_id: str,
    lead_id: str,
    partner_id: str,
    event_id: str,
    url: str,
    payload: bytes,
    now: datetime,
    event_type: str = "lead.routed",
    due: datetime | None = None,
) -> dict[str, Any]:
    return {
        "id": delivery_id,
        "lead_id": lead_id,
        "partner_id": partner_id,
        "event_id": event_id,
        "event_type": event_type,
        "url": url,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": due or now,
        "created_at": now,
        "updated_at": now,
    }


async def insert_deliveries(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Partner deliveries owed; one already owed (a replayed decision) is kept as it is."""
    if rows:
        await conn.execute(
            postgresql.insert(partner_deliveries).on_conflict_do_nothing(), list(rows)
        )


async def due_deliveries(conn: AsyncConnection, now: datetime, limit: int) -> list[AnyRow]:
    p = partner_deliveries
    return list(
        (
            await conn.execute(
                sa.select(p.c.id, p.c.next_attempt_at)
                .where(p.c.status == "pending", p.c.next_attempt_at <= now)
                .order_by(p.c.next_attempt_at)
                .limit(limit)
            )
        ).all()
    )


async def next_delivery_due(conn: AsyncConnection) -> datetime | None:
    p = partner_deliveries
    due: datetime | None = await conn.scalar(
        sa.select(sa.func.min(p.c.next_attempt_at)).where(p.c.status == "pending")
    )
    return due


async def claim_delivery(
    conn: AsyncConnection, delivery_id: str, *, token: str, now: datetime, lease_until: datetime
) -> AnyRow | None:
    """Lease a due delivery for one attempt; None when another deliverer got it first.

    The conditional UPDATE is the arbiter: of two replicas claiming the same row, the
    second finds `next_attempt_at` already moved to the lease's end and updates nothing.
    """
    p = partner_deliveries
    result = await conn.execute(
        p.update()
        .where(p.c.id == delivery_id, p.c.status == "pending", p.c.next_attempt_at <= now)
        .values(
            claim_token=token,
            next_attempt_at=lease_until,
            attempts=p.c.attempts + 1,
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        return None
    return (
        await conn.execute(
            sa.select(
                p.c.id,
                p.c.lead_id,
                p.c.partner_id,
                p.c.event_id,
                p.c.url,
                p.c.payload,
                p.c.attempts,
            ).where(p.c.id == delivery_id)
        )
    ).first()


async def finish_attempt(
    conn: AsyncConnection, delivery_id: str, *, token: str, **values: Any
) -> bool:
    """Record an attempt's outcome, if the attempt still owns the delivery."""
    p = partner_deliveries
    result = await conn.execute(
        p.update()
        .where(p.c.id == delivery_id, p.c.claim_token == token)
        .values(claim_token=None, **values)
    )
    return result.rowcount == 1


async def list_deliveries(
    conn: AsyncConnection,
    *,
    status: str | None,
    partner_id: str | None,
    lead_id: str | None,
    limit: int,
) -> list[AnyRow]:
    p = partner_deliveries
    stmt = sa.select(*_delivery_columns()).order_by(p.c.created_at.desc(), p.c.id).limit(limit)
    if status is not None:
        stmt = stmt.where(p.c.status == status)
    if partner_id is not None:
        stmt = stmt.where(p.c.partner_id == partner_id)
    if lead_id is not None:
        stmt = stmt.where(p.c.lead_id == lead_id)
    return list((await conn.execute(stmt)).all())


async def get_delivery(
    conn: AsyncConnection, delivery_id: str, *, for_update: bool = False
) -> AnyRow | None:
    stmt = sa.select(*_delivery_columns(), partner_deliveries.c.payload).where(
        partner_deliveries.c.id == delivery_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await conn.execute(stmt)).first()


def _delivery_columns() -> Sequence[sa.Column[Any]]:
    p = partner_deliveries
    return (
        p.c.id,
        p.c.lead_id,
        p.c.partner_id,
        p.c.event_id,
        p.c.event_type,
        p.c.url,
        p.c.status,
        p.c.attempts,
        p.c.next_attempt_at,
        p.c.last_status_code,
        p.c.last_outcome,
        p.c.last_error,
        p.c.created_at,
        p.c.updated_at,
        p.c.delivered_at,
    )


async def requeue_delivery(conn: AsyncConnection, delivery_id: str, now: datetime) -> None:
    """Send again from a clean slate: the attempt count starts over, the lease is dropped."""
    p = partner_deliveries
    await conn.execute(
        p.update()
        .where(p.c.id == delivery_id)
        .values(status="pending", attempts=0, next_attempt_at=now, claim_token=None, updated_at=now)
    )


async def cancel_deliveries_of(conn: AsyncConnection, lead_id: str, now: datetime) -> None:
    """An erased person is sent nowhere again; the bodies holding their data go too
    (the `lead.erased` webhooks, which hold none, stay)."""
    p = partner_deliveries
    routed = sa.and_(p.c.lead_id == lead_id, p.c.event_type == "lead.routed")
    await conn.execute(
        p.update()
        .where(routed, p.c.status.in_(["pending", "failed"]))
        .values(
            status="cancelled", claim_token=None, last_error="the person was erased", updated_at=now
        )
    )
    await conn.execute(p.update().where(routed).values(payload=None))


async def partners_that_may_have_the_lead(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    """Routings of the lead that were attempted at least once (an attempt that timed out may
    have arrived all the same), newest first: partner, URL, and for one under way its lease."""
    p = partner_deliveries
    return list(
        (
            await conn.execute(
                sa.select(p.c.partner_id, p.c.url, p.c.claim_token, p.c.next_attempt_at)
                .where(p.c.lead_id == lead_id, p.c.event_type == "lead.routed", p.c.attempts > 0)
                .order_by(p.c.created_at.desc())
            )
        ).all()
    )
