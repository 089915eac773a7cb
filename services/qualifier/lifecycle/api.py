"""Qualifier HTTP endpoints: parse, authorize, delegate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier import deliveries, idempotency, repository, sales, service, views
from services.qualifier.backtest import BacktestRefused, Bounds
from services.qualifier.config import QualifierSettings
from services.qualifier.definition import dotted
from services.qualifier.definition_source import DefinitionInvalid, check_stored, load_definition
from services.qualifier.lifecycle import InvalidTime, Refused
from services.qualifier.schemas import (
    AbsenceIn,
    BacktestIn,
    BacktestView,
    BriefIn,
    ChangeView,
    ContactIn,
    DefinitionDiffView,
    DefinitionSummary,
    DefinitionView,
    DeliveryView,
    FeedbackIn,
    LeadView,
    LifecycleIn,
    LifecycleResult,
    MemberView,
    NurtureIn,
    PaymentIn,
    PaymentView,
    StageIn,
)
from services.qualifier.snapshot import InvalidAnswer, normalize_answers
from shared.auth import Principal, Scope, require
from shared.db import utcnow
from shared.events import Stage
from shared.runtime import Runtime
from shared.web import unprocessable

router = APIRouter(prefix="/v1")

Reader = Annotated[Principal, Depends(require(Scope.leads_read))]
SalesTool = Annotated[Principal, Depends(require(Scope.leads_write))]
Admin = Annotated[Principal, Depends(require(Scope.definitions_admin))]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255,
           description="Retry-safe: the same key and body answer the first response again."),
]  # fmt: skip

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such lead"}}
_LIFECYCLE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such lead"},
    409: {"description": "impossible transition; the body names the current stage"},
    422: {"description": "invalid body (a bad `at` is named), or an Idempotency-Key reused"},
    503: {
        "description": "database unavailable. `outcome` `not_stored`: nothing was recorded, "
        "retry. `unknown`: the connection was lost during the commit and the call may have "
        "been recorded: a retry with the same Idempotency-Key is safe; without one a contact "
        "or a payment without `payment_id` may count twice"
    },
}


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _settings(request: Request) -> QualifierSettings:
    settings: QualifierSettings = request.app.state.settings
    return settings


def _wake(request: Request) -> None:
    _runtime(request).wake_relay()
    request.app.state.deliverer.wake()


# Leads ------------------------------------------------------------------------------------


@router.get("/leads/{lead_id}", response_model=LeadView, tags=["leads"], responses=_NOT_FOUND)
async def get_lead(request: Request, lead_id: str, _: Reader) -> LeadView:
    """The lead's decision, its explanation, and its history (stages, contacts, payments)."""
    async with _runtime(request).engine.connect() as conn:
        view = await views.lead_view(conn, lead_id)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no lead {lead_id!r}")
    return view


Step = Callable[[AsyncConnection, sales.Call], Awaitable[tuple[int, BaseModel]]]


async def _lifecycle_call(
    request: Request,
    lead_id: str,
    body: LifecycleIn,
    principal: Principal,
    key: str | None,
    step: Step,
) -> JSONResponse:
    """One lifecycle call in one transaction, replayed as it was answered for a known key."""
    settings = _settings(request)
    now = utcnow()
    call = sales.Call(
        lead_id=lead_id, at=body.at or now, by=body.by or principal.name, now=now,
        skew=timedelta(seconds=settings.clock_skew_seconds),
    )  # fmt: skip
    fingerprint = idempotency.request_hash(
        request.method, request.url.path, body.model_dump(mode="json", exclude_unset=True)
    )
    async with _domain_errors(), _runtime(request).engine.begin() as conn:
        if key:
            remembered = await idempotency.recall(
                conn, principal=principal.name, key=key, request=fingerprint, now=now,
                ttl=timedelta(hours=settings.idempotency_ttl_hours),
            )  # fmt: skip
            if remembered is not None:
                return JSONResponse(
                    remembered.body, status_code=remembered.status_code,
                    headers={"Idempotent-Replayed": "true"},
                )  # fmt: skip
        code, result = await step(conn, call)
        answer = idempotency.Remembered(code, result.model_dump(mode="json", by_alias=True))
        if key:
            await idempotency.remember(
                conn, principal=principal.name, key=key, request=fingerprint, answer=answer,
                now=now,
            )  # fmt: skip
    _wake(request)
    return JSONResponse(answer.body, status_code=answer.status_code)


