"""Sales members' absences, and the sales leads past their deadline."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import leads, sales_members
from shared.db import AnyRow
from shared.events import Route, Stage


async def absent_members(conn: AsyncConnection, now: datetime) -> frozenset[str]:
    m = sales_members
    rows = await conn.execute(
        sa.select(m.c.member).where(
            m.c.absent.is_(True), sa.or_(m.c.absent_until.is_(None), m.c.absent_until > now)
        )
    )
    return frozenset(r[0] for r in rows)


async def set_absence(
    conn: AsyncConnection,
    member: str,
    *,
    absent: bool,
    until: datetime | None,
    note: str | None,
    now: datetime,
    by: str | None,
) -> None:
    values = {
        "absent": absent,
        "absent_until": until if absent else None,
        "note": note,
        "updated_at": now,
        "updated_by": by,
    }
    updated = await conn.execute(
        sales_members.update().where(sales_members.c.member == member).values(**values)
    )
    if not updated.rowcount:
        await conn.execute(sales_members.insert().values(member=member, **values))


async def list_absences(conn: AsyncConnection) -> list[AnyRow]:
    return list(
        (await conn.execute(sa.select(sales_members).order_by(sales_members.c.member))).all()
    )


async def overdue_sales_leads(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Sales leads past their deadline with no feedback yet, the longest overdue first."""
    rows = await conn.execute(
        sa.select(leads.c.lead_id)
        .where(
            leads.c.route == Route.sales.value,
            leads.c.stage.in_([Stage.routed.value, Stage.contacted.value]),
            leads.c.sla_due_at <= now,
        )
        .order_by(leads.c.sla_due_at)
        .limit(limit)
    )
    return [r[0] for r in rows]


async def lock_overdue_lead(conn: AsyncConnection, lead_id: str, now: datetime) -> AnyRow | None:
    """The lead if it is still overdue, locked; None if another replica has it or handled it.

    `SKIP LOCKED` lets a second replica pass over a lead the first is reassigning rather
    than wait for it and then find the work done.
    """
    stmt = (
        sa.select(leads)
        .where(
            leads.c.lead_id == lead_id,
            leads.c.route == Route.sales.value,
            leads.c.stage.in_([Stage.routed.value, Stage.contacted.value]),
            leads.c.sla_due_at <= now,
        )
        .with_for_update(skip_locked=True)
    )
    return (await conn.execute(stmt)).first()


async def reassign_overdue(
    conn: AsyncConnection,
    lead_id: str,
    *,
    expected_due: datetime,
    assignee: str | None,
    sla_due_at: datetime,
    now: datetime,
) -> bool:
    """Move the deadline on, only if nobody moved it first: True when this call did."""
    result = await conn.execute(
        leads.update()
        .where(leads.c.lead_id == lead_id, leads.c.sla_due_at == expected_due)
        .values(assignee=assignee, sla_due_at=sla_due_at, updated_at=now)
    )
    return result.rowcount == 1
