"""A rebuild folds each batch's leads in concurrent transactions, and a failure after they
committed but before the batch's positions were recorded folds the batch again on resume,
which changes no number (issue 21)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.kpi.config import KpiSettings
from services.kpi.fold import apply
from services.kpi.main import create_app
from services.kpi.store import generations
from shared.delivery import TransientFailure
from shared.migrations import migrate
from shared.settings import CommonSettings
from tests.fixtures.kpi.kafka import private_broker, publish
from tests.fixtures.kpi.scenario import generate
from tests.support import serving

pytestmark = pytest.mark.kafka

PERIODS = [("2026-01-01", "2026-04-01"), ("2026-02-10", "2026-03-20")]


async def _until(condition: Any, seconds: float = 120.0) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.1)


async def test_a_rebuild_folds_parts_concurrently_and_survives_a_failure_before_recording(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = generate(12, first=date(2026, 1, 1), last=date(2026, 4, 1), per_month=25)
    events = [e for e in s.waves[0] if getattr(e.data, "currency", "RUB") == "RUB"]
    async with private_broker(tmp_path / "kafka") as bootstrap:
        await publish(bootstrap, events)
        await asyncio.to_thread(migrate, "kpi", database_url)
        settings = KpiSettings(
            database_url=database_url,
            consumer_group=f"kpi-rebuild-parts-{uuid.uuid4().hex[:8]}",
            rebuild_max_records=40,
            rebuild_poll_seconds=0.2,
            fold_parallelism=2,
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

        # How many folds run at once, and one failure of the first recording of positions,
        # after the batch's parts committed.
        fold_into, save_progress = apply.fold_into, generations.save_progress
        running, most = 0, 0
        failed: list[int] = []

        async def counted_fold_into(*args: Any) -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                # A pause inside the fold: concurrent parts overlap here, sequential never.
                await asyncio.sleep(0.01)
                return await fold_into(*args)
            finally:
                running -= 1

        async def failing_once(conn: Any, generation: int, positions: Any) -> None:
            if not failed:
                failed.append(generation)
                raise TransientFailure("injected: the process lost the database here")
            await save_progress(conn, generation, positions)

        async with serving(create_app(settings)) as http:
            http.headers["Authorization"] = "Bearer dev"

            async def live_folded() -> bool:
                r = await http.get(
                    "/v1/kpi/summary", params={"from": "2026-01-01", "to": "2026-04-01"}
                )
                received = sum(1 for e in events if e.type == "lead.received")
                return r.json()["metrics"]["leads_received"]["value"] == received

            await _until(live_folded)
            before = await answers(http)
            monkeypatch.setattr(apply, "fold_into", counted_fold_into)
            monkeypatch.setattr(generations, "save_progress", failing_once)
            r = await http.post("/v1/admin/rebuild")
            status_url = r.headers["location"]

            async def finished() -> bool:
                return (await http.get(status_url)).json()["status"] == "done"

            await _until(finished, seconds=300)
            assert failed, "the injected failure never happened"
            assert most >= 2, "a batch's parts were not folded concurrently"
            assert await answers(http) == before
