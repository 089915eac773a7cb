"""The stored leads a suggestion reads: how many, where the time split falls, and pages of
leads with what sales said, whether the deal was won, and the revenue paid."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import leads, payments
from shared.db import AnyRow

_ANSWERED = leads.c.feedback.in_(("accepted", "rejected"))


def _in_range(since: datetime, until: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(leads.c.received_at >= since, leads.c.received_at < until)


async def count_leads(conn: AsyncConnection, *, since: datetime, until: datetime) -> int:
    return int(await conn.scalar(sa.select(sa.func.count()).where(_in_range(since, until))) or 0)


async def count_outcomes(conn: AsyncConnection, *, since: datetime, until: datetime) -> int:
    """Leads in the range that sales said yes or no to (erased ones cannot be read)."""
    stmt = sa.select(sa.func.count()).where(
        _in_range(since, until), _ANSWERED, leads.c.erased_at.is_(None)
    )
    return int(await conn.scalar(stmt) or 0)


async def split_time(
    conn: AsyncConnection, *, since: datetime, until: datetime, older: int
) -> datetime | None:
    """When the outcome after the `older` oldest ones arrived: the first held-out moment."""
    stmt = (
        sa.select(leads.c.received_at)
        .where(_in_range(since, until), _ANSWERED, leads.c.erased_at.is_(None))
        .order_by(leads.c.received_at, leads.c.lead_id)
        .offset(older)
        .limit(1)
    )
    value: datetime | None = await conn.scalar(stmt)
    return value


async def page(
    conn: AsyncConnection,
    *,
    since: datetime,
    until: datetime,
    after: str | None,
    limit: int,
    answered_only: bool,
) -> list[AnyRow]:
    """One page of readable leads received in [since, until), by lead id (keyset paging),
    with `won` and `revenue` (the sum of its payments)."""
    revenue = (
        sa.select(sa.func.coalesce(sa.func.sum(payments.c.amount), 0))
        .where(payments.c.lead_id == leads.c.lead_id)
        .scalar_subquery()
    )
    stmt = (
        sa.select(
            leads.c.lead_id,
            leads.c.snapshot,
            leads.c.feedback,
            (leads.c.stage == "won").label("won"),
            revenue.label("revenue"),
        )
        .where(_in_range(since, until), leads.c.erased_at.is_(None))
        .order_by(leads.c.lead_id)
        .limit(limit)
    )
    if answered_only:
        stmt = stmt.where(_ANSWERED)
    if after is not None:
        stmt = stmt.where(leads.c.lead_id > after)
    return list((await conn.execute(stmt)).all())
