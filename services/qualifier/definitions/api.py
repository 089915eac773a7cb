"""Definition endpoints: upload a draft, read, diff, publish, back-test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status

from services.qualifier.definitions import repository, service
from services.qualifier.definitions.backtest import BacktestRefused, Bounds
from services.qualifier.definitions.conditions import dotted
from services.qualifier.definitions.schemas import (
    BacktestIn,
    BacktestView,
    ChangeView,
    DefinitionDiffView,
    DefinitionSummary,
    DefinitionView,
    backtest_view,
)
from services.qualifier.definitions.source import DefinitionInvalid, check_stored, load_definition
from services.qualifier.deps import Admin, Reader, Settings, runtime
from shared.db import utcnow
from shared.unit_of_work import UnitOfWork
from shared.web import problem, problem_detail, unprocessable

router = APIRouter(prefix="/v1", tags=["definitions"])

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


def _refusal(problems: Iterable[tuple[Sequence[str | int], str, str]]) -> HTTPException:
    """A 422 naming every problem (loc, msg, type), each in `shared.web.problem`'s shape."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[item for loc, msg, kind in problems for item in problem_detail(loc, msg, kind)],
    )


# Versions are PostgreSQL integers: a larger number is no version, refused as 422 before
# the database would refuse it (an out-of-range parameter is a DataError there).
MAX_VERSION = 2**31 - 1
Version = Annotated[int, Path(ge=1, le=MAX_VERSION, description="A definition version")]


@router.post(
    "/definitions",
    response_model=DefinitionView,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_DEFINITION_BODY,
    responses={
        413: {"description": "over LEADFLOW_QUALIFIER_DEFINITION_MAX_BYTES"},
        422: {"description": "invalid definition: each problem names its line and field"},
    },
)
async def create_definition(
    request: Request, principal: Admin, settings: Settings, conn: UnitOfWork
) -> DefinitionView:
    """Store a definition as the next version, a draft (immutable; publish to activate)."""
    raw = await request.body()
    limit = settings.definition_max_bytes
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
    number = await service.create_draft(conn, text, by=principal.name, now=utcnow(), loaded=loaded)
    row = await repository.get_definition(conn, number)
    return DefinitionView.model_validate(row, from_attributes=True)


@router.get("/definitions", response_model=list[DefinitionSummary])
async def list_definitions(request: Request, _: Reader) -> list[DefinitionSummary]:
    """Every version, with who created and published it and when."""
    async with runtime(request).engine.connect() as conn:
        rows = await repository.list_definitions(conn)
    return [DefinitionSummary.model_validate(r, from_attributes=True) for r in rows]


@router.get("/definitions/{version}", response_model=DefinitionView, responses={404: {}})
async def get_definition(request: Request, version: Version, _: Reader) -> DefinitionView:
    async with runtime(request).engine.connect() as conn:
        row = await repository.get_definition(conn, version)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no definition version {version}")
    return DefinitionView.model_validate(row, from_attributes=True)


@router.get("/definitions/{version}/diff", response_model=DefinitionDiffView, responses={404: {}})
async def diff_definition(
    request: Request,
    version: Version,
    _: Reader,
    against: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="Default: the active version")
    ] = None,
) -> DefinitionDiffView:
    """What changed from `against` (default the active version) to `version`."""
    async with runtime(request).engine.connect() as conn:
        try:
            if against is None:
                against, _definition = await service.active(conn)
            result = await service.diff(conn, against, version)
        except service.UnknownDefinition as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    return DefinitionDiffView(
        old_version=result.old_version,
        new_version=result.new_version,
        text=result.text,
        changes=[
            ChangeView(path=c.path, kind=c.kind, old=c.old, new=c.new) for c in result.changes
        ],
    )


@router.post(
    "/definitions/{version}/publish",
    response_model=DefinitionView,
    responses={
        404: {},
        422: {
            "description": "a partner webhook has no signing secret, or a draft stored before "
            "patterns ran on RE2 has one it refuses"
        },
    },
)
async def publish_definition(
    version: Version, principal: Admin, settings: Settings, conn: UnitOfWork
) -> DefinitionView:
    """Make this version the active one, atomically; every later decision names it."""
    try:
        stored, definition = await service.version(conn, version)
    except service.UnknownDefinition as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    problems = check_stored(stored.document)
    if problems:
        raise _refusal(
            (["definition", *p.loc], f"{dotted(p.loc)}: {p.msg}", p.type) for p in problems
        )
    unsigned = service.partners_without_secret(definition, set(settings.partner_secrets))
    if unsigned and not settings.common.dev:
        raise _refusal(
            (
                ["definition", "partners", i, "webhook_url"],
                f"no webhook secret for partner {definition.partners[i].id!r}: "
                "set it in LEADFLOW_QUALIFIER_PARTNER_SECRETS first",
                "missing_secret",
            )
            for i in unsigned
        )
    unsafe = service.unsafe_partner_webhooks(definition, production=not settings.common.dev)
    if unsafe:
        raise _refusal(
            (
                ["definition", "partners", i, "webhook_url"],
                f"the webhook of partner {definition.partners[i].id!r}: {why}",
                "unsafe_webhook",
            )
            for i, why in unsafe
        )
    await service.publish(conn, version, by=principal.name, now=utcnow())
    row = await repository.get_definition(conn, version)
    return DefinitionView.model_validate(row, from_attributes=True)


@router.post(
    "/definitions/{version}/backtest",
    response_model=BacktestView,
    response_model_by_alias=True,
    responses={404: {}, 422: {"description": "a bad range, or one the back-test bounds refuse"}},
)
async def backtest_definition(
    request: Request,
    version: Version,
    _: Admin,
    settings: Settings,
    body: BacktestIn = Body(default_factory=BacktestIn),
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
    if until - since > timedelta(days=settings.backtest_max_days):
        raise unprocessable(
            ["body", "from"],
            f"a back-test covers at most {settings.backtest_max_days} days: narrow the range "
            "(from, to)",
        )
    bounds = Bounds(settings.backtest_max_leads, settings.backtest_budget_seconds)
    async with runtime(request).engine.connect() as conn:
        try:
            run = await service.backtest(
                conn, version, since=since, until=until, limit=body.limit, bounds=bounds
            )
        except service.UnknownDefinition as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        except BacktestRefused as exc:
            raise problem(
                status.HTTP_422_UNPROCESSABLE_CONTENT, ["body"], str(exc), exc.kind
            ) from exc
    return backtest_view(version, run)
