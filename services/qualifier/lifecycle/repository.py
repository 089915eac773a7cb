"""Payments on won deals, and the Idempotency-Key records of lifecycle calls."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import (
    idempotency_keys,
    payments,
)
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


async def lock_idempotency_key(conn: AsyncConnection, principal: str, key: str) -> None:
    await conn.execute(
        sa.select(
            sa.func.pg_advisory_xact_lock(
                sa.func.hashtextextended(f"qualifier|{principal}|{key}", 0)
            )
        )
    )


async def get_idempotent_response(
    conn: AsyncConnection, principal: str, key: str, not_before: datetime
) -> AnyRow | None:
    k = idempotency_keys
    return (
        await conn.execute(
            sa.select(k.c.request_hash, k.c.status_code, k.c.response).where(
                k.c.principal == principal, k.c.key == key, k.c.created_at >= not_before
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
    k = idempotency_keys
    # An expired row for the same key is replaced, not kept beside the new one.
    await conn.execute(k.delete().where(k.c.principal == principal, k.c.key == key))
    await conn.execute(
        k.insert().values(
            principal=principal,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response=response,
            created_at=now,
        )
    )


async def delete_idempotency_keys_before(conn: AsyncConnection, before: datetime) -> int:
    result = await conn.execute(
        idempotency_keys.delete().where(idempotency_keys.c.created_at < before)
    )
    return int(result.rowcount or 0)
