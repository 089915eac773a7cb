"""The lifecycle state machine: every allowed move, every refusal naming the current stage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from services.qualifier.lifecycle import stages as lifecycle
from services.qualifier.lifecycle.stages import InvalidTime, LeadState, Refused, Step
from shared.events import Route, Stage

S = Stage


def state(stage: Stage, route: Route = Route.sales, contacted: bool = False) -> LeadState:
    return LeadState(route=route, stage=stage, contacted=contacted)


class TestContact:
    def test_the_first_contact_moves_a_routed_lead_to_contacted(self) -> None:
        assert lifecycle.contact(state(S.routed)) == Step(S.contacted, first_contact=True)

    def test_later_contacts_are_recorded_but_not_first(self) -> None:
        step = lifecycle.contact(state(S.contacted, contacted=True))
        assert step == Step(S.contacted, changed=True, first_contact=False)

    def test_a_contact_in_the_pipeline_keeps_the_stage(self) -> None:
        assert lifecycle.contact(state(S.demo_held, contacted=True)).stage is S.demo_held

    @pytest.mark.parametrize("route", [Route.nurture, Route.processing])
    def test_marketing_and_processing_leads_can_be_contacted(self, route: Route) -> None:
        assert lifecycle.contact(state(S.routed, route)).first_contact

    @pytest.mark.parametrize(
        ("lead", "words"),
        [
            (state(S.routed, Route.rejected), "rejected by the lead definition"),
            (state(S.routed, Route.partner), "routed to a partner"),
            (state(S.won), "closed"),
            (state(S.lost), "closed"),
            (state(S.rejected), "closed"),
        ],
    )
    def test_refused(self, lead: LeadState, words: str) -> None:
        with pytest.raises(Refused, match=words) as refused:
            lifecycle.contact(lead)
        assert f"current stage: {lead.stage.value}" in str(refused.value)


class TestBrief:
    def test_a_contacted_processing_lead_gets_a_brief(self) -> None:
        assert lifecycle.brief(state(S.contacted, Route.processing, True)).stage is S.contacted

    def test_the_first_contact_comes_first(self) -> None:
        with pytest.raises(Refused, match="first contact"):
            lifecycle.brief(state(S.routed, Route.processing))

    @pytest.mark.parametrize("route", [Route.sales, Route.nurture, Route.partner])
    def test_only_processing_leads_get_a_brief(self, route: Route) -> None:
        with pytest.raises(Refused, match="primary processing"):
            lifecycle.brief(state(S.contacted, route, True))


class TestFeedback:
    @pytest.mark.parametrize("stage", [S.routed, S.contacted])
    @pytest.mark.parametrize("decision", [S.accepted, S.rejected])
    def test_sales_accepts_or_rejects_an_open_lead(self, stage: Stage, decision: Stage) -> None:
        assert lifecycle.feedback(state(stage), decision) == Step(decision)

    def test_the_same_feedback_again_changes_nothing(self) -> None:
        assert lifecycle.feedback(state(S.accepted), S.accepted) == Step(S.accepted, False)

    def test_changing_ones_mind_is_refused(self) -> None:
        with pytest.raises(Refused, match="current stage: accepted"):
            lifecycle.feedback(state(S.accepted), S.rejected)

    @pytest.mark.parametrize("route", [Route.nurture, Route.processing, Route.partner])
    def test_feedback_is_for_sales_leads(self, route: Route) -> None:
        with pytest.raises(Refused, match="routed to sales"):
            lifecycle.feedback(state(S.routed, route), S.accepted)


PIPELINE = [S.accepted, S.sql, S.demo_held, S.proposal_sent, S.contract_sent, S.won]


class TestPipeline:
    @pytest.mark.parametrize(("here", "there"), list(pairwise(PIPELINE)))
    def test_one_step_at_a_time(self, here: Stage, there: Stage) -> None:
        assert lifecycle.change_stage(state(here), there) == Step(there)

    @pytest.mark.parametrize("here", PIPELINE[:-1])
    def test_an_open_deal_can_be_lost(self, here: Stage) -> None:
        assert lifecycle.change_stage(state(here), S.lost) == Step(S.lost)

    @pytest.mark.parametrize(
        ("here", "there", "words"),
        [
            (S.accepted, S.demo_held, "the next stage is sql"),
            (S.sql, S.won, "the next stage is demo_held"),
            (S.won, S.lost, "only an open deal can be lost"),
            (S.lost, S.sql, "the deal is closed"),
            (S.routed, S.sql, "accept the lead"),
            (S.contacted, S.lost, "accept the lead"),
            (S.rejected, S.sql, "the deal is closed"),
        ],
    )
    def test_impossible_moves_name_the_current_stage(
        self, here: Stage, there: Stage, words: str
    ) -> None:
        with pytest.raises(Refused, match=words) as refused:
            lifecycle.change_stage(state(here), there)
        assert refused.value.state.stage is here
        assert f"current stage: {here.value}" in str(refused.value)

    def test_asking_for_the_current_stage_changes_nothing(self) -> None:
        assert lifecycle.change_stage(state(S.sql), S.sql) == Step(S.sql, changed=False)

    def test_not_a_pipeline_stage(self) -> None:
        with pytest.raises(ValueError, match="not a pipeline stage"):
            lifecycle.change_stage(state(S.accepted), S.contacted)


class TestPaymentsAndNurture:
    def test_payments_come_after_a_won_deal(self) -> None:
        assert lifecycle.payment(state(S.won)).stage is S.won
        with pytest.raises(Refused, match="won deals only"):
            lifecycle.payment(state(S.contract_sent))

    @pytest.mark.parametrize("stage", [S.lost, S.rejected])
    def test_a_lost_or_rejected_lead_goes_back_to_nurture(self, stage: Stage) -> None:
        assert lifecycle.back_to_nurture(state(stage)) == Step(S.routed)

    def test_a_nurtured_lead_asked_again_changes_nothing(self) -> None:
        step = lifecycle.back_to_nurture(state(S.routed, Route.nurture))
        assert step == Step(S.routed, changed=False)

    @pytest.mark.parametrize("stage", [S.routed, S.accepted, S.won])
    def test_an_open_or_won_lead_does_not(self, stage: Stage) -> None:
        with pytest.raises(Refused, match="lost or sales-rejected"):
            lifecycle.back_to_nurture(state(stage))


class TestBusinessTime:
    NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    RECEIVED = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
    SKEW = timedelta(minutes=5)

    def check(self, at: datetime) -> None:
        lifecycle.check_business_time(at, now=self.NOW, lead_received=self.RECEIVED, skew=self.SKEW)

    def test_between_the_lead_and_now_is_fine(self) -> None:
        self.check(self.RECEIVED)
        self.check(self.NOW + timedelta(minutes=4))  # clock skew

    def test_the_future_is_refused(self) -> None:
        with pytest.raises(InvalidTime, match="future"):
            self.check(self.NOW + timedelta(minutes=6))

    def test_before_the_lead_is_refused(self) -> None:
        with pytest.raises(InvalidTime, match="before the lead was received"):
            self.check(self.RECEIVED - timedelta(seconds=1))

    def test_a_time_without_offset_is_refused(self) -> None:
        with pytest.raises(InvalidTime, match="time zone"):
            self.check(datetime(2026, 10, 5, 10, 0))
