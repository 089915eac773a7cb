"""Qualifier's request and response models."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from shared.events import Decision, LeadSnapshot

# Requests ---------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LifecycleIn(_In):
    """What every lifecycle call may say: when it happened and who did it."""

    at: AwareDatetime | None = Field(
        default=None,
        description="When it happened (RFC 3339 with offset); default now. Not in the future, "
        "not before the lead was received.",
    )
    by: str | None = Field(
        default=None, max_length=200, description="Who did it; default the API client's name."
    )


class ContactIn(LifecycleIn):
    pass


class BriefIn(LifecycleIn):
    answers: dict[str, Any] = Field(
        min_length=1,
        description="Answers: company, job_title, industry, company_size, country, region, "
        "services, budget, timeframe, role_in_purchase; any other key (or `fields`) is kept "
        "in the lead's `fields`.",
    )


class FeedbackIn(LifecycleIn):
    decision: Literal["accepted", "rejected"]
    reason: str | None = Field(default=None, max_length=2000, description="Required to reject.")


class StageIn(LifecycleIn):
    stage: Literal["sql", "demo_held", "proposal_sent", "contract_sent", "won", "lost"]
    reason: str | None = Field(default=None, max_length=2000, description="Required for lost.")


class PaymentIn(LifecycleIn):
    amount: Decimal = Field(gt=0, max_digits=18, decimal_places=2)
    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="Default: the deployment's currency."
    )
    payment_id: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$",
        description="Your id for this payment: the same id again is the same payment.",
    )  # fmt: skip


class NurtureIn(LifecycleIn):
    reason: str | None = Field(default=None, max_length=2000)


class AbsenceIn(_In):
    absent: bool
    until: AwareDatetime | None = Field(default=None, description="Back at this time.")
    note: str | None = Field(default=None, max_length=500)


class BacktestIn(_In):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: datetime | None = Field(
        default=None, alias="from", description="Leads received from (default: 90 days ago)."
    )
    to: datetime | None = Field(default=None, description="Leads received before (default: now).")
    limit: int = Field(default=100, ge=0, le=1000, description="How many changed leads to list.")


# Responses --------------------------------------------------------------------------------


class HistoryEntry(BaseModel):
    stage: str
    at: datetime
    by: str | None = None
    reason: str | None = None
    note: str | None = None
    event: str | None = None
    event_id: str | None = None


# The stage history was called `stages` before it held other steps; the name stays.
StageEntry = HistoryEntry


class PaymentView(BaseModel):
    payment_id: str
    lead_id: str
    amount: Decimal
    currency: str
    at: datetime
    by: str | None = None
    event_id: str

    @field_serializer("amount")
    def _money(self, v: Decimal) -> str:
        return str(v)


class LeadView(BaseModel):
    """A lead's current decision with its explanation, earlier decisions, and history."""

    lead: LeadSnapshot
    route: str
    stage: str
    team: str | None = None
    assignee: str | None = None
    sla_due_at: datetime | None = None
    feedback: str | None = None
    first_contacted_at: datetime | None = None
    erased: bool = False
    decision: Decision
    decisions: list[Decision]
    stages: list[HistoryEntry]
    payments: list[PaymentView] = Field(default_factory=list)


class LifecycleResult(BaseModel):
    lead_id: str
    route: str
    stage: str
    changed: bool = Field(description="False when the lead already was where the call asked.")
    event_ids: list[str]
    decision: Decision | None = Field(
        default=None, description="The new decision, when the call qualified the lead again."
    )


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


class DeliveryView(BaseModel):
    id: str
    lead_id: str
    partner_id: str
    event_id: str
    event_type: str = Field(
        default="lead.routed", description="lead.routed, or lead.erased after an erasure"
    )
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None = None
    last_outcome: str | None = Field(
        default=None,
        description="The last attempt's outcome: http_2xx, http_3xx, http_4xx, http_5xx, "
        "timeout, refused_address, refused_scheme, tls_error, connect_error, protocol_error, "
        "no_secret, erased. Nothing the receiver answered is kept.",
    )
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None = None


class MemberView(BaseModel):
    member: str
    teams: list[str]
    absent: bool
    absent_until: datetime | None = None
    note: str | None = None
    open_leads: int
