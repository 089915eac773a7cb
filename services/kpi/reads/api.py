"""The read endpoints: summary, timeseries and funnel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query, Request, Response

from services.kpi.catalogue import CATALOGUE, METRICS
from services.kpi.config import KpiSettings
from services.kpi.reads import periods, series, series_groups
from services.kpi.reads import summary as answers
from services.kpi.reads.evaluate import Scope
from services.kpi.reads.formatting import flatten
from services.kpi.reads.responses import respond
from services.kpi.schemas import FunnelOut, SummaryOut, TimeseriesOut
from services.kpi.web import (
    CampaignQ,
    ChannelQ,
    FormatQ,
    KpiReader,
    reading,
    reject_unknown,
    runtime_of,
    settings_of,
)
from shared.events import LeadSource, Route
from shared.web import unprocessable

router = APIRouter(tags=["kpi"])

_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the If-None-Match ETag is still current"},
    422: {"description": "A parameter is invalid; `detail[].loc` names it"},
}

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
SourceQ = Annotated[str | None, Query(description="The lead's `source`")]
RouteQ = Annotated[str | None, Query(description="The lead's current route")]
VersionQ = Annotated[
    str | None, Query(description="Definition version of the lead's current route")
]

_COMMON = frozenset(
    {"from", "to", "tz", "format", "source", "channel", "campaign", "route", "definition_version"}
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
        period=_period(settings_of(request), from_, to, zone),
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
    reject_unknown(request, _COMMON)
    scope = Scope(params.tz, params.filters)
    async with reading(runtime_of(request).engine) as conn:
        body = await answers.summary(conn, params.period, scope)
    body["currency"] = settings_of(request).currency
    header = [
        "metric",
        "unit",
        "value",
        "previous",
        "year_ago",
        "delta_previous",
        "delta_previous_pct",
        "delta_year_ago",
        "delta_year_ago_pct",
    ]
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
    reject_unknown(request, _COMMON | {"metric", "grain", "group_by"})
    names = _metric_names(metric)
    scope = Scope(params.tz, params.filters, group_by)
    settings = settings_of(request)
    limits = series_groups.Limits(settings.timeseries_max_groups, settings.timeseries_max_points)
    try:
        async with reading(runtime_of(request).engine) as conn:
            body = await series.timeseries(conn, params.period, grain, names, scope, limits)
    except series_groups.SeriesTooLarge as exc:
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
        respond,
        request,
        body=body,
        rows=(header, rows),
        fmt=params.fmt,
        headers=_series_headers(body),
    )


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
    reject_unknown(request, _COMMON)
    scope = Scope(params.tz, params.filters)
    async with reading(runtime_of(request).engine) as conn:
        body = await answers.funnel(conn, params.period, scope)
    header = ["stage", "count", "step_conversion", "conversion_from_first"]
    rows = [[s[k] for k in header] for s in body["stages"]]
    return respond(request, body=body, rows=(header, rows), fmt=params.fmt)
