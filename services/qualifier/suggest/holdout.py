"""The suggestion's back-test beside the active version's, on the held-out (newer) leads.
Pure.

For each version: the leads it sends to sales, how many of those sales accepted and
rejected (its acceptance rate), the deals won and the revenue among them, and what it
would have kept from sales that sales accepted (with the deals and revenue among those).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from services.qualifier.definitions.backtest import FeedbackTally, Judged, SalesFeedback
from services.qualifier.routing.evaluator import evaluate
from shared.events import LeadSnapshot, Route


@dataclass
class SideTally:
    to_sales: int = 0
    won_to_sales: int = 0
    revenue_to_sales: Decimal = Decimal(0)
    kept_won: int = 0
    kept_revenue: Decimal = Decimal(0)
    feedback: FeedbackTally = field(default_factory=FeedbackTally)

    def add(
        self, route: Route, feedback: SalesFeedback | None, won: bool, revenue: Decimal
    ) -> None:
        if route is Route.sales:
            self.to_sales += 1
            self.won_to_sales += won
            self.revenue_to_sales += revenue
        elif feedback == "accepted":
            self.kept_won += won
            self.kept_revenue += revenue
        if feedback is not None:
            self.feedback.add(feedback, route.value)

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / (accepted + rejected) among the leads it sends to sales."""
        f = self.feedback
        answered = f.accepted_to_sales + f.rejected_to_sales
        return round(f.accepted_to_sales / answered, 4) if answered else None


@dataclass
class SideBySide:
    """Feed it held-out leads one at a time."""

    suggested: Judged
    active: Judged
    leads: int = 0
    suggested_tally: SideTally = field(default_factory=SideTally)
    active_tally: SideTally = field(default_factory=SideTally)

    def add(
        self, lead: LeadSnapshot, feedback: SalesFeedback | None, won: bool, revenue: Decimal
    ) -> None:
        self.leads += 1
        for judged, tally in (
            (self.suggested, self.suggested_tally),
            (self.active, self.active_tally),
        ):
            # As of the lead's arrival, nobody absent: the route is what the back-test compares.
            route = evaluate(
                lead, judged.definition, judged.version, now=lead.received_at
            ).decision.route
            tally.add(route, feedback, won, revenue)
