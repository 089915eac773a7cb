"""Partner deliveries: a queue in the qualifier database, worked by a background deliverer.

A routing that sends a lead to a partner with a webhook writes a delivery row in the
same transaction as the decision (`routing.service.decide`), so a delivery is owed exactly when
the decision commits; an erasure owes each partner that may have the lead a `lead.erased`
one (`leads.erasure.erase_lead`). The deliverer leases due rows (a conditional UPDATE, so
replicas never attempt one delivery at once), POSTs the signed event outside any
transaction (`transport.send`), and records the outcome: delivered; retried later
with exponential backoff and jitter; or, after the last attempt or a refusal that
retrying cannot fix, parked as `failed` for an operator to see
(`GET /v1/partners/deliveries?status=failed`) and send again
(`POST /v1/partners/deliveries/{id}/retry`). Receivers get at least once: they
de-duplicate on `X-Leadflow-Delivery-Id`.

Of an attempt only the status code and its `Outcome` are kept: nothing a receiver says
is stored or shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.qualifier.config import QualifierSettings
from services.qualifier.partners import repository
from services.qualifier.partners.transport import send, webhook_client
from services.qualifier.partners.webhooks import (
    OUTCOME_MESSAGES,
    PERMANENT_OUTCOMES,
    Outcome,
    retriable,
    retry_delay,
    signed_headers,
)
from shared.db import AnyRow, error_summary, utcnow
from shared.runtime import Runtime

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = Counter(
    "leadflow_partner_delivery_attempts_total",
    "Partner webhook attempts by outcome (delivered, retry, failed)",
    ["partner", "outcome"],
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
    if row.status == "cancelled" or row.payload is None:
        raise NotRetriable("the person was erased; there is nothing to send")
    await repository.requeue_delivery(conn, delivery_id, now)


class PartnerDeliverer:
    """The background job that works the queue; `wake()` after committing new deliveries."""

    def __init__(self, settings: QualifierSettings) -> None:
        self._settings = settings
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, runtime: Runtime) -> None:
        s = self._settings
        async with webhook_client(s) as client:
            while not runtime.stopping.is_set():
                self._wakeup.clear()
                try:
                    while await self.deliver_due(runtime.engine, client):
                        pass
                    wait = await self._seconds_to_next(runtime.engine)
                except (sa.exc.SQLAlchemyError, OSError) as exc:
                    log.warning("partner deliveries: %s; trying again shortly", error_summary(exc))
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
        waiters = [
            asyncio.create_task(self._wakeup.wait()),
            asyncio.create_task(runtime.stopping.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*waiters, return_exceptions=True)

    async def deliver_due(self, engine: AsyncEngine, client: httpx.AsyncClient) -> int:
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
                await self._attempt(engine, client, row, token)

        await asyncio.gather(*(attempt(row, token) for row, token in leased))
        return len(leased)

    async def _attempt(
        self, engine: AsyncEngine, client: httpx.AsyncClient, row: AnyRow, token: str
    ) -> None:
        s = self._settings
        secret = s.partner_secret(row.partner_id)
        status_code: int | None = None
        result: Outcome
        values: dict[str, object]
        if secret is None:
            # Never send a lead unsigned: the partner could not tell it from a forgery.
            result = "no_secret"
        elif row.payload is None:
            result = "erased"
        else:
            body: bytes = row.payload
            headers = signed_headers(
                secret=secret,
                timestamp=int(time.time()),
                body=body,
                delivery_id=row.id,
                event_id=row.event_id,
            )
            result, status_code = await send(
                client,
                row.url,
                body,
                headers,
                production=not s.common.dev,
                total_seconds=s.partner_timeout_seconds,
            )
        if status_code is not None:
            error = None if result == "http_2xx" else f"HTTP {status_code}"
            permanent = error is not None and not retriable(status_code)
        else:
            error, permanent = OUTCOME_MESSAGES[result], result in PERMANENT_OUTCOMES
        now = utcnow()
        if error is None:
            outcome = "delivered"
            values = {"status": "delivered", "delivered_at": now, "last_error": None}
        elif permanent or row.attempts >= s.partner_max_attempts:
            outcome = "failed"
            values = {"status": "failed", "last_error": error}
            # The status and the outcome only: nothing the receiver said.
            log.warning(
                "delivery %s to %s parked after %d attempt(s): %s%s",
                row.id,
                row.partner_id,
                row.attempts,
                result,
                f" (HTTP {status_code})" if status_code is not None else "",
            )
        else:
            outcome = "retry"
            delay = retry_delay(
                row.attempts, base=s.partner_retry_base_seconds, cap=s.partner_retry_max_seconds
            )
            values = {
                "status": "pending",
                "last_error": error,
                "next_attempt_at": now + timedelta(seconds=delay),
            }
        async with engine.begin() as conn:
            await repository.finish_attempt(
                conn,
                row.id,
                token=token,
                last_status_code=status_code,
                last_outcome=result,
                updated_at=now,
                **values,
            )
        DELIVERY_ATTEMPTS.labels(row.partner_id, outcome).inc()
