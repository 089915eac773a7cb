"""Zoom webhooks: registrants and attendees of linked webinars. Zoom proves itself by signing
each request with the shared secret."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from services.intake import counters
from services.intake.admin import repository as admin_repository
from services.intake.deps import RuntimeDep, SettingsDep
from services.intake.errors import invalid
from services.intake.leads import service
from services.intake.leads.schemas import WebinarPersonIn
from services.intake.normalize.fields import InvalidField
from services.intake.normalize.snapshot import build_snapshot, new_lead_id
from services.intake.sources import zoom
from services.intake.sources.webinars import webinar_lead
from shared.db import utcnow
from shared.web import problem

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["public"])


@router.post(
    "/webhooks/zoom",
    tags=["webhooks"],
    responses={
        200: {"description": "handled, the URL-validation answer, or an event we do not use"},
        401: {"description": "missing, stale or wrong x-zm-signature / x-zm-request-timestamp"},
        404: {"description": "Zoom webhooks are not configured (no secret token)"},
        422: {"description": "a signed body that is not a Zoom event we can read"},
    },
)
async def zoom_webhook(request: Request, runtime: RuntimeDep, settings: SettingsDep) -> Response:
    """Zoom's event notifications: `webinar.registration_created` (a registrant) and
    `webinar.participant_joined` (attendance), plus the `endpoint.url_validation`
    challenge. Every request must carry a valid `x-zm-signature` made at most five
    minutes before (`x-zm-request-timestamp`)."""
    secret = settings.zoom_secret()
    if secret is None:
        raise problem(
            404,
            ["path"],
            "Zoom webhooks are off: set LEADFLOW_INTAKE_ZOOM_SECRET_TOKEN",
            "not_found",
        )
    body = await request.body()
    try:
        zoom.verify(
            secret=secret,
            timestamp=request.headers.get("x-zm-request-timestamp"),
            signed=request.headers.get("x-zm-signature"),
            body=body,
            now=time.time(),
            max_age_seconds=settings.zoom_max_age_seconds,
        )
    except zoom.ZoomAuthError as exc:
        counters.refused("zoom_signature")
        raise problem(401, ["header", exc.header], exc.message, "unauthorized") from exc
    try:
        hook = zoom.ZoomWebhook.model_validate_json(body)
    except ValidationError as exc:
        raise invalid(exc) from exc
    if hook.event == zoom.URL_VALIDATION:
        if not hook.payload.plainToken:
            raise problem(422, ["body", "payload", "plainToken"], "the challenge has no plainToken")
        return JSONResponse(zoom.url_validation_answer(secret, hook.payload.plainToken))
    if hook.event not in (zoom.REGISTRATION_CREATED, zoom.PARTICIPANT_JOINED):
        return JSONResponse({"status": "ignored", "reason": f"Leadflow does not use {hook.event}"})
    obj = hook.payload.object
    if obj is None:
        raise problem(422, ["body", "payload", "object"], "the event has no object")
    async with runtime.engine.connect() as conn:
        webinar = await admin_repository.get_webinar_by_zoom_id(conn, obj.id)
    if webinar is None:
        log.warning("Zoom event %s for Zoom webinar %s, which no webinar links", hook.event, obj.id)
        return JSONResponse(
            {
                "status": "ignored",
                "reason": f"no webinar is linked to Zoom webinar {obj.id} "
                "(set zoom_webinar_id with PUT /v1/webinars/{webinar_id})",
            }
        )
    attended = hook.event == zoom.PARTICIPANT_JOINED
    person = (
        zoom.attendance_lead(obj, host_id=obj.host_id, event_ts=hook.event_ts)
        if attended
        else zoom.registration_lead(obj, event_ts=hook.event_ts)
    )
    if isinstance(person, zoom.Skipped):
        return JSONResponse({"status": "skipped", "reason": person.reason})
    now = utcnow()
    try:
        snapshot = build_snapshot(
            webinar_lead(
                WebinarPersonIn.model_validate(person), webinar=webinar, attended=attended
            ),
            lead_id=new_lead_id(),
            now=now,
            default_region=settings.default_phone_region,
            form_region=webinar.default_phone_region,
            strict=False,
        )
    except ValidationError as exc:
        raise invalid(exc, ("body", "payload", "object")) from exc
    except InvalidField as exc:
        raise problem(422, ["body", "payload", "object", exc.field], exc.message) from exc
    async with runtime.engine.begin() as conn:
        result = await service.accept_lead(
            conn, snapshot, dedupe_window=timedelta(hours=settings.dedupe_window_hours)
        )
    runtime.wake_relay()
    counters.count([snapshot], [result])
    return JSONResponse(result.model_dump(mode="json"))
