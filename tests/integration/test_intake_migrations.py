"""Intake's Alembic tree: it makes the schema `services/intake/tables.py` describes, and
goes down to nothing and up again."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command

from services.intake.tables import metadata
from shared.db import create_engine
from shared.migrations import alembic_config, migrate
from tests.support import schema_differences


async def differences(database_url: str) -> list[object]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await schema_differences(conn, "intake", metadata)
    finally:
        await engine.dispose()


async def test_the_migrations_make_the_schema_the_tables_describe(database_url: str) -> None:
    await asyncio.to_thread(migrate, "intake", database_url)
    assert await differences(database_url) == []


async def test_the_migrations_go_down_to_nothing_and_up_again(database_url: str) -> None:
    cfg = alembic_config("intake", database_url)
    await asyncio.to_thread(migrate, "intake", database_url)
    await asyncio.to_thread(command.downgrade, cfg, "base")
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            left = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    finally:
        await engine.dispose()
    assert sorted(left) == ["alembic_version_intake"]
    await asyncio.to_thread(migrate, "intake", database_url)
    assert await differences(database_url) == []
