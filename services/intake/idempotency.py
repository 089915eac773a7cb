"""Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): a retry replays, never redoes.

A request with a key first claims it in a transaction of its own, committed before the
work starts, so a retry arriving meanwhile finds the claim and answers 409. The work's
own transaction stores the answer on the claim, so the answer and the lead commit
together or not at all. A request that fails releases its claim; one that crashes
leaves it to expire after the lock time. Keys are remembered for the TTL (at least
24 hours) and then purged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from fastapi import status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.intake import repository
from services.intake.errors import problem
from services.intake.ratelimit import retry_after
from shared.db import error_summary

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"


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

    principal: str
    key: str | None
    claim_id: str
    lock: timedelta
    replay: JSONResponse | None = None

    async def complete(self, conn: AsyncConnection, status_code: int, body: dict[str, Any]) -> None:
        """Store the answer in the work's transaction; 409 if the claim was taken over."""
        if self.key is None:
            return
        stored = await repository.complete_idempotency_key(
            conn, self.principal, self.key, self.claim_id, status_code=status_code, response=body
        )
        if not stored:
            raise problem(
                status.HTTP_409_CONFLICT,
                ["header", HEADER],
                "this request held the key past its lock time and a retry took it over; "
                "retry to get that request's answer",
                "idempotency_conflict",
            )

    async def renew(self, conn: AsyncConnection, now: datetime) -> None:
        """Keep the claim alive through long work (an import), one chunk at a time."""
        if self.key is not None:
            await repository.renew_idempotency_claim(
                conn, self.principal, self.key, self.claim_id, locked_until=now + self.lock
            )


@contextlib.asynccontextmanager
async def idempotent(
    engine: AsyncEngine,
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
    slot = Slot(principal=principal, key=key, claim_id=str(uuid.uuid4()), lock=lock)
    if key is None:
        yield slot
        return
    async with engine.begin() as conn:
        await repository.lock_idempotency_key(conn, principal, key)
        row = await repository.get_idempotency_record(conn, principal, key)
        record = None if row is None else Record(**row._mapping)
        outcome = decide(record, request_hash, now=now, ttl=ttl)
        if outcome is Outcome.proceed:
            await repository.claim_idempotency_key(
                conn,
                principal=principal,
                key=key,
                request_hash=request_hash,
                claim_id=slot.claim_id,
                now=now,
                locked_until=now + lock,
            )
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
                await repository.release_idempotency_claim(conn, principal, key, slot.claim_id)
        except Exception as exc:
            log.warning(
                "could not release Idempotency-Key claim (%s); it lapses", error_summary(exc)
            )
        raise


async def purge_expired(engine: AsyncEngine, *, now: datetime, ttl: timedelta) -> int:
    async with engine.begin() as conn:
        return await repository.delete_idempotency_keys_before(conn, now - ttl)
