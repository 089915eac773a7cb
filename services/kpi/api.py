"""KPI HTTP endpoints: parse, authorize, delegate. Every answer comes from stored tables."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kpi import periods, rebuild, repository, series, service, spread
from services.kpi.config import KpiSettings
from services.kpi.metrics import CATALOGUE, METRICS
from services.kpi.presentation import flatten
from services.kpi.representation import respond
from services.kpi.schemas import (
    FunnelOut,
    PlanIn,
    PlanOut,
    RebuildOut,
    SpendIn,
    SpendOut,
    SummaryOut,
    TimeseriesOut,
)
from shared.auth import Principal, Scope, require
from shared.db import utcnow
from shared.events import LeadSource, Route
from shared.runtime import Runtime
from shared.web import unprocessable

router = APIRouter(tags=["kpi"])

KpiReader = Annotated[Principal, Depends(require(Scope.kpi_read))]
KpiWriter = Annotated[Principal, Depends(require(Scope.kpi_write))]
Admin = Annotated[Principal, Depends(require(Scope.definitions_admin))]

_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the If-None-Match ETag is still current"},
    422: {"description": "A parameter is invalid; `detail[].loc` names it"},
}


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _settings(request: Request) -> KpiSettings:
    settings: KpiSettings = request.app.state.settings
    return settings


@contextlib.asynccontextmanager
async def _reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read that sees one snapshot, so value, previous and year ago agree with each other."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        yield conn


# Query parameters every read takes.

FromQ = Annotated[
    str,
    Query(
        alias="from",
        description="Inclusive: `YYYY-MM-DD` (midnight in `tz`) or an RFC 3339 time",
        examples=["2026-10-01"],
    ),
]
ToQ = Annotated[
    str,
    Query(description="Exclusive: `YYYY-MM-DD` or an RFC 3339 time", examples=["2026-11-01"]),
]
TzQ = Annotated[str, Query(description="IANA time zone of dates, buckets and months")]
FormatQ = Annotated[
    Literal["json", "csv"] | None,
    Query(description="`json` (default) or `csv`; `Accept: text/csv` works too"),
]
SourceQ = Annotated[str | None, Query(description="The lead's `source`")]
ChannelQ = Annotated[str | None, Query(description="utm source (`direct` when absent)")]
CampaignQ = Annotated[str | None, Query(description="utm campaign (`none` when absent)")]
RouteQ = Annotated[str | None, Query(description="The lead's current route")]
VersionQ = Annotated[
    str | None, Query(description="Definition version of the lead's current route")
]

_COMMON = frozenset(
    {"from", "to", "tz", "format", "source", "channel", "campaign", "route", "definition_version"}
)


def _reject_unknown(request: Request, allowed: frozenset[str]) -> None:
    for name in request.query_params:
        if name not in allowed:
            raise unprocessable(
                ["query", name],
                f"unknown query parameter {name!r}; expected one of {', '.join(sorted(allowed))}",
            )


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise unprocessable(["query", "tz"], f"unknown IANA time zone {tz!r}") from exc


def _period(settings: KpiSettings, start: str, end: str, tz: ZoneInfo) -> periods.Period:
    bounds = []
    for name, text in (("from", start), ("to", end)):
        try:
            bounds.append(periods.parse_bound(text, tz))
        except ValueError as exc:
            raise unprocessable(
                ["query", name], f"expected YYYY-MM-DD or an RFC 3339 time with offset: {exc}"
            ) from exc
    period = periods.Period(*bounds)
    if period.end <= period.start:
        raise unprocessable(["query", "to"], "'to' must be after 'from'")
    if period.end - period.start > timedelta(days=settings.max_range_days):
        raise unprocessable(
            ["query", "to"], f"the period is longer than {settings.max_range_days} days"
        )
    return period


def _filters(
    source: str | None,
    channel: str | None,
    campaign: str | None,
    route: str | None,
    definition_version: str | None,
) -> dict[str, str]:
    given = {
        "source": source,
        "channel": channel,
        "campaign": campaign,
        "route": route,
        "definition_version": definition_version,
    }
    filters = {k: v for k, v in given.items() if v}  # `channel=` means every channel
    checks = {
        "source": {s.value for s in LeadSource},
        "route": {r.value for r in Route},
    }
    for name, allowed in checks.items():
        if name in filters and filters[name] not in allowed:
            raise unprocessable(
                ["query", name],
                f"unknown {name} {filters[name]!r}; expected one of {', '.join(sorted(allowed))}",
            )
    if "definition_version" in filters and not filters["definition_version"].isdigit():
        raise unprocessable(["query", "definition_version"], "expected a version number")
    return filters


@dataclass(frozen=True)
class ReadParams:
    period: periods.Period
    tz: ZoneInfo
    filters: dict[str, str]
    fmt: str | None


def read_params(
    request: Request,
    from_: FromQ,
    to: ToQ,
    tz: TzQ = "UTC",
    source: SourceQ = None,
    channel: ChannelQ = None,
    campaign: CampaignQ = None,
    route: RouteQ = None,
    definition_version: VersionQ = None,
    format: FormatQ = None,
) -> ReadParams:
    zone = _zone(tz)
    return ReadParams(
        period=_period(_settings(request), from_, to, zone),
        tz=zone,
        filters=_filters(source, channel, campaign, route, definition_version),
        fmt=format,
    )


Read = Annotated[ReadParams, Depends(read_params)]


@router.get(
    "/v1/kpi/summary",
    response_model=SummaryOut,
    responses={**_READ_RESPONSES, 200: {"content": {"text/csv": {}}}},
)
async def summary(request: Request, _: KpiReader, params: Read) -> Response:
    """Every metric with its value, the period before, the same dates a year ago, and deltas."""
    _reject_unknown(request, _COMMON)
    scope = service.Scope(params.tz, params.filters)
    async with _reading(_runtime(request).engine) as conn:
        body = await service.summary(conn, params.period, scope)
    body["currency"] = _settings(request).currency
    header = [
        "metric", "unit", "value", "previous", "year_ago", "delta_previous",
        "delta_previous_pct", "delta_year_ago", "delta_year_ago_pct",
    ]  # fmt: skip
    rows: list[list[Any]] = []
    for name, m in body["metrics"].items():
        cells = [flatten(name, m[k]) for k in header[2:]]
        for i, (label, value) in enumerate(cells[0]):
            rows.append([label, m["unit"], value, *(c[i][1] for c in cells[1:])])
    return respond(request, body=body, rows=(header, rows), fmt=params.fmt)


def _metric_names(values: Sequence[str]) -> list[str]:
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name not in METRICS:
                raise unprocessable(
                    ["query", "metric"],
                    f"unknown metric {name!r}; expected one of "
                    + ", ".join(m.name for m in CATALOGUE),
                )
            if name not in names:
                names.append(name)
    return names


@router.get(
    "/v1/kpi/timeseries",
    response_model=TimeseriesOut,
    responses={**_READ_RESPONSES, 200: {"content": {"text/csv": {}}}},
)
async def timeseries(
    request: Request,
    _: KpiReader,
    params: Read,
    metric: Annotated[
        list[str], Query(description="One or more metric names (repeated or comma-separated)")
    ],
    grain: Annotated[
        Literal["day", "week", "month"], Query(description="ISO weeks start on Monday")
    ] = "day",
    group_by: Annotated[
        Literal["source", "channel", "campaign", "route", "definition_version"] | None,
        Query(description="One dimension to split each series by"),
    ] = None,
) -> Response:
    """One point per calendar bucket (in `tz`) of each metric, optionally per group.

    Grouped: the top groups by the first metric and one "(other)" group, cells where nothing
    happened left out when the answer would not fit otherwise; `sparse` and `truncated` say
    what was left out (docs/kpi.md).
    """
    _reject_unknown(request, _COMMON | {"metric", "grain", "group_by"})
    names = _metric_names(metric)
    scope = service.Scope(params.tz, params.filters, group_by)
    settings = _settings(request)
    limits = series.Limits(settings.timeseries_max_groups, settings.timeseries_max_points)
    try:
        async with _reading(_runtime(request).engine) as conn:
            body = await series.timeseries(conn, params.period, grain, names, scope, limits)
    except series.SeriesTooLarge as exc:
        raise unprocessable(["query", "grain"], str(exc)) from exc
    body["currency"] = settings.currency
    header = ["metric", "start", "end", "label", "group", "value"]
    rows = (
        [label, p["start"], p["end"], p["label"], p["group"], value]
        for p in body["points"]
        for label, value in flatten(p["metric"], p["value"])
    )
    # Tens of thousands of points take a while to write: off the event loop.
    return await asyncio.to_thread(
        respond, request, body=body, rows=(header, rows), fmt=params.fmt,
        headers=_series_headers(body),
    )  # fmt: skip


def _series_headers(body: dict[str, Any]) -> dict[str, str]:
    """What a grouped series left out, for CSV readers too (the JSON body says it as well)."""
    headers = {}
    if body["sparse"]:
        headers["Leadflow-Sparse"] = "true"
    if body["truncated"]:
        left_out = body["truncated"]
        groups = left_out["groups"]
        # The label is ours ("(other)", "(other 2)"), never a group's own text.
        text = f"groups; shown={groups['shown']}; omitted={groups['omitted']}; "
        text += f'other="{groups["other"]}"'
        if "points" in left_out:
            text += f"; point-limit={left_out['points']['limit']}"
        headers["Leadflow-Truncated"] = text
    return headers


@router.get(
    "/v1/kpi/funnel",
    response_model=FunnelOut,
    responses={**_READ_RESPONSES, 200: {"content": {"text/csv": {}}}},
)
async def funnel(request: Request, _: KpiReader, params: Read) -> Response:
    """The stages in order with counts, step conversion, and conversion from the first."""
    _reject_unknown(request, _COMMON)
    scope = service.Scope(params.tz, params.filters)
    async with _reading(_runtime(request).engine) as conn:
        body = await service.funnel(conn, params.period, scope)
    header = ["stage", "count", "step_conversion", "conversion_from_first"]
    rows = [[s[k] for k in header] for s in body["stages"]]
    return respond(request, body=body, rows=(header, rows), fmt=params.fmt)


# Plans and spend

MonthPath = Annotated[
    str, Path(description="YYYY-MM", examples=["2026-10"], pattern=spread.MONTH_PATTERN.pattern)
]
MonthQ = Annotated[str | None, Query(description="YYYY-MM")]


def _month(text: str, loc: list[str | int]) -> str:
    try:
        return spread.month_key(spread.parse_month(text))
    except ValueError as exc:
        raise unprocessable(loc, str(exc)) from exc


def _month_bounds(start: str | None, end: str | None) -> tuple[str | None, str | None]:
    """Listing bounds: months in [from, to), either open."""
    first = _month(start, ["query", "from"]) if start else None
    after = _month(end, ["query", "to"]) if end else None
    if first and after and after <= first:
        raise unprocessable(["query", "to"], "'to' must be after 'from'")
    return first, after


@router.put("/v1/plans/{month}", response_model=PlanOut, tags=["plans and spend"])
async def put_plan(request: Request, month: MonthPath, body: PlanIn, who: KpiWriter) -> PlanOut:
    """Set the month's revenue plan (idempotent: the same body again changes nothing)."""
    key = _month(month, ["path", "month"])
    async with _runtime(request).engine.begin() as conn:
        await service.put_plan(conn, key, body.revenue, who.name, utcnow())
        (row,) = await repository.list_plans(conn, [key])
    return PlanOut(month=row[0], revenue=row[1], updated_at=row[2], updated_by=row[3])


