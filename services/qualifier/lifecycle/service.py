"""Lifecycle use cases: what sales tools report back (contact, brief, feedback, stages,
back to nurture; payments in `payments.py`). Each locks the lead, checks the transition
with the pure state machine (`stages.py`), writes the new state with its history entry,
and owes one event on `leads.lifecycle` in the same transaction. They may write, never
commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.leads import repository as leads_repository
from services.qualifier.leads.snapshot import combine_answers, merge_answers, summarize_answers
from services.qualifier.lifecycle import stages
from services.qualifier.lifecycle.stages import LeadState, Refused
from services.qualifier.outbound import publish
from services.qualifier.routing import repository as routing_repository
from services.qualifier.routing import service as routing
from shared.db import AnyRow
from shared.events import (
    SOURCE_QUALIFIER,
    Decision,
    Dimensions,
    Event,
    LeadBriefFilled,
    LeadBriefFilledData,
    LeadContacted,
    LeadContactedData,
    LeadFeedback,
    LeadFeedbackData,
    LeadRouted,
    LeadRoutedData,
    LeadSnapshot,
    LeadStageChanged,
    LeadStageChangedData,
    LifecycleData,
    Route,
    Stage,
)


class LeadNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Call:
    """What every lifecycle call carries: which lead, when it happened, who did it."""

    lead_id: str
    at: datetime
    by: str | None
    now: datetime
    skew: timedelta


@dataclass(frozen=True)
class Outcome:
    lead_id: str
    route: Route
    stage: Stage
    changed: bool
    event_ids: list[str] = field(default_factory=list)
    decision: Decision | None = None


async def open_lead(conn: AsyncConnection, call: Call) -> tuple[AnyRow, LeadState]:
    row = await leads_repository.lock_lead(conn, call.lead_id)
    if row is None:
        raise LeadNotFound(f"no lead {call.lead_id!r}")
    state = LeadState(
        route=Route(row.route),
        stage=Stage(row.stage),
        contacted=row.first_contacted_at is not None,
    )
    return row, state


def check_time(row: AnyRow, call: Call) -> None:
    received = LeadSnapshot.model_validate(row.snapshot).occurred_at
    stages.check_business_time(call.at, now=call.now, lead_received=received, skew=call.skew)


def dimensions_of(row: AnyRow) -> Dimensions:
    """The lead's dimensions with its current route and version, as every lifecycle event has."""
    return (
        LeadSnapshot.model_validate(row.snapshot)
        .dimensions()
        .model_copy(update={"route": row.route, "definition_version": row.definition_version})
    )


E = TypeVar("E", bound=BaseModel)


def lifecycle_event(
    event_type: type[E],
    data_type: type[LifecycleData],
    call: Call,
    row: AnyRow,
    *,
    event_id: str | None = None,
    **data: Any,
) -> E:
    """A `leads.lifecycle` event of this call: its envelope and the fields every one has."""
    return event_type(
        id=event_id or new_id(),
        source=SOURCE_QUALIFIER,
        time=call.at,
        subject=call.lead_id,
        data=data_type(
            lead_id=call.lead_id, at=call.at, by=call.by, dimensions=dimensions_of(row), **data
        ),
    )


async def record(
    conn: AsyncConnection,
    call: Call,
    event: Event,
    *,
    stage: Stage,
    reason: str,
    note: str | None = None,
) -> None:
    """The call's history entry and the event it owes, in the call's transaction."""
    await leads_repository.add_history(
        conn,
        lead_id=call.lead_id,
        stage=stage,
        at=call.at,
        by=call.by,
        event_id=event.id,
        event_type=event.type,
        reason=reason,
        note=note,
    )
    await publish(conn, [event], now=call.now)


def _unchanged(row: AnyRow) -> Outcome:
    return Outcome(row.lead_id, Route(row.route), Stage(row.stage), changed=False)


def new_id() -> str:
    return str(uuid.uuid4())


async def contact(conn: AsyncConnection, call: Call) -> Outcome:
    row, state = await open_lead(conn, call)
    step = stages.contact(state)
    check_time(row, call)
    event = lifecycle_event(
        LeadContacted, LeadContactedData, call, row, first_contact=step.first_contact
    )
    values: dict[str, Any] = {"stage": step.stage.value, "updated_at": call.now}
    if step.first_contact:
        values["first_contacted_at"] = call.at
    await leads_repository.update_lead(conn, call.lead_id, **values)
    reason = "first contact" if step.first_contact else "contact"
    await record(conn, call, event, stage=step.stage, reason=reason)
    return Outcome(call.lead_id, state.route, step.stage, True, [event.id])


