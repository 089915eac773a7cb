"""The deliverer: one background job that works the delivery list, whatever the kind.

Whatever owes an outgoing call writes a delivery row in the same transaction as its cause
(a routing to a partner, an event a webhook subscription wants, a push to a CRM), so a
call is owed exactly when its cause commits. The deliverer leases due rows (a
conditional UPDATE, so replicas never attempt one delivery at once), hands each to the
sender registered for its `kind` outside any transaction, and records what the sender
says: delivered; retried later with exponential backoff and jitter (no sooner than the
receiver's Retry-After); or, after the last attempt or a refusal that retrying cannot
fix, parked as `failed` for an operator to see (`GET /v1/deliveries?status=failed`) and
send again (`POST /v1/deliveries/{id}/retry`). Receivers get at least once: they
de-duplicate on the delivery id.

Of an attempt only the status code, the outcome and our words for it are kept: nothing a
receiver says is stored or shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.qualifier.config import QualifierSettings
from services.qualifier.deliveries import repository
from services.qualifier.partners.webhooks import retry_delay
from shared.db import AnyRow, error_summary, utcnow
from shared.runtime import Runtime
from shared.wakeup import nap

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = Counter(
    "leadflow_delivery_attempts_total",
    "Outgoing call attempts by kind, target and outcome (delivered, retry, failed)",
    ["kind", "target", "outcome"],
)


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt came to, as a sender tells the deliverer."""

    outcome: str  # e.g. "http_2xx", "timeout", "crm_unavailable", "crm_refused"
    status_code: int | None
    error: str | None  # None = delivered; else OUR words (never the receiver's)
    permanent: bool  # park now instead of retrying
    retry_after: float | None = None  # the receiver's Retry-After: the next attempt no sooner


# Called with a leased row: id, lead_id, kind, target_id, operation, event_id, event_type,
# url, payload, attempts (this attempt's number). It must not raise for the receiver's
# failures; an exception is taken as a failed attempt all the same.
Sender = Callable[[AnyRow], Awaitable[AttemptResult]]

NO_SENDER = AttemptResult(
    outcome="no_sender", status_code=None, error="nothing sends this kind", permanent=True
)
SENDER_FAILED = AttemptResult(
    outcome="sender_error",
    status_code=None,
    error="the attempt failed in Leadflow",
    permanent=False,
)


class DeliveryNotFound(LookupError):
    pass


class NotRetriable(Exception):
    """A delivery that cannot be sent again now (HTTP 409)."""


async def retry(conn: AsyncConnection, delivery_id: str, *, now: datetime) -> None:
    """An operator sends a parked (or delivered) delivery again, from a fresh attempt count."""
    row = await repository.get_delivery(conn, delivery_id, for_update=True)
    if row is None:
        raise DeliveryNotFound(f"no delivery {delivery_id!r}")
    if row.status == "pending":
        raise NotRetriable("the delivery is pending already; the deliverer will send it")
    if row.status == "cancelled" or (row.payload is None and row.kind != "crm"):
        raise NotRetriable("the person was erased; there is nothing to send")
    await repository.requeue_delivery(conn, delivery_id, now)


