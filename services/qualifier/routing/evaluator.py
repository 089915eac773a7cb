"""Evaluating a lead against a definition: a pure function from (lead, definition) to a decision.

Order (DESIGN.md): reject rules, required information, what we sell against what
partners sell, score against thresholds, then the sales team and its assignee.
Every decision names the version that made it and gives its reasons in words.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from services.qualifier.definitions.conditions import parse_predicate_key
from services.qualifier.definitions.model import Assignment, LeadDefinition, Partner, SalesTeam
from services.qualifier.definitions.patterns import pattern_matches
from services.qualifier.sla.working_hours import due_at
from shared.events import Decision, LeadSnapshot, Route, ScoreItem

log = logging.getLogger(__name__)

FREE_EMAIL_PROVIDERS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "icloud.com",
        "me.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "gmx.com",
        "gmx.de",
        "yandex.ru",
        "ya.ru",
        "yandex.com",
        "mail.ru",
        "inbox.ru",
        "list.ru",
        "bk.ru",
        "rambler.ru",
        "zoho.com",
    }
)


@dataclass(frozen=True)
class AssignmentState:
    """What the assignment rules need to know about sales: counters, loads, absences."""

    round_robin_next: Mapping[str, int] = field(default_factory=dict)
    open_leads: Mapping[str, int] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Evaluation:
    decision: Decision
    # The team whose round-robin counter moved, and its next index, for the caller to store.
    round_robin_advance: tuple[str, int] | None = None


def field_value(lead: LeadSnapshot, name: str) -> Any:
    """A lead field by the name a definition uses."""
    if name.startswith("fields."):
        return lead.fields.get(name[len("fields.") :])
    if name == "email_domain":
        return lead.email.rsplit("@", 1)[1].lower() if lead.email and "@" in lead.email else None
    if name.startswith("utm_"):
        return getattr(lead.utm, name[len("utm_") :])
    value = getattr(lead, name)
    return value.value if hasattr(value, "value") and not isinstance(value, Decimal) else value


def is_missing(value: Any) -> bool:
    return value is None or value == "" or value == []


def _as_number(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _norm(value: Any) -> str:
    return str(value).strip().lower()


def _predicate(lead: LeadSnapshot, key: str, expected: Any) -> bool:
    if key == "honeypot_filled":
        return lead.honeypot_filled is expected
    if key == "webinar_attended":
        return lead.webinar_attended is expected
    if key == "email_free_provider":
        domain = field_value(lead, "email_domain")
        return (domain in FREE_EMAIL_PROVIDERS) is expected if domain else expected is False
    name, op = parse_predicate_key(key)
    value = field_value(lead, name)
    values = value if isinstance(value, list) else ([] if value is None else [value])
    if op == "present":
        return (not is_missing(value)) is expected
    if op in ("in", "not_in"):
        wanted = {_norm(v) for v in expected}
        hit = any(_norm(v) in wanted for v in values)
        return hit if op == "in" else not hit
    if op in ("at_least", "at_most"):
        number = _as_number(value) if value is not None and not isinstance(value, list) else None
        if number is None:
            return False
        bound = Decimal(str(expected))
        return number >= bound if op == "at_least" else number <= bound
    if op == "contains":
        needle = _norm(expected)
        if isinstance(value, list):
            return any(_norm(v) == needle for v in value)
        return value is not None and needle in _norm(value)
    if op == "matches":
        return any(pattern_matches(str(expected), str(v)) for v in values)
    raise ValueError(f"unknown operator {op!r}")  # definition validation prevents this


def matches(lead: LeadSnapshot, cond: Mapping[str, Any]) -> bool:
    """True when every predicate of the condition holds for the lead."""
    for key, expected in cond.items():
        if key == "all":
            ok = all(matches(lead, sub) for sub in expected)
        elif key == "any":
            ok = any(matches(lead, sub) for sub in expected)
        elif key == "not":
            ok = not matches(lead, expected)
        else:
            ok = _predicate(lead, key, expected)
        if not ok:
            return False
    return True


_OP_WORDS = {
    "in": "is",
    "not_in": "is not",
    "at_least": "is at least",
    "at_most": "is at most",
    "contains": "contains",
    "matches": "matches",
}


def _words(name: str) -> str:
    return name.removeprefix("fields.").replace("_", " ")


def describe(cond: Mapping[str, Any]) -> str:
    """A condition in words a salesperson reads without the definition at hand."""
    parts: list[str] = []
    for key, expected in cond.items():
        if key == "all":
            parts.append("(" + " and ".join(describe(c) for c in expected) + ")")
        elif key == "any":
            parts.append("(" + " or ".join(describe(c) for c in expected) + ")")
        elif key == "not":
            parts.append(f"not ({describe(expected)})")
        elif key == "honeypot_filled":
            parts.append(
                "the hidden anti-spam field was filled"
                if expected
                else "the hidden anti-spam field was empty"
            )
        elif key == "email_free_provider":
            parts.append("e-mail at a free provider" if expected else "a corporate e-mail")
        elif key == "webinar_attended":
            parts.append("attended the webinar" if expected else "did not attend the webinar")
        else:
            name, op = parse_predicate_key(key)
            if op == "present":
                parts.append(f"{_words(name)} {'is given' if expected else 'is missing'}")
            elif op in ("in", "not_in"):
                shown = " or ".join(_words(str(v)) for v in expected)
                parts.append(f"{_words(name)} {_OP_WORDS[op]} {shown}")
            else:
                parts.append(f"{_words(name)} {_OP_WORDS[op]} {expected}")
    return " and ".join(parts)


def _partner_for(
    services: list[str], country: str | None, partners: list[Partner]
) -> Partner | None:
    for partner in partners:
        sells = {s.lower() for s in partner.services}
        region_ok = "*" in partner.regions or (
            country is not None and country.upper() in {r.upper() for r in partner.regions}
        )
        if region_ok and sells.intersection(services):
            return partner
    return None


def _team_for(lead: LeadSnapshot, teams: list[SalesTeam]) -> SalesTeam:
    for team in teams:
        if team.when is None or matches(lead, team.when):
            return team
    return teams[-1]  # the last team is the catch-all when none matches


def _assignee(
    team: SalesTeam, state: AssignmentState, skip: frozenset[str] = frozenset()
) -> tuple[str | None, tuple[str, int] | None]:
    unavailable = state.absent | skip
    present = [m for m in team.members if m not in unavailable]
    if not present:
        return None, None
    if team.assign is Assignment.least_loaded:
        return min(present, key=lambda m: (state.open_leads.get(m, 0), present.index(m))), None
    start = state.round_robin_next.get(team.team, 0)
    # Walk the full member list from the counter, skipping absent members.
    for step in range(len(team.members)):
        index = (start + step) % len(team.members)
        member = team.members[index]
        if member not in unavailable:
            return member, (team.team, (index + 1) % len(team.members))
    return None, None


@dataclass(frozen=True)
class Reassignment:
    assignee: str | None
    sla_due_at: datetime
    round_robin_advance: tuple[str, int] | None = None


def reassign(
    team: SalesTeam, current: str | None, *, now: datetime, assignment: AssignmentState
) -> Reassignment:
    """Who takes a lead its assignee did not answer in time: the team's rule, minus that person.

    When nobody else is there, the lead stays with whoever has it (None when no one
    does) and the clock starts again, so the breach is reported once per deadline.
    """
    skip = frozenset({current}) if current else frozenset()
    assignee, advance = _assignee(team, assignment, skip)
    return Reassignment(
        assignee=assignee or current,
        sla_due_at=due_at(now, team.sla_hours, team.working_hours),
        round_robin_advance=advance,
    )


def evaluate(
    lead: LeadSnapshot,
    definition: LeadDefinition,
    version: int,
    *,
    now: datetime,
    assignment: AssignmentState | None = None,
) -> Evaluation:
    """Decide where a lead goes and why. Pure: the same inputs give the same decision."""
    assignment = assignment or AssignmentState()

    def decided(route: Route, reasons: list[str], **extra: Any) -> Evaluation:
        advance = extra.pop("advance", None)
        decision = Decision(
            route=route,
            definition_version=version,
            reasons=reasons,
            decided_at=now,
            score=extra.pop("score", 0),
            **extra,
        )
        return Evaluation(decision=decision, round_robin_advance=advance)

    for rule in definition.reject:
        if matches(lead, rule.when):
            return decided(Route.rejected, [f"Rejected: {rule.reason} ({describe(rule.when)})."])

    missing = [f for f in definition.required if is_missing(field_value(lead, f))]
    if missing:
        named = ", ".join(_words(f) for f in missing)
        return decided(
            Route.processing,
            [f"Sales needs to know {named} first: make a first contact and fill in a brief."],
            missing=missing,
        )

    ours = {s.lower() for s in definition.our_services}
    asked = [s.lower() for s in lead.services]
    if asked and not ours.intersection(asked):
        partner = _partner_for(asked, lead.country, definition.partners)
        wanted = ", ".join(_words(s) for s in asked)
        if partner is not None:
            return decided(
                Route.partner,
                [
                    f"Asks for {wanted}, which we do not sell; {partner.name} does"
                    f"{' in ' + lead.country if lead.country else ''}."
                ],
                partner=partner.id,
            )
        return decided(
            Route.rejected, [f"Asks for {wanted}, which neither we nor our partners sell here."]
        )

    items = [
        ScoreItem(points=rule.points, criterion=rule.label or describe(rule.when))
        for rule in definition.score
        if matches(lead, rule.when)
    ]
    score = sum(i.points for i in items)
    why = "; ".join(f"{i.points:+d} {i.criterion}" for i in items) or "no scoring criterion matched"
    routes = definition.routes
    if score < routes.nurture_below_score:
        return decided(
            Route.nurture,
            [
                f"Score {score} is below {routes.nurture_below_score}: marketing keeps warming "
                f"this lead up ({why})."
            ],
            score=score,
            score_items=items,
        )
    if score < routes.sales_min_score:
        return decided(
            Route.processing,
            [
                f"Score {score} lies between {routes.nurture_below_score} and "
                f"{routes.sales_min_score}: a first contact should tell ({why})."
            ],
            score=score,
            score_items=items,
        )

    team = _team_for(lead, definition.sales_teams)
    assignee, advance = _assignee(team, assignment)
    reasons = [f"Score {score} reaches {routes.sales_min_score} for sales ({why})."]
    within = f"answer within {team.sla_hours:g} {'working ' if team.working_hours else ''}hours"
    reasons.append(
        f"Team {team.team}, assigned to {assignee} by {team.assign.value.replace('_', ' ')}; "
        f"{within}."
        if assignee
        else f"Team {team.team}: every member is absent, the team lead must assign it; {within}."
    )
    return decided(
        Route.sales,
        reasons,
        score=score,
        score_items=items,
        team=team.team,
        assignee=assignee,
        sla_due_at=due_at(now, team.sla_hours, team.working_hours),
        advance=advance,
    )