async def brief(conn: AsyncConnection, call: Call, answers: dict[str, Any]) -> Outcome:
    """Merge the brief into the lead and qualify it again: a new `lead.routed`."""
    row, state = await open_lead(conn, call)
    stages.brief(state)
    if row.erased_at is not None:
        raise Refused(state, "the person's data was erased; a brief would collect it again")
    check_time(row, call)
    lead = merge_answers(LeadSnapshot.model_validate(row.snapshot), answers)
    filled = lifecycle_event(LeadBriefFilled, LeadBriefFilledData, call, row, answers=answers)
    await record(conn, call, filled, stage=Stage.contacted, reason=summarize_answers(answers))
    cause = routing.Cause(lead, filled.id, call.at, stored=True, contacted=True)
    [(decision, routed)] = await routing.decide(conn, [cause], now=call.now)
    await leads_repository.update_lead(
        conn, call.lead_id, brief_answers=combine_answers(row.brief_answers, answers)
    )
    stage = Stage.contacted if decision.route is Route.processing else Stage.routed
    return Outcome(call.lead_id, decision.route, stage, True, [filled.id, routed.id], decision)


async def feedback(
    conn: AsyncConnection, call: Call, decision: Stage, reason: str | None
) -> Outcome:
    row, state = await open_lead(conn, call)
    step = stages.feedback(state, decision)
    if not step.changed:
        return _unchanged(row)
    check_time(row, call)
    event = lifecycle_event(
        LeadFeedback, LeadFeedbackData, call, row, decision=decision.value, reason=reason
    )
    await leads_repository.update_lead(
        conn,
        call.lead_id,
        stage=step.stage.value,
        feedback=decision.value,
        feedback_at=call.at,
        updated_at=call.now,
    )
    await record(
        conn, call, event, stage=step.stage, reason=f"sales {decision.value} the lead", note=reason
    )
    return Outcome(call.lead_id, state.route, step.stage, True, [event.id])


async def change_stage(
    conn: AsyncConnection, call: Call, target: Stage, reason: str | None
) -> Outcome:
    row, state = await open_lead(conn, call)
    step = stages.change_stage(state, target)
    if not step.changed:
        return _unchanged(row)
    check_time(row, call)
    event = lifecycle_event(
        LeadStageChanged,
        LeadStageChangedData,
        call,
        row,
        stage=step.stage,
        previous_stage=state.stage,
        reason=reason,
    )
    await leads_repository.update_lead(
        conn, call.lead_id, stage=step.stage.value, updated_at=call.now
    )
    transition = f"{state.stage.value} → {step.stage.value}"
    await record(conn, call, event, stage=step.stage, reason=transition, note=reason)
    return Outcome(call.lead_id, state.route, step.stage, True, [event.id])


async def back_to_nurture(conn: AsyncConnection, call: Call, reason: str | None) -> Outcome:
    """Sales hands a lost or rejected lead back to marketing: a new routing, to nurture.

    It is published as `lead.routed` (route nurture) because that is what nurturing
    tools subscribe to; the decision keeps the version and score of the last one and
    says who sent it back and why.
    """
    row, state = await open_lead(conn, call)
    step = stages.back_to_nurture(state)
    if not step.changed:
        return _unchanged(row)
    check_time(row, call)
    last = Decision.model_validate(row.decision)
    why = (
        f"Back to nurture: sales {'lost the deal' if state.stage is Stage.lost else 'rejected it'}"
    )
    decision = Decision(
        route=Route.nurture,
        score=last.score,
        definition_version=last.definition_version,
        # The reason sales wrote stays in the history note: free text may name people,
        # and decisions are kept after an erasure.
        reasons=[f"{why}; marketing warms the lead up again."],
        score_items=last.score_items,
        decided_at=call.now,
    )
    lead = LeadSnapshot.model_validate(row.snapshot)
    routed = LeadRouted(
        id=new_id(),
        source=SOURCE_QUALIFIER,
        time=call.at,
        subject=call.lead_id,
        data=LeadRoutedData(**lead.model_dump(), decision=decision),
    )
    await routing_repository.save_decision(
        conn,
        lead=lead,
        stored_snapshot=row.snapshot,
        decision=decision,
        stage=Stage.routed,
        cause_event_id=routed.id,
        now=call.now,
    )
    await record(conn, call, routed, stage=Stage.routed, reason=why, note=reason)
    return Outcome(call.lead_id, Route.nurture, Stage.routed, True, [routed.id], decision)