@router.get(
    "/v1/plans",
    response_model=list[PlanOut],
    tags=["plans and spend"],
    responses={200: {"content": {"text/csv": {}}}},
)
async def list_plans(
    request: Request,
    _: KpiReader,
    from_: Annotated[str | None, Query(alias="from", description="YYYY-MM, inclusive")] = None,
    to: Annotated[str | None, Query(description="YYYY-MM, exclusive")] = None,
    format: FormatQ = None,
) -> Response:
    _reject_unknown(request, frozenset({"from", "to", "format"}))
    first, after = _month_bounds(from_, to)
    async with _reading(_runtime(request).engine) as conn:
        found = await repository.list_plans(conn, first=first, after=after)
    body = [
        PlanOut(month=m, revenue=r, updated_at=at, updated_by=by).model_dump(mode="json")
        for m, r, at, by in found
    ]
    rows = [[p["month"], p["revenue"], p["updated_at"], p["updated_by"]] for p in body]
    header = ["month", "revenue", "updated_at", "updated_by"]
    return respond(request, body=body, rows=(header, rows), fmt=format)


@router.put("/v1/spend/{month}", response_model=SpendOut, tags=["plans and spend"])
async def put_spend(request: Request, month: MonthPath, body: SpendIn, who: KpiWriter) -> SpendOut:
    """Set the month's spend on one channel and campaign (idempotent)."""
    key = _month(month, ["path", "month"])
    async with _runtime(request).engine.begin() as conn:
        await service.put_spend(
            conn, key, body.channel, body.campaign, body.amount, who.name, utcnow()
        )
        (row,) = await repository.list_spend(
            conn, [key], {"channel": body.channel, "campaign": body.campaign}
        )
    return SpendOut(
        month=row[0], channel=row[1], campaign=row[2], amount=row[3], updated_at=row[4],
        updated_by=row[5],
    )  # fmt: skip


