"""The definition evaluator on the example definition: every route, with reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.qualifier.definitions.model import LeadDefinition
from services.qualifier.routing.evaluator import AssignmentState, evaluate, matches, reassign
from shared.events import Route
from tests.support import snapshot

EXAMPLE = Path(__file__).resolve().parents[2] / "services/qualifier/default_definition.yaml"
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def definition() -> LeadDefinition:
    return LeadDefinition.model_validate(yaml.safe_load(EXAMPLE.read_text()))


class TestRouting:
    def test_a_good_fit_goes_to_sales_with_team_assignee_and_deadline(
        self, definition: LeadDefinition
    ) -> None:
        result = evaluate(snapshot(), definition, 1, now=NOW)
        d = result.decision
        assert d.route is Route.sales
        # 30 decision maker + 25 size 101-500 + 20 budget + 15 now + 10 ecommerce
        assert d.score == 100
        assert d.team == "smb" and d.assignee == "vera"
        assert d.sla_due_at == NOW + timedelta(hours=8)
        assert d.definition_version == 1
        assert any("decision maker" in item.criterion for item in d.score_items)
        assert "Score 100" in d.reasons[0]

    def test_an_enterprise_lead_goes_to_the_enterprise_team(
        self, definition: LeadDefinition
    ) -> None:
        d = evaluate(snapshot(company_size="1000+"), definition, 1, now=NOW).decision
        assert (d.team, d.assignee, d.sla_due_at) == (
            "enterprise",
            "anna",
            NOW + timedelta(hours=2),
        )

    def test_missing_budget_goes_to_processing(self, definition: LeadDefinition) -> None:
        d = evaluate(snapshot(budget=None, timeframe=None), definition, 1, now=NOW).decision
        assert d.route is Route.processing
        assert d.missing == ["budget", "timeframe"]
        assert "budget, timeframe" in d.reasons[0]

    def test_web_development_goes_to_the_partner_in_the_region(
        self, definition: LeadDefinition
    ) -> None:
        d = evaluate(snapshot(services=["web_development"]), definition, 1, now=NOW).decision
        assert (d.route, d.partner) == (Route.partner, "webstudio")

    def test_web_development_outside_partner_regions_is_rejected(
        self, definition: LeadDefinition
    ) -> None:
        d = evaluate(
            snapshot(services=["web_development"], country="DE"), definition, 1, now=NOW
        ).decision
        assert d.route is Route.rejected
        assert "neither we nor our partners" in d.reasons[0]

    def test_smm_goes_to_the_worldwide_partner(self, definition: LeadDefinition) -> None:
        d = evaluate(snapshot(services=["smm"], country="DE"), definition, 1, now=NOW).decision
        assert (d.route, d.partner) == (Route.partner, "smm-partner")

    def test_a_weak_fit_is_nurtured(self, definition: LeadDefinition) -> None:
        lead = snapshot(
            role_in_purchase="user",
            company_size="2-10",
            budget="10000",
            timeframe="later",
            email="ivan@gmail.com",
        )
        d = evaluate(lead, definition, 1, now=NOW).decision
        assert d.route is Route.nurture
        assert d.score == 10 - 20  # ecommerce, free e-mail provider
        assert "below 60" in d.reasons[0]

    def test_a_filled_honeypot_is_rejected_as_spam_before_anything_else(
        self, definition: LeadDefinition
    ) -> None:
        d = evaluate(snapshot(honeypot_filled=True, budget=None), definition, 1, now=NOW).decision
        assert d.route is Route.rejected
        assert "spam" in d.reasons[0]

    def test_competitors_are_rejected(self, definition: LeadDefinition) -> None:
        lead = snapshot(email="spy@competitor-one.example")
        d = evaluate(lead, definition, 1, now=NOW).decision
        assert d.route is Route.rejected and "competitor" in d.reasons[0]


class TestAssignment:
    def test_round_robin_moves_on_and_skips_absent_members(
        self, definition: LeadDefinition
    ) -> None:
        state = AssignmentState(round_robin_next={"smb": 1}, absent=frozenset({"grigory"}))
        result = evaluate(snapshot(), definition, 1, now=NOW, assignment=state)
        assert result.decision.assignee == "dmitry"
        assert result.round_robin_advance == ("smb", 0)

    def test_the_same_inputs_give_the_same_decision(self, definition: LeadDefinition) -> None:
        lead = snapshot()
        assert evaluate(lead, definition, 1, now=NOW) == evaluate(lead, definition, 1, now=NOW)


class TestConditions:
    @pytest.mark.parametrize(
        ("cond", "expected"),
        [
            ({"budget_at_least": 200000}, True),
            ({"budget_at_most": 199999}, False),
            ({"any": [{"country_in": ["KZ"]}, {"country_in": ["ru"]}]}, True),
            ({"not": {"services_contains": "seo"}}, False),
            ({"company_matches": "^acme"}, True),
            ({"fields.budget_range_present": False}, True),
            ({"email_domain_in": ["acme-corp.example"]}, True),
            ({"all": [{"webinar_attended": False}, {"honeypot_filled": False}]}, True),
        ],
    )
    def test_vocabulary(self, cond: dict[str, object], expected: bool) -> None:
        assert matches(snapshot(), cond) is expected


class TestValidation:
    def test_an_unknown_condition_is_named(self, definition: LeadDefinition) -> None:
        doc = definition.model_dump(mode="json")
        doc["score"][0]["when"] = {"shoe_size_at_least": 42}
        with pytest.raises(ValidationError, match="shoe_size_at_least"):
            LeadDefinition.model_validate(doc)

    def test_thresholds_must_be_ordered(self, definition: LeadDefinition) -> None:
        doc = definition.model_dump(mode="json")
        doc["routes"] = {"sales_min_score": 40, "nurture_below_score": 60}
        with pytest.raises(ValidationError, match="nurture_below_score"):
            LeadDefinition.model_validate(doc)


class TestLeastLoaded:
    def test_the_member_with_fewest_open_leads_gets_it(self, definition: LeadDefinition) -> None:
        doc = definition.model_dump(mode="json")
        doc["sales_teams"][1]["assign"] = "least_loaded"
        loaded = LeadDefinition.model_validate(doc)
        state = AssignmentState(open_leads={"vera": 3, "grigory": 1, "dmitry": 1})
        result = evaluate(snapshot(), loaded, 2, now=NOW, assignment=state)
        assert result.decision.assignee == "grigory"  # a tie goes to the first listed
        assert result.round_robin_advance is None
        assert "by least loaded" in result.decision.reasons[1]
        absent = AssignmentState(open_leads=state.open_leads, absent=frozenset({"grigory"}))
        assert evaluate(snapshot(), loaded, 2, now=NOW, assignment=absent).decision.assignee == (
            "dmitry"
        )

    def test_with_everyone_absent_the_team_lead_must_assign(
        self, definition: LeadDefinition
    ) -> None:
        state = AssignmentState(absent=frozenset({"vera", "grigory", "dmitry"}))
        d = evaluate(snapshot(), definition, 1, now=NOW, assignment=state).decision
        assert (d.route, d.team, d.assignee) == (Route.sales, "smb", None)
        assert "every member is absent" in d.reasons[1]


class TestReassignment:
    def test_round_robin_passes_over_the_one_who_missed_it(
        self, definition: LeadDefinition
    ) -> None:
        team = definition.sales_teams[1]
        moved = reassign(
            team, "grigory", now=NOW, assignment=AssignmentState(round_robin_next={"smb": 1})
        )
        assert (moved.assignee, moved.round_robin_advance) == ("dmitry", ("smb", 0))
        assert moved.sla_due_at == NOW + timedelta(hours=8)

    def test_nobody_else_keeps_it_with_the_same_person(self, definition: LeadDefinition) -> None:
        team = definition.sales_teams[0]  # anna, boris
        moved = reassign(
            team, "anna", now=NOW, assignment=AssignmentState(absent=frozenset({"boris"}))
        )
        assert (moved.assignee, moved.round_robin_advance) == ("anna", None)


class TestWorkingHours:
    def test_a_team_with_working_hours_is_due_within_them(self, definition: LeadDefinition) -> None:
        doc = definition.model_dump(mode="json")
        doc["sales_teams"][1]["working_hours"] = {
            "timezone": "UTC",
            "start": "09:00",
            "end": "17:00",
        }
        friday_evening = datetime(2026, 11, 6, 16, 0, tzinfo=UTC)
        d = evaluate(snapshot(), LeadDefinition.model_validate(doc), 3, now=friday_evening).decision
        assert d.sla_due_at == datetime(2026, 11, 9, 16, 0, tzinfo=UTC)  # 1h Fri + 7h Mon
        assert "answer within 8 working hours" in d.reasons[1]


class TestMoreConditions:
    @pytest.mark.parametrize(
        ("cond", "expected"),
        [
            ({"country_not_in": ["KZ", "BY"]}, True),
            ({"services_in": ["SEO"]}, True),
            ({"message_present": True}, False),
            ({"company_contains": "corp"}, True),
            ({"services_matches": "^se"}, True),
            ({"utm_campaign_in": ["autumn"]}, False),
            ({"email_free_provider": False}, True),
            ({"not": {"any": [{"honeypot_filled": True}, {"country_in": ["DE"]}]}}, True),
        ],
    )
    def test_vocabulary(self, cond: dict[str, object], expected: bool) -> None:
        assert matches(snapshot(), cond) is expected

    def test_a_missing_number_never_matches_a_bound(self) -> None:
        lead = snapshot(budget=None)
        assert not matches(lead, {"budget_at_least": 0})
        assert not matches(lead, {"budget_at_most": 10**9})
