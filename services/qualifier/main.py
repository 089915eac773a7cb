"""The qualifier service's app factory (`uvicorn --factory services.qualifier.main:create_app`)."""

from __future__ import annotations

from fastapi import FastAPI

from services.qualifier import api, service
from services.qualifier.config import QualifierSettings
from services.qualifier.consumer import make_handler
from services.qualifier.tables import outbox
from shared.db import utcnow
from shared.events import TOPIC_RECEIVED
from shared.runtime import Runtime, create_service_app


def create_app(settings: QualifierSettings | None = None) -> FastAPI:
    settings = settings or QualifierSettings()

    def runtime() -> Runtime:
        return Runtime(
            settings,
            outbox=outbox,
            consume=(TOPIC_RECEIVED,),
            handler=make_handler,
            relay_batch_size=settings.relay_batch_size,
            relay_poll_seconds=settings.relay_poll_seconds,
        )

    initial_definition = settings.initial_definition.read_text(encoding="utf-8")

    async def seed_definition(rt: Runtime) -> None:
        async with rt.engine.begin() as conn:
            await service.ensure_initial_definition(conn, initial_definition, utcnow())

    return create_service_app(
        settings=settings,
        runtime_factory=runtime,
        title="Leadflow qualifier",
        description="Applies the versioned lead definition, routes each lead, and closes the "
        "loop with sales feedback.",
        routers=[api.router],
        on_startup=seed_definition,
    )
