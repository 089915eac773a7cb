"""Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): a retry replays, never redoes.

A request with a key first claims it in a transaction of its own, committed before the
work starts, so a retry arriving meanwhile finds the claim and answers 409. The work's
own transaction stores the answer on the claim, so the answer and the work's effect
commit together or not at all. A request that fails releases its claim; one that
crashes leaves it to expire after the lock time. Keys are remembered for the TTL (at
least 24 hours) and then purged.

Each service keeps the keys in a table of its own (`idempotency_table`), which every
function here takes, as `shared.outbox` takes the outbox table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy as sa
from fastapi import Header, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import AnyRow, Json, UtcDateTime, error_summary, utcnow
from shared.web import problem, retry_after

if TYPE_CHECKING:
    from shared.runtime import Runtime

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"

# The header as an endpoint parameter (`idempotency_key: IdempotencyKey = None`).
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        description="the same key and body replay the first answer (kept at least 24 h)",
    ),
]


def idempotency_table(metadata: sa.MetaData, name: str = "idempotency_keys") -> sa.Table:
    return sa.Table(
        name,
        metadata,
        # Keys are scoped to the client that sent them: two clients may pick the same key.
        sa.Column("principal", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        # NULL while the first request is still at work (in flight).
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("response", Json, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False, index=True),
        # Which request holds the key, and until when an unfinished claim blocks retries.
        sa.Column("claim_id", sa.String(36), nullable=True),
        sa.Column("locked_until", UtcDateTime, nullable=True),
    )


class Outcome(StrEnum):
    proceed = "proceed"  # no live record: claim the key and do the work
    replay = "replay"  # the same request was answered: answer the same
    in_flight = "in_flight"  # the same request is still at work: 409
    mismatch = "mismatch"  # the key was used for another request: 422


@dataclass(frozen=True)
class Record:
    request_hash: str
    status_code: int | None
    response: Any
    created_at: datetime
    locked_until: datetime | None


def decide(record: Record | None, request_hash: str, *, now: datetime, ttl: timedelta) -> Outcome:
    """What a request with a key does, given what is stored for the key. Pure."""
    if record is None or record.created_at <= now - ttl:
        return Outcome.proceed
    if record.request_hash != request_hash:
        return Outcome.mismatch
    if record.status_code is not None:
        return Outcome.replay
    if record.locked_until is None or record.locked_until <= now:
        return Outcome.proceed  # its request crashed; the claim has lapsed
    return Outcome.in_flight


def fingerprint(method: str, path: str, payload: Any) -> str:
    """The request's identity: method, path and the body in a canonical JSON form."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


@dataclass
class Slot:
    """A claimed key (or none, when the request has no key): the work completes it."""

    table: sa.Table
    principal: str
    key: str | None
    claim_id: str
    lock: timedelta
    replay: JSONResponse | None = None

    async def complete(self, conn: AsyncConnection, status_code: int, body: dict[str, Any]) -> None:
        """Store the answer in the work's transaction; 409 if the claim was taken over."""
        if self.key is None:
            return
        t = self.table
        result = await conn.execute(
            t.update()
            .where(t.c.principal == self.principal, t.c.key == self.key)
            .where(t.c.claim_id == self.claim_id)
            .values(status_code=status_code, response=body, locked_until=None)
        )
        if not result.rowcount:
            raise problem(
                status.HTTP_409_CONFLICT,
                ["header", HEADER],
                "this request held the key past its lock time and a retry took it over; "
                "retry to get that request's answer",
                "idempotency_conflict",
            )

    async def renew(self, conn: AsyncConnection, now: datetime) -> None:
        """Keep the claim alive through long work (an import), one chunk at a time."""
        if self.key is None:
            return
        t = self.table
        await conn.execute(
            t.update()
            .where(t.c.principal == self.principal, t.c.key == self.key)
            .where(t.c.claim_id == self.claim_id)
            .values(locked_until=now + self.lock)
        )


