"""Webinar registrants and attendees as JSON. Registration and attendance of one person are
one lead."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, status
from fastapi.responses import JSONResponse

from services.intake import counters
from services.intake.config import IntakeSettings
from services.intake.deps import RuntimeDep, SettingsDep, Writer
from services.intake.errors import JsonBodyRoute
from services.intake.leads import service
from services.intake.leads.schemas import LeadAccepted, WebinarPersonIn
from services.intake.sources import batches
from services.intake.sources.json_api import idempotency_window
from services.intake.sources.schemas import BatchResult
from services.intake.sources.webinars import builder, webinar_or_404
from services.intake.tables import idempotency_keys
from shared.db import utcnow
from shared.idempotency import IdempotencyKey, fingerprint, idempotent
from shared.runtime import Runtime
from shared.web import problem

router = APIRouter(prefix="/v1/webinars", tags=["webinars"], route_class=JsonBodyRoute)


MAX_PEOPLE = 500


# The people endpoints check person by person (one bad item rejects only itself), so
# FastAPI sees a bare object-or-list; the app's OpenAPI names the real shape (main.py).
PEOPLE_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/WebinarPersonIn"},
                    {
                        "type": "array",
                        "maxItems": MAX_PEOPLE,
                        "items": {"$ref": "#/components/schemas/WebinarPersonIn"},
                    },
                ]
            }
        }
    },
}


PEOPLE_PATHS = ("/v1/webinars/{webinar_id}/registrants", "/v1/webinars/{webinar_id}/attendees")


async def _take_people(
    people: dict[str, Any] | list[Any],
    *,
    webinar_id: str,
    attended: bool,
    principal: str,
    key: str | None,
    runtime: Runtime,
    settings: IntakeSettings,
    path: str,
) -> JSONResponse:
    many = isinstance(people, list)
    if many and not 1 <= len(people) <= MAX_PEOPLE:
        raise problem(422, ["body"], f"send 1 to {MAX_PEOPLE} people at once")
    webinar = await webinar_or_404(runtime, webinar_id)
    build = builder(webinar, settings, attended=attended)
    listed: list[Any] = people if isinstance(people, list) else [people]
    items = batches.prepare(listed, WebinarPersonIn, build, ("body",))
    if not many and items[0].errors:
        for error in items[0].errors:
            del error["loc"][1]  # no list index for a single person
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=items[0].errors)
    async with idempotent(
        runtime.engine,
        idempotency_keys,
        principal=principal,
        key=key,
        request_hash=fingerprint("POST", path, people),
        now=utcnow(),
        **idempotency_window(settings),
    ) as slot:
        if slot.replay is not None:
            return slot.replay
        valid = [i.snapshot for i in items if i.snapshot is not None]
        async with runtime.engine.begin() as conn:
            accepted = await service.accept_leads(
                conn, valid, dedupe_window=timedelta(hours=settings.dedupe_window_hours)
            )
            if many:
                code, body = 200, batches.answer(items, accepted).model_dump(mode="json")
            else:
                code, body = 202, accepted[0].model_dump(mode="json")
            await slot.complete(conn, code, body)
    runtime.wake_relay()
    counters.count(valid, accepted)
    return JSONResponse(body, status_code=code)


_PEOPLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "a list: answered per person", "model": BatchResult},
    202: {"description": "one person", "model": LeadAccepted},
    404: {"description": "no such webinar"},
    422: {"description": "a single person who is not valid, or not a person at all"},
}


@router.post(
    "/{webinar_id}/registrants",
    status_code=202,
    responses=_PEOPLE_RESPONSES,
)
async def post_registrants(
    webinar_id: str,
    people: Annotated[dict[str, Any] | list[Any], Body()],
    principal: Writer,
    runtime: RuntimeDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Webinar registrants, one (answered 202 like `POST /v1/leads`) or up to 500 (answered
    per person). A person already registered for this webinar is a duplicate."""
    return await _take_people(
        people,
        webinar_id=webinar_id,
        attended=False,
        principal=principal.name,
        key=idempotency_key,
        runtime=runtime,
        settings=settings,
        path=f"/v1/webinars/{webinar_id}/registrants",
    )


@router.post(
    "/{webinar_id}/attendees",
    status_code=202,
    responses=_PEOPLE_RESPONSES,
)
async def post_attendees(
    webinar_id: str,
    people: Annotated[dict[str, Any] | list[Any], Body()],
    principal: Writer,
    runtime: RuntimeDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Webinar attendees. A registrant's lead gets its attendance recorded (`updated`, and
    `lead.webinar_attended`); someone who never registered is a new lead; a second
    attendance of the same person is a duplicate."""
    return await _take_people(
        people,
        webinar_id=webinar_id,
        attended=True,
        principal=principal.name,
        key=idempotency_key,
        runtime=runtime,
        settings=settings,
        path=f"/v1/webinars/{webinar_id}/attendees",
    )
