"""The review's answer: per criterion, what became of the leads it touched; two lists."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from services.qualifier.review.service import ReviewRun, VersionRatios
from services.qualifier.review.stats import Rate
from services.qualifier.review.tally import REASON_MIN_LEADS, Outcomes, Review


class RateView(BaseModel):
    """A proportion with its Wilson 95% interval and its lift against all leads."""

    value: float | None = Field(description="numerator / denominator; null without data")
    numerator: int
    denominator: int
    low: float | None = Field(description="Wilson 95% interval, lower bound")
    high: float | None = Field(description="Wilson 95% interval, upper bound")
    lift: float | None = Field(
        default=None,
        description="This rate over the same rate of all leads of the version (1.0: no "
        "different); null for the version's own row or without data",
    )


class OutcomesView(BaseModel):
    touched: int = Field(description="Leads of the version this criterion touched")
    sent_to_sales: int
    contacted: int
    briefed: int
    sal: int = Field(description="Accepted by sales (SAL)")
    rejected_by_sales: int
    rejection_reasons: dict[str, int] = Field(
        description="Leads by the reason sales gave, most frequent first; a reason fewer "
        f"than {REASON_MIN_LEADS} leads were given is counted as '(other reasons)'"
    )
    sql: int
    won: int
    lost: int
    revenue: str = Field(description="Payments on these leads, in the deployment's currency")
    lead_quality_rate: RateView = Field(description="SAL / (SAL + rejected by sales)")
    conversion_rate: RateView = Field(description="SAL / touched")
    win_rate: RateView = Field(description="won / (won + lost)")


class CriterionView(BaseModel):
    kind: Literal["reject", "required", "score", "threshold", "team"]
    key: str = Field(description="Where it sits in the definition: reject[0], score[2], …")
    label: str = Field(description="The criterion in words")
    points: int | None = Field(description="A score rule's points, a threshold's score")
    outcomes: OutcomesView


class RejectedBySalesView(BaseModel):
    lead_id: str
    team: str | None
    score: int
    criteria: list[str] = Field(description="The score rules that gave the lead its points")
    reasons: list[str] = Field(description="What sales said, as in rejection_reasons")


class CameBackView(BaseModel):
    lead_id: str
    kept_as: Literal["nurture", "processing", "rejected"]
    kept_because: str
    later_version: int = Field(description="The version that routed it to sales later")
    outcome: Literal["accepted", "won"]
    revenue: str


class VersionRatiosView(BaseModel):
    version: int
    leads: int = Field(description="Leads received in the range that this version took in")
    brief_rate: RateView = Field(description="briefed / contacted")
    lead_quality_rate: RateView = Field(description="SAL / (SAL + rejected by sales)")
    win_rate: RateView = Field(description="won / (won + lost)")


class ReviewView(BaseModel):
    version: int
    from_: datetime = Field(alias="from")
    to: datetime
    currency: str
    leads: int = Field(description="Leads received in the range whose first decision it made")
    all: OutcomesView = Field(description="Every lead of the version: the baseline of lift")
    criteria: list[CriterionView]
    rejected_by_sales: list[RejectedBySalesView] = Field(
        description="Leads it sent to sales that sales rejected, highest score first"
    )
    rejected_by_sales_total: int
    came_back: list[CameBackView] = Field(
        description="Leads it kept from sales that a later routing sent to sales and that "
        "were accepted or won; won first, then by revenue"
    )
    came_back_total: int
    versions: list[VersionRatiosView] = Field(
        description="Every version that took in leads received in the range"
    )

    model_config = {"populate_by_name": True}


def rate_view(rate: Rate, baseline: Rate | None = None) -> RateView:
    interval = rate.interval
    value = rate.value
    lift = rate.lift(baseline) if baseline is not None else None
    return RateView(
        value=None if value is None else round(value, 4),
        numerator=rate.numerator,
        denominator=rate.denominator,
        low=None if interval is None else round(interval[0], 4),
        high=None if interval is None else round(interval[1], 4),
        lift=None if lift is None else round(lift, 3),
    )


def outcomes_view(review: Review, o: Outcomes, *, baseline: Outcomes | None) -> OutcomesView:
    b = baseline
    return OutcomesView(
        touched=o.touched,
        sent_to_sales=o.sent_to_sales,
        contacted=o.contacted,
        briefed=o.briefed,
        sal=o.sal,
        rejected_by_sales=o.rejected_by_sales,
        rejection_reasons=review.reasons(o),
        sql=o.sql,
        won=o.won,
        lost=o.lost,
        revenue=f"{o.revenue:.2f}",
        lead_quality_rate=rate_view(o.quality, b.quality if b else None),
        conversion_rate=rate_view(o.conversion, b.conversion if b else None),
        win_rate=rate_view(o.win, b.win if b else None),
    )


def _ratios_view(v: VersionRatios) -> VersionRatiosView:
    return VersionRatiosView(
        version=v.version,
        leads=v.leads,
        brief_rate=rate_view(Rate(v.briefed, v.contacted)),
        lead_quality_rate=rate_view(Rate(v.sal, v.sal + v.rejected_by_sales)),
        win_rate=rate_view(Rate(v.won, v.won + v.lost)),
    )


def review_view(run: ReviewRun, currency: str) -> ReviewView:
    r = run.review
    return ReviewView(
        version=r.version,
        from_=run.since,
        to=run.until,
        currency=currency,
        leads=r.all.touched,
        all=outcomes_view(r, r.all, baseline=None),
        criteria=[
            CriterionView(
                kind=c.kind,
                key=c.key,
                label=c.label,
                points=c.points,
                outcomes=outcomes_view(r, r.outcomes[c.key], baseline=r.all),
            )
            for c in r.criteria
        ],
        rejected_by_sales=[
            RejectedBySalesView(
                lead_id=e.lead_id,
                team=e.team,
                score=e.score,
                criteria=e.criteria,
                reasons=e.reasons,
            )
            for e in r.rejected_by_sales()
        ],
        rejected_by_sales_total=r.rejected_total,
        came_back=[
            CameBackView(
                lead_id=e.lead_id,
                kept_as=e.kept_as,
                kept_because=e.kept_because,
                later_version=e.later_version,
                outcome=e.outcome,
                revenue=f"{e.revenue:.2f}",
            )
            for e in r.came_back()
        ],
        came_back_total=r.came_back_total,
        versions=[_ratios_view(v) for v in run.versions],
    )
