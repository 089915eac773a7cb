"""Sales members and their absences, in and out of the API."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class AbsenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    absent: bool
    until: AwareDatetime | None = Field(default=None, description="Back at this time.")
    note: str | None = Field(default=None, max_length=500)


class MemberView(BaseModel):
    member: str
    teams: list[str]
    absent: bool
    absent_until: datetime | None = None
    note: str | None = None
    open_leads: int
