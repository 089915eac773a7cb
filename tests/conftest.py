"""Shared fixtures: a real Kafka broker and a real PostgreSQL server per test session.

PostgreSQL: a server where the role may create databases, named by
LEADFLOW_TEST_POSTGRES_URL (`.ci/run` sets it), else an embedded server the session starts
itself (cli/postgres_server.py) and stops at its end; each test gets a fresh database.
Kafka: the session starts its own broker on free ports in a temporary data dir, unless
LEADFLOW_TEST_KAFKA_BOOTSTRAP names one already running.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from cli import postgres_server
from cli.kafka import config as kafka_config
from cli.kafka import ports as kafka_ports
from cli.kafka import process as kafka_process

POSTGRES_URL = os.environ.get("LEADFLOW_TEST_POSTGRES_URL")

# The suite's Kafka is one PLAINTEXT broker on loopback: the private network that
# LEADFLOW_KAFKA_PLAINTEXT_ALLOWED is for, with the replication one broker can give.
# Production-mode tests and the processes the fault tests start inherit these; the tests
# of the refusals, and tests/cluster (SASL_SSL, three brokers), set their own.
os.environ.setdefault("LEADFLOW_KAFKA_PLAINTEXT_ALLOWED", "true")
os.environ.setdefault("LEADFLOW_KAFKA_REPLICATION_FACTOR", "1")
os.environ.setdefault("LEADFLOW_KAFKA_MIN_INSYNC_REPLICAS", "1")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("LEADFLOW_TEST_KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    port, controller_port = kafka_ports.free_ports(2)
    cfg = kafka_config.BrokerConfig(
        data_dir=tmp_path_factory.mktemp("kafka"), port=port, controller_port=controller_port
    )
    kafka_process.start(cfg)
    try:
        yield cfg.bootstrap_servers
    finally:
        kafka_process.stop(cfg)


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A server's `postgres` database, where tests create databases of their own."""
    if POSTGRES_URL:
        yield POSTGRES_URL
        return
    # Under /tmp itself: run as root, the server runs as another OS user, and every new
    # pytest session makes /tmp/pytest-of-<user> 0700 again, out of that user's reach.
    root = Path(tempfile.mkdtemp(prefix="leadflow-test-pg-"))
    cfg = postgres_server.ServerConfig(data_dir=root)
    try:
        postgres_server.start(cfg)
        yield cfg.url("postgres")
    finally:
        postgres_server.stop(cfg)
        shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server of `admin_url`, dropped afterwards; its URL."""
    name = f"leadflow_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(_asyncpg_dsn(admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(admin_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database."""
    async with fresh_database(postgres_admin_url) as url:
        yield url