@asynccontextmanager
async def _domain_errors() -> AsyncIterator[None]:
    """Domain refusals as HTTP answers (the transaction around them rolls back)."""
    try:
        yield
    except sales.LeadNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except Refused as exc:
        raise _conflict(str(exc), current_stage=exc.state.stage.value,
                        route=exc.state.route.value) from exc  # fmt: skip
    except sales.PaymentConflict as exc:
        raise _conflict(str(exc)) from exc
    except InvalidTime as exc:
        raise unprocessable(["body", "at"], str(exc)) from exc
    except InvalidAnswer as exc:
        raise unprocessable(["body", "answers", *exc.field.split(".")], exc.message) from exc
    except idempotency.KeyReused as exc:
        raise unprocessable(["header", "Idempotency-Key"], str(exc)) from exc


def _conflict(message: str, **extra: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail={"msg": message, **extra})


def _result(outcome: sales.Outcome) -> tuple[int, BaseModel]:
    return status.HTTP_200_OK, LifecycleResult(
        lead_id=outcome.lead_id, route=outcome.route.value, stage=outcome.stage.value,
        changed=outcome.changed, event_ids=outcome.event_ids, decision=outcome.decision,
    )  # fmt: skip


@router.post("/leads/{lead_id}/contact", response_model=LifecycleResult, tags=["lifecycle"],
             responses=_LIFECYCLE_ERRORS)  # fmt: skip
async def contact(
    request: Request, lead_id: str, principal: SalesTool, key: IdempotencyKey = None,
    body: ContactIn = Body(default_factory=ContactIn),
) -> JSONResponse:  # fmt: skip
    """A contact with the lead was made; the first one moves it to `contacted`."""

    async def step(conn: AsyncConnection, call: sales.Call) -> tuple[int, BaseModel]:
        return _result(await sales.contact(conn, call))

    return await _lifecycle_call(request, lead_id, body, principal, key, step)


@router.post("/leads/{lead_id}/brief", response_model=LifecycleResult, tags=["lifecycle"],
             responses=_LIFECYCLE_ERRORS)  # fmt: skip
async def brief(
    request: Request, lead_id: str, body: BriefIn, principal: SalesTool, key: IdempotencyKey = None
) -> JSONResponse:
    """Brief answers for a lead in primary processing: merged in, and the lead is qualified
    again (a new `lead.routed`)."""
    try:
        answers = normalize_answers(body.answers)
    except InvalidAnswer as exc:
        raise unprocessable(["body", "answers", *exc.field.split(".")], exc.message) from exc

    async def step(conn: AsyncConnection, call: sales.Call) -> tuple[int, BaseModel]:
        return _result(await sales.brief(conn, call, answers))

    return await _lifecycle_call(request, lead_id, body, principal, key, step)


@router.post("/leads/{lead_id}/feedback", response_model=LifecycleResult, tags=["lifecycle"],
             responses=_LIFECYCLE_ERRORS)  # fmt: skip
async def feedback(
    request: Request, lead_id: str, body: FeedbackIn, principal: SalesTool,
    key: IdempotencyKey = None,
) -> JSONResponse:  # fmt: skip
    """Sales accepts (SAL) or rejects (with a reason) a lead routed to it."""
    if body.decision == "rejected" and not (body.reason and body.reason.strip()):
        raise unprocessable(["body", "reason"], "say why sales rejects the lead")

    async def step(conn: AsyncConnection, call: sales.Call) -> tuple[int, BaseModel]:
        return _result(await sales.feedback(conn, call, Stage(body.decision), body.reason))

    return await _lifecycle_call(request, lead_id, body, principal, key, step)


@router.post("/leads/{lead_id}/stage", response_model=LifecycleResult, tags=["lifecycle"],
             responses=_LIFECYCLE_ERRORS)  # fmt: skip