@router.get(
    "/v1/spend",
    response_model=list[SpendOut],
    tags=["plans and spend"],
    responses={200: {"content": {"text/csv": {}}}},
)
async def list_spend(
    request: Request,
    _: KpiReader,
    from_: Annotated[str | None, Query(alias="from", description="YYYY-MM, inclusive")] = None,
    to: Annotated[str | None, Query(description="YYYY-MM, exclusive")] = None,
    channel: ChannelQ = None,
    campaign: CampaignQ = None,
    format: FormatQ = None,
) -> Response:
    _reject_unknown(request, frozenset({"from", "to", "channel", "campaign", "format"}))
    first, after = _month_bounds(from_, to)
    filters = {k: v for k, v in (("channel", channel), ("campaign", campaign)) if v}
    async with _reading(_runtime(request).engine) as conn:
        found = await repository.list_spend(conn, filters=filters, first=first, after=after)
    body = [
        SpendOut(
            month=m, channel=ch, campaign=ca, amount=a, updated_at=at, updated_by=by
        ).model_dump(mode="json")
        for m, ch, ca, a, at, by in found
    ]
    header = ["month", "channel", "campaign", "amount", "updated_at", "updated_by"]
    rows = [[s[k] for k in header] for s in body]
    return respond(request, body=body, rows=(header, rows), fmt=format)


