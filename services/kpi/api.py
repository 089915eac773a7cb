"""KPI HTTP endpoints: parse, authorize, delegate. Every answer comes from stored tables."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query, Request

from services.kpi import periods, service
from services.kpi.config import KpiSettings
from shared.auth import Principal, Scope, require
from shared.runtime import Runtime
from shared.web import unprocessable

router = APIRouter(prefix="/v1/kpi", tags=["kpi"])

KpiReader = Annotated[Principal, Depends(require(Scope.kpi_read))]


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise unprocessable(["query", "tz"], f"unknown IANA time zone {tz!r}") from exc


def _period(request: Request, start: str, end: str, tz: ZoneInfo) -> periods.Period:
    settings: KpiSettings = request.app.state.settings
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
        raise unprocessable(["query", "to"], f"range over {settings.max_range_days} days")
    return period


@router.get("/summary")
async def summary(
    request: Request,
    _: KpiReader,
    from_: Annotated[str, Query(alias="from", description="YYYY-MM-DD or RFC 3339, inclusive")],
    to: Annotated[str, Query(description="YYYY-MM-DD or RFC 3339, exclusive")],
    source: str | None = None,
    channel: str | None = None,
    campaign: str | None = None,
    tz: Annotated[str, Query(description="IANA time zone for dates")] = "UTC",
) -> dict[str, Any]:
    """Every metric with its value, the previous period, the same dates a year ago, and deltas."""
    zone = _zone(tz)
    period = _period(request, from_, to, zone)
    filters = {
        k: v for k, v in (("source", source), ("channel", channel), ("campaign", campaign)) if v
    }
    runtime: Runtime = request.app.state.runtime
    async with runtime.engine.connect() as conn:
        return await service.summary(conn, period, zone, filters)
