"""The delivery list: rows owed, leased, finished, listed, summed up, requeued, cancelled."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import deliveries
from shared.db import AnyRow

Kind = Literal["partner", "webhook", "crm"]
KINDS: tuple[Kind, ...] = ("partner", "webhook", "crm")
Status = Literal["pending", "delivered", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("pending", "delivered", "failed", "cancelled")


def delivery_row(
    *,
    delivery_id: str,
    lead_id: str,
    target_id: str,
    event_id: str,
    url: str | None,
    payload: bytes | None,
    now: datetime,
    kind: Kind = "partner",
    operation: str | None = None,
    event_type: str = "lead.routed",
    due: datetime | None = None,
) -> dict[str, Any]:
    return {
        "id": delivery_id,
        "lead_id": lead_id,
        "kind": kind,
        "target_id": target_id,
        "operation": operation,
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


# Where a connection counts the deliveries written through it (see `take_owed`).
_OWED = "leadflow.deliveries_owed"


async def insert_deliveries(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Deliveries owed; one already owed (a replayed decision) is kept as it is."""
    if rows:
        await conn.execute(postgresql.insert(deliveries).on_conflict_do_nothing(), list(rows))
        conn.info[_OWED] = conn.info.get(_OWED, 0) + len(rows)


def take_owed(conn: AsyncConnection) -> int:
    """How many deliveries were written through this connection since the last take.

    A batch of decisions asks before it commits, so the deliverer is woken only when there
    is something to deliver: most decisions owe nothing, and a wake for nothing costs it
    two queries. The count lives with the pooled connection (`Connection.info`), so a
    writer takes it once before its transaction too: what a rolled-back one left there
    would only wake the deliverer for nothing, as before.
    """
    owed: int = conn.info.pop(_OWED, 0)
    return owed


async def due_deliveries(conn: AsyncConnection, now: datetime, limit: int) -> list[AnyRow]:
    d = deliveries
    return list(
        (
            await conn.execute(
                sa.select(d.c.id, d.c.next_attempt_at)
                .where(d.c.status == "pending", d.c.next_attempt_at <= now)
                .order_by(d.c.next_attempt_at)
                .limit(limit)
            )
        ).all()
    )


async def next_delivery_due(conn: AsyncConnection) -> datetime | None:
    d = deliveries
    due: datetime | None = await conn.scalar(
        sa.select(sa.func.min(d.c.next_attempt_at)).where(d.c.status == "pending")
    )
    return due


