"""The background job that brings CRM changes in: pulls owed by notifications, and the
reconciliation poll that catches what no notification told (Bitrix24 never redelivers,
Kommo may not, any of them may be down while we are, or we while they call).

A pull reads the record back and applies it (`pull.apply_record`); a CRM that is busy or
down leaves the pull owed, due again after a backoff. Reconciliation lists the records
modified since the connector's `synced_until` (less an overlap: the CRM's clock and
late notifications) every `reconcile_seconds`; one replica takes a connector's round
(a conditional UPDATE of `last_sync_at` is the claim). Applying is idempotent, so the
overlap and a pull of the same change cost a read, never a double count.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.qualifier.config import QualifierSettings
from services.qualifier.crm import connectors as connector_configs
from services.qualifier.crm import pull, repository
from services.qualifier.crm.adapter import CrmRecord, CrmRefused, CrmUnavailable
from services.qualifier.crm.clients import CrmClients
from services.qualifier.crm.secrets import AnyConnector, MissingSecret
from services.qualifier.partners.webhooks import retry_delay
from services.qualifier.tables import crm_connectors
from shared.db import error_summary, utcnow
from shared.runtime import Runtime
from shared.wakeup import nap

log = logging.getLogger(__name__)

# How far back each round reads again: clocks differ and notifications come late.
OVERLAP = timedelta(minutes=2)
# A first round reads this far back (a connector saved after leads were pushed).
FIRST_LOOKBACK = timedelta(days=1)
PULL_LEASE = timedelta(minutes=2)


class CrmSync:
    def __init__(self, settings: QualifierSettings, clients: CrmClients) -> None:
        self._settings = settings
        self._clients = clients
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, runtime: Runtime) -> None:
        try:
            while not runtime.stopping.is_set():
                self._wakeup.clear()
                try:
                    while await self.pull_due(runtime.engine):
                        pass
                    await self.reconcile_due(runtime.engine)
                except (sa.exc.SQLAlchemyError, OSError) as exc:
                    log.warning("CRM sync: %s; trying again shortly", error_summary(exc))
                await self._sleep(runtime, self._settings.crm_poll_seconds)
        finally:
            await self._clients.aclose()

    async def _sleep(self, runtime: Runtime, seconds: float) -> None:
        await nap(self._wakeup, runtime.stopping, seconds)

    # Pulls

    async def pull_due(self, engine: AsyncEngine) -> int:
        """Read back and apply the records notifications named; how many were leased."""
        now = utcnow()
        token = str(uuid.uuid4())
        async with engine.begin() as conn:
            leased = await repository.claim_pulls(
                conn, token=token, now=now, lease_until=now + PULL_LEASE, limit=20
            )
            configured = {c.id: c for c in await connector_configs.load_all(conn)}
        limit = asyncio.Semaphore(4)

        async def one(connector_id: str, crm_id: str, attempts: int) -> None:
            async with limit:
                await self._pull(
                    engine, configured.get(connector_id), connector_id, crm_id, attempts, token
                )

        await asyncio.gather(*(one(r.connector_id, r.crm_id, r.attempts) for r in leased))
        return len(leased)

    async def _pull(
        self,
        engine: AsyncEngine,
        connector: AnyConnector | None,
        connector_id: str,
        crm_id: str,
        attempts: int,
        token: str,
    ) -> None:
        if connector is None or not connector.enabled:
            async with engine.begin() as conn:
                await repository.finish_pull(conn, connector_id, crm_id, token=token)
            return
        try:
            record = await self._clients.client(connector).fetch(crm_id)
        except (CrmUnavailable, CrmRefused, MissingSecret) as exc:
            error = _our_words(exc)
            delay = retry_delay(
                attempts,
                base=self._settings.partner_retry_base_seconds,
                cap=self._settings.partner_retry_max_seconds,
            )
            if isinstance(exc, CrmUnavailable) and exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, 3600.0))
            now = utcnow()
            async with engine.begin() as conn:
                await repository.retry_pull(
                    conn,
                    connector_id,
                    crm_id,
                    token=token,
                    due=now + timedelta(seconds=delay),
                    error=error,
                )
                await repository.record_error(conn, connector_id, error, now)
            return
        async with engine.begin() as conn:
            if record is not None:
                await self._apply(conn, connector, record)
            await repository.finish_pull(conn, connector_id, crm_id, token=token)

    async def _apply(
        self, conn: AsyncConnection, connector: AnyConnector, record: CrmRecord
    ) -> pull.Applied:
        s = self._settings
        return await pull.apply_record(
            conn,
            connector,
            record,
            currency=s.currency,
            now=utcnow(),
            skew=timedelta(seconds=s.clock_skew_seconds),
        )

    # Reconciliation

    async def reconcile_due(self, engine: AsyncEngine, *, force: str | None = None) -> int:
        """A round for each connector whose time has come (or `force`, now); records read."""
        now = utcnow()
        async with engine.connect() as conn:
            configured = await connector_configs.load_all(conn)
            await conn.rollback()
        read = 0
        for connector in configured:
            if not connector.enabled or (force is not None and connector.id != force):
                continue
            if await self._claim_round(engine, connector, now, forced=force is not None):
                read += await self.reconcile(engine, connector)
        return read

    async def _claim_round(
        self, engine: AsyncEngine, connector: AnyConnector, now: datetime, *, forced: bool
    ) -> bool:
        c = crm_connectors
        due = now - timedelta(seconds=connector.reconcile_seconds)
        stmt = c.update().where(c.c.id == connector.id).values(last_sync_at=now)
        if not forced:
            stmt = stmt.where(sa.or_(c.c.last_sync_at.is_(None), c.c.last_sync_at <= due))
        async with engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def reconcile(self, engine: AsyncEngine, connector: AnyConnector) -> int:
        started = utcnow()
        async with engine.connect() as conn:
            row, _ = await connector_configs.load(conn, connector.id)
            await conn.rollback()
        since = (row.synced_until or row.created_at - FIRST_LOOKBACK) - OVERLAP
        try:
            records = await self._clients.client(connector).modified_since(since)
        except (CrmUnavailable, CrmRefused, MissingSecret) as exc:
            async with engine.begin() as conn:
                await repository.record_error(conn, connector.id, _our_words(exc), utcnow())
            log.warning("CRM %s: reconciliation failed: %s", connector.id, type(exc).__name__)
            return 0
        for record in records:
            async with engine.begin() as conn:
                await self._apply(conn, connector, record)
        # Up to the newest change read, or, with none, to when the listing began.
        until = max((r.modified_at for r in records), default=started)
        async with engine.begin() as conn:
            await repository.record_sync(conn, connector.id, synced_until=until, now=utcnow())
        return len(records)


def _our_words(exc: Exception) -> str:
    if isinstance(exc, CrmUnavailable):
        return f"the CRM is unavailable: {exc}"
    if isinstance(exc, CrmRefused):
        return f"the CRM refused: {exc}"
    return str(exc)
