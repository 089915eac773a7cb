"""Intake's request and response models."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.events import LeadSnapshot, LeadSource

Short = Annotated[str, StringConstraints(max_length=200)]
Medium = Annotated[str, StringConstraints(max_length=2000)]


class UtmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Short | None = None
    medium: Short | None = None
    campaign: Short | None = None
    term: Short | None = None
    content: Short | None = None


class LeadIn(BaseModel):
    """One lead as a server posts it. Unknown fields are refused; free answers go in `fields`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    source: LeadSource = LeadSource.api
    form_id: Short | None = None
    webinar_id: Short | None = None
    name: Short | None = None
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    phone: Annotated[str, StringConstraints(max_length=40)] | None = None
    company: Short | None = None
    job_title: Short | None = None
    industry: Short | None = None
    company_size: Annotated[str, StringConstraints(max_length=50)] | None = None
    country: Annotated[str, StringConstraints(max_length=60)] | None = None
    region: Short | None = None
    message: Annotated[str, StringConstraints(max_length=10000)] | None = None
    services: Annotated[list[Short], Field(max_length=50)] = Field(default_factory=list)
    budget: Annotated[Decimal, Field(ge=0, le=Decimal("1e15"), decimal_places=2)] | None = None
    timeframe: Annotated[str, StringConstraints(max_length=50)] | None = None
    role_in_purchase: Annotated[str, StringConstraints(max_length=50)] | None = None
    consent: bool = False
    consent_text_version: Annotated[str, StringConstraints(max_length=50)] | None = None
    utm: UtmIn = Field(default_factory=UtmIn)
    page_url: Medium | None = None
    referrer: Medium | None = None
    occurred_at: datetime | None = None
    fields: Annotated[dict[Short, Medium], Field(max_length=100)] = Field(default_factory=dict)


class LeadAccepted(BaseModel):
    lead_id: str
    status: Literal["accepted", "duplicate"]
    duplicate_of: str | None = None


class StoredLead(BaseModel):
    """What intake holds for one lead."""

    lead: LeadSnapshot
    erased: bool = False
