"""A database connection lost during a write, over HTTP on PostgreSQL: before COMMIT was sent
the answer says nothing was stored; during the COMMIT it says the outcome is unknown, and a
retry with the same Idempotency-Key stores the lead (or payment) once, whichever way the
COMMIT went.

The connection's backend is terminated (`pg_terminate_backend`) from a hook on SQLAlchemy's
`commit` event, which runs as SQLAlchemy is about to send COMMIT: either as it stands (the
server rolls the transaction back), or once the hook committed the transaction itself on
the driver's connection (the write is stored, and the client cannot know). Either way the
client's COMMIT then fails on a closed connection, as when a connection dies with COMMIT in
flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_

from services.intake.config import IntakeSettings
from services.intake.main import create_app
from services.intake.tables import leads
from services.qualifier.tables import payments
from shared.db import create_engine
from shared.migrations import migrate
from shared.settings import CommonSettings
from tests.fixtures.qualifier.harness import Harness, qualifier_app
from tests.integration.test_intake_support import LOCALHOST, WRITER, WRITER_AUTH, rows
from tests.integration.test_qualifier_lifecycle_api import post, sold
from tests.support import lead_payload, serving

Fate = Literal["rolled back", "committed"]


async def terminate(url: str, pid: int) -> None:
    """Terminate backend `pid` and wait until it is gone."""
    killer = create_engine(url)
    try:
        async with killer.connect() as conn:
            assert await conn.scalar(sa.select(sa.func.pg_terminate_backend(pid)))
            for _ in range(200):
                await conn.rollback()  # the activity view is read once per transaction
                alive = await conn.scalar(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                )
                if not alive:
                    return
                await asyncio.sleep(0.05)
    finally:
        await killer.dispose()
    raise AssertionError(f"backend {pid} is still alive")


@contextlib.contextmanager
def connection_lost_at_commit(
    engine: AsyncEngine, url: str, *, fate: Fate, once_it_holds: str
) -> Iterator[list[int]]:
    """Lose the connection of the first transaction to commit on `engine` in which the
    query `once_it_holds` (run in that transaction) is true; yields the pids terminated."""
    killed: list[int] = []

    def at_commit(conn: Connection) -> None:
        if killed:
            return
        driver = conn.connection.driver_connection
        assert driver is not None
        if not await_(driver.fetchval(once_it_holds)):
            return
        pid = await_(driver.fetchval("SELECT pg_backend_pid()"))
        killed.append(pid)
        if fate == "committed":
            await_(driver.execute("COMMIT"))
        await_(terminate(url, pid))

    event.listen(engine.sync_engine, "commit", at_commit)
    try:
        yield killed
    finally:
        event.remove(engine.sync_engine, "commit", at_commit)


@contextlib.contextmanager
def connection_lost_before(engine: AsyncEngine, url: str, statement: str) -> Iterator[list[int]]:
    """Lose the connection just before the first statement containing `statement` is sent."""
    killed: list[int] = []

    def before(conn: Connection, _cursor: Any, sql: str, *_: Any) -> None:
        if killed or statement not in sql:
            return
        driver = conn.connection.driver_connection
        assert driver is not None
        pid = await_(driver.fetchval("SELECT pg_backend_pid()"))
        killed.append(pid)
        await_(terminate(url, pid))

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield killed
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


def assert_unknown(r: httpx.Response) -> str:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"]
    body = r.json()
    assert "nothing was stored" not in body["detail"]
    assert "unknown" in body["detail"] and "Idempotency-Key" in body["detail"]
    assert body["outcome"] == "unknown"
    detail: str = body["detail"]
    return detail


@dataclass
class Intake:
    http: httpx.AsyncClient
    engine: AsyncEngine

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.post(path, **kwargs)


@pytest.fixture
async def intake(database_url: str, kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Intake]:
    await asyncio.to_thread(migrate, "intake", database_url)
    settings = IntakeSettings(
        database_url=database_url,
        common=CommonSettings(
            data_dir=tmp_path, kafka_bootstrap_servers=kafka_bootstrap, auth_tokens=[WRITER]
        ),
    )
    app = create_app(settings)
    async with serving(app) as http:
        yield Intake(http, app.state.runtime.engine)


async def leads_of(url: str, email: str) -> list[str]:
    found = await rows(url, sa.select(leads.c.lead_id, leads.c.snapshot))
    return [r.lead_id for r in found if r.snapshot["email"] == email]


NEW_LEAD = "SELECT count(*) > 0 FROM leads"


class TestIntakeCommitLost:
    @pytest.mark.parametrize("fate", ["rolled back", "committed"])
    async def test_the_answer_says_unknown_and_a_retry_with_the_key_gives_one_lead(
        self, intake: Intake, database_url: str, fate: Fate
    ) -> None:
        lead = lead_payload()
        headers = {**WRITER_AUTH, "Idempotency-Key": f"order-{uuid.uuid4()}"}
        with connection_lost_at_commit(
            intake.engine, database_url, fate=fate, once_it_holds=NEW_LEAD
        ) as killed:
            first = await intake.post("/v1/leads", json=lead, headers=headers)
        assert killed, "the hook did not fire"
        assert_unknown(first)
        stored = await leads_of(database_url, lead["email"])
        assert len(stored) == (1 if fate == "committed" else 0)

        retry = await intake.post("/v1/leads", json=lead, headers=headers)
        assert retry.status_code == 202, retry.text
        assert retry.json()["status"] == "accepted"
        (lead_id,) = await leads_of(database_url, lead["email"])
        assert retry.json()["lead_id"] == lead_id
        # A committed first attempt is replayed; a rolled-back one is done (once) now.
        replayed = retry.headers.get("idempotent-replayed") == "true"
        assert replayed is (fate == "committed")

    async def test_without_a_key_a_retry_is_a_duplicate_of_the_lead_stored(
        self, intake: Intake, database_url: str
    ) -> None:
        # The common request (no key) is answered by intake's front and group commit.
        lead = lead_payload()
        with connection_lost_at_commit(
            intake.engine, database_url, fate="committed", once_it_holds=NEW_LEAD
        ):
            first = await intake.post("/v1/leads", json=lead, headers=WRITER_AUTH)
        detail = assert_unknown(first)
        assert "duplicate" in detail  # what the answer promises of a retry without a key
        (lead_id,) = await leads_of(database_url, lead["email"])
        retry = await intake.post("/v1/leads", json=lead, headers=WRITER_AUTH)
        assert retry.status_code == 202, retry.text
        assert retry.json() == {"lead_id": lead_id, "status": "duplicate", "duplicate_of": lead_id}
        assert await leads_of(database_url, lead["email"]) == [lead_id]

    async def test_a_connection_lost_before_commit_says_nothing_was_stored(
        self, intake: Intake, database_url: str
    ) -> None:
        email = f"vera.{uuid.uuid4().hex[:10]}@acme.example"
        form = {"name": "Вера", "email": email, "consent": "on", "website": ""}
        with connection_lost_before(intake.engine, database_url, "INSERT INTO leads") as k:
            first = await intake.post(
                "/v1/forms/contact-us/submissions", data=form, headers=LOCALHOST
            )
        assert k, "the hook did not fire"
        assert first.status_code == 503, first.text
        assert first.json() == {
            "detail": "database unavailable, nothing was stored; retry later",
            "outcome": "not_stored",
        }
        assert await leads_of(database_url, email) == []
        again = await intake.post("/v1/forms/contact-us/submissions", data=form, headers=LOCALHOST)
        assert again.status_code == 202, again.text
        assert len(await leads_of(database_url, email)) == 1


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path) as harness:
        yield harness


NEW_PAYMENT = "SELECT count(*) > 0 FROM payments"


class TestQualifierCommitLost:
    async def test_a_payment_with_a_key_is_recorded_once(
        self, q: Harness, database_url: str
    ) -> None:
        lead_id = await sold(q)
        key = {"Idempotency-Key": f"pay-{uuid.uuid4()}"}
        with connection_lost_at_commit(
            q.runtime.engine, database_url, fate="committed", once_it_holds=NEW_PAYMENT
        ):
            first = await post(q, lead_id, "payments", {"amount": "900.00"}, headers=key)
        assert "payment_id" in assert_unknown(first)  # the qualifier's own advice
        retry = await post(q, lead_id, "payments", {"amount": "900.00"}, headers=key)
        assert retry.status_code == 201, retry.text
        assert retry.headers["idempotent-replayed"] == "true"
        (paid,) = await q.rows(payments, payments.c.lead_id == lead_id)
        assert retry.json()["payment_id"] == paid.payment_id

    async def test_a_payment_without_payment_id_or_key_is_not_retry_safe(
        self, q: Harness, database_url: str
    ) -> None:
        # What docs/lead-definition.md warns of: the retry records a second payment.
        lead_id = await sold(q)
        with connection_lost_at_commit(
            q.runtime.engine, database_url, fate="committed", once_it_holds=NEW_PAYMENT
        ):
            assert_unknown(await post(q, lead_id, "payments", {"amount": "900.00"}))
        assert (await post(q, lead_id, "payments", {"amount": "900.00"})).status_code == 201
        assert len(await q.rows(payments, payments.c.lead_id == lead_id)) == 2
