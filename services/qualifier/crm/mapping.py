"""From a CRM record's stage to the lifecycle steps that bring the lead there. Pure.

A CRM lets a salesperson drag a deal from "new" straight to "won"; Leadflow's state
machine (`lifecycle.stages`) moves one step at a time. The plan fills the gap:

- a pipeline stage on a lead sales has not accepted yet implies the acceptance first;
- a stage further down the pipeline implies each stage in between, in order (each step
  is an event of its own, marked "implied" in its reason, at the record's time);
- a lost record that sales never accepted is a rejection by sales, with the loss reason
  (read again, it plans nothing: the lead is rejected already);
- a record moved backwards (won → proposal), reopened after it closed, or on a lead
  whose route sales does not work (processing, nurture) changes nothing: it is returned
  as `skipped` with why, counted and shown on the connector's status, never dropped
  silently;
- a stage mapped to `routed` (the CRM's new stages, where a pushed record starts) changes
  nothing while sales has not acted;
- a stage the mapping does not know is skipped (the same), so a gap in the mapping shows.

Payments: with `payments: on_won`, a won record's amount becomes one payment, whose id
is derived from the record, so however often the record is read it is paid once.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from services.qualifier.crm.adapter import CrmRecord
from services.qualifier.crm.config import StageRule
from services.qualifier.lifecycle.stages import LeadState
from shared.events import Route, Stage

# The pipeline in order; feedback (accepted) comes before it.
_ORDER = (
    Stage.accepted,
    Stage.sql,
    Stage.demo_held,
    Stage.proposal_sent,
    Stage.contract_sent,
    Stage.won,
)
_OPEN = (Stage.routed, Stage.contacted)


@dataclass(frozen=True)
class Step:
    """One lifecycle call: feedback (accepted/rejected) or a stage change."""

    stage: Stage
    implied: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()
    payment: Decimal | None = None
    # Why nothing (or not everything) was done: shown on the connector's status.
    skipped: str | None = None


def target_of(record: CrmRecord, rules: list[StageRule]) -> StageRule | None:
    """The rule for the record's stage: one naming its pipeline first, then one for any
    pipeline; failing both, the stage's semantic (won or lost) where the CRM gives one."""
    for rule in rules:
        if (
            rule.crm == record.stage
            and rule.pipeline is not None
            and rule.pipeline == record.pipeline
        ):
            return rule
    for rule in rules:
        if rule.crm == record.stage and rule.pipeline is None:
            return rule
    if record.semantic == "won":
        return StageRule(crm=record.stage, to=Stage.won)
    if record.semantic == "lost":
        return StageRule(crm=record.stage, to=Stage.lost)
    return None


def plan(record: CrmRecord, rules: list[StageRule], state: LeadState, *, pay_on_won: bool) -> Plan:
    rule = target_of(record, rules)
    if rule is None:
        return Plan(skipped=f"CRM stage {record.stage!r} is not in the stage mapping")
    target = rule.to
    if state.route is not Route.sales:
        return Plan(
            skipped=f"CRM stage {record.stage!r} ({target.value}) on a lead routed to "
            f"{state.route.value}: only leads routed to sales move through its stages"
        )
    if target is Stage.routed:
        # The CRM's new stage(s): nothing has happened yet, unless the record went back.
        return Plan() if state.stage in _OPEN else _nothing(state, record, target)
    reason = record.loss_reason or rule.reason
    if target in (Stage.rejected, Stage.lost) and state.stage in _OPEN:
        # Lost before anyone accepted it: sales rejected the lead.
        return Plan(steps=(Step(Stage.rejected, reason=reason),))
    if target in (Stage.rejected, Stage.lost) and state.stage is Stage.rejected:
        # Read again (a reconciliation's overlap): the loss that rejected the lead is done.
        return Plan()
    if target is Stage.rejected:
        return _nothing(state, record, target)
    if target is Stage.lost:
        if state.stage is Stage.lost:
            return Plan()
        if state.stage in _ORDER[:-1]:
            return Plan(steps=(Step(Stage.lost, reason=reason),))
        return _nothing(state, record, target)
    return _forward(record, state, target, pay_on_won=pay_on_won)


def _forward(record: CrmRecord, state: LeadState, target: Stage, *, pay_on_won: bool) -> Plan:
    payment = record.amount if pay_on_won and target is Stage.won else None
    if payment is not None and payment <= 0:
        payment = None
    if state.stage in _OPEN:
        start = 0
    elif state.stage in _ORDER:
        start = _ORDER.index(state.stage) + 1
    else:
        return _nothing(state, record, target)
    end = _ORDER.index(target)
    if end < start - 1:
        return _nothing(state, record, target)
    why = f"implied: the CRM moved the record to {record.stage!r}"
    steps = tuple(
        Step(stage, implied=stage is not target, reason=why if stage is not target else None)
        for stage in _ORDER[start : end + 1]
    )
    return Plan(steps=steps, payment=payment)


def _nothing(state: LeadState, record: CrmRecord, target: Stage) -> Plan:
    return Plan(
        skipped=f"CRM stage {record.stage!r} ({target.value}) cannot follow the lead's "
        f"stage {state.stage.value}; Leadflow keeps {state.stage.value}"
    )
