"""Lifecycle calls' request models, and their answers."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from shared.events import Decision


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
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:\-]+$",
        description="Your id for this payment: the same id again is the same payment.",
    )


class NurtureIn(LifecycleIn):
    reason: str | None = Field(default=None, max_length=2000)


class LifecycleResult(BaseModel):
    lead_id: str
    route: str
    stage: str
    changed: bool = Field(description="False when the lead already was where the call asked.")
    event_ids: list[str]
    decision: Decision | None = Field(
        default=None, description="The new decision, when the call qualified the lead again."
    )


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
