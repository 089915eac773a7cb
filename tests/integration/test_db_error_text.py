"""A database error says nothing of the people in the statement: neither in its text
(the engine hides parameters) nor in the logs of the loops and endpoints that meet it (type
and SQLSTATE only)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from services.qualifier.tables import outbox
from shared.db import create_engine, error_kind, error_summary
from shared.kafka import make_producer
from shared.outbox import OutboxRelay
from shared.web import install_error_handlers

EMAIL = "anna.petrova@acme.example"


async def test_an_error_does_not_quote_the_statement_values(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(sa.exc.DBAPIError) as failed:
                await conn.execute(
                    sa.text("INSERT INTO no_such_table (email) VALUES (:email)"), {"email": EMAIL}
                )
    finally:
        await engine.dispose()
    assert "no_such_table" in str(failed.value)
    assert EMAIL not in str(failed.value)


async def test_the_summary_of_an_error_is_its_type_and_sqlstate(database_url: str) -> None:
    engine = create_engine(database_url)
    errors: list[BaseException] = []
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("CREATE TEMPORARY TABLE people (email VARCHAR(100) UNIQUE)"))
            insert = sa.text("INSERT INTO people (email) VALUES (:email)")
            await conn.execute(insert, {"email": EMAIL})
            with pytest.raises(sa.exc.IntegrityError) as duplicate:
                await conn.execute(insert, {"email": EMAIL})
            errors.append(duplicate.value)
            await conn.rollback()
            # PostgreSQL quotes the value itself: hiding parameters is not enough.
            with pytest.raises(sa.exc.DBAPIError) as cast:
                await conn.execute(
                    sa.text("SELECT CAST(CAST(:email AS TEXT) AS INTEGER)"), {"email": EMAIL}
                )
            assert EMAIL in str(cast.value)
            errors.append(cast.value)
    finally:
        await engine.dispose()
    assert [error_summary(e) for e in errors] == [
        "IntegrityError/UniqueViolationError SQLSTATE 23505",
        "DBAPIError/Error/InvalidTextRepresentationError SQLSTATE 22P02",
    ]


def test_the_summary_of_other_errors_keeps_their_text_and_their_kind_does_not() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    assert error_summary(refused) == f"ConnectionRefusedError: {refused}"
    try:
        try:
            raise ValueError(f"bad input {EMAIL}")
        except ValueError as exc:
            raise RuntimeError(f"handler failed on {EMAIL}") from exc
    except RuntimeError as exc:
        assert error_kind(exc) == "RuntimeError/ValueError"


async def test_the_relay_logs_a_database_error_as_its_type_and_sqlstate(database_url: str) -> None:
    """The relay's table is missing: it keeps retrying, and says so without the error text."""
    engine = create_engine(database_url)
    # Never started: the relay fails before it has anything to send.
    producer = make_producer("127.0.0.1:1", "test-relay-db-error")
    relay = OutboxRelay(service="test", engine=engine, table=outbox, producer=producer)
    logged: list[str] = []
    seen = asyncio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())
            seen.set()

    handler = Seen(logging.WARNING)
    logging.getLogger("shared.outbox").addHandler(handler)
    running = asyncio.create_task(relay.run())
    try:
        async with asyncio.timeout(30):
            await seen.wait()
    finally:
        logging.getLogger("shared.outbox").removeHandler(handler)
        relay.request_stop()
        await running
        await producer.stop()
        await engine.dispose()
    error = "ProgrammingError/UndefinedTableError SQLSTATE 42P01"
    assert logged[0] == f"outbox relay: {error}; retrying in 0.2s"


async def test_an_endpoints_database_error_is_logged_and_answered_without_its_text(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an outage: a 500 that says nothing of the failure, and a log line naming its
    kind (PostgreSQL's text quotes the conflicting key: the e-mail)."""
    caplog.set_level(logging.DEBUG)
    engine = create_engine(database_url)
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/people")
    async def add_twice() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TEMPORARY TABLE people (email TEXT UNIQUE)"))
            insert = sa.text("INSERT INTO people (email) VALUES (:email)")
            await conn.execute(insert, {"email": EMAIL})
            await conn.execute(insert, {"email": EMAIL})

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/people")
    finally:
        await engine.dispose()
    assert (r.status_code, r.json()) == (500, {"detail": "internal error"})
    assert EMAIL not in caplog.text
    (line,) = [rec for rec in caplog.records if rec.name == "shared.web"]
    assert line.getMessage() == (
        "database error on POST /people: IntegrityError/UniqueViolationError SQLSTATE 23505"
    )
    assert line.exc_info is None
