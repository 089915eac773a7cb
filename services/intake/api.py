"""Intake HTTP endpoints: parse, authorize, delegate."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from fastapi.responses import JSONResponse

from services.intake import repository, service
from services.intake.config import IntakeSettings
from services.intake.domain import InvalidField
from services.intake.schemas import LeadAccepted, LeadIn, StoredLead
from shared.auth import Principal, Scope, require
from shared.db import utcnow
from shared.events import LeadSnapshot
from shared.runtime import Runtime
from shared.web import unprocessable

router = APIRouter(prefix="/v1", tags=["leads"])

Writer = Annotated[Principal, Depends(require(Scope.intake_write))]
Reader = Annotated[Principal, Depends(require(Scope.leads_read))]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _settings(request: Request) -> IntakeSettings:
    settings: IntakeSettings = request.app.state.settings
    return settings


@router.post(
    "/leads",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=LeadAccepted,
    responses={
        413: {"description": "body over the size limit"},
        422: {"description": "invalid lead, or an Idempotency-Key reused with another body"},
        503: {"description": "database unavailable; nothing was stored"},
    },
)
async def post_lead(
    request: Request,
    lead: LeadIn,
    principal: Writer,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JSONResponse:
    """Accept one lead: stored and queued for `leads.received` before the 202."""
    runtime, settings = _runtime(request), _settings(request)
    now = utcnow()
    try:
        snapshot = service.build_snapshot(
            lead,
            lead_id=service.new_lead_id(),
            now=now,
            default_region=settings.default_phone_region,
        )
    except InvalidField as exc:
        raise unprocessable(["body", exc.field], exc.message) from exc
    request_hash = hashlib.sha256(lead.model_dump_json().encode()).hexdigest()
    async with runtime.engine.begin() as conn:
        if idempotency_key:
            await repository.lock_idempotency_key(conn, principal.name, idempotency_key)
            stored = await repository.get_idempotent_response(
                conn,
                principal.name,
                idempotency_key,
                not_before=now - timedelta(hours=settings.idempotency_ttl_hours),
            )
            if stored is not None:
                if stored.request_hash != request_hash:
                    raise unprocessable(
                        ["header", "Idempotency-Key"],
                        "this Idempotency-Key was already used with a different request body",
                    )
                return JSONResponse(
                    stored.response,
                    status_code=stored.status_code,
                    headers={"Idempotent-Replayed": "true"},
                )
        result = await service.accept_lead(
            conn, snapshot, dedupe_window=timedelta(hours=settings.dedupe_window_hours)
        )
        body = result.model_dump(mode="json")
        if idempotency_key:
            await repository.save_idempotent_response(
                conn,
                principal=principal.name,
                key=idempotency_key,
                request_hash=request_hash,
                status_code=status.HTTP_202_ACCEPTED,
                response=body,
                now=now,
            )
    runtime.wake_relay()
    return JSONResponse(body, status_code=status.HTTP_202_ACCEPTED)


@router.get("/leads/{lead_id}", response_model=StoredLead, responses={404: {}})
async def get_lead(request: Request, lead_id: str, _: Reader) -> StoredLead:
    """What intake holds for one lead."""
    async with _runtime(request).engine.connect() as conn:
        row = await repository.get_lead(conn, lead_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no lead {lead_id!r}")
    return StoredLead(
        lead=LeadSnapshot.model_validate(row.snapshot), erased=row.erased_at is not None
    )