async def change_stage(
    request: Request, lead_id: str, body: StageIn, principal: SalesTool,
    key: IdempotencyKey = None,
) -> JSONResponse:  # fmt: skip
    """The next pipeline stage: sql → demo_held → proposal_sent → contract_sent → won, or lost
    (with a reason) from any open stage."""
    if body.stage == "lost" and not (body.reason and body.reason.strip()):
        raise unprocessable(["body", "reason"], "say why the deal was lost")

    async def step(conn: AsyncConnection, call: sales.Call) -> tuple[int, BaseModel]:
        return _result(await sales.change_stage(conn, call, Stage(body.stage), body.reason))

    return await _lifecycle_call(request, lead_id, body, principal, key, step)


@router.post(
    "/leads/{lead_id}/payments", response_model=PaymentView, status_code=status.HTTP_201_CREATED,
    tags=["lifecycle"],
    responses={**_LIFECYCLE_ERRORS, 200: {"description": "this payment_id was recorded already"}},
)  # fmt: skip
async def record_payment(
    request: Request, lead_id: str, body: PaymentIn, principal: SalesTool,
    key: IdempotencyKey = None,
) -> JSONResponse:  # fmt: skip
    """A payment on a won deal (201); the same `payment_id` again answers 200 and counts once.

    A payment with neither a `payment_id` nor an `Idempotency-Key` is not retry-safe: if
    its answer is lost (a timeout, a 503 whose outcome is unknown), a retry may record it
    twice."""
    currency = body.currency or _settings(request).currency
    if currency != _settings(request).currency:
        raise unprocessable(
            ["body", "currency"],
            f"this deployment counts money in {_settings(request).currency} only",
        )

    async def step(conn: AsyncConnection, call: sales.Call) -> tuple[int, BaseModel]:
        paid = await sales.record_payment(
            conn, call, amount=body.amount, currency=currency, payment_id=body.payment_id
        )
        view = PaymentView(
            payment_id=paid.payment_id, lead_id=paid.lead_id, amount=paid.amount,
            currency=paid.currency, at=paid.at, by=paid.by, event_id=paid.event_id,
        )  # fmt: skip
        return (status.HTTP_201_CREATED if paid.created else status.HTTP_200_OK), view

    return await _lifecycle_call(request, lead_id, body, principal, key, step)


@router.post("/leads/{lead_id}/nurture", response_model=LifecycleResult, tags=["lifecycle"],
             responses=_LIFECYCLE_ERRORS)  # fmt: skip
async def back_to_nurture(
    request: Request, lead_id: str, principal: SalesTool, key: IdempotencyKey = None,
    body: NurtureIn = Body(default_factory=NurtureIn),
) -> JSONResponse:  # fmt: skip
    """A lost or sales-rejected lead goes back to marketing (a new `lead.routed`, nurture)."""

    async def step(conn: AsyncConnection, call: sales.Call) -> tuple[int, BaseModel]:
        return _result(await sales.back_to_nurture(conn, call, body.reason))

    return await _lifecycle_call(request, lead_id, body, principal, key, step)


# Sales members ----------------------------------------------------------------------------


@router.get("/sales/members", response_model=list[MemberView], tags=["sales"])
async def list_members(request: Request, _: Reader) -> list[MemberView]:
    """The active definition's sales people: teams, absence, and open leads they hold."""
    async with _runtime(request).engine.connect() as conn:
        return await views.members_view(conn, utcnow())


@router.put("/sales/members/{member}/absence", response_model=MemberView, tags=["sales"])
async def set_absence(
    request: Request, member: str, body: AbsenceIn, principal: SalesTool
) -> MemberView:
    """Mark someone absent (until a time, or until marked back): assignment skips them."""
    now = utcnow()
    if body.absent and body.until is not None and body.until <= now:
        raise unprocessable(["body", "until"], "until lies in the past")
    async with _runtime(request).engine.begin() as conn:
        await repository.set_absence(
            conn, member, absent=body.absent, until=body.until, note=body.note, now=now,
            by=principal.name,
        )  # fmt: skip
        members = await views.members_view(conn, now)
    return next(m for m in members if m.member == member)


# Definitions ------------------------------------------------------------------------------

_DEFINITION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
        "description": "A lead definition in YAML or JSON (docs/lead-definition.md).",
    }
}


