"""Intake's Alembic tree: it makes the schema `services/intake/tables.py` describes, and
goes down to nothing and up again."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.intake.tables import metadata
from shared.db import create_engine
from shared.migrations import alembic_config, migrate


async def differences(database_url: str) -> list[object]:
    """What the database and the tables' metadata disagree on: tables, columns, types,
    nullability, indexes, constraints (not a partial index's condition: Alembic does not
    compare those; test_intake_dedupe_lookup checks the identity indexes')."""

    def compare(sync_conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "version_table": "alembic_version_intake"}
        )
        return list(compare_metadata(context, metadata))

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(compare)
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
