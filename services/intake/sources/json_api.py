"""Leads from servers as JSON: one at a time (`POST /v1/leads`) or in batches."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake import counters
from services.intake.config import IntakeSettings
from services.intake.deps import RuntimeDep, SettingsDep, Writer
from services.intake.errors import JsonBodyRoute
from services.intake.hot_path.fast_path import json_body, with_fast_path
from services.intake.hot_path.front import JsonAnswer
from services.intake.leads import service
from services.intake.leads.schemas import LeadAccepted, LeadIn
from services.intake.normalize.fields import InvalidField
from services.intake.normalize.snapshot import build_snapshot, new_lead_id
from services.intake.sources import batches
from services.intake.sources.schemas import BatchResult, LeadBatchIn
from services.intake.tables import idempotency_keys
from shared.auth import Scope
from shared.db import utcnow
from shared.events import LeadSnapshot
from shared.idempotency import IdempotencyKey, fingerprint, idempotent
from shared.runtime import Runtime
from shared.web import problem

router = APIRouter(prefix="/v1", tags=["leads"], route_class=JsonBodyRoute)


_REFUSALS: dict[int | str, dict[str, str]] = {
    409: {"description": "a request with this Idempotency-Key is still in flight"},
    413: {"description": "body over the size limit"},
    415: {"description": "the body is not application/json"},
    422: {"description": "invalid lead, or an Idempotency-Key reused with another body"},
    503: {
        "description": "database unavailable. `outcome` `not_stored`: nothing was stored, "
        "retry. `unknown`: the connection was lost during the commit, the lead may be "
        "stored: a retry with the same Idempotency-Key is safe; one without a key is "
        "answered `duplicate` naming the stored lead if there is one (same person, source "
        "and form within the de-duplication window)"
    },
}


def idempotency_window(settings: IntakeSettings) -> dict[str, timedelta]:
    return {
        "ttl": timedelta(hours=settings.idempotency_ttl_hours),
        "lock": timedelta(seconds=settings.idempotency_lock_seconds),
    }


Defaults = tuple[str | None, str | None]  # a form's or webinar's phone region, consent text


def _build(
    lead: LeadIn, settings: IntakeSettings, now: datetime, defaults: Defaults
) -> LeadSnapshot:
    """A JSON lead's snapshot (strict), with its origin's defaults; raises InvalidField."""
    region, consent_version = defaults
    return build_snapshot(
        lead,
        lead_id=new_lead_id(),
        now=now,
        default_region=settings.default_phone_region,
        form_region=region,
        consent_text_version=consent_version,
    )


def _build_one(
    lead: LeadIn, settings: IntakeSettings, now: datetime, defaults: Defaults
) -> LeadSnapshot:
    """`_build`, answering 422 naming the field when the lead is not valid."""
    try:
        return _build(lead, settings, now, defaults)
    except InvalidField as exc:
        raise problem(422, ["body", exc.field], exc.message) from exc


async def post_lead(
    lead: LeadIn,
    principal: Writer,
    runtime: RuntimeDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Accept one lead: stored and queued for `leads.received` before the 202."""
    if idempotency_key is None:
        return (await _accept_one(lead, runtime, settings)).response()
    now = utcnow()
    request_hash = fingerprint("POST", "/v1/leads", lead.model_dump(mode="json"))
    async with idempotent(
        runtime.engine,
        idempotency_keys,
        principal=principal.name,
        key=idempotency_key,
        request_hash=request_hash,
        now=now,
        **idempotency_window(settings),
    ) as slot:
        if slot.replay is not None:
            return slot.replay

        async def store(conn: AsyncConnection) -> tuple[LeadSnapshot, LeadAccepted, dict[str, Any]]:
            defaults = await service.origin_defaults(conn, lead.form_id, lead.webinar_id)
            snapshot = _build_one(lead, settings, now, defaults)
            result = await service.accept_lead(
                conn, snapshot, dedupe_window=timedelta(hours=settings.dedupe_window_hours)
            )
            body = result.model_dump(mode="json")
            await slot.complete(conn, status.HTTP_202_ACCEPTED, body)
            return snapshot, result, body

        # Answered only after the commit: with group commit, after the batch's commit.
        snapshot, result, body = await runtime.write(store)
    counters.count([snapshot], [result])
    return JSONResponse(body, status_code=status.HTTP_202_ACCEPTED)


