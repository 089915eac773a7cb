"""Suggestion request and response models."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.qualifier.definitions.schemas import ChangeView, DefinitionDiffView
from services.qualifier.suggest.holdout import SideTally
from services.qualifier.suggest.service import SuggestRun


class SuggestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: datetime | None = Field(
        default=None, alias="from", description="Leads received from (default: 180 days ago)."
    )
    to: datetime | None = Field(default=None, description="Leads received before (default: now).")


class EvidenceView(BaseModel):
    leads_with: int = Field(description="Training leads the criterion matches.")
    accepted_with: int
    leads_without: int
    accepted_without: int


class SuggestedChangeView(BaseModel):
    kind: Literal["reweighted", "removed", "added", "threshold"]
    criterion: str = Field(description="The criterion in words, or `sales_min_score`.")
    old_points: int | None = None
    new_points: int | None = None
    sentence: str = Field(description="The change and its evidence, for a marketer.")
    evidence: EvidenceView


class SplitView(BaseModel):
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    held_out_from: datetime | None = Field(
        description="Outcomes before this fit the suggestion; leads from it on judge it."
    )
    outcomes: int = Field(description="Leads in the range sales accepted or rejected.")
    training_outcomes: int


class VersionResult(BaseModel):
    version: int
    leads_to_sales: int
    accepted: int = Field(description="Sent to sales, and sales accepted them.")
    rejected: int = Field(description="Sent to sales, and sales rejected them.")
    acceptance_rate: float | None = Field(description="accepted / (accepted + rejected).")
    won: int = Field(description="Deals won among the leads sent to sales.")
    revenue: Decimal = Field(description="Payments among the leads sent to sales.")
    kept_from_sales_accepted: int = Field(
        description="Leads sales accepted that this version would not have sent to sales."
    )
    kept_won: int
    kept_revenue: Decimal


class SideBySideView(BaseModel):
    held_out_leads: int
    suggested: VersionResult
    active: VersionResult


class SuggestionView(BaseModel):
    version: int
    enough_evidence: bool
    message: str | None = Field(description="Why nothing is suggested, when nothing is.")
    split: SplitView
    draft_version: int | None = Field(description="The stored draft; null without one.")
    draft_text: str | None = None
    changes: list[SuggestedChangeView]
    diff: DefinitionDiffView | None = Field(
        description="The draft against `version`, as GET /v1/definitions/{v}/diff shows it."
    )
    backtest: SideBySideView | None = Field(description="On the held-out leads.")


def _result(version: int, t: SideTally) -> VersionResult:
    f = t.feedback
    return VersionResult(
        version=version,
        leads_to_sales=t.to_sales,
        accepted=f.accepted_to_sales,
        rejected=f.rejected_to_sales,
        acceptance_rate=t.acceptance_rate,
        won=t.won_to_sales,
        revenue=t.revenue_to_sales,
        kept_from_sales_accepted=f.accepted_elsewhere,
        kept_won=t.kept_won,
        kept_revenue=t.kept_revenue,
    )


def suggestion_view(run: SuggestRun) -> SuggestionView:
    s = run.split
    side = run.side_by_side
    diff = run.diff
    return SuggestionView(
        version=run.version,
        enough_evidence=run.fit is not None and run.fit.enough,
        message=run.why_not,
        split=SplitView(
            from_=s.since,
            to=s.until,
            held_out_from=s.held_out_from,
            outcomes=s.outcomes,
            training_outcomes=s.training_outcomes,
        ),
        draft_version=run.draft_version,
        draft_text=run.draft_text,
        changes=[
            SuggestedChangeView(
                kind=c.kind,
                criterion=c.criterion,
                old_points=c.old_points,
                new_points=c.new_points,
                sentence=c.sentence,
                evidence=EvidenceView(**vars(c.evidence)),
            )
            for c in (run.suggestion.changes if run.suggestion else [])
        ],
        diff=None
        if diff is None
        else DefinitionDiffView(
            old_version=diff.old_version,
            new_version=diff.new_version,
            text=diff.text,
            changes=[
                ChangeView(path=c.path, kind=c.kind, old=c.old, new=c.new) for c in diff.changes
            ],
        ),
        backtest=None
        if side is None
        else SideBySideView(
            held_out_leads=side.leads,
            suggested=_result(run.draft_version or 0, side.suggested_tally),
            active=_result(side.active.version, side.active_tally),
        ),
    )
