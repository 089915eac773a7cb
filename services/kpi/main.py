"""The KPI service's app factory (`uvicorn --factory services.kpi.main:create_app`)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kpi.config import KpiSettings
from services.kpi.dashboard import page as dashboard
from services.kpi.fold import rebuild_api
from services.kpi.fold.apply import FOLD_VERSION
from services.kpi.fold.consumer import make_handler
from services.kpi.fold.rebuild import ACTIVE_GENERATION, Rebuilder, purge_retired
from services.kpi.plans import api as plans_api
from services.kpi.reads import api as reads_api
from services.kpi.store import generations
from shared.events import LEAD_TOPICS
from shared.kafka import FetchPolicy
from shared.runtime import Runtime, create_service_app

log = logging.getLogger(__name__)


async def prepare_active_generation(engine: AsyncEngine) -> int:
    """At start: an active generation nothing was folded into yet (a fresh install's)
    takes the current fold rules; one folded by older rules is named in the log."""
    async with engine.begin() as conn:
        active = await generations.active_generation(conn)
        if await generations.adopt_fold_rules_if_empty(conn, active, FOLD_VERSION):
            log.info("KPI generation %d is empty: it folds by rules v%d", active, FOLD_VERSION)
            return active
        found = await generations.get_generation(conn, active)
    if found is not None and found.fold_version != FOLD_VERSION:
        log.warning(
            "KPI generation %d was folded by fold rules v%d, this build folds by v%d: "
            "POST /v1/admin/rebuild to fold the topics again by the current rules",
            active,
            found.fold_version,
            FOLD_VERSION,
        )
    return active


def create_app(settings: KpiSettings | None = None) -> FastAPI:
    settings = settings or KpiSettings()
    app: FastAPI

    async def rebuild_job(runtime: Runtime) -> None:
        rebuilder = Rebuilder(runtime)
        app.state.rebuilder = rebuilder  # so a rebuild asked for here starts at once
        try:
            await rebuilder.run()
        finally:
            app.state.rebuilder = None

    def runtime() -> Runtime:
        return Runtime(
            settings,
            consume=LEAD_TOPICS,
            handler=make_handler,
            consumer_max_records=settings.consumer_max_records,
            consumer_in_flight=settings.consumer_in_flight,
            consumer_fetch=FetchPolicy(
                max_wait_ms=settings.consumer_fetch_max_wait_ms,
                min_bytes=settings.consumer_fetch_min_bytes,
                max_bytes=settings.consumer_fetch_max_bytes,
                top_up_wait_ms=0,
            ),
            background=[("kpi rebuild", rebuild_job), ("kpi purge", purge_retired)],
        )

    async def on_startup(runtime: Runtime) -> None:
        ACTIVE_GENERATION.set(await prepare_active_generation(runtime.engine))

    app = create_service_app(
        settings=settings,
        runtime_factory=runtime,
        # Folding allocates a few objects an event for good (states, facts) and many in
        # passing: at CPython's default (700, 10, 10) the collector's passes over the
        # windows' and batches' objects took 10-13% of the process's CPU
        # (fold_ab --rebuild: 73-76 -> 66-68 us an event folding, 62-65 -> 55 rebuilding).
        gc_thresholds=(50_000, 20, 100),
        title="Leadflow KPI",
        description=(
            "Folds every lead event into metric tables that BI dashboards poll; "
            "metric names and formulas: docs/kpi.md."
        ),
        routers=[reads_api.router, plans_api.router, rebuild_api.router, dashboard.router],
        on_startup=on_startup,
    )
    app.state.rebuilder = None
    return app
