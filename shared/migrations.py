"""Runs a service's Alembic tree: `leadflow migrate`, `leadflow up` and the tests call this.

Each service keeps its own tree under `services/<name>/migrations` and its own
version table, so the three never step on each other even in one database.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it runs: `leadflow serve` imports this module (for SERVICES),
# and Alembic with Mako and Pygments would stay in every service's memory (about 8 MB).

SERVICES = ("intake", "qualifier", "kpi")
_ROOT = Path(__file__).resolve().parents[1]


def alembic_config(service: str, database_url: str) -> Config:
    from alembic.config import Config

    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; expected one of {SERVICES}")
    cfg = Config()
    cfg.set_main_option("script_location", str(_ROOT / "services" / service / "migrations"))
    cfg.set_main_option("version_table", f"alembic_version_{service}")
    # ConfigParser interpolation would choke on a '%' in a URL-encoded password.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def migrate(service: str, database_url: str, revision: str = "head") -> None:
    """Bring the service's database to `revision`. Synchronous: call it off the event loop."""
    from alembic import command

    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(service, database_url), revision)


def run_migrations_from_env(metadata: sa.MetaData) -> None:
    """The body of every tree's env.py: online migrations over an async engine."""
    from alembic import context

    cfg = context.config
    url = cfg.get_main_option("sqlalchemy.url")
    version_table = cfg.get_main_option("version_table") or "alembic_version"
    assert url, "sqlalchemy.url is set by shared.migrations.alembic_config"

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=version_table,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def go() -> None:
        engine = create_async_engine(url, poolclass=NullPool, hide_parameters=True)
        try:
            async with engine.connect() as conn:
                await conn.run_sync(run)
                await conn.commit()
        finally:
            await engine.dispose()

    asyncio.run(go())