# Rebuild


@router.post(
    "/v1/admin/rebuild",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RebuildOut,
    tags=["admin"],
    responses={409: {"description": "A rebuild is running already; `detail` names it"}},
)
async def start_rebuild(request: Request, who: Admin) -> JSONResponse:
    """Fold the topics again from the start into a new generation; switch once caught up.

    Answers at once (202) with the rebuild's id and its status URL; poll that until
    `status` is `done`. The current numbers keep being served (and kept fresh) meanwhile.
    """
    engine = _runtime(request).engine
    try:
        async with engine.begin() as conn:
            generation = await rebuild.start(conn, who.name)
    except rebuild.RebuildRunning as exc:
        raise _already_running(exc.generation) from exc
    except sa.exc.IntegrityError as exc:  # another replica started one a moment ago
        async with engine.connect() as conn:
            running = await repository.building_generation(conn)
        raise _already_running(running.generation if running else 0) from exc
    waker = request.app.state.rebuilder
    if waker is not None:
        waker.wake()
    async with engine.connect() as conn:
        described = await rebuild.describe(conn, generation)
    assert described is not None
    return JSONResponse(
        RebuildOut.model_validate(described).model_dump(mode="json"),
        status_code=status.HTTP_202_ACCEPTED,
        headers={"Location": str(described["status_url"])},
    )


def _already_running(generation: int) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        detail={
            "msg": f"a rebuild is running already (generation {generation})",
            "rebuild_id": generation,
            "status_url": f"/v1/admin/rebuilds/{generation}",
        },
    )


@router.get("/v1/admin/rebuilds", response_model=list[RebuildOut], tags=["admin"])
async def list_rebuilds(request: Request, _: Admin) -> list[RebuildOut]:
    """Every generation, newest first: the running rebuild, the active one, and history."""
    async with _runtime(request).engine.connect() as conn:
        found = await repository.list_generations(conn)
        described = [await rebuild.describe(conn, g.generation) for g in found]
    return [RebuildOut.model_validate(d) for d in described if d is not None]


@router.get("/v1/admin/rebuilds/{rebuild_id}", response_model=RebuildOut, tags=["admin"])
async def get_rebuild(request: Request, rebuild_id: int, _: Admin) -> RebuildOut:
    async with _runtime(request).engine.connect() as conn:
        described = await rebuild.describe(conn, rebuild_id)
    if described is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rebuild {rebuild_id}")
    return RebuildOut.model_validate(described)


@router.delete("/v1/admin/rebuilds/{rebuild_id}", response_model=RebuildOut, tags=["admin"])
async def cancel_rebuild(request: Request, rebuild_id: int, _: Admin) -> RebuildOut:
    """Abandon a running rebuild; its rows are deleted, the active generation stays."""
    async with _runtime(request).engine.begin() as conn:
        cancelled = await repository.cancel(conn, rebuild_id, utcnow())
        described = await rebuild.describe(conn, rebuild_id)
    if described is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rebuild {rebuild_id}")
    if not cancelled:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"rebuild {rebuild_id} is {described['status']}"
        )
    return RebuildOut.model_validate(described)