class Deliverer:
    """The background job that works the list; `wake()` after committing new deliveries.

    `senders` by kind; a sender that is an async context manager (one holding an HTTP
    client) is entered for as long as `run` runs.
    """

    def __init__(
        self, settings: QualifierSettings, senders: Mapping[str, Sender] | None = None
    ) -> None:
        self._settings = settings
        self._senders: dict[str, Sender] = dict(senders or {})
        self._wakeup = asyncio.Event()

    def register(self, kind: str, sender: Sender) -> None:
        """Before `run` starts."""
        self._senders[kind] = sender

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, runtime: Runtime) -> None:
        s = self._settings
        async with contextlib.AsyncExitStack() as stack:
            for sender in self._senders.values():
                if isinstance(sender, contextlib.AbstractAsyncContextManager):
                    await stack.enter_async_context(sender)
            while not runtime.stopping.is_set():
                self._wakeup.clear()
                try:
                    while await self.deliver_due(runtime.engine):
                        pass
                    wait = await self._seconds_to_next(runtime.engine)
                except (sa.exc.SQLAlchemyError, OSError) as exc:
                    log.warning("deliveries: %s; trying again shortly", error_summary(exc))
                    wait = s.partner_poll_seconds
                await self._sleep(runtime, wait)

    async def _seconds_to_next(self, engine: AsyncEngine) -> float:
        async with engine.connect() as conn:
            due = await repository.next_delivery_due(conn)
            await conn.rollback()
        poll = self._settings.partner_poll_seconds
        if due is None:
            return poll
        return min(poll, max(0.0, (due - utcnow()).total_seconds()))

    async def _sleep(self, runtime: Runtime, seconds: float) -> None:
        """Until the next delivery is due, a wake-up, or shut-down, whichever comes first."""
        await nap(self._wakeup, runtime.stopping, seconds)

    async def deliver_due(self, engine: AsyncEngine) -> int:
        """Attempt every delivery due now (up to a batch); return how many were attempted."""
        s = self._settings
        now = utcnow()
        async with engine.connect() as conn:
            due = await repository.due_deliveries(conn, now, limit=s.partner_concurrency * 4)
            await conn.rollback()
        leased: list[tuple[AnyRow, str]] = []
        lease_until = now + timedelta(seconds=s.partner_lease_seconds)
        for candidate in due:
            token = str(uuid.uuid4())
            async with engine.begin() as conn:
                row = await repository.claim_delivery(
                    conn, candidate.id, token=token, now=now, lease_until=lease_until
                )
            if row is not None:
                leased.append((row, token))
        limit = asyncio.Semaphore(s.partner_concurrency)

        async def attempt(row: AnyRow, token: str) -> None:
            async with limit:
                await self._attempt(engine, row, token)

        await asyncio.gather(*(attempt(row, token) for row, token in leased))
        return len(leased)

    async def _send(self, row: AnyRow) -> AttemptResult:
        sender = self._senders.get(row.kind)
        if sender is None:
            return NO_SENDER
        try:
            return await sender(row)
        except Exception as exc:  # a bug of a sender must not stop the others' deliveries
            # The exception's type only: its text may quote the body or the receiver.
            log.error("delivery %s: the %s sender failed: %s", row.id, row.kind, type(exc).__name__)
            return SENDER_FAILED

    async def _attempt(self, engine: AsyncEngine, row: AnyRow, token: str) -> None:
        s = self._settings
        result = await self._send(row)
        values: dict[str, object]
        now = utcnow()
        if result.error is None:
            outcome = "delivered"
            values = {"status": "delivered", "delivered_at": now, "last_error": None}
        elif result.permanent or row.attempts >= s.partner_max_attempts:
            outcome = "failed"
            values = {"status": "failed", "last_error": result.error}
            # The status and the outcome only: nothing the receiver said.
            log.warning(
                "delivery %s (%s) to %s parked after %d attempt(s): %s%s",
                row.id,
                row.kind,
                row.target_id,
                row.attempts,
                result.outcome,
                f" (HTTP {result.status_code})" if result.status_code is not None else "",
            )
        else:
            outcome = "retry"
            delay = retry_delay(
                row.attempts, base=s.partner_retry_base_seconds, cap=s.partner_retry_max_seconds
            )
            if result.retry_after is not None:
                # No sooner than the receiver asked, within reason: a day at most.
                delay = max(delay, min(result.retry_after, 86_400.0))
            values = {
                "status": "pending",
                "last_error": result.error,
                "next_attempt_at": now + timedelta(seconds=delay),
            }
        async with engine.begin() as conn:
            await repository.finish_attempt(
                conn,
                row.id,
                token=token,
                last_status_code=result.status_code,
                last_outcome=result.outcome[:30],
                updated_at=now,
                **values,
            )
        DELIVERY_ATTEMPTS.labels(row.kind, row.target_id, outcome).inc()
