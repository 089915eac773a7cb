"""Fixtures the integration tests of one service share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.kpi.harness import Harness, kpi_app
from tests.integration.test_intake_support import running_intake


@pytest.fixture
async def kpi(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """The KPI app on a fresh database (SQLite and PostgreSQL), its Kafka side not started."""
    async with kpi_app(database_url, tmp_path) as harness:
        yield harness


@pytest.fixture
async def intake(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """Intake on a fresh database with its Kafka side running (modules may override it)."""
    async with running_intake(database_url, kafka_bootstrap, tmp_path) as client:
        yield client
