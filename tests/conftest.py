"""Shared fixtures: a real Kafka broker per test session, and databases on SQLite and PostgreSQL.

PostgreSQL tests run when LEADFLOW_TEST_POSTGRES_URL names a server where the role may
create databases (`.ci/run` sets it); each test gets a fresh database. Kafka: the session
starts its own broker on free ports in a temporary data dir, unless
LEADFLOW_TEST_KAFKA_BOOTSTRAP names one already running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from cli import kafka_broker

POSTGRES_URL = os.environ.get("LEADFLOW_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("LEADFLOW_TEST_KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    port, controller_port = kafka_broker.free_ports(2)
    cfg = kafka_broker.BrokerConfig(
        data_dir=tmp_path_factory.mktemp("kafka"), port=port, controller_port=controller_port
    )
    kafka_broker.start(cfg)
    try:
        yield cfg.bootstrap_servers
    finally:
        kafka_broker.stop(cfg)


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("LEADFLOW_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    name = f"leadflow_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