@router.post(
    "/definitions", response_model=DefinitionView, status_code=status.HTTP_201_CREATED,
    tags=["definitions"], openapi_extra=_DEFINITION_BODY,
    responses={
        413: {"description": "over LEADFLOW_QUALIFIER_DEFINITION_MAX_BYTES"},
        422: {"description": "invalid definition: each problem names its line and field"},
    },
)  # fmt: skip
async def create_definition(request: Request, principal: Admin) -> DefinitionView:
    """Store a definition as the next version, a draft (immutable; publish to activate)."""
    raw = await request.body()
    limit = _settings(request).definition_max_bytes
    if len(raw) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, detail=f"a definition is at most {limit} bytes"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise unprocessable(["body"], "the definition must be UTF-8 text") from exc
    try:
        # Reading costs time in proportion to the text: off the event loop, and before the
        # transaction that numbers the version.
        loaded = await asyncio.to_thread(load_definition, text)
    except DefinitionInvalid as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[p.detail() for p in exc.problems]
        ) from exc
    async with _runtime(request).engine.begin() as conn:
        number = await service.create_draft(
            conn, text, by=principal.name, now=utcnow(), loaded=loaded
        )
        row = await repository.get_definition(conn, number)
    return DefinitionView.model_validate(row, from_attributes=True)


@router.get("/definitions", response_model=list[DefinitionSummary], tags=["definitions"])
async def list_definitions(request: Request, _: Reader) -> list[DefinitionSummary]:
    """Every version, with who created and published it and when."""
    async with _runtime(request).engine.connect() as conn:
        rows = await repository.list_definitions(conn)
    return [DefinitionSummary.model_validate(r, from_attributes=True) for r in rows]


@router.get(
    "/definitions/{version}", response_model=DefinitionView, tags=["definitions"],
    responses={404: {}},
)  # fmt: skip
async def get_definition(request: Request, version: int, _: Reader) -> DefinitionView:
    async with _runtime(request).engine.connect() as conn:
        row = await repository.get_definition(conn, version)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no definition version {version}")
    return DefinitionView.model_validate(row, from_attributes=True)


@router.get(
    "/definitions/{version}/diff", response_model=DefinitionDiffView, tags=["definitions"],
    responses={404: {}},
)  # fmt: skip
async def diff_definition(
    request: Request,
    version: int,
    _: Reader,
    against: Annotated[int | None, Query(description="Default: the active version")] = None,
) -> DefinitionDiffView:
    """What changed from `against` (default the active version) to `version`."""
    async with _runtime(request).engine.connect() as conn:
        try:
            if against is None:
                against, _definition = await service.active(conn)
            result = await service.diff(conn, against, version)
        except service.UnknownDefinition as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    return DefinitionDiffView(
        old_version=result.old_version, new_version=result.new_version, text=result.text,
        changes=[ChangeView(path=c.path, kind=c.kind, old=c.old, new=c.new)
                 for c in result.changes],
    )  # fmt: skip


@router.post(
    "/definitions/{version}/publish", response_model=DefinitionView, tags=["definitions"],
    responses={404: {}, 422: {"description": "a partner webhook has no signing secret, or a "
                                "draft stored before patterns ran on RE2 has one it refuses"}},
)  # fmt: skip
async def publish_definition(request: Request, version: int, principal: Admin) -> DefinitionView:
    """Make this version the active one, atomically; every later decision names it."""
    settings = _settings(request)
    async with _runtime(request).engine.begin() as conn:
        try:
            stored, definition = await service.version(conn, version)
        except service.UnknownDefinition as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        problems = check_stored(stored.document)
        if problems:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[{"loc": ["definition", *p.loc], "msg": f"{dotted(p.loc)}: {p.msg}",
                         "type": p.type} for p in problems],
            )  # fmt: skip
        unsigned = service.partners_without_secret(definition, set(settings.partner_secrets))
        if unsigned and not settings.common.dev:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[
                    {"loc": ["definition", "partners", i, "webhook_url"],
                     "msg": f"no webhook secret for partner {definition.partners[i].id!r}: "
                            "set it in LEADFLOW_QUALIFIER_PARTNER_SECRETS first",
                     "type": "missing_secret"}
                    for i in unsigned
                ],
            )  # fmt: skip
        unsafe = service.unsafe_partner_webhooks(definition, production=not settings.common.dev)
        if unsafe:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[
                    {"loc": ["definition", "partners", i, "webhook_url"],
                     "msg": f"the webhook of partner {definition.partners[i].id!r}: {why}",
                     "type": "unsafe_webhook"}
                    for i, why in unsafe
                ],
            )  # fmt: skip
        await service.publish(conn, version, by=principal.name, now=utcnow())
        row = await repository.get_definition(conn, version)
    return DefinitionView.model_validate(row, from_attributes=True)


