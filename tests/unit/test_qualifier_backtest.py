"""The back-test tally: route counts, changed leads, and agreement with sales."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.qualifier.definitions.backtest import Backtest, Judged, route_counts
from services.qualifier.definitions.source import load_definition
from tests.support import snapshot

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "services/qualifier/default_definition.yaml"
).read_text()


def version(*replacements: tuple[str, str]) -> Judged:
    text = EXAMPLE
    for old, new in replacements:
        text = text.replace(old, new)
    return Judged(load_definition(text).definition, 1 + len(replacements))


ACTIVE = version()
STRICT = version(
    ("sales_min_score: 60", "sales_min_score: 90"),
    ("nurture_below_score: 60", "nurture_below_score: 90"),
)


@pytest.fixture
def tally() -> Backtest:
    run = Backtest(STRICT, ACTIVE, change_limit=1)
    run.add(snapshot(), "accepted")  # 100: sales by both
    run.add(snapshot(industry="retail"), "rejected")  # 90: sales by both
    run.add(snapshot(timeframe="later"), "rejected")  # 85: sales, then nurture
    run.add(snapshot(timeframe="later", industry="retail"), "accepted")  # 75: sales, then nurture
    run.add(snapshot(budget=None), None)  # processing by both
    return run


def test_route_counts_for_both_versions(tally: Backtest) -> None:
    assert route_counts(tally.tested_routes) == {
        "sales": 2,
        "partner": 0,
        "nurture": 2,
        "processing": 1,
        "rejected": 0,
    }
    assert route_counts(tally.active_routes)["sales"] == 4
    assert tally.leads == 5


def test_changed_leads_are_counted_all_and_listed_up_to_the_limit(tally: Backtest) -> None:
    assert tally.changed == 2
    assert tally.transitions == {("sales", "nurture"): 2}
    (listed,) = tally.changes
    assert (listed.from_route, listed.to_route, listed.from_score, listed.to_score) == (
        "sales",
        "nurture",
        85,
        85,
    )
    assert listed.sales_feedback == "rejected"
    assert "below 90" in listed.reasons[0]


def test_agreement_with_what_sales_said(tally: Backtest) -> None:
    strict, active = tally.tested_feedback, tally.active_feedback
    # Active: both accepted leads go to sales (agree), both rejected ones too (disagree).
    assert (active.accepted_to_sales, active.rejected_to_sales) == (2, 2)
    assert active.agreement_rate == 0.5
    # Strict: one accepted lead lost to nurture, one rejected lead kept from sales.
    assert (strict.accepted_to_sales, strict.accepted_elsewhere) == (1, 1)
    assert (strict.rejected_to_sales, strict.rejected_elsewhere) == (1, 1)
    assert strict.agreement_rate == 0.5
    assert strict.accepted_routes["nurture"] == 1


def test_without_feedback_there_is_no_rate() -> None:
    run = Backtest(STRICT, ACTIVE)
    run.add(snapshot(), None)
    assert run.tested_feedback.agreement_rate is None and run.tested_feedback.judged == 0
