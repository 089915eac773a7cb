"""What the fit sees of a lead: which of the definition's score rules it matches, the
values of the fields a new criterion may come from, its budget. Pure.

Only leads that reach scoring count (not rejected, nothing required missing, a service we
sell): the suggestion changes points and thresholds, never the steps before them.
Free text and contact details (name, e-mail, phone, company, message) are never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.qualifier.definitions.model import LeadDefinition
from services.qualifier.routing.evaluator import (
    FREE_EMAIL_PROVIDERS,
    field_value,
    is_missing,
    matches,
)
from shared.events import LeadSnapshot

# Fields a new criterion may come from (`<field>_in: [value]`), besides `fields.*`.
CATEGORICAL = (
    "role_in_purchase",
    "company_size",
    "timeframe",
    "industry",
    "source",
    "utm_source",
    "country",
)
# Flags a new criterion may come from (`<flag>: true`).
FLAGS = ("webinar_attended", "email_free_provider")
# A `fields.*` answer with more distinct values than this is free text, not a category.
MAX_FIELD_VALUES = 30


@dataclass(frozen=True)
class Row:
    """One lead as the fit sees it."""

    accepted: bool
    rules: list[int]  # indexes of the score rules it matches
    values: dict[str, str]  # field -> value (flags as "true"/"false")
    budget: float | None

    def wire(self) -> dict[str, Any]:
        return {"y": int(self.accepted), "r": self.rules, "v": self.values, "b": self.budget}

    @staticmethod
    def from_wire(data: dict[str, Any]) -> Row:
        return Row(bool(data["y"]), list(data["r"]), dict(data["v"]), data["b"])


def reaches_scoring(lead: LeadSnapshot, definition: LeadDefinition) -> bool:
    """The evaluator's steps before scoring, in its order: no reject rule, nothing
    required missing, a service we sell (or none asked)."""
    if any(matches(lead, rule.when) for rule in definition.reject):
        return False
    if any(is_missing(field_value(lead, f)) for f in definition.required):
        return False
    ours = {s.lower() for s in definition.our_services}
    asked = {s.lower() for s in lead.services}
    return not asked or bool(ours & asked)


def row_of(lead: LeadSnapshot, definition: LeadDefinition, *, accepted: bool) -> Row | None:
    """The lead as the fit sees it; None when it never reaches scoring."""
    if not reaches_scoring(lead, definition):
        return None
    values: dict[str, str] = {}
    for name in CATEGORICAL:
        value = field_value(lead, name)
        if isinstance(value, str) and value:
            values[name] = value.strip().lower()
    for name, answer in lead.fields.items():
        if answer and len(answer) <= 100:
            values[f"fields.{name}"] = answer.strip().lower()
    domain = field_value(lead, "email_domain")
    values["webinar_attended"] = "true" if lead.webinar_attended else "false"
    values["email_free_provider"] = "true" if domain in FREE_EMAIL_PROVIDERS else "false"
    return Row(
        accepted=accepted,
        rules=[i for i, rule in enumerate(definition.score) if matches(lead, rule.when)],
        values=values,
        budget=float(lead.budget) if lead.budget is not None else None,
    )