@router.post(
    "/definitions/{version}/backtest", response_model=BacktestView, tags=["definitions"],
    response_model_by_alias=True,
    responses={404: {}, 422: {"description": "a bad range, or one the back-test bounds refuse"}},
)  # fmt: skip
async def backtest_definition(
    request: Request, version: int, _: Admin, body: BacktestIn = Body(default_factory=BacktestIn)
) -> BacktestView:
    """What this version would decide for stored leads, against the active version and
    against what sales said of them."""
    # A date, or a time without an offset, is read as UTC.
    until = body.to or utcnow()
    until = until if until.tzinfo else until.replace(tzinfo=UTC)
    since = body.from_ or until - timedelta(days=90)
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    if since >= until:
        raise unprocessable(["body", "from"], "from must be before to")
    settings = _settings(request)
    if until - since > timedelta(days=settings.backtest_max_days):
        raise unprocessable(
            ["body", "from"],
            f"a back-test covers at most {settings.backtest_max_days} days: narrow the range "
            "(from, to)",
        )
    bounds = Bounds(settings.backtest_max_leads, settings.backtest_budget_seconds)
    async with _runtime(request).engine.connect() as conn:
        try:
            run = await service.backtest(conn, version, since=since, until=until,
                                         limit=body.limit, bounds=bounds)  # fmt: skip
        except service.UnknownDefinition as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        except BacktestRefused as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[{"loc": ["body"], "msg": str(exc), "type": exc.kind}],
            ) from exc
    return views.backtest_view(version, run)


# Partner deliveries -----------------------------------------------------------------------

DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]


@router.get("/partners/deliveries", response_model=list[DeliveryView], tags=["partners"])
async def list_deliveries(
    request: Request,
    _: Admin,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    partner: str | None = None,
    lead_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryView]:
    """Deliveries to partners, newest first; `status=failed` lists the parked ones."""
    async with _runtime(request).engine.connect() as conn:
        rows = await repository.list_deliveries(
            conn, status=status_, partner_id=partner, lead_id=lead_id, limit=limit
        )
    return [DeliveryView.model_validate(r, from_attributes=True) for r in rows]


@router.get(
    "/partners/deliveries/{delivery_id}", response_model=DeliveryView, tags=["partners"],
    responses={404: {}},
)  # fmt: skip
async def get_delivery(request: Request, delivery_id: str, _: Admin) -> DeliveryView:
    async with _runtime(request).engine.connect() as conn:
        row = await repository.get_delivery(conn, delivery_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no delivery {delivery_id!r}")
    return DeliveryView.model_validate(row, from_attributes=True)


@router.post(
    "/partners/deliveries/{delivery_id}/retry", response_model=DeliveryView,
    status_code=status.HTTP_202_ACCEPTED, tags=["partners"],
    responses={404: {}, 409: {"description": "pending already, or the person was erased"}},
)  # fmt: skip
async def retry_delivery(request: Request, delivery_id: str, _: Admin) -> DeliveryView:
    """Send a parked (or delivered) delivery again, with a fresh count of attempts."""
    async with _runtime(request).engine.begin() as conn:
        try:
            await deliveries.retry(conn, delivery_id, now=utcnow())
        except deliveries.DeliveryNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        except deliveries.NotRetriable as exc:
            raise _conflict(str(exc)) from exc
        row = await repository.get_delivery(conn, delivery_id)
    _wake(request)
    return DeliveryView.model_validate(row, from_attributes=True)
