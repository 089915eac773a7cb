"""The intake service's app factory (`uvicorn --factory services.intake.main:create_app`)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI

from services.intake.admin import api as admin_api
from services.intake.admin import service as configuration
from services.intake.config import DEV_ZOOM_SECRET_TOKEN, IntakeSettings
from services.intake.deps import FormLimits
from services.intake.erasure import api as erasure_api
from services.intake.hot_path.front import ServiceApp, install_front
from services.intake.hot_path.group_commit import group_commit
from services.intake.keys import api as keys_api
from services.intake.keys import ring as keys_ring
from services.intake.keys.source import StoreKeySource
from services.intake.leads import api as leads_api
from services.intake.leads.schemas import WebinarPersonIn
from services.intake.sources import attendee_import, forms_api, json_api, webinars_api, zoom_api
from services.intake.tables import idempotency_keys, outbox
from shared.db import error_summary, utcnow
from shared.idempotency import purge_job
from shared.runtime import Runtime, create_service_app

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 600.0


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    # New leads' keys are wrapped by the process's ring (leads.repository.insert_leads).
    keys_ring.use(settings.key_ring())

    purge_idempotency_keys = purge_job(
        idempotency_keys,
        ttl=timedelta(hours=settings.idempotency_ttl_hours),
        every=PURGE_EVERY_SECONDS,
    )

    def runtime() -> Runtime:
        return Runtime(
            settings,
            outbox=outbox,
            relay_batch_size=settings.relay_batch_size,
            write_strategy=group_commit(settings.group_commit_writers)
            if settings.group_commit
            else None,
            relay_poll_seconds=settings.relay_poll_seconds,
            background=[("idempotency-purge", purge_idempotency_keys)],
            keys=lambda rt: StoreKeySource(rt.engine),
        )

    async def on_startup(runtime: Runtime) -> None:
        if not settings.common.dev:
            return
        try:
            async with runtime.engine.begin() as conn:
                await configuration.seed_dev_config(conn, utcnow())
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            log.warning(
                "dev mode: could not create the demo form and webinar: %s", error_summary(exc)
            )
            return
        log.warning(
            "dev mode: form %r (origin http://localhost, honeypot `website`) and webinar %r "
            "are ready; Zoom signatures are checked with the dev secret %r",
            configuration.DEV_FORM_ID,
            configuration.DEV_WEBINAR_ID,
            DEV_ZOOM_SECRET_TOKEN if settings.zoom_secret_token is None else "(configured)",
        )

    app = create_service_app(
        settings=settings,
        runtime_factory=runtime,
        title="Leadflow intake",
        description="Takes web-form and webinar leads, validates, normalizes, "
        "de-duplicates and stores them, and publishes `lead.received`. "
        "Wiring forms, Tilda and Zoom: docs/intake.md.",
        routers=[
            json_api.router,
            leads_api.router,
            erasure_api.router,
            keys_api.router,
            webinars_api.router,
            attendee_import.router,
            forms_api.router,
            zoom_api.router,
            admin_api.router,
        ],
        body_limits={
            "/v1/": settings.max_json_bytes,
            "/v1/leads:batch": settings.max_batch_bytes,
            "/v1/webinars/*/registrants": settings.max_batch_bytes,
            "/v1/webinars/*/attendees": settings.max_batch_bytes,
            "/v1/webinars/*/attendees:import": settings.max_csv_bytes,
        },
        on_startup=on_startup,
        app_class=ServiceApp,
    )
    install_front(app, {("POST", "/v1/leads"): json_api.post_lead_fast})
    app.state.form_limits = FormLimits(settings)
    # A 503 after a COMMIT of unknown outcome says what a retry without a key does here.
    app.state.retry_without_key = (
        "Without a key, a retry is recognized as a duplicate of the lead if that was stored "
        f"(the same person from the same source and form within {settings.dedupe_window_hours:g}"
        " h) and stores nothing new."
    )
    _document_people_schema(app)
    return app


def _document_people_schema(app: FastAPI) -> None:
    """Document the webinar people endpoints' body as what it is, one `WebinarPersonIn` or
    a list of them: they validate person by person, so FastAPI only sees object-or-list."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            person = WebinarPersonIn.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in person.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components.setdefault("WebinarPersonIn", person)
            for path in webinars_api.PEOPLE_PATHS:
                schema["paths"][path]["post"]["requestBody"] = webinars_api.PEOPLE_REQUEST_BODY
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
