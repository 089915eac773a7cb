"""Definition and back-test request and response models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.qualifier.definitions.backtest import FeedbackTally, route_counts
from services.qualifier.definitions.service import BacktestRun


class BacktestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: datetime | None = Field(
        default=None, alias="from", description="Leads received from (default: 90 days ago)."
    )
    to: datetime | None = Field(default=None, description="Leads received before (default: now).")
    limit: int = Field(default=100, ge=0, le=1000, description="How many changed leads to list.")


class DefinitionSummary(BaseModel):
    version: int
    name: str
    status: str
    created_at: datetime
    created_by: str | None = None
    published_at: datetime | None = None
    published_by: str | None = None


class DefinitionView(DefinitionSummary):
    document: dict[str, Any]
    source_text: str


class ChangeView(BaseModel):
    path: str
    kind: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None


class DefinitionDiffView(BaseModel):
    old_version: int
    new_version: int
    changes: list[ChangeView]
    text: str = Field(description="Unified diff of the two texts as written.")


class RouteChangeView(BaseModel):
    lead_id: str
    from_route: str
    to_route: str
    from_score: int
    to_score: int
    reasons: list[str]
    sales_feedback: str | None = None


class FeedbackAgreement(BaseModel):
    accepted_routed_to_sales: int
    accepted_routed_elsewhere: int
    rejected_routed_to_sales: int
    rejected_routed_elsewhere: int
    accepted_routes: dict[str, int]
    rejected_routes: dict[str, int]
    agreement_rate: float | None = Field(
        description="(accepted routed to sales + rejected not routed to sales) / leads with "
        "feedback; null without feedback."
    )


class BacktestView(BaseModel):
    version: int
    active_version: int
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    leads: int
    skipped_erased: int = Field(description="Erased leads: no longer judgeable, left out.")
    routes: dict[str, int] = Field(description="Route counts by the version under test.")
    active_routes: dict[str, int] = Field(description="Route counts by the active version.")
    changed: int
    transitions: dict[str, int] = Field(description='"nurture -> sales": how many leads.')
    changes: list[RouteChangeView] = Field(description="Changed leads, up to `limit`.")
    feedback_leads: int
    feedback: FeedbackAgreement
    active_feedback: FeedbackAgreement


def backtest_view(number: int, run: BacktestRun) -> BacktestView:
    tally = run.tally
    return BacktestView(
        version=number,
        active_version=tally.active.version,
        from_=run.since,
        to=run.until,
        leads=tally.leads,
        skipped_erased=run.skipped_erased,
        routes=route_counts(tally.tested_routes),
        active_routes=route_counts(tally.active_routes),
        changed=tally.changed,
        transitions={f"{a} -> {b}": n for (a, b), n in sorted(tally.transitions.items())},
        changes=[RouteChangeView(**vars(c)) for c in tally.changes],
        feedback_leads=tally.tested_feedback.judged,
        feedback=_agreement(tally.tested_feedback),
        active_feedback=_agreement(tally.active_feedback),
    )


def _agreement(t: FeedbackTally) -> FeedbackAgreement:
    return FeedbackAgreement(
        accepted_routed_to_sales=t.accepted_to_sales,
        accepted_routed_elsewhere=t.accepted_elsewhere,
        rejected_routed_to_sales=t.rejected_to_sales,
        rejected_routed_elsewhere=t.rejected_elsewhere,
        accepted_routes=route_counts(t.accepted_routes),
        rejected_routes=route_counts(t.rejected_routes),
        agreement_rate=t.agreement_rate,
    )
