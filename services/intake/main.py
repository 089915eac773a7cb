"""The intake service's app factory (`uvicorn --factory services.intake.main:create_app`)."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake import api
from services.intake.config import IntakeSettings
from services.intake.tables import outbox
from shared.runtime import Runtime, create_service_app


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()

    def runtime() -> Runtime:
        return Runtime(
            settings,
            outbox=outbox,
            relay_batch_size=settings.relay_batch_size,
            relay_poll_seconds=settings.relay_poll_seconds,
        )

    return create_service_app(
        settings=settings,
        runtime_factory=runtime,
        title="Leadflow intake",
        description="Takes web-form and webinar leads, validates, normalizes, "
        "de-duplicates and stores them, and publishes `lead.received`.",
        routers=[api.router],
        body_limits={"/v1/": settings.max_json_bytes},
    )
