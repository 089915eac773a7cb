"""CRM stage -> lifecycle steps: implied stages, losses before acceptance, what is skipped."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.qualifier.crm.adapter import CrmRecord, Semantic
from services.qualifier.crm.config import StageRule
from services.qualifier.crm.mapping import Plan, Step, plan, target_of
from services.qualifier.lifecycle.stages import LeadState
from shared.events import Route, Stage

AT = datetime(2026, 12, 1, 10, tzinfo=UTC)
RULES = [
    StageRule(crm="NEW", to=Stage.routed),
    StageRule(crm="PREPARATION", to=Stage.accepted),
    StageRule(crm="EXECUTING", to=Stage.sql),
    StageRule(crm="FINAL_INVOICE", to=Stage.proposal_sent),
    StageRule(crm="JUNK", to=Stage.rejected, reason="not a lead"),
    StageRule(crm="142", pipeline="7", to=Stage.won),
    StageRule(crm="142", to=Stage.contract_sent),
]


def record(
    stage: str,
    semantic: Semantic = "open",
    *,
    amount: str | None = None,
    reason: str | None = None,
    pipeline: str | None = None,
) -> CrmRecord:
    return CrmRecord(
        crm_id="1",
        stage=stage,
        semantic=semantic,
        modified_at=AT,
        amount=Decimal(amount) if amount else None,
        loss_reason=reason,
        pipeline=pipeline,
    )


def sales(stage: Stage) -> LeadState:
    return LeadState(route=Route.sales, stage=stage)


def test_an_accepting_stage_is_feedback() -> None:
    assert plan(record("PREPARATION"), RULES, sales(Stage.routed), pay_on_won=False).steps == (
        Step(Stage.accepted),
    )


def test_a_jump_to_won_implies_every_stage_between_in_order() -> None:
    got = plan(record("WON", "won", amount="900"), RULES, sales(Stage.routed), pay_on_won=True)
    assert [s.stage for s in got.steps] == [
        Stage.accepted,
        Stage.sql,
        Stage.demo_held,
        Stage.proposal_sent,
        Stage.contract_sent,
        Stage.won,
    ]
    assert all(s.implied for s in got.steps[:-1]) and not got.steps[-1].implied
    assert all("implied" in (s.reason or "") for s in got.steps[:-1])
    assert got.payment == Decimal("900")


def test_from_the_middle_only_the_missing_stages() -> None:
    got = plan(record("FINAL_INVOICE"), RULES, sales(Stage.sql), pay_on_won=False)
    assert [s.stage for s in got.steps] == [Stage.demo_held, Stage.proposal_sent]


def test_the_stage_the_lead_has_plans_nothing() -> None:
    got = plan(record("EXECUTING"), RULES, sales(Stage.sql), pay_on_won=False)
    assert got.steps == () and got.skipped is None


def test_a_lost_record_never_accepted_is_a_rejection_with_the_reason() -> None:
    got = plan(
        record("LOSE", "lost", reason="too expensive"),
        RULES,
        sales(Stage.contacted),
        pay_on_won=False,
    )
    assert got.steps == (Step(Stage.rejected, reason="too expensive"),)


@pytest.mark.parametrize("crm", ["LOSE", "JUNK"])
def test_a_lost_record_read_again_after_it_rejected_the_lead_plans_nothing(crm: str) -> None:
    # Reconciliation re-reads records (an overlap): the loss that made sales reject the lead
    # is the lead's state already, not a change that could not be applied.
    got = plan(
        record(crm, "lost", reason="too expensive"), RULES, sales(Stage.rejected), pay_on_won=False
    )
    assert got == Plan()


def test_a_lost_open_deal_is_lost_with_the_rule_reason_when_the_crm_gives_none() -> None:
    rules = [StageRule(crm="APOLOGY", to=Stage.lost, reason="analysis of failure")]
    got = plan(record("APOLOGY", "lost"), rules, sales(Stage.demo_held), pay_on_won=False)
    assert got.steps == (Step(Stage.lost, reason="analysis of failure"),)


@pytest.mark.parametrize(
    ("stage", "crm"),
    [(Stage.won, "EXECUTING"), (Stage.lost, "EXECUTING"), (Stage.proposal_sent, "PREPARATION")],
)
def test_backwards_or_reopened_is_skipped_with_why(stage: Stage, crm: str) -> None:
    got = plan(record(crm), RULES, sales(stage), pay_on_won=False)
    assert got.steps == ()
    assert got.skipped is not None and stage.value in got.skipped


def test_an_unmapped_open_stage_is_skipped_not_dropped() -> None:
    got = plan(record("UC_42"), RULES, sales(Stage.routed), pay_on_won=False)
    assert got.steps == () and got.skipped is not None and "UC_42" in got.skipped


def test_a_lead_not_routed_to_sales_is_not_moved() -> None:
    state = LeadState(route=Route.processing, stage=Stage.contacted)
    got = plan(record("PREPARATION"), RULES, state, pay_on_won=False)
    assert got.steps == () and got.skipped is not None and "processing" in got.skipped


def test_a_pipeline_rule_wins_over_a_rule_for_any_pipeline() -> None:
    assert target_of(record("142", "won", pipeline="7"), RULES) == RULES[5]
    assert target_of(record("142", "won", pipeline="8"), RULES) == RULES[6]


def test_no_payment_unless_asked_or_without_an_amount() -> None:
    assert (
        plan(
            record("WON", "won", amount="5"), RULES, sales(Stage.contract_sent), pay_on_won=False
        ).payment
        is None
    )
    assert (
        plan(
            record("WON", "won", amount="0"), RULES, sales(Stage.contract_sent), pay_on_won=True
        ).payment
        is None
    )


def test_the_new_stage_changes_nothing_until_sales_acts() -> None:
    assert plan(record("NEW"), RULES, sales(Stage.routed), pay_on_won=False) == Plan()
    assert plan(record("NEW"), RULES, sales(Stage.contacted), pay_on_won=False) == Plan()
    back = plan(record("NEW"), RULES, sales(Stage.sql), pay_on_won=False)
    assert back.steps == () and back.skipped is not None and "sql" in back.skipped
