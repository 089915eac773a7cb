"""A lead as the API shows it: its decision, earlier decisions, history and payments."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from services.qualifier.lifecycle.schemas import PaymentView
from shared.events import Decision, LeadSnapshot


class HistoryEntry(BaseModel):
    stage: str
    at: datetime
    by: str | None = None
    reason: str | None = None
    note: str | None = None
    event: str | None = None
    event_id: str | None = None


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
