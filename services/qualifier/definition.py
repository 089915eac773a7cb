"""The universal lead definition: the document marketing and sales agree on, and its checks.

A definition is YAML or JSON (see `default_definition.yaml`). Conditions are
mappings of predicates that must all hold; a predicate is `<field>_<operator>`:

- operators: `in`, `not_in`, `at_least`, `at_most`, `contains`, `matches`, `present`;
- fields: any lead field (`company`, `services`, `budget`, `country`, `utm_source`...),
  `email_domain`, or a free-form answer as `fields.<name>`;
- flags: `honeypot_filled`, `email_free_provider`, `webinar_attended` (true/false);
- combinators: `all: [...]`, `any: [...]`, `not: {...}`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

OPERATORS = ("not_in", "in", "at_least", "at_most", "contains", "matches", "present")
FLAGS = ("honeypot_filled", "email_free_provider", "webinar_attended")
COMBINATORS = ("all", "any", "not")
LEAD_FIELDS = (
    "source", "form_id", "webinar_id", "name", "email", "phone", "company", "job_title",
    "industry", "company_size", "country", "region", "message", "services", "budget",
    "timeframe", "role_in_purchase", "page_url", "referrer", "email_domain",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
)  # fmt: skip
NUMERIC_FIELDS = ("budget",)


class Predicate(BaseModel):
    """One parsed test of a lead field, e.g. `budget_at_least: 150000`."""

    field: str
    operator: str
    value: Any


def parse_predicate_key(key: str) -> tuple[str, str]:
    """Split `role_in_purchase_in` into (`role_in_purchase`, `in`); raise ValueError if unknown."""
    for op in OPERATORS:
        suffix = f"_{op}"
        if key.endswith(suffix) and len(key) > len(suffix):
            field = key[: -len(suffix)]
            if field in LEAD_FIELDS or (field.startswith("fields.") and len(field) > 7):
                return field, op
    raise ValueError(
        f"unknown condition {key!r}: expected <field>_<operator> with an operator of "
        f"{', '.join(OPERATORS)}, one of {', '.join(FLAGS + COMBINATORS)}, and a field of "
        f"{', '.join(LEAD_FIELDS)} or fields.<name>"
    )


def check_condition(cond: Any, path: str = "when") -> None:
    """Validate a condition mapping, naming the first bad key and its place."""
    if not isinstance(cond, dict) or not cond:
        raise ValueError(f"{path}: a condition is a non-empty mapping of predicates")
    for key, value in cond.items():
        where = f"{path}.{key}"
        if key in FLAGS:
            if not isinstance(value, bool):
                raise ValueError(f"{where}: expected true or false")
        elif key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"{where}: expected a non-empty list of conditions")
            for i, sub in enumerate(value):
                check_condition(sub, f"{where}[{i}]")
        elif key == "not":
            check_condition(value, where)
        else:
            field, op = parse_predicate_key(key)
            _check_operand(field, op, value, where)


def _check_operand(field: str, op: str, value: Any, where: str) -> None:
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise ValueError(f"{where}: expected a non-empty list of values")
    elif op in ("at_least", "at_most"):
        try:
            Decimal(str(value))
        except (InvalidOperation, ValueError) as exc:
            raise ValueError(f"{where}: expected a number, got {value!r}") from exc
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
    elif op == "matches":
        try:
            re.compile(str(value))
        except re.error as exc:
            raise ValueError(f"{where}: not a valid regular expression: {exc}") from exc
    elif op == "present":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false")
    elif op == "contains" and (isinstance(value, (list, dict)) or value is None):
        raise ValueError(f"{where}: expected one value")


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RejectRule(_Doc):
    reason: str = Field(min_length=1)
    when: dict[str, Any]

    @field_validator("when")
    @classmethod
    def _valid(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_condition(v)
        return v


class ScoreRule(_Doc):
    points: int
    when: dict[str, Any]
    label: str | None = None

    @field_validator("when")
    @classmethod
    def _valid(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_condition(v)
        return v


class Partner(_Doc):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    name: str
    services: list[str] = Field(min_length=1)
    regions: list[str] = Field(default_factory=lambda: ["*"])
    webhook_url: str | None = None


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


class SalesTeam(_Doc):
    team: str = Field(min_length=1)
    when: dict[str, Any] | None = None
    assign: Assignment = Assignment.round_robin
    members: list[str] = Field(min_length=1)
    sla_hours: float = Field(gt=0, le=24 * 30)

    @field_validator("when")
    @classmethod
    def _valid(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            check_condition(v)
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
                raise ValueError(f"unknown required field {field!r}")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> LeadDefinition:
        ids = [p.id for p in self.partners]
        if len(ids) != len(set(ids)):
            raise ValueError("partner ids must be unique")
        teams = [t.team for t in self.sales_teams]
        if len(teams) != len(set(teams)):
            raise ValueError("sales team names must be unique")
        return self
