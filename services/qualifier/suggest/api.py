"""POST /v1/definitions/{version}/suggest: a draft learnt from what sales said, with the
evidence for each change and its back-test beside the active version."""

from __future__ import annotations

from datetime import UTC, timedelta

from fastapi import APIRouter, Body, HTTPException, status

from services.qualifier.definitions import service as definitions
from services.qualifier.definitions.api import Version
from services.qualifier.definitions.backtest import BacktestRefused, Bounds
from services.qualifier.deps import Admin, Settings
from services.qualifier.suggest.fit_process import FitFailed
from services.qualifier.suggest.fitted import Params
from services.qualifier.suggest.schemas import SuggestIn, SuggestionView, suggestion_view
from services.qualifier.suggest.service import suggest_edits
from shared.db import utcnow
from shared.unit_of_work import UnitOfWork
from shared.web import problem, unprocessable

router = APIRouter(prefix="/v1", tags=["definitions"])


@router.post(
    "/definitions/{version}/suggest",
    response_model=SuggestionView,
    response_model_by_alias=True,
    responses={
        404: {},
        422: {"description": "a bad range, or one the back-test bounds refuse (named)"},
        503: {"description": "the fitting process failed"},
    },
)
async def suggest_definition(
    version: Version,
    principal: Admin,
    settings: Settings,
    conn: UnitOfWork,
    body: SuggestIn = Body(default_factory=SuggestIn),
) -> SuggestionView:
    """Suggest edits of this version from sales' answers: fitted on the older outcomes of
    the range, judged beside the active version on the newer leads, stored as a draft.

    With too few outcomes nothing is suggested and `message` says so."""
    until = body.to or utcnow()
    until = until if until.tzinfo else until.replace(tzinfo=UTC)
    since = body.from_ or until - timedelta(days=180)
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    if since >= until:
        raise unprocessable(["body", "from"], "from must be before to")
    if until - since > timedelta(days=settings.backtest_max_days):
        raise unprocessable(
            ["body", "from"],
            f"a suggestion reads at most {settings.backtest_max_days} days "
            "(LEADFLOW_QUALIFIER_BACKTEST_MAX_DAYS): narrow the range (from, to)",
        )
    params = Params(
        min_outcomes=settings.suggest_min_outcomes,
        min_support=settings.suggest_min_support,
        sales_min_acceptance=settings.suggest_sales_min_acceptance,
    )
    try:
        run = await suggest_edits(
            conn,
            version,
            since=since,
            until=until,
            params=params,
            held_out_share=settings.suggest_held_out_share,
            bounds=Bounds(settings.backtest_max_leads, settings.backtest_budget_seconds),
            by=principal.name,
            now=utcnow(),
        )
    except definitions.UnknownDefinition as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except BacktestRefused as exc:
        raise problem(status.HTTP_422_UNPROCESSABLE_CONTENT, ["body"], str(exc), exc.kind) from exc
    except FitFailed as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc
    return suggestion_view(run)
