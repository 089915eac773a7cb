"""How each service's consumer fetches: the qualifier's with the first new record (its
latency is the product), the KPI service's in batches (its readers poll every minute)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from services.kpi.config import KpiSettings
from services.kpi.main import create_app
from shared.consumer import EventConsumer
from shared.kafka import make_consumer
from shared.migrations import migrate
from shared.settings import CommonSettings
from tests.support import serving


def _fetch_settings(consumer: object) -> tuple[int, int, int]:
    c: Any = consumer
    return c._fetch_max_wait_ms, c._fetch_min_bytes, c._fetch_max_bytes


def _kpi_loop_fetch(loop: EventConsumer) -> tuple[int, int, int]:
    # A batch already waits for its bytes: no second fetch to top it up.
    assert loop._top_up_wait_ms == 0
    return _fetch_settings(loop._consumer)


async def test_a_consumer_fetches_each_new_record_by_default() -> None:
    consumer = make_consumer("127.0.0.1:1", "g", ["leads.received"], "c")
    assert _fetch_settings(consumer) == (50, 1, 50 << 20)


async def _kpi_fetch_settings(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, **overrides: int
) -> tuple[int, int, int]:
    await asyncio.to_thread(migrate, "kpi", database_url)
    settings = KpiSettings(
        database_url=database_url,
        consumer_group=f"kpi-fetch-{uuid.uuid4().hex[:8]}",
        common=CommonSettings(data_dir=tmp_path, kafka_bootstrap_servers=kafka_bootstrap),
        **overrides,  # type: ignore[arg-type]
    )
    app = create_app(settings)
    async with serving(app):
        assert app.state.runtime.consumer is not None
        return _kpi_loop_fetch(app.state.runtime.consumer)


async def test_the_kpi_service_fetches_in_batches(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # A response holds 4 MB at most, not 1 MB for each of 18 partitions (its peak memory).
    assert await _kpi_fetch_settings(database_url, kafka_bootstrap, tmp_path) == (
        500,
        1 << 20,
        4 << 20,
    )
    assert await _kpi_fetch_settings(
        database_url,
        kafka_bootstrap,
        tmp_path,
        consumer_fetch_max_wait_ms=20,
        consumer_fetch_min_bytes=4096,
        consumer_fetch_max_bytes=65536,
    ) == (20, 4096, 65536)
