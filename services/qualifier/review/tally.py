"""The review of one definition version, tallied lead by lead. Pure.

A lead belongs to the review of the version that made its first decision (the one that
took it in), so each lead counts for one version. Which criteria touched it is read from
that version's decisions of it (a lead decided again after its brief may meet the
score rules then); a decision made when sales sent a lead back to nurture repeats the
last one and is no decision of the definition, so it is left out. What became of the
lead is its whole lifecycle: accepted (SAL), rejected by sales, SQL, won, lost, revenue.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.qualifier.definitions.model import LeadDefinition
from services.qualifier.review.stats import Rate
from services.qualifier.routing.evaluator import _words, describe

# `lifecycle.service.back_to_nurture` words its decisions so.
_SENT_BACK = "Back to nurture"
_KEPT_ROUTES = ("nurture", "processing", "rejected")
# A rejection reason is free text a salesperson typed and may name a person: it is shown
# only when at least this many leads of the review were given it (a reason picked from a
# list repeats; a one-off note does not), and never when it holds an address or a number.
REASON_MIN_LEADS = 3
OTHER_REASON = "(other reasons)"
_IDENTIFYING = re.compile(r"@|https?://|www\.|\d{4,}|\+\d")


@dataclass(frozen=True)
class DecisionFact:
    version: int
    route: str
    score: int
    # The stored decision (`shared.events.Decision` as JSON).
    decision: dict[str, Any]
    decided_at: datetime

    @property
    def sent_back(self) -> bool:
        reasons = self.decision.get("reasons") or [""]
        return str(reasons[0]).startswith(_SENT_BACK)


@dataclass(frozen=True)
class LeadFacts:
    """One lead: its decisions in order, and what became of it."""

    lead_id: str
    decisions: list[DecisionFact]
    stages: frozenset[str] = frozenset()  # reached through sales' feedback and stages
    rejection_reasons: tuple[str, ...] = ()
    revenue: Decimal = Decimal(0)
    contacted: bool = False
    briefed: bool = False


@dataclass
class Outcomes:
    """What became of the leads one criterion touched."""

    touched: int = 0
    sent_to_sales: int = 0
    contacted: int = 0
    briefed: int = 0
    sal: int = 0
    rejected_by_sales: int = 0
    sql: int = 0
    won: int = 0
    lost: int = 0
    revenue: Decimal = Decimal(0)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, lead: LeadFacts, *, sent_to_sales: bool) -> None:
        self.touched += 1
        self.sent_to_sales += sent_to_sales
        self.contacted += lead.contacted
        self.briefed += lead.briefed
        self.sal += "accepted" in lead.stages
        self.rejected_by_sales += "rejected" in lead.stages
        self.sql += "sql" in lead.stages
        self.won += "won" in lead.stages
        self.lost += "lost" in lead.stages
        self.revenue += lead.revenue
        self.reasons.update(set(normal_reason(r) for r in lead.rejection_reasons))

    @property
    def quality(self) -> Rate:
        """Lead quality: SAL / (SAL + rejected by sales), as the KPI's lead_quality_rate."""
        return Rate(self.sal, self.sal + self.rejected_by_sales)

    @property
    def conversion(self) -> Rate:
        """SAL among every lead touched, wherever it was routed."""
        return Rate(self.sal, self.touched)

    @property
    def win(self) -> Rate:
        """Won / (won + lost), as the KPI's win_rate."""
        return Rate(self.won, self.won + self.lost)

    @property
    def brief(self) -> Rate:
        """Briefed / contacted, as the KPI's brief_rate."""
        return Rate(self.briefed, self.contacted)


@dataclass(frozen=True)
class Criterion:
    kind: str  # reject | required | score | threshold | team
    key: str  # where it sits in the definition: reject[0], required.budget, team.smb...
    label: str
    points: int | None = None


@dataclass(frozen=True)
class RejectedBySales:
    lead_id: str
    team: str | None
    score: int
    criteria: list[str]
    reasons: list[str]


@dataclass(frozen=True)
class CameBack:
    lead_id: str
    kept_as: str
    kept_because: str
    later_version: int
    outcome: str  # accepted | won
    revenue: Decimal


def normal_reason(text: str) -> str:
    return " ".join(text.split()).lower()


def criteria_of(definition: LeadDefinition) -> list[Criterion]:
    """Every criterion of the definition a review reports on, in the definition's order."""
    routes = definition.routes
    return [
        *(
            Criterion("reject", f"reject[{i}]", f"{r.reason} ({describe(r.when)})")
            for i, r in enumerate(definition.reject)
        ),
        *(
            Criterion("required", f"required.{f}", f"{_words(f)} is missing")
            for f in definition.required
        ),
        *(
            Criterion("score", f"score[{i}]", r.label or describe(r.when), r.points)
            for i, r in enumerate(definition.score)
        ),
        Criterion(
            "threshold",
            "routes.sales_min_score",
            f"score reaches {routes.sales_min_score} (sales)",
            routes.sales_min_score,
        ),
        Criterion(
            "threshold",
            "routes.nurture_below_score",
            f"score below {routes.nurture_below_score} (nurture)",
            routes.nurture_below_score,
        ),
        *(Criterion("team", f"team.{t.team}", f"team {t.team}") for t in definition.sales_teams),
    ]


