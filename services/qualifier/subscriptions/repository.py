"""Webhook subscriptions in the qualifier database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import deliveries, webhook_subscriptions
from shared.db import AnyRow

_w = webhook_subscriptions
# What is shown: everything but the secrets.
_VIEW = (
    _w.c.id,
    _w.c.url,
    _w.c.event_types,
    _w.c.description,
    _w.c.created_at,
    _w.c.created_by,
    _w.c.updated_at,
    _w.c.disabled_at,
    _w.c.previous_valid_until,
)


async def insert(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(_w.insert().values(**row))


async def get(conn: AsyncConnection, subscription_id: str) -> AnyRow | None:
    return (await conn.execute(sa.select(*_VIEW).where(_w.c.id == subscription_id))).first()


async def list_all(conn: AsyncConnection) -> list[AnyRow]:
    return list((await conn.execute(sa.select(*_VIEW).order_by(_w.c.created_at, _w.c.id))).all())


async def lock(conn: AsyncConnection, subscription_id: str) -> AnyRow | None:
    """The subscription, secrets included, locked for a change."""
    stmt = sa.select(_w).where(_w.c.id == subscription_id).with_for_update()
    return (await conn.execute(stmt)).first()


async def update(conn: AsyncConnection, subscription_id: str, **values: Any) -> None:
    await conn.execute(_w.update().where(_w.c.id == subscription_id).values(**values))


async def delete(conn: AsyncConnection, subscription_id: str) -> bool:
    result = await conn.execute(_w.delete().where(_w.c.id == subscription_id))
    return result.rowcount == 1


async def enabled(conn: AsyncConnection) -> list[AnyRow]:
    """Every enabled subscription: id, url, event types (read afresh in each transaction:
    another replica may have changed them a moment ago)."""
    stmt = sa.select(_w.c.id, _w.c.url, _w.c.event_types).where(_w.c.disabled_at.is_(None))
    return list((await conn.execute(stmt.order_by(_w.c.id))).all())


async def signing(conn: AsyncConnection, subscription_id: str) -> AnyRow | None:
    """What an attempt needs: the secrets and whether the subscription is disabled."""
    stmt = sa.select(
        _w.c.secret, _w.c.previous_secret, _w.c.previous_valid_until, _w.c.disabled_at
    ).where(_w.c.id == subscription_id)
    return (await conn.execute(stmt)).first()


async def redirect_unsent(
    conn: AsyncConnection, subscription_id: str, url: str, now: datetime
) -> None:
    """A new URL: what is still owed (pending, parked) goes there too."""
    d = deliveries
    await conn.execute(
        d.update()
        .where(
            d.c.kind == "webhook",
            d.c.target_id == subscription_id,
            d.c.status.in_(["pending", "failed"]),
        )
        .values(url=url, updated_at=now)
    )
