"""Payments on won deals."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import payments
from shared.db import AnyRow


async def get_payment(conn: AsyncConnection, payment_id: str) -> AnyRow | None:
    return (
        await conn.execute(sa.select(payments).where(payments.c.payment_id == payment_id))
    ).first()


async def insert_payment(
    conn: AsyncConnection,
    *,
    payment_id: str,
    lead_id: str,
    amount: Decimal,
    currency: str,
    at: datetime,
    by: str | None,
    event_id: str,
    now: datetime,
) -> None:
    await conn.execute(
        payments.insert().values(
            payment_id=payment_id,
            lead_id=lead_id,
            amount=amount,
            currency=currency,
            at=at,
            by=by,
            event_id=event_id,
            created_at=now,
        )
    )


async def payments_of(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    return list(
        (
            await conn.execute(
                sa.select(payments).where(payments.c.lead_id == lead_id).order_by(payments.c.at)
            )
        ).all()
    )