async def claim_delivery(
    conn: AsyncConnection, delivery_id: str, *, token: str, now: datetime, lease_until: datetime
) -> AnyRow | None:
    """Lease a due delivery for one attempt; None when another deliverer got it first.

    The conditional UPDATE is the arbiter: of two replicas claiming the same row, the
    second finds `next_attempt_at` already moved to the lease's end and updates nothing.
    """
    d = deliveries
    result = await conn.execute(
        d.update()
        .where(d.c.id == delivery_id, d.c.status == "pending", d.c.next_attempt_at <= now)
        .values(
            claim_token=token,
            next_attempt_at=lease_until,
            attempts=d.c.attempts + 1,
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        return None
    return (
        await conn.execute(
            sa.select(
                d.c.id,
                d.c.lead_id,
                d.c.kind,
                d.c.target_id,
                d.c.operation,
                d.c.event_id,
                d.c.event_type,
                d.c.url,
                d.c.payload,
                d.c.attempts,
            ).where(d.c.id == delivery_id)
        )
    ).first()


async def finish_attempt(
    conn: AsyncConnection, delivery_id: str, *, token: str, **values: Any
) -> bool:
    """Record an attempt's outcome, if the attempt still owns the delivery."""
    d = deliveries
    result = await conn.execute(
        d.update()
        .where(d.c.id == delivery_id, d.c.claim_token == token)
        .values(claim_token=None, **values)
    )
    return result.rowcount == 1


async def list_deliveries(
    conn: AsyncConnection,
    *,
    kind: str | None = None,
    target_id: str | None = None,
    status: str | None = None,
    lead_id: str | None = None,
    limit: int = 100,
) -> list[AnyRow]:
    """Newest first."""
    d = deliveries
    stmt = sa.select(*_delivery_columns()).order_by(d.c.created_at.desc(), d.c.id).limit(limit)
    for column, value in (
        (d.c.kind, kind),
        (d.c.target_id, target_id),
        (d.c.status, status),
        (d.c.lead_id, lead_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    return list((await conn.execute(stmt)).all())


async def get_delivery(
    conn: AsyncConnection, delivery_id: str, *, for_update: bool = False
) -> AnyRow | None:
    stmt = sa.select(*_delivery_columns(), deliveries.c.payload).where(
        deliveries.c.id == delivery_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await conn.execute(stmt)).first()


def _delivery_columns() -> Sequence[sa.Column[Any]]:
    d = deliveries
    return (
        d.c.id,
        d.c.lead_id,
        d.c.kind,
        d.c.target_id,
        d.c.operation,
        d.c.event_id,
        d.c.event_type,
        d.c.url,
        d.c.status,
        d.c.attempts,
        d.c.next_attempt_at,
        d.c.last_status_code,
        d.c.last_outcome,
        d.c.last_error,
        d.c.created_at,
        d.c.updated_at,
        d.c.delivered_at,
    )


async def summary(conn: AsyncConnection, kind: str, target_id: str) -> dict[str, Any]:
    """A target's deliveries at a glance: how many of each status, the last error (our
    words) and when the last one was delivered."""
    d = deliveries
    mine = sa.and_(d.c.kind == kind, d.c.target_id == target_id)
    counts: dict[str, Any] = dict.fromkeys(STATUSES, 0)
    for status, count in await conn.execute(
        sa.select(d.c.status, sa.func.count()).where(mine).group_by(d.c.status)
    ):
        counts[status] = count
    last_error = await conn.scalar(
        sa.select(d.c.last_error)
        .where(mine, d.c.last_error.is_not(None), d.c.status.in_(["pending", "failed"]))
        .order_by(d.c.updated_at.desc())
        .limit(1)
    )
    last_delivered_at = await conn.scalar(sa.select(sa.func.max(d.c.delivered_at)).where(mine))
    return {**counts, "last_error": last_error, "last_delivered_at": last_delivered_at}


async def requeue_delivery(conn: AsyncConnection, delivery_id: str, now: datetime) -> None:
    """Send again from a clean slate: the attempt count starts over, the lease is dropped."""
    d = deliveries
    await conn.execute(
        d.update()
        .where(d.c.id == delivery_id)
        .values(status="pending", attempts=0, next_attempt_at=now, claim_token=None, updated_at=now)
    )


# Event types whose bodies hold nothing of the person (an erasure notice): kept after it.
_PERSONLESS = ("lead.erased",)


async def cancel_deliveries_of(conn: AsyncConnection, lead_id: str, now: datetime) -> None:
    """An erased person is sent nowhere again, whatever the kind; the bodies holding their
    data go too. The erasure notices (`lead.erased` webhooks, CRM erase rows), which hold
    none and are what the erasure owes, stay."""
    d = deliveries
    personal = sa.and_(
        d.c.lead_id == lead_id,
        d.c.event_type.not_in(_PERSONLESS),
        sa.or_(d.c.operation.is_(None), d.c.operation != "erase"),
    )
    await conn.execute(
        d.update()
        .where(personal, d.c.status.in_(["pending", "failed"]))
        .values(
            status="cancelled", claim_token=None, last_error="the person was erased", updated_at=now
        )
    )
    await conn.execute(d.update().where(personal).values(payload=None))


async def partners_that_may_have_the_lead(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    """Routings of the lead to partners that were attempted at least once (an attempt that
    timed out may have arrived all the same), newest first: partner, URL, and for one under
    way its lease."""
    d = deliveries
    return list(
        (
            await conn.execute(
                sa.select(
                    d.c.target_id.label("partner_id"), d.c.url, d.c.claim_token, d.c.next_attempt_at
                )
                .where(
                    d.c.lead_id == lead_id,
                    d.c.kind == "partner",
                    d.c.event_type == "lead.routed",
                    d.c.attempts > 0,
                )
                .order_by(d.c.created_at.desc())
            )
        ).all()
    )
