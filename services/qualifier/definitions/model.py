"""The universal lead definition: the document marketing and sales agree on, and its checks.

A definition is YAML or JSON (see `default_definition.yaml`, and `docs/lead-definition.md`
for the people who write it). Its conditions (`conditions.py`) are checked here; a
definition written now (`NEW`) must hold only patterns RE2 runs (`patterns.py`).
"""

from __future__ import annotations

from datetime import time
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from services.qualifier.definitions.conditions import LEAD_FIELDS, check_condition, patterns_in
from services.qualifier.definitions.patterns import MAX_PATTERNS

# Validation context for a definition being written now (an upload, the initial one):
# checks added after versions were stored apply to it, never to what is stored.
NEW: dict[str, bool] = {"new": True}


def _is_new(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("new"))


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RejectRule(_Doc):
    reason: str = Field(min_length=1)
    when: dict[str, Any]

    @field_validator("when")
    @classmethod
    def _valid(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        check_condition(v, new=_is_new(info))
        return v


class ScoreRule(_Doc):
    points: int
    when: dict[str, Any]
    # How the criterion reads in a decision's reasons; generated from `when` if absent.
    label: str | None = None

    @field_validator("when")
    @classmethod
    def _valid(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        check_condition(v, new=_is_new(info))
        return v


class Partner(_Doc):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    name: str
    services: list[str] = Field(min_length=1)
    regions: list[str] = Field(default_factory=lambda: ["*"])
    # Where the partner gets its leads (signed POST); without it, the partner reads
    # `leads.routed` itself or is sent leads by hand.
    webhook_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        return v


class Routes(_Doc):
    sales_min_score: int
    nurture_below_score: int

    @model_validator(mode="after")
    def _ordered(self) -> Routes:
        if self.nurture_below_score > self.sales_min_score:
            raise ValueError("nurture_below_score must not be above sales_min_score")
        return self


class Assignment(StrEnum):
    round_robin = "round_robin"
    least_loaded = "least_loaded"


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"


WEEKDAYS = tuple(Weekday)
_CLOCK = r"^([01]\d|2[0-3]):[0-5]\d$"


class WorkingHours(_Doc):
    """When a team works: the SLA clock runs only inside these hours."""

    timezone: str = "UTC"
    days: list[Weekday] = Field(
        default_factory=lambda: [Weekday.mon, Weekday.tue, Weekday.wed, Weekday.thu, Weekday.fri],
        min_length=1,
    )
    # Quoted "HH:MM": YAML 1.1 reads an unquoted 9:30 as the number 570.
    start: str = Field(default="09:00", pattern=_CLOCK)
    end: str = Field(default="18:00", pattern=_CLOCK)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name such as Europe/Moscow)"
            ) from None
        return v

    @model_validator(mode="after")
    def _start_before_end(self) -> WorkingHours:
        if self.opens >= self.closes:
            raise ValueError("start must be before end (shifts past midnight are not supported)")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def opens(self) -> time:
        return time.fromisoformat(self.start)

    @property
    def closes(self) -> time:
        return time.fromisoformat(self.end)

    @property
    def weekdays(self) -> frozenset[int]:
        """Python weekday numbers (Monday 0) of the working days."""
        return frozenset(WEEKDAYS.index(d) for d in self.days)


class SalesTeam(_Doc):
    team: str = Field(min_length=1)
    when: dict[str, Any] | None = None
    assign: Assignment = Assignment.round_robin
    members: list[str] = Field(min_length=1)
    sla_hours: float = Field(gt=0, le=24 * 30)
    # Without working hours the SLA clock runs around the clock.
    working_hours: WorkingHours | None = None

    @field_validator("when")
    @classmethod
    def _valid(cls, v: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if v is not None:
            check_condition(v, new=_is_new(info))
        return v

    @field_validator("members")
    @classmethod
    def _unique_members(cls, v: list[str]) -> list[str]:
        if len(v) != len(set(v)):
            raise ValueError("a member is listed twice")
        if any(not m.strip() for m in v):
            raise ValueError("a member name is empty")
        return v


class LeadDefinition(_Doc):
    """What a lead is, as marketing and sales agreed: parsed and checked before it is stored."""

    name: str = Field(min_length=1)
    description: str | None = None
    required: list[str] = Field(default_factory=list)
    reject: list[RejectRule] = Field(default_factory=list)
    our_services: list[str] = Field(default_factory=list)
    partners: list[Partner] = Field(default_factory=list)
    score: list[ScoreRule] = Field(default_factory=list)
    routes: Routes
    sales_teams: list[SalesTeam] = Field(min_length=1)

    @field_validator("required")
    @classmethod
    def _known_fields(cls, v: list[str]) -> list[str]:
        for field in v:
            if field not in LEAD_FIELDS and not field.startswith("fields."):
                raise ValueError(
                    f"unknown required field {field!r}: use one of {', '.join(LEAD_FIELDS)} "
                    "or fields.<name>"
                )
        return v

    @field_validator("partners")
    @classmethod
    def _unique_partners(cls, v: list[Partner]) -> list[Partner]:
        ids = [p.id for p in v]
        if len(ids) != len(set(ids)):
            raise ValueError("partner ids must be unique")
        return v

    @field_validator("sales_teams")
    @classmethod
    def _unique_teams(cls, v: list[SalesTeam]) -> list[SalesTeam]:
        teams = [t.team for t in v]
        if len(teams) != len(set(teams)):
            raise ValueError("sales team names must be unique")
        return v

    @model_validator(mode="after")
    def _few_patterns(self, info: ValidationInfo) -> LeadDefinition:
        if _is_new(info):
            count = len(self.patterns())
            if count > MAX_PATTERNS:
                raise ValueError(
                    f"{count} regular expressions (_matches); a definition has at most "
                    f"{MAX_PATTERNS}, each tried on every lead"
                )
        return self

    def patterns(self) -> list[str]:
        """Every `_matches` value of the definition's conditions."""
        conditions = [r.when for r in self.reject] + [r.when for r in self.score]
        conditions += [t.when for t in self.sales_teams if t.when is not None]
        return [p for cond in conditions for p in patterns_in(cond)]

    def partner(self, partner_id: str) -> Partner | None:
        return next((p for p in self.partners if p.id == partner_id), None)

    def team(self, name: str) -> SalesTeam | None:
        return next((t for t in self.sales_teams if t.team == name), None)
