"""shared.unit_of_work over HTTP on PostgreSQL: a request's writes are committed before the
first byte of its answer goes out, a failed COMMIT answers 503 instead of the endpoint's 200
and wakes nothing, an error rolls back, and the outbox relay is woken once the rows are
visible to other connections.

What the database holds is read from another connection at two moments: when the answer
starts (an ASGI wrapper around the app) and when the runtime wakes what publishes (a hook
that reads synchronously, in a thread, so nothing else runs meanwhile).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException

from shared.db import create_engine
from shared.outbox import outbox_table
from shared.runtime import Runtime
from shared.settings import CommonSettings, ServiceSettings
from shared.unit_of_work import UnitOfWork
from shared.web import install_error_handlers

metadata = sa.MetaData()
notes = sa.Table("uow_notes", metadata, sa.Column("id", sa.Text, primary_key=True))
outbox = outbox_table(metadata)


class ProbeSettings(ServiceSettings):
    service_name: ClassVar[str] = "probe"
    port: int = 0


async def stored_notes(url: str) -> set[str]:
    """The note ids another connection sees committed."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return set((await conn.scalars(sa.select(notes.c.id))).all())
    finally:
        await engine.dispose()


async def terminate(url: str, pid: int) -> None:
    """Terminate backend `pid` from another connection and wait until it is gone."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(sa.select(sa.func.pg_terminate_backend(pid)))
            for _ in range(200):
                await conn.rollback()  # the activity view is read once per transaction
                query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
                if not await conn.scalar(query, {"pid": pid}):
                    return
                await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
    raise AssertionError(f"backend {pid} is still alive")


class Probe:
    """A service app whose endpoints write through the unit of work, and what was seen."""

    def __init__(self, url: str) -> None:
        self.url = url
        settings = ProbeSettings(database_url=url, common=CommonSettings())
        self.runtime = Runtime(settings, outbox=outbox)
        self.runtime.wake_after_commit.append(self._woken)
        # The notes committed when each answer started, and when each wake-up came.
        self.at_answer: list[set[str]] = []
        self.at_wake: list[set[str]] = []
        self.app = self._app()

    def _woken(self) -> None:
        seen: list[set[str]] = []
        reader = threading.Thread(target=lambda: seen.append(asyncio.run(stored_notes(self.url))))
        reader.start()
        reader.join()
        self.at_wake.extend(seen)

    def _app(self) -> FastAPI:
        app = FastAPI()
        app.state.runtime = self.runtime
        install_error_handlers(app)

        @app.post("/notes/{note_id}")
        async def write(note_id: str, conn: UnitOfWork) -> dict[str, str]:
            await conn.execute(notes.insert().values(id=note_id))
            return {"id": note_id}

        @app.post("/notes/{note_id}/refused")
        async def refuse(note_id: str, conn: UnitOfWork) -> dict[str, str]:
            await conn.execute(notes.insert().values(id=note_id))
            raise HTTPException(409, detail="refused after writing")

        @app.post("/notes/{note_id}/connection-lost")
        async def lose(note_id: str, conn: UnitOfWork) -> dict[str, str]:
            await conn.execute(notes.insert().values(id=note_id))
            await terminate(self.url, await conn.scalar(sa.select(sa.func.pg_backend_pid())))
            return {"id": note_id}

        @app.post("/notes/{note_id}/twice")
        async def twice(note_id: str, conn: UnitOfWork, same: UnitOfWork) -> dict[str, bool]:
            await conn.execute(notes.insert().values(id=note_id))
            return {"same": conn is same}

        probe = self

        class AtAnswer:
            """Reads what is committed as the answer starts, before it is sent."""

            def __init__(self, app: Any) -> None:
                self.app = app

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                async def reading(message: Any) -> None:
                    if message["type"] == "http.response.start":
                        probe.at_answer.append(await stored_notes(probe.url))
                    await send(message)

                await self.app(scope, receive, reading)

        app.add_middleware(AtAnswer)
        return app


@pytest.fixture
async def probe(database_url: str) -> AsyncIterator[Probe]:
    engine = create_engine(database_url, pool_size=1)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
    probe = Probe(database_url)
    try:
        yield probe
    finally:
        await probe.runtime.stop()


@pytest.fixture
async def http(probe: Probe) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=probe.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def relay_woken(probe: Probe) -> bool:
    assert probe.runtime.relay is not None
    return probe.runtime.relay._wakeup.is_set()


def note() -> str:
    return uuid.uuid4().hex


class TestUnitOfWork:
    async def test_the_write_is_committed_before_the_answer_starts(
        self, probe: Probe, http: httpx.AsyncClient
    ) -> None:
        note_id = note()
        r = await http.post(f"/notes/{note_id}")
        assert r.status_code == 200, r.text
        assert probe.at_answer == [{note_id}]

    async def test_the_relay_is_woken_once_the_commit_is_visible(
        self, probe: Probe, http: httpx.AsyncClient
    ) -> None:
        note_id = note()
        assert not relay_woken(probe)
        assert (await http.post(f"/notes/{note_id}")).status_code == 200
        assert probe.at_wake == [{note_id}]
        assert relay_woken(probe)

    async def test_a_commit_that_fails_answers_503_and_wakes_nothing(
        self, probe: Probe, http: httpx.AsyncClient
    ) -> None:
        note_id = note()
        r = await http.post(f"/notes/{note_id}/connection-lost")
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        assert r.json()["outcome"] in ("unknown", "not_stored")
        assert probe.at_wake == []
        assert not relay_woken(probe)
        assert note_id not in await stored_notes(probe.url)

    async def test_an_error_raised_by_the_endpoint_rolls_back(
        self, probe: Probe, http: httpx.AsyncClient
    ) -> None:
        note_id = note()
        r = await http.post(f"/notes/{note_id}/refused")
        assert r.status_code == 409
        assert probe.at_answer == [set()]
        assert probe.at_wake == []
        assert not relay_woken(probe)

    async def test_one_request_has_one_transaction(
        self, probe: Probe, http: httpx.AsyncClient
    ) -> None:
        note_id = note()
        r = await http.post(f"/notes/{note_id}/twice")
        assert r.json() == {"same": True}
        assert probe.at_wake == [{note_id}]