@contextlib.asynccontextmanager
async def idempotent(
    engine: AsyncEngine,
    table: sa.Table,
    *,
    principal: str,
    key: str | None,
    request_hash: str,
    now: datetime,
    ttl: timedelta,
    lock: timedelta,
) -> AsyncIterator[Slot]:
    """Claim `key` for this request, or raise the 409/422 the draft prescribes.

    The yielded slot carries `replay` when the same request was already answered.
    """
    slot = Slot(table=table, principal=principal, key=key, claim_id=str(uuid.uuid4()), lock=lock)
    if key is None:
        yield slot
        return
    async with engine.begin() as conn:
        await _lock(conn, principal, key)
        row = await _get(conn, table, principal, key)
        record = None if row is None else Record(**row._mapping)
        outcome = decide(record, request_hash, now=now, ttl=ttl)
        if outcome is Outcome.proceed:
            await _claim(conn, slot, request_hash=request_hash, now=now)
    if outcome is Outcome.mismatch:
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            ["header", HEADER],
            "this Idempotency-Key was already used with a different request body",
        )
    if outcome is Outcome.in_flight:
        assert record is not None and record.locked_until is not None
        raise problem(
            status.HTTP_409_CONFLICT,
            ["header", HEADER],
            "a request with this Idempotency-Key is still being processed; retry later",
            "idempotency_in_flight",
            headers={"Retry-After": retry_after((record.locked_until - now).total_seconds())},
        )
    if outcome is Outcome.replay:
        assert record is not None and record.status_code is not None
        slot.replay = JSONResponse(
            record.response,
            status_code=record.status_code,
            headers={"Idempotent-Replayed": "true"},
        )
        yield slot
        return
    try:
        yield slot
    except Exception:
        # Free the key so the client's retry can go ahead; if this fails too (the
        # database is down), the claim lapses on its own after the lock time.
        try:
            async with engine.begin() as conn:
                await _release(conn, slot)
        except Exception as exc:
            log.warning(
                "could not release Idempotency-Key claim (%s); it lapses", error_summary(exc)
            )
        raise


async def purge_expired(
    engine: AsyncEngine, table: sa.Table, *, now: datetime, ttl: timedelta
) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(sa.delete(table).where(table.c.created_at < now - ttl))
        return int(result.rowcount or 0)


def purge_job(
    table: sa.Table, *, ttl: timedelta, every: float
) -> Callable[[Runtime], Awaitable[None]]:
    """A runtime background job forgetting keys past their TTL every `every` seconds."""

    async def purge(runtime: Runtime) -> None:
        while True:
            try:
                purged = await purge_expired(runtime.engine, table, now=utcnow(), ttl=ttl)
                if purged:
                    log.info("purged %d expired Idempotency-Keys", purged)
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                log.warning(
                    "purging Idempotency-Keys failed (%s); trying again later", error_summary(exc)
                )
            if await runtime.sleep_unless_stopping(every):
                return

    return purge


# --- queries -------------------------------------------------------------------------


async def _lock(conn: AsyncConnection, principal: str, key: str) -> None:
    """Serialize the requests of one key (until the transaction ends), claimed or not yet."""
    await conn.execute(
        sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(f"{principal}|{key}", 0)))
    )


async def _get(conn: AsyncConnection, t: sa.Table, principal: str, key: str) -> AnyRow | None:
    return (
        await conn.execute(
            sa.select(
                t.c.request_hash, t.c.status_code, t.c.response, t.c.created_at, t.c.locked_until
            ).where(t.c.principal == principal, t.c.key == key)
        )
    ).first()


async def _claim(conn: AsyncConnection, slot: Slot, *, request_hash: str, now: datetime) -> None:
    t = slot.table
    # An expired key or a lapsed claim may still be stored: this request takes it over.
    await conn.execute(sa.delete(t).where(t.c.principal == slot.principal, t.c.key == slot.key))
    await conn.execute(
        t.insert().values(
            principal=slot.principal,
            key=slot.key,
            request_hash=request_hash,
            claim_id=slot.claim_id,
            created_at=now,
            locked_until=now + slot.lock,
        )
    )


async def _release(conn: AsyncConnection, slot: Slot) -> None:
    """Drop this request's claim unless its answer was stored (its transaction committed)."""
    t = slot.table
    await conn.execute(
        sa.delete(t).where(
            t.c.principal == slot.principal,
            t.c.key == slot.key,
            t.c.claim_id == slot.claim_id,
            t.c.status_code.is_(None),
        )
    )