async def _accept_one(lead: LeadIn, runtime: Runtime, settings: IntakeSettings) -> JsonAnswer:
    """A lead without an Idempotency-Key, the common case: built outside the writer, stored
    with other requests' leads in multi-row statements (a group commit's batch), answered
    after that commit."""
    now = utcnow()
    defaults: Defaults = (None, None)
    if lead.form_id or lead.webinar_id:
        async with runtime.engine.connect() as conn:
            defaults = await service.origin_defaults(conn, lead.form_id, lead.webinar_id)
    snapshot = _build_one(lead, settings, now, defaults)
    result = await runtime.write_batched(
        service.LeadWriter(timedelta(hours=settings.dedupe_window_hours)), snapshot
    )
    counters.count([snapshot], [result])
    # Serialized by pydantic's own encoder: no dict and no json.dumps on the hot path.
    return JsonAnswer(status.HTTP_202_ACCEPTED, _ACCEPTED_JSON.to_json(result))


_ACCEPTED_JSON = LeadAccepted.__pydantic_serializer__


async def post_lead_fast(request: Request) -> JsonAnswer | None:
    """`post_lead` for a valid JSON lead from a writer without an Idempotency-Key, the
    request intake mostly gets; None for anything else, which `post_lead` then answers.
    Intake's front (hot_path.front) tries it before the middleware stack, the route after."""
    body = await json_body(request, Scope.intake_write, declined=(b"idempotency-key",))
    if body is None:
        return None
    try:
        # As FastAPI reads it: json.loads (Starlette's Request.json), then the model.
        lead = LeadIn.model_validate(json.loads(body))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, not a valid LeadIn
        return None
    return await _accept_one(lead, request.app.state.runtime, request.app.state.settings)


router.add_api_route(
    "/leads",
    post_lead,
    methods=["POST"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=LeadAccepted,
    responses=_REFUSALS,
    route_class_override=with_fast_path(post_lead_fast),
)


@router.post("/leads:batch", response_model=BatchResult, responses=_REFUSALS)
async def post_lead_batch(
    batch: LeadBatchIn,
    principal: Writer,
    runtime: RuntimeDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Up to 500 leads, answered per item: a bad item is rejected alone, the rest are stored
    together (one transaction), each accepted lead with its `lead.received`."""
    now = utcnow()
    request_hash = fingerprint("POST", "/v1/leads:batch", batch.leads)
    async with idempotent(
        runtime.engine,
        idempotency_keys,
        principal=principal.name,
        key=idempotency_key,
        request_hash=request_hash,
        now=now,
        **idempotency_window(settings),
    ) as slot:
        if slot.replay is not None:
            return slot.replay
        async with runtime.engine.begin() as conn:
            defaults: dict[tuple[str | None, str | None], Defaults] = {}
            for data in batch.leads:
                if not isinstance(data, dict):
                    continue
                origin = (data.get("form_id"), data.get("webinar_id"))
                if origin not in defaults and all(isinstance(v, str | None) for v in origin):
                    defaults[origin] = await service.origin_defaults(conn, *origin)

            def build(lead: LeadIn) -> LeadSnapshot:
                origin = defaults.get((lead.form_id, lead.webinar_id), (None, None))
                return _build(lead, settings, now, origin)

            items = batches.prepare(batch.leads, LeadIn, build, ("body", "leads"))
            valid = [i.snapshot for i in items if i.snapshot is not None]
            accepted = await service.accept_leads(
                conn, valid, dedupe_window=timedelta(hours=settings.dedupe_window_hours)
            )
            body = batches.answer(items, accepted).model_dump(mode="json")
            await slot.complete(conn, status.HTTP_200_OK, body)
    runtime.wake_relay()
    counters.count(valid, accepted)
    return JSONResponse(body)