class Review:
    """Feed it the leads of the version one at a time; read the tallies when done."""

    def __init__(self, definition: LeadDefinition, version: int, *, list_limit: int) -> None:
        self.version = version
        self.criteria = criteria_of(definition)
        self.outcomes = {c.key: Outcomes() for c in self.criteria}
        self.all = Outcomes()
        self.list_limit = list_limit
        self._routes = definition.routes
        self._rejections = {
            f"Rejected: {r.reason} ({describe(r.when)}).": f"reject[{i}]"
            for i, r in reversed(list(enumerate(definition.reject)))
        }
        self._score_rules = [
            (r.points, r.label or describe(r.when), f"score[{i}]")
            for i, r in enumerate(definition.score)
        ]
        # The highest-scoring leads sales rejected and the richest that came back: a
        # bounded heap each, whatever the number of leads.
        self._rejected: list[tuple[int, str, RejectedBySales]] = []
        self._came_back: list[tuple[int, Decimal, str, CameBack]] = []
        self.rejected_total = 0
        self.came_back_total = 0

    def add(self, lead: LeadFacts) -> None:
        decisions = [d for d in lead.decisions if not d.sent_back]
        if not decisions or decisions[0].version != self.version:
            return
        mine = [d for d in decisions if d.version == self.version]
        to_sales = any(d.route == "sales" for d in mine)
        self.all.add(lead, sent_to_sales=to_sales)
        for key in sorted(set(k for d in mine for k in self._touched_by(d))):
            self.outcomes[key].add(lead, sent_to_sales=to_sales)
        if to_sales and "rejected" in lead.stages:
            self._add_rejected(lead, next(d for d in mine if d.route == "sales"))
        first = decisions[0]
        later = next((d for d in decisions[1:] if d.route == "sales"), None)
        if first.route in _KEPT_ROUTES and later is not None and "accepted" in lead.stages:
            self._add_came_back(lead, first, later)

    def _touched_by(self, d: DecisionFact) -> Iterator[str]:
        if d.route == "rejected":
            reasons = d.decision.get("reasons") or [""]
            rule = self._rejections.get(str(reasons[0]))
            if rule is not None:
                yield rule
            return
        missing = d.decision.get("missing") or []
        yield from (f"required.{f}" for f in missing)
        if missing or d.route not in ("sales", "nurture", "processing"):
            return
        # A decision's score items are its matching rules in the definition's order.
        items = [(i["points"], i["criterion"]) for i in d.decision.get("score_items") or []]
        at = 0
        for points, label, key in self._score_rules:
            if at < len(items) and items[at] == (points, label):
                yield key
                at += 1
        if d.score >= self._routes.sales_min_score:
            yield "routes.sales_min_score"
        if d.score < self._routes.nurture_below_score:
            yield "routes.nurture_below_score"
        team = d.decision.get("team")
        if d.route == "sales" and team:
            yield f"team.{team}"

    def _add_rejected(self, lead: LeadFacts, d: DecisionFact) -> None:
        self.rejected_total += 1
        items = d.decision.get("score_items") or []
        entry = RejectedBySales(
            lead_id=lead.lead_id,
            team=d.decision.get("team"),
            score=d.score,
            criteria=[f"{i['points']:+d} {i['criterion']}" for i in items],
            reasons=list(lead.rejection_reasons),  # raw until shown (`rejected_by_sales`)
        )
        _push(self._rejected, (d.score, lead.lead_id, entry), self.list_limit)

    def _add_came_back(self, lead: LeadFacts, first: DecisionFact, later: DecisionFact) -> None:
        self.came_back_total += 1
        missing = first.decision.get("missing") or []
        if first.route == "rejected":
            because = str((first.decision.get("reasons") or ["rejected"])[0])
        elif missing:
            because = "missing " + ", ".join(_words(str(f)) for f in missing)
        else:
            because = f"score {first.score} below {self._routes.sales_min_score}"
        entry = CameBack(
            lead_id=lead.lead_id,
            kept_as=first.route,
            kept_because=because,
            later_version=later.version,
            outcome="won" if "won" in lead.stages else "accepted",
            revenue=lead.revenue,
        )
        _push(
            self._came_back,
            (int("won" in lead.stages), lead.revenue, lead.lead_id, entry),
            self.list_limit,
        )

    def shown_reason(self, reason: str) -> str:
        """A rejection reason as the review shows it (see REASON_MIN_LEADS)."""
        text = normal_reason(reason)
        if self.all.reasons[text] < REASON_MIN_LEADS or _IDENTIFYING.search(text):
            return OTHER_REASON
        return text

    def reasons(self, outcomes: Outcomes) -> dict[str, int]:
        shown: Counter[str] = Counter()
        for text, count in outcomes.reasons.items():
            shown[self.shown_reason(text)] += count
        return dict(shown.most_common())

    def rejected_by_sales(self) -> list[RejectedBySales]:
        """The highest-scoring leads sales rejected first, reasons as shown."""
        ordered = [e for *_, e in sorted(self._rejected, reverse=True)]
        return [
            RejectedBySales(
                e.lead_id,
                e.team,
                e.score,
                e.criteria,
                sorted({self.shown_reason(r) for r in e.reasons}),
            )
            for e in ordered
        ]

    def came_back(self) -> list[CameBack]:
        """Won before accepted, then by revenue."""
        return [e for *_, e in sorted(self._came_back, reverse=True)]


def _push(heap: list[Any], item: tuple[Any, ...], limit: int) -> None:
    if len(heap) < limit:
        heapq.heappush(heap, item)
    elif limit and item > heap[0]:
        heapq.heapreplace(heap, item)
