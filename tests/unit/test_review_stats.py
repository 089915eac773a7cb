"""The review's statistics and its tally of leads: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.qualifier.definitions.source import load_definition
from services.qualifier.review.stats import Rate, wilson
from services.qualifier.review.tally import OTHER_REASON, DecisionFact, LeadFacts, Review
from services.qualifier.routing.evaluator import evaluate
from tests.fixtures.qualifier.harness import definition_text
from tests.support import snapshot

DEFINITION = load_definition(definition_text()).definition
AT = datetime(2026, 10, 15, 12, tzinfo=UTC)


class TestWilson:
    @pytest.mark.parametrize(
        ("k", "n", "low", "high"),
        [
            # Reference values (Wilson 1927; Newcombe 1998, table I, method 3).
            (5, 10, 0.2366, 0.7634),
            (0, 10, 0.0, 0.2775),
            (10, 10, 0.7225, 1.0),
            (81, 263, 0.2553, 0.3662),
            (1, 29, 0.0061, 0.1718),
        ],
    )
    def test_known_intervals(self, k: int, n: int, low: float, high: float) -> None:
        interval = wilson(k, n)
        assert interval is not None
        assert interval == pytest.approx((low, high), abs=5e-5)

    def test_no_trials_no_interval_and_impossible_counts_refused(self) -> None:
        assert wilson(0, 0) is None
        with pytest.raises(ValueError):
            wilson(3, 2)

    def test_the_interval_narrows_with_more_evidence_around_the_same_rate(self) -> None:
        few, many = wilson(3, 10), wilson(300, 1000)
        assert few and many and few[0] < many[0] < 0.3 < many[1] < few[1]


class TestRate:
    def test_value_interval_and_lift(self) -> None:
        rate, baseline = Rate(6, 10), Rate(30, 100)
        assert rate.value == 0.6 and rate.lift(baseline) == pytest.approx(2.0)
        assert Rate(0, 0).value is None and Rate(0, 0).interval is None
        assert Rate(0, 0).lift(baseline) is None and rate.lift(Rate(0, 5)) is None


def decided(lead_overrides: dict[str, Any], version: int = 1) -> DecisionFact:
    decision = evaluate(snapshot(**lead_overrides), DEFINITION, version, now=AT).decision
    return DecisionFact(
        version, decision.route.value, decision.score, decision.model_dump(mode="json"), AT
    )


# The example definition scores these: 30 + 25 + 20 + 15 + 10 = 100, sales, team smb.
HOT: dict[str, Any] = {}
COLD = {"role_in_purchase": "user", "company_size": "11-20", "budget": "1000", "timeframe": "later"}
NO_BUDGET = {"budget": None}
SPAM = {"honeypot_filled": True}


def review_of(*leads: LeadFacts, limit: int = 10) -> Review:
    review = Review(DEFINITION, 1, list_limit=limit)
    for lead in leads:
        review.add(lead)
    return review


class TestTally:
    def test_each_criterion_counts_the_leads_it_touched_and_their_outcomes(self) -> None:
        accepted = LeadFacts(
            "a", [decided(HOT)], frozenset({"accepted", "sql", "won"}), revenue=Decimal(500)
        )
        rejected = LeadFacts("r", [decided(HOT)], frozenset({"rejected"}), ("no budget",))
        cold = LeadFacts("c", [decided(COLD)])
        spam = LeadFacts("s", [decided(SPAM)])
        review = review_of(accepted, rejected, cold, spam)
        assert review.all.touched == 4 and review.all.sent_to_sales == 2
        decision_maker = review.outcomes["score[0]"]
        assert (decision_maker.touched, decision_maker.sal, decision_maker.rejected_by_sales) == (
            2,
            1,
            1,
        )
        assert decision_maker.won == 1 and decision_maker.revenue == Decimal(500)
        assert review.outcomes["reject[0]"].touched == 1
        assert review.outcomes["routes.sales_min_score"].touched == 2
        assert review.outcomes["routes.nurture_below_score"].touched == 1
        assert review.outcomes["team.smb"].touched == 2
        assert review.outcomes["team.enterprise"].touched == 0
        # Lead quality 1/2 among decision makers against 1/2 of all: lift 1.
        assert decision_maker.quality.lift(review.all.quality) == 1.0

    def test_a_required_field_and_the_rules_met_after_the_brief_both_count(self) -> None:
        lead = LeadFacts("b", [decided(NO_BUDGET), decided(HOT)], frozenset({"accepted"}))
        review = review_of(lead)
        assert review.outcomes["required.budget"].touched == 1
        assert review.outcomes["score[4]"].touched == 1  # budget at least 150000, after the brief
        assert review.came_back_total == 1
        [back] = review.came_back()
        assert (back.kept_as, back.kept_because, back.outcome) == (
            "processing",
            "missing budget",
            "accepted",
        )

    def test_a_lead_belongs_to_the_version_that_took_it_in(self) -> None:
        later = LeadFacts("l", [decided(COLD, version=1), decided(HOT, version=2)])
        assert review_of(later).all.touched == 1
        v2 = Review(DEFINITION, 2, list_limit=10)
        v2.add(later)
        assert v2.all.touched == 0

    def test_a_decision_sending_a_lead_back_to_nurture_is_no_decision_of_the_definition(
        self,
    ) -> None:
        back = decided(HOT)
        sent_back = DecisionFact(
            1,
            "nurture",
            back.score,
            back.decision | {"route": "nurture", "reasons": ["Back to nurture: sales lost it"]},
            AT,
        )
        lead = LeadFacts("n", [back, sent_back], frozenset({"accepted", "lost"}))
        review = review_of(lead)
        assert review.outcomes["routes.nurture_below_score"].touched == 0
        assert review.all.lost == 1 and review.came_back_total == 0

    def test_reasons_given_rarely_or_holding_contacts_are_not_shown(self) -> None:
        leads = [
            LeadFacts(f"x{i}", [decided(HOT)], frozenset({"rejected"}), (reason,))
            for i, reason in enumerate(
                ["No budget", "no  budget", "no budget ", "Ivan Petrov is a friend"]
                + ["call me at 89161234567"] * 3
            )
        ]
        review = review_of(*leads)
        assert review.reasons(review.all) == {"no budget": 3, OTHER_REASON: 4}
        listed = {e.lead_id: e.reasons for e in review.rejected_by_sales()}
        assert listed["x0"] == ["no budget"] and listed["x3"] == [OTHER_REASON]
        assert all("Ivan" not in r and "8916" not in r for rs in listed.values() for r in rs)

    def test_the_lists_are_bounded_and_keep_the_highest_scores(self) -> None:
        leads = [
            LeadFacts(f"h{i}", [decided(HOT)], frozenset({"rejected"}), ("no budget",))
            for i in range(5)
        ]
        lower = {"industry": "retail"}  # 90 points
        leads += [
            LeadFacts(f"m{i}", [decided(lower)], frozenset({"rejected"}), ("no budget",))
            for i in range(5)
        ]
        review = review_of(*leads, limit=3)
        listed = review.rejected_by_sales()
        assert review.rejected_total == 10 and len(listed) == 3
        assert {e.score for e in listed} == {100}
        assert listed[0].criteria[0] == "+30 role in purchase is decision maker"
