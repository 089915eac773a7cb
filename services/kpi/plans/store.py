"""Revenue plans and marketing spend per month: set over HTTP, read by every answer that
spreads them over a period."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.store.tables import plans, spend


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
        month=month,
        channel=channel,
        campaign=campaign,
        amount=amount,
        updated_at=now,
        updated_by=by,
    )
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


# The reads every summary, timeseries and funnel makes: through SQLAlchemy's statement
# machinery each cost about a millisecond of CPU, several times the database's work.
_PLANS_SQL = "SELECT month, revenue FROM kpi_plans WHERE month = ANY($1::text[]) ORDER BY month"
_SPEND_SQL = (
    "SELECT month, channel, campaign, amount FROM kpi_spend WHERE month = ANY($1::text[]) "
    "AND ($2::text IS NULL OR channel = $2) AND ($3::text IS NULL OR campaign = $3) "
    "ORDER BY month, channel, campaign"
)


async def monthly_plans(conn: AsyncConnection, months: Sequence[str]) -> list[tuple[str, Decimal]]:
    """(month, revenue) of the plans for these months."""
    rows: list[Any] = list(await conn.exec_driver_sql(_PLANS_SQL, (list(months),)))
    return [(r[0], Decimal(r[1])) for r in rows]


async def monthly_spend(
    conn: AsyncConnection, months: Sequence[str], filters: Mapping[str, str]
) -> list[tuple[str, str, str, Decimal]]:
    """(month, channel, campaign, amount) of the spend for these months, filtered by channel
    or campaign."""
    unknown = set(filters) - {"channel", "campaign"}
    if unknown:
        raise ValueError(f"spend has no {sorted(unknown)}")
    params = (list(months), filters.get("channel"), filters.get("campaign"))
    rows: list[Any] = list(await conn.exec_driver_sql(_SPEND_SQL, params))
    return [(r[0], r[1], r[2], Decimal(r[3])) for r in rows]


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
