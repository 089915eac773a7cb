"""Qualifier's request and response models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from shared.events import Decision, LeadSnapshot


class StageEntry(BaseModel):
    stage: str
    at: datetime
    by: str | None = None
    reason: str | None = None


class LeadView(BaseModel):
    """A lead's current decision with its explanation, earlier decisions, and stage history."""

    lead: LeadSnapshot
    route: str
    stage: str
    decision: Decision
    decisions: list[Decision]
    stages: list[StageEntry]


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
