"""Fixtures the integration tests of one service share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fixtures.kpi.harness import Harness, kpi_app


@pytest.fixture
async def kpi(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """The KPI app on a fresh database (SQLite and PostgreSQL), its Kafka side not started."""
    async with kpi_app(database_url, tmp_path) as harness:
        yield harness
