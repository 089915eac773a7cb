"""Review endpoints: `GET /v1/definitions/{v}/review` (JSON) and its CSV.

Reading a review takes `leads:read`, as reading definitions and leads does: it changes
nothing, and the people in a review meeting (heads of sales and marketing) read with
such tokens; publishing what they decide stays behind `definitions:admin`. A review
reads at most as much as a back-test (`QualifierSettings.backtest_*`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from services.qualifier.definitions import service as definitions
from services.qualifier.definitions.api import Version
from services.qualifier.deps import Reader, Settings, runtime
from services.qualifier.review import service
from services.qualifier.review.export import review_csv
from services.qualifier.review.schemas import ReviewView, review_view
from shared.db import utcnow
from shared.web import problem, unprocessable

router = APIRouter(prefix="/v1", tags=["review"])

From = Annotated[
    datetime | None,
    Query(
        alias="from",
        description="Leads received from (a date or an RFC 3339 time; without an offset, "
        "UTC); default 90 days before `to`",
    ),
]
To = Annotated[datetime | None, Query(description="Received before (exclusive); default now")]
Limit = Annotated[int, Query(ge=0, le=1000, description="Leads shown in each of the two lists")]
_CSV = "text/csv; charset=utf-8"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such version"},
    422: {"description": "a bad range, or one past the bounds (days, leads, time budget)"},
}


async def _review(
    request: Request,
    settings: Settings,
    version: int,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> ReviewView:
    until = until or utcnow()
    until = until if until.tzinfo else until.replace(tzinfo=UTC)
    since = since or until - timedelta(days=90)
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    if since >= until:
        raise unprocessable(["query", "from"], "from must be before to")
    if until - since > timedelta(days=settings.backtest_max_days):
        raise unprocessable(
            ["query", "from"],
            f"a review covers at most {settings.backtest_max_days} days: narrow the range "
            "(from, to)",
        )
    async with runtime(request).engine.connect() as conn:
        try:
            run = await service.review(
                conn,
                version,
                since=since,
                until=until,
                max_leads=settings.backtest_max_leads,
                budget_seconds=settings.backtest_budget_seconds,
                list_limit=limit,
            )
        except definitions.UnknownDefinition as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        except service.ReviewRefused as exc:
            raise problem(
                status.HTTP_422_UNPROCESSABLE_CONTENT, ["query"], str(exc), exc.kind
            ) from exc
    return review_view(run, settings.currency)


def _csv_response(view: ReviewView) -> Response:
    name = f"review-v{view.version}-{view.from_:%Y%m%d}-{view.to:%Y%m%d}.csv"
    return Response(
        review_csv(view),
        media_type=_CSV,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/definitions/{version}/review",
    response_model=ReviewView,
    response_model_by_alias=True,
    responses={**_RESPONSES, 200: {"content": {"text/csv": {}}}},
)
async def review_definition(
    request: Request,
    version: Version,
    _: Reader,
    settings: Settings,
    from_: From = None,
    to: To = None,
    limit: Limit = 50,
    format: Annotated[
        Literal["json", "csv"], Query(description="csv: as /review.csv answers")
    ] = "json",
) -> Any:
    """For every reject rule, required field, score rule, threshold and team: the leads it
    touched among those the version took in, what became of them, the rates with Wilson
    95% intervals and their lift against all leads of the version; the leads sent to sales
    that sales rejected, and the leads kept from sales that came back and converted."""
    view = await _review(request, settings, version, from_, to, limit)
    return _csv_response(view) if format == "csv" else view


@router.get(
    "/definitions/{version}/review.csv",
    response_class=Response,
    responses={**_RESPONSES, 200: {"content": {"text/csv": {}}, "description": "The CSV"}},
)
async def review_definition_csv(
    request: Request,
    version: Version,
    _: Reader,
    settings: Settings,
    from_: From = None,
    to: To = None,
) -> Response:
    """The review as CSV, one row per criterion × outcome measure (counts, revenue, rates
    with their interval and lift, and a row per rejection reason)."""
    return _csv_response(await _review(request, settings, version, from_, to, 0))
