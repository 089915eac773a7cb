"""Back-testing a definition version on stored leads, against the active one and sales. Pure.

Both versions judge the same stored lead (its snapshot as it stands now, brief answers
merged in), so a difference in routes is the definitions' difference, nothing else.
Agreement with sales: a lead sales accepted agrees with a version that routes it to
sales; a lead sales rejected agrees with a version that does not.

A back-test holds a database connection and a CPU while it runs, so it is bounded
(`Bounds`): by the leads it judges and by a time budget; past either it is refused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from services.qualifier.definitions.model import LeadDefinition
from services.qualifier.routing.evaluator import evaluate
from shared.events import Decision, LeadSnapshot, Route

ROUTES = tuple(r.value for r in Route)
SalesFeedback = Literal["accepted", "rejected"]


class BacktestRefused(ValueError):
    """The back-test asks for more than its bounds allow; the message says which bound."""

    def __init__(self, kind: Literal["too_many_leads", "over_budget"], message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class Bounds:
    max_leads: int | None = None
    budget_seconds: float | None = None

    def check(self, *, leads: int, elapsed: float) -> None:
        """Before judging more: `leads` read so far (the next page too), `elapsed` seconds."""
        if self.max_leads is not None and leads > self.max_leads:
            raise BacktestRefused(
                "too_many_leads",
                f"the range holds more than {self.max_leads} leads, the most a back-test "
                "judges: narrow it (from, to)",
            )
        if self.budget_seconds is not None and elapsed > self.budget_seconds:
            raise BacktestRefused(
                "over_budget",
                f"the back-test had not finished after {self.budget_seconds:g} s, its time "
                "budget: narrow the range (from, to)",
            )


@dataclass(frozen=True)
class Judged:
    definition: LeadDefinition
    version: int


@dataclass(frozen=True)
class RouteChange:
    lead_id: str
    from_route: str
    to_route: str
    from_score: int
    to_score: int
    reasons: list[str]
    sales_feedback: SalesFeedback | None


@dataclass
class FeedbackTally:
    """How one version routes the leads sales gave feedback on."""

    accepted_to_sales: int = 0
    accepted_elsewhere: int = 0
    rejected_to_sales: int = 0
    rejected_elsewhere: int = 0
    accepted_routes: Counter[str] = field(default_factory=Counter)
    rejected_routes: Counter[str] = field(default_factory=Counter)

    def add(self, feedback: SalesFeedback, route: str) -> None:
        to_sales = route == Route.sales.value
        if feedback == "accepted":
            self.accepted_routes[route] += 1
            if to_sales:
                self.accepted_to_sales += 1
            else:
                self.accepted_elsewhere += 1
        else:
            self.rejected_routes[route] += 1
            if to_sales:
                self.rejected_to_sales += 1
            else:
                self.rejected_elsewhere += 1

    @property
    def agreeing(self) -> int:
        return self.accepted_to_sales + self.rejected_elsewhere

    @property
    def judged(self) -> int:
        return self.agreeing + self.accepted_elsewhere + self.rejected_to_sales

    @property
    def agreement_rate(self) -> float | None:
        return round(self.agreeing / self.judged, 4) if self.judged else None


@dataclass
class Backtest:
    """Feed it stored leads one at a time; read the result when done."""

    tested: Judged
    active: Judged
    change_limit: int = 100
    leads: int = 0
    tested_routes: Counter[str] = field(default_factory=Counter)
    active_routes: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    changes: list[RouteChange] = field(default_factory=list)
    changed: int = 0
    tested_feedback: FeedbackTally = field(default_factory=FeedbackTally)
    active_feedback: FeedbackTally = field(default_factory=FeedbackTally)

    def add(self, lead: LeadSnapshot, feedback: SalesFeedback | None) -> None:
        new = self._decide(self.tested, lead)
        old = self._decide(self.active, lead)
        self.leads += 1
        self.tested_routes[new.route.value] += 1
        self.active_routes[old.route.value] += 1
        if new.route is not old.route:
            self.changed += 1
            self.transitions[(old.route.value, new.route.value)] += 1
            if len(self.changes) < self.change_limit:
                self.changes.append(
                    RouteChange(
                        lead_id=lead.lead_id,
                        from_route=old.route.value,
                        to_route=new.route.value,
                        from_score=old.score,
                        to_score=new.score,
                        reasons=new.reasons,
                        sales_feedback=feedback,
                    )
                )
        if feedback is not None:
            self.tested_feedback.add(feedback, new.route.value)
            self.active_feedback.add(feedback, old.route.value)

    @staticmethod
    def _decide(judged: Judged, lead: LeadSnapshot) -> Decision:
        # Decided as of the lead's arrival, with nobody absent and no counters moved:
        # assignment does not change a route, and a back-test must change nothing.
        return evaluate(lead, judged.definition, judged.version, now=lead.received_at).decision


def route_counts(counter: Counter[str]) -> dict[str, int]:
    return {route: counter.get(route, 0) for route in ROUTES}
