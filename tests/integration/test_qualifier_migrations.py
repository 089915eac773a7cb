"""The qualifier's Alembic tree: up, down, and up again, with data."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command

from services.qualifier.tables import metadata
from shared.db import create_engine
from shared.migrations import alembic_config, migrate
from tests.support import schema_differences


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_revision_0002_goes_up_and_down_and_keeps_existing_history(
    database_url: str,
) -> None:
    await asyncio.to_thread(migrate, "qualifier", database_url, "0001")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO stage_history (lead_id, stage, at, event_id) "
                    "VALUES ('lead-1', 'routed', '2026-10-01 10:00:00', 'e-1')"
                )
            )
    finally:
        await engine.dispose()

    # Up to 0004: 0005 renames partner_deliveries.
    await asyncio.to_thread(migrate, "qualifier", database_url, "0004")
    new = {"payments", "partner_deliveries", "sales_members", "erasures", "idempotency_keys"}
    assert new <= await _tables(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            kind = await conn.scalar(sa.text("SELECT event_type FROM stage_history"))
        assert kind == "lead.routed"  # history written before 0002 was all routing
    finally:
        await engine.dispose()

    await asyncio.to_thread(command.downgrade, alembic_config("qualifier", database_url), "0001")
    assert not new & await _tables(database_url)
    await asyncio.to_thread(migrate, "qualifier", database_url, "0004")
    assert new <= await _tables(database_url)
    await asyncio.to_thread(migrate, "qualifier", database_url, "head")


async def test_revision_0003_keeps_no_receivers_answer_and_types_the_deliveries(
    database_url: str,
) -> None:
    await asyncio.to_thread(migrate, "qualifier", database_url, "0002")
    engine = create_engine(database_url)
    insert = sa.text(
        "INSERT INTO partner_deliveries (id, lead_id, partner_id, event_id, url, status, "
        "attempts, next_attempt_at, created_at, updated_at, last_status_code, last_error) "
        "VALUES (:id, 'lead-1', 'webstudio', :id, 'https://p.example/', 'failed', 1, "
        "'2026-10-01 10:00:00', '2026-10-01 10:00:00', '2026-10-01 10:00:00', :code, :error)"
    )
    rows = [
        ("d-1", 500, "HTTP 500: aws_secret_access_key=wJalrXUtnFEMI"),
        ("d-2", 200, None),
        ("d-3", None, "ConnectError: [Errno 111] Connection refused"),
    ]
    try:
        async with engine.begin() as conn:
            for id_, code, error in rows:
                await conn.execute(insert, {"id": id_, "code": code, "error": error})
    finally:
        await engine.dispose()

    await asyncio.to_thread(migrate, "qualifier", database_url, "0004")
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            got = (
                await conn.execute(
                    sa.text(
                        "SELECT id, event_type, last_outcome, last_error FROM partner_deliveries "
                        "ORDER BY id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in got] == [
        ("d-1", "lead.routed", "http_5xx", "HTTP 500"),
        ("d-2", "lead.routed", "http_2xx", None),
        ("d-3", "lead.routed", None, "ConnectError: [Errno 111] Connection refused"),
    ]
    await asyncio.to_thread(command.downgrade, alembic_config("qualifier", database_url), "0002")
    await asyncio.to_thread(migrate, "qualifier", database_url, "head")


async def _differences(database_url: str) -> list[object]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await schema_differences(conn, "qualifier", metadata)
    finally:
        await engine.dispose()


async def test_the_migrations_make_the_schema_the_tables_describe(database_url: str) -> None:
    await asyncio.to_thread(migrate, "qualifier", database_url)
    assert await _differences(database_url) == []


async def test_revision_0004_keeps_stored_answers_and_makes_keys_claimable(
    database_url: str,
) -> None:
    await asyncio.to_thread(migrate, "qualifier", database_url, "0003")
    engine = create_engine(database_url)
    answered = sa.text(
        "INSERT INTO idempotency_keys (principal, key, request_hash, status_code, response, "
        "created_at) VALUES ('crm', 'k-1', 'h', 200, '{\"changed\": true}', now())"
    )
    claimed = sa.text(
        "INSERT INTO idempotency_keys (principal, key, request_hash, created_at, claim_id, "
        "locked_until) VALUES ('crm', 'k-2', 'h', now(), 'c-1', now())"
    )
    keys = sa.text("SELECT key, status_code, response FROM idempotency_keys ORDER BY key")
    try:
        async with engine.begin() as conn:
            await conn.execute(answered)
        await asyncio.to_thread(migrate, "qualifier", database_url, "head")
        async with engine.begin() as conn:
            await conn.execute(claimed)  # a claim has no answer yet
        async with engine.connect() as conn:
            assert [tuple(r) for r in await conn.execute(keys)] == [
                ("k-1", 200, {"changed": True}),
                ("k-2", None, None),
            ]
        await asyncio.to_thread(
            command.downgrade, alembic_config("qualifier", database_url), "0003"
        )
        async with engine.connect() as conn:
            assert [tuple(r) for r in await conn.execute(keys)] == [("k-1", 200, {"changed": True})]
    finally:
        await engine.dispose()


async def test_revision_0005_keeps_partner_deliveries_as_deliveries_of_kind_partner(
    database_url: str,
) -> None:
    await asyncio.to_thread(migrate, "qualifier", database_url, "0004")
    engine = create_engine(database_url)
    columns = "id, lead_id, target_id, kind, operation, event_id, url, status, attempts"
    delivery = sa.text(
        "INSERT INTO deliveries (id, lead_id, kind, target_id, operation, event_id, url, "
        "status, attempts, next_attempt_at, created_at, updated_at) VALUES (:id, 'lead-1', "
        ":kind, :target, :operation, 'e-1', :url, 'pending', 0, now(), now(), now())"
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO partner_deliveries (id, lead_id, partner_id, event_id, url, "
                    "status, attempts, next_attempt_at, created_at, updated_at) VALUES ('d-1', "
                    "'lead-1', 'webstudio', 'e-1', 'https://p.example/', 'failed', 3, now(), "
                    "now(), now())"
                )
            )
        await asyncio.to_thread(migrate, "qualifier", database_url, "0005")
        async with engine.begin() as conn:
            # One event now goes to several targets; a CRM push has no single URL.
            for id_, kind, target, operation, url in [
                ("d-2", "webhook", "sub-1", None, "https://w.example/"),
                ("d-3", "crm", "kommo", "push", None),
            ]:
                row = {"id": id_, "kind": kind, "target": target, "operation": operation}
                await conn.execute(delivery, row | {"url": url})
        async with engine.connect() as conn:
            got = (
                await conn.execute(sa.text(f"SELECT {columns} FROM deliveries ORDER BY id"))
            ).all()
        assert [tuple(r) for r in got] == [
            (
                "d-1",
                "lead-1",
                "webstudio",
                "partner",
                None,
                "e-1",
                "https://p.example/",
                "failed",
                3,
            ),
            ("d-2", "lead-1", "sub-1", "webhook", None, "e-1", "https://w.example/", "pending", 0),
            ("d-3", "lead-1", "kommo", "crm", "push", "e-1", None, "pending", 0),
        ]
        await asyncio.to_thread(
            command.downgrade, alembic_config("qualifier", database_url), "0004"
        )
        async with engine.connect() as conn:
            kept = await conn.execute(sa.text("SELECT id, partner_id FROM partner_deliveries"))
            assert [tuple(r) for r in kept] == [("d-1", "webstudio")]
    finally:
        await engine.dispose()
    await asyncio.to_thread(migrate, "qualifier", database_url, "head")
    assert await _differences(database_url) == []
