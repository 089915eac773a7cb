"""`leadflow serve` freezes what start-up built, so the collector's full passes skip it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.kpi.main import create_app
from shared import runtime
from shared.migrations import migrate
from tests.fixtures.kpi.harness import settings_for
from tests.support import serving


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    runtime._freeze.after_start = False
    gc.unfreeze()  # this test process starts many apps: frozen garbage would stay


@pytest.mark.usefixtures("unfrozen")
@pytest.mark.parametrize("serve", [True, False], ids=["leadflow serve", "an app in tests"])
async def test_objects_built_at_start_are_frozen_only_when_serving(
    serve: bool, database_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate, "kpi", database_url)
    if serve:
        runtime.freeze_after_start()
    async with serving(create_app(settings_for(database_url, tmp_path))) as http:
        assert (await http.get("/healthz")).status_code == 200
        frozen = gc.get_freeze_count()
    assert (frozen > 10_000) is serve
