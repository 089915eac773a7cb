"""A rebuild interrupted by a restart resumes where its last transaction left off."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from services.kpi.config import KpiSettings
from services.kpi.fold.rebuild import REBUILD_EVENTS
from services.kpi.main import create_app
from shared.migrations import migrate
from shared.settings import CommonSettings
from tests.fixtures.kpi.kafka import private_broker, publish
from tests.fixtures.kpi.scenario import generate
from tests.support import serving

pytestmark = pytest.mark.kafka

PERIODS = [("2026-01-01", "2026-04-01"), ("2026-02-10", "2026-03-20")]


def _folded_by_rebuilds() -> float:
    return REBUILD_EVENTS.labels("folded")._value.get()


async def _until(condition: Any, seconds: float = 120.0) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.1)


async def test_a_rebuild_resumes_after_a_restart(database_url: str, tmp_path: Path) -> None:
    s = generate(11, first=date(2026, 1, 1), last=date(2026, 4, 1), per_month=25)
    events = [e for e in s.waves[0] if getattr(e.data, "currency", "RUB") == "RUB"]
    async with private_broker(tmp_path / "kafka") as bootstrap:
        await publish(bootstrap, events)
        await asyncio.to_thread(migrate, "kpi", database_url)
        settings = KpiSettings(
            database_url=database_url,
            consumer_group=f"kpi-rebuild-{uuid.uuid4().hex[:8]}",
            rebuild_max_records=5,
            rebuild_window_events=10,
            rebuild_poll_seconds=0.2,
            common=CommonSettings(
                data_dir=tmp_path, kafka_bootstrap_servers=bootstrap, topic_partitions=3
            ),
        )

        async def answers(http: httpx.AsyncClient) -> list[Any]:
            out = []
            for start, end in PERIODS:
                r = await http.get("/v1/kpi/summary", params={"from": start, "to": end})
                out.append(r.json()["metrics"])
            return out

        engine = create_async_engine(database_url)
        async with serving(create_app(settings)) as http:
            http.headers["Authorization"] = "Bearer dev"

            async def live_folded() -> bool:
                # The inbox row of an event commits with its fold; every lead received is not
                # enough, as the other topics' events can still be on their way.
                async with engine.connect() as conn:
                    applied = await conn.scalar(sa.text("SELECT count(*) FROM inbox"))
                return applied == len(events)

            await _until(live_folded)
            await engine.dispose()
            before = await answers(http)
            r = await http.post("/v1/admin/rebuild")
            status_url = r.headers["location"]

            async def part_way() -> bool:
                body = (await http.get(status_url)).json()
                # Stop at the first recorded progress: nearly all the work is left for after
                # the restart, so a slow shut-down cannot finish the rebuild by itself.
                return bool(body["offsets_done"]) and body["offsets_done"] > 0

            await _until(part_way)
        # The process stopped mid-rebuild: the generation is still being built.
        async with serving(create_app(settings)) as http:
            http.headers["Authorization"] = "Bearer dev"
            interrupted = (await http.get(status_url)).json()
            assert interrupted["status"] == "running"
            done_before_restart = interrupted["offsets_done"]
            assert 0 < done_before_restart < interrupted["offsets_total"]
            folded_before = _folded_by_rebuilds()

            async def finished() -> bool:
                return (await http.get(status_url)).json()["status"] == "done"

            await _until(finished, seconds=300)
            # It read on from its recorded progress, not from offset 0 again.
            read_after_restart = _folded_by_rebuilds() - folded_before
            total = interrupted["offsets_total"]
            assert read_after_restart <= total - done_before_restart + 3 * 5  # a batch in flight
            assert await answers(http) == before
