"""Lifecycle endpoints: what sales tools report back (contact, brief, feedback, stages,
payments, back to nurture), each retry-safe with an Idempotency-Key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.deps import SalesTool, Settings, conflict, runtime
from services.qualifier.leads.snapshot import InvalidAnswer, normalize_answers
from services.qualifier.lifecycle import payments, service
from services.qualifier.lifecycle.schemas import (
    BriefIn,
    ContactIn,
    FeedbackIn,
    LifecycleIn,
    LifecycleResult,
    NurtureIn,
    PaymentIn,
    PaymentView,
    StageIn,
)
from services.qualifier.lifecycle.stages import InvalidTime, Refused
from services.qualifier.tables import idempotency_keys
from shared.auth import Principal
from shared.db import utcnow
from shared.events import Stage
from shared.idempotency import IdempotencyKey, fingerprint, idempotent
from shared.web import unprocessable

router = APIRouter(prefix="/v1", tags=["lifecycle"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such lead"},
    409: {
        "description": "impossible transition (the body names the current stage), or a "
        "request with the same Idempotency-Key still at work (retry after `Retry-After`)"
    },
    422: {
        "description": "invalid body (a bad `at` is named), or an Idempotency-Key used "
        "with another body"
    },
    503: {
        "description": "database unavailable. `outcome` `not_stored`: nothing was recorded, "
        "retry. `unknown`: the connection was lost during the commit and the call may have "
        "been recorded: a retry with the same Idempotency-Key is safe; without one a contact "
        "or a payment without `payment_id` may count twice"
    },
}

Step = Callable[[AsyncConnection, service.Call], Awaitable[tuple[int, BaseModel]]]


async def _lifecycle_call(
    request: Request,
    settings: Settings,
    lead_id: str,
    body: LifecycleIn,
    principal: Principal,
    key: str | None,
    step: Step,
) -> JSONResponse:
    """One lifecycle call in one transaction. With a key it is claimed first and its answer
    stored with the call's effect, so a retry replays it (`shared.idempotency`); the
    transaction commits inside the claim, so a call that fails, even at its COMMIT,
    releases the key for the retry."""
    now = utcnow()
    call = service.Call(
        lead_id=lead_id,
        at=body.at or now,
        by=body.by or principal.name,
        now=now,
        skew=timedelta(seconds=settings.clock_skew_seconds),
    )
    payload = body.model_dump(mode="json", exclude_unset=True)
    async with idempotent(
        runtime(request).engine,
        idempotency_keys,
        principal=principal.name,
        key=key,
        request_hash=fingerprint(request.method, request.url.path, payload),
        now=now,
        ttl=timedelta(hours=settings.idempotency_ttl_hours),
        lock=timedelta(seconds=settings.idempotency_lock_seconds),
    ) as slot:
        if slot.replay is not None:
            return slot.replay

        async def work(conn: AsyncConnection) -> tuple[int, dict[str, Any]]:
            async with _domain_errors():
                code, result = await step(conn, call)
            answer = result.model_dump(mode="json", by_alias=True)
            await slot.complete(conn, code, answer)
            return code, answer

        # Committed (and the relay and the deliverer woken) before the answer is sent.
        code, answer = await runtime(request).write(work)
    return JSONResponse(answer, status_code=code)


@asynccontextmanager
async def _domain_errors() -> AsyncIterator[None]:
    """Domain refusals as HTTP answers (the transaction around them rolls back)."""
    try:
        yield
    except service.LeadNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except Refused as exc:
        raise conflict(
            str(exc), current_stage=exc.state.stage.value, route=exc.state.route.value
        ) from exc
    except payments.PaymentConflict as exc:
        raise conflict(str(exc)) from exc
    except InvalidTime as exc:
        raise unprocessable(["body", "at"], str(exc)) from exc
    except InvalidAnswer as exc:
        raise unprocessable(["body", "answers", *exc.field.split(".")], exc.message) from exc


def _result(outcome: service.Outcome) -> tuple[int, BaseModel]:
    return status.HTTP_200_OK, LifecycleResult(
        lead_id=outcome.lead_id,
        route=outcome.route.value,
        stage=outcome.stage.value,
        changed=outcome.changed,
        event_ids=outcome.event_ids,
        decision=outcome.decision,
    )


@router.post("/leads/{lead_id}/contact", response_model=LifecycleResult, responses=_ERRORS)
async def contact(
    request: Request,
    lead_id: str,
    principal: SalesTool,
    settings: Settings,
    idempotency_key: IdempotencyKey = None,
    body: ContactIn = Body(default_factory=ContactIn),
) -> JSONResponse:
    """A contact with the lead was made; the first one moves it to `contacted`."""

    async def step(conn: AsyncConnection, call: service.Call) -> tuple[int, BaseModel]:
        return _result(await service.contact(conn, call))

    return await _lifecycle_call(request, settings, lead_id, body, principal, idempotency_key, step)


@router.post("/leads/{lead_id}/brief", response_model=LifecycleResult, responses=_ERRORS)
async def brief(
    request: Request,
    lead_id: str,
    body: BriefIn,
    principal: SalesTool,
    settings: Settings,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Brief answers for a lead in primary processing: merged in, and the lead is qualified
    again (a new `lead.routed`)."""
    try:
        answers = normalize_answers(body.answers)
    except InvalidAnswer as exc:
        raise unprocessable(["body", "answers", *exc.field.split(".")], exc.message) from exc

    async def step(conn: AsyncConnection, call: service.Call) -> tuple[int, BaseModel]:
        return _result(await service.brief(conn, call, answers))

    return await _lifecycle_call(request, settings, lead_id, body, principal, idempotency_key, step)


