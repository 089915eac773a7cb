"""The KPI service's app factory (`uvicorn --factory services.kpi.main:create_app`)."""

from __future__ import annotations

from fastapi import FastAPI

from services.kpi import api
from services.kpi.config import KpiSettings
from services.kpi.consumer import make_handler
from shared.events import LEAD_TOPICS
from shared.runtime import Runtime, create_service_app


def create_app(settings: KpiSettings | None = None) -> FastAPI:
    settings = settings or KpiSettings()

    def runtime() -> Runtime:
        return Runtime(
            settings,
            consume=LEAD_TOPICS,
            handler=make_handler,
            consumer_max_records=settings.consumer_max_records,
        )

    return create_service_app(
        settings=settings,
        runtime_factory=runtime,
        title="Leadflow KPI",
        description="Folds every lead event into metric tables that BI dashboards poll.",
        routers=[api.router],
    )
