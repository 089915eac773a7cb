"""The plan and spend endpoints: set a month's amount, list them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from services.kpi.plans import spread
from services.kpi.plans import store as plans_store
from services.kpi.reads.responses import respond
from services.kpi.schemas import PlanIn, PlanOut, SpendIn, SpendOut
from services.kpi.web import (
    CampaignQ,
    ChannelQ,
    FormatQ,
    KpiReader,
    KpiWriter,
    reading,
    reject_unknown,
    runtime_of,
)
from shared.db import utcnow
from shared.unit_of_work import UnitOfWork
from shared.web import unprocessable

router = APIRouter(tags=["kpi"])

MonthPath = Annotated[
    str, Path(description="YYYY-MM", examples=["2026-10"], pattern=spread.MONTH_PATTERN.pattern)
]


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
async def put_plan(month: MonthPath, body: PlanIn, who: KpiWriter, conn: UnitOfWork) -> PlanOut:
    """Set the month's revenue plan (idempotent: the same body again changes nothing)."""
    key = _month(month, ["path", "month"])
    await plans_store.put_plan(conn, key, body.revenue, who.name, utcnow())
    (row,) = await plans_store.list_plans(conn, [key])
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
    reject_unknown(request, frozenset({"from", "to", "format"}))
    first, after = _month_bounds(from_, to)
    async with reading(runtime_of(request).engine) as conn:
        found = await plans_store.list_plans(conn, first=first, after=after)
    body = [
        PlanOut(month=m, revenue=r, updated_at=at, updated_by=by).model_dump(mode="json")
        for m, r, at, by in found
    ]
    rows = [[p["month"], p["revenue"], p["updated_at"], p["updated_by"]] for p in body]
    header = ["month", "revenue", "updated_at", "updated_by"]
    return respond(request, body=body, rows=(header, rows), fmt=format)


@router.put("/v1/spend/{month}", response_model=SpendOut, tags=["plans and spend"])
async def put_spend(month: MonthPath, body: SpendIn, who: KpiWriter, conn: UnitOfWork) -> SpendOut:
    """Set the month's spend on one channel and campaign (idempotent)."""
    key = _month(month, ["path", "month"])
    await plans_store.put_spend(
        conn, key, body.channel, body.campaign, body.amount, who.name, utcnow()
    )
    (row,) = await plans_store.list_spend(
        conn, [key], {"channel": body.channel, "campaign": body.campaign}
    )
    return SpendOut(
        month=row[0],
        channel=row[1],
        campaign=row[2],
        amount=row[3],
        updated_at=row[4],
        updated_by=row[5],
    )


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
    reject_unknown(request, frozenset({"from", "to", "channel", "campaign", "format"}))
    first, after = _month_bounds(from_, to)
    filters = {k: v for k, v in (("channel", channel), ("campaign", campaign)) if v}
    async with reading(runtime_of(request).engine) as conn:
        found = await plans_store.list_spend(conn, filters=filters, first=first, after=after)
    body = [
        SpendOut(
            month=m, channel=ch, campaign=ca, amount=a, updated_at=at, updated_by=by
        ).model_dump(mode="json")
        for m, ch, ca, a, at, by in found
    ]
    header = ["month", "channel", "campaign", "amount", "updated_at", "updated_by"]
    rows = [[s[k] for k in header] for s in body]
    return respond(request, body=body, rows=(header, rows), fmt=format)
