"""`Idempotency-Key` for lifecycle calls: a retried call answers what the first one did.

The key is remembered per API client (token name) with a hash of the request, in the
same transaction as the call's effect, so a retry after a lost answer can neither
apply the call twice nor miss it. The same key with another request is refused.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.lifecycle import repository
from shared.db import error_summary, utcnow
from shared.runtime import Runtime

log = logging.getLogger(__name__)


class KeyReused(ValueError):
    """The key was used with a different request (HTTP 422 naming the header)."""


@dataclass(frozen=True)
class Remembered:
    status_code: int
    body: dict[str, Any]


def request_hash(method: str, path: str, body: Any) -> str:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(f"{method} {path} ".encode() + canonical).hexdigest()


async def recall(
    conn: AsyncConnection,
    *,
    principal: str,
    key: str,
    request: str,
    now: datetime,
    ttl: timedelta,
) -> Remembered | None:
    """The first answer to this key, locking the key until the caller's transaction ends."""
    await repository.lock_idempotency_key(conn, principal, key)
    row = await repository.get_idempotent_response(conn, principal, key, not_before=now - ttl)
    if row is None:
        return None
    if row.request_hash != request:
        raise KeyReused("this Idempotency-Key was already used with a different request")
    return Remembered(row.status_code, row.response)


async def remember(
    conn: AsyncConnection,
    *,
    principal: str,
    key: str,
    request: str,
    answer: Remembered,
    now: datetime,
) -> None:
    await repository.save_idempotent_response(
        conn,
        principal=principal,
        key=key,
        request_hash=request,
        status_code=answer.status_code,
        response=answer.body,
        now=now,
    )


async def forget_expired(runtime: Runtime, ttl: timedelta, every: float = 3600.0) -> None:
    """The background job that deletes keys past their time to live, hourly."""
    while not runtime.stopping.is_set():
        try:
            async with runtime.engine.begin() as conn:
                await repository.delete_idempotency_keys_before(conn, utcnow() - ttl)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            log.warning("forgetting expired idempotency keys: %s", error_summary(exc))
        if await runtime.sleep_unless_stopping(every):
            return