@router.post("/leads/{lead_id}/feedback", response_model=LifecycleResult, responses=_ERRORS)
async def feedback(
    request: Request,
    lead_id: str,
    body: FeedbackIn,
    principal: SalesTool,
    settings: Settings,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Sales accepts (SAL) or rejects (with a reason) a lead routed to it."""
    if body.decision == "rejected" and not (body.reason and body.reason.strip()):
        raise unprocessable(["body", "reason"], "say why sales rejects the lead")

    async def step(conn: AsyncConnection, call: service.Call) -> tuple[int, BaseModel]:
        return _result(await service.feedback(conn, call, Stage(body.decision), body.reason))

    return await _lifecycle_call(request, settings, lead_id, body, principal, idempotency_key, step)


@router.post("/leads/{lead_id}/stage", response_model=LifecycleResult, responses=_ERRORS)
async def change_stage(
    request: Request,
    lead_id: str,
    body: StageIn,
    principal: SalesTool,
    settings: Settings,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """The next pipeline stage: sql → demo_held → proposal_sent → contract_sent → won, or lost
    (with a reason) from any open stage."""
    if body.stage == "lost" and not (body.reason and body.reason.strip()):
        raise unprocessable(["body", "reason"], "say why the deal was lost")

    async def step(conn: AsyncConnection, call: service.Call) -> tuple[int, BaseModel]:
        return _result(await service.change_stage(conn, call, Stage(body.stage), body.reason))

    return await _lifecycle_call(request, settings, lead_id, body, principal, idempotency_key, step)


@router.post(
    "/leads/{lead_id}/payments",
    response_model=PaymentView,
    status_code=status.HTTP_201_CREATED,
    responses={**_ERRORS, 200: {"description": "this payment_id was recorded already"}},
)
async def record_payment(
    request: Request,
    lead_id: str,
    body: PaymentIn,
    principal: SalesTool,
    settings: Settings,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """A payment on a won deal (201); the same `payment_id` again answers 200 and counts once.

    A payment with neither a `payment_id` nor an `Idempotency-Key` is not retry-safe: if
    its answer is lost (a timeout, a 503 whose outcome is unknown), a retry may record it
    twice."""
    deployment = settings.currency
    currency = body.currency or deployment
    if currency != deployment:
        raise unprocessable(
            ["body", "currency"], f"this deployment counts money in {deployment} only"
        )

    async def step(conn: AsyncConnection, call: service.Call) -> tuple[int, BaseModel]:
        paid = await payments.record_payment(
            conn, call, amount=body.amount, currency=currency, payment_id=body.payment_id
        )
        view = PaymentView(
            payment_id=paid.payment_id,
            lead_id=paid.lead_id,
            amount=paid.amount,
            currency=paid.currency,
            at=paid.at,
            by=paid.by,
            event_id=paid.event_id,
        )
        return (status.HTTP_201_CREATED if paid.created else status.HTTP_200_OK), view

    return await _lifecycle_call(request, settings, lead_id, body, principal, idempotency_key, step)


@router.post("/leads/{lead_id}/nurture", response_model=LifecycleResult, responses=_ERRORS)
async def back_to_nurture(
    request: Request,
    lead_id: str,
    principal: SalesTool,
    settings: Settings,
    idempotency_key: IdempotencyKey = None,
    body: NurtureIn = Body(default_factory=NurtureIn),
) -> JSONResponse:
    """A lost or sales-rejected lead goes back to marketing (a new `lead.routed`, nurture)."""

    async def step(conn: AsyncConnection, call: service.Call) -> tuple[int, BaseModel]:
        return _result(await service.back_to_nurture(conn, call, body.reason))

    return await _lifecycle_call(request, settings, lead_id, body, principal, idempotency_key, step)
