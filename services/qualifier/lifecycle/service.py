"""Lifecycle use cases: what sales tools report back (contact, brief, feedback, stages,
payments, back to nurture). Each locks the lead, checks the transition with the pure state
machine (`lifecycle.py`), writes the new state with its history entry, and owes one event
on `leads.lifecycle` in the same transaction. They may write, never commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.event_ids import derived_event_id
from services.qualifier.leads import repository as leads_repository
from services.qualifier.leads.snapshot import combine_answers, merge_answers, summarize_answers
from services.qualifier.lifecycle import repository, stages
from services.qualifier.lifecycle.stages import LeadState, Refused
from services.qualifier.routing import repository as routing_repository
from services.qualifier.routing import service as routing
from services.qualifier.tables import outbox
from shared.db import AnyRow
from shared.events import (
    SOURCE_QUALIFIER,
    Decision,
    Dimensions,
    LeadBriefFilled,
    LeadBriefFilledData,
    LeadContacted,
    LeadContactedData,
    LeadFeedback,
    LeadFeedbackData,
    LeadPaymentReceived,
    LeadPaymentReceivedData,
    LeadRouted,
    LeadRoutedData,
    LeadSnapshot,
    LeadStageChanged,
    LeadStageChangedData,
    Route,
    Stage,
)
from shared.outbox import add_to_outbox


class LeadNotFound(LookupError):
    pass


class PaymentConflict(Exception):
    """A payment id already recorded with other facts (HTTP 409)."""


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


async def _open(conn: AsyncConnection, call: Call) -> tuple[AnyRow, LeadState]:
    row = await leads_repository.lock_lead(conn, call.lead_id)
    if row is None:
        raise LeadNotFound(f"no lead {call.lead_id!r}")
    state = LeadState(
        route=Route(row.route),
        stage=Stage(row.stage),
        contacted=row.first_contacted_at is not None,
    )
    return row, state


def _check_time(row: AnyRow, call: Call) -> None:
    received = LeadSnapshot.model_validate(row.snapshot).occurred_at
    stages.check_business_time(call.at, now=call.now, lead_received=received, skew=call.skew)


def dimensions_of(row: AnyRow) -> Dimensions:
    """The lead's dimensions with its current route and version, as every lifecycle event has."""
    return (
        LeadSnapshot.model_validate(row.snapshot)
        .dimensions()
        .model_copy(update={"route": row.route, "definition_version": row.definition_version})
    )


def _unchanged(row: AnyRow) -> Outcome:
    return Outcome(row.lead_id, Route(row.route), Stage(row.stage), changed=False)


def _new_id() -> str:
    return str(uuid.uuid4())


async def contact(conn: AsyncConnection, call: Call) -> Outcome:
    row, state = await _open(conn, call)
    step = stages.contact(state)
    _check_time(row, call)
    event = LeadContacted(
        id=_new_id(),
        source=SOURCE_QUALIFIER,
        time=call.at,
        subject=call.lead_id,
        data=LeadContactedData(
            lead_id=call.lead_id,
            at=call.at,
            by=call.by,
            dimensions=dimensions_of(row),
            first_contact=step.first_contact,
        ),
    )
    values: dict[str, Any] = {"stage": step.stage.value, "updated_at": call.now}
    if step.first_contact:
        values["first_contacted_at"] = call.at
    await leads_repository.update_lead(conn, call.lead_id, **values)
    await leads_repository.add_history(
        conn,
        lead_id=call.lead_id,
        stage=step.stage,
        at=call.at,
        by=call.by,
        event_id=event.id,
        event_type=event.type,
        reason="first contact" if step.first_contact else "contact",
    )
    await add_to_outbox(conn, outbox, [event])
    return Outcome(call.lead_id, state.route, step.stage, True, [event.id])


async def brief(conn: AsyncConnection, call: Call, answers: dict[str, Any]) -> Outcome:
    """Merge the brief into the lead and qualify it again: a new `lead.routed`."""
    row, state = await _open(conn, call)
    stages.brief(state)
    if row.erased_at is not None:
        raise Refused(state, "the person's data was erased; a brief would collect it again")
    _check_time(row, call)
    lead = merge_answers(LeadSnapshot.model_validate(row.snapshot), answers)
    filled = LeadBriefFilled(
        id=_new_id(),
        source=SOURCE_QUALIFIER,
        time=call.at,
        subject=call.lead_id,
        data=LeadBriefFilledData(
            lead_id=call.lead_id,
            at=call.at,
            by=call.by,
            dimensions=dimensions_of(row),
            answers=answers,
        ),
    )
    await leads_repository.add_history(
        conn,
        lead_id=call.lead_id,
        stage=Stage.contacted,
        at=call.at,
        by=call.by,
        event_id=filled.id,
        event_type=filled.type,
        reason=summarize_answers(answers),
    )
    await add_to_outbox(conn, outbox, [filled])
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
    row, state = await _open(conn, call)
    step = stages.feedback(state, decision)
    if not step.changed:
        return _unchanged(row)
    _check_time(row, call)
    event = LeadFeedback(
        id=_new_id(),
        source=SOURCE_QUALIFIER,
        time=call.at,
        subject=call.lead_id,
        data=LeadFeedbackData(
            lead_id=call.lead_id,
            at=call.at,
            by=call.by,
            dimensions=dimensions_of(row),
            decision=decision.value,
            reason=reason,
        ),
    )
    await leads_repository.update_lead(
        conn,
        call.lead_id,
        stage=step.stage.value,
        feedback=decision.value,
        feedback_at=call.at,
        updated_at=call.now,
    )
    await leads_repository.add_history(
        conn,
        lead_id=call.lead_id,
        stage=step.stage,
        at=call.at,
        by=call.by,
        event_id=event.id,
        event_type=event.type,
        reason=f"sales {decision.value} the lead",
        note=reason,
    )
    await add_to_outbox(conn, outbox, [event])
    return Outcome(call.lead_id, state.route, step.stage, True, [event.id])


async def change_stage(
    conn: AsyncConnection, call: Call, target: Stage, reason: str | None
) -> Outcome:
    row, state = await _open(conn, call)
    step = stages.change_stage(state, target)
    if not step.changed:
        return _unchanged(row)
    _check_time(row, call)
    event = LeadStageChanged(
        id=_new_id(),
        source=SOURCE_QUALIFIER,
        time=call.at,
        subject=call.lead_id,
        data=LeadStageChangedData(
            lead_id=call.lead_id,
            at=call.at,
            by=call.by,
            dimensions=dimensions_of(row),
            stage=step.stage,
            previous_stage=state.stage,
            reason=reason,
        ),
    )
    await leads_repository.update_lead(
        conn, call.lead_id, stage=step.stage.value, updated_at=call.now
    )
    await leads_repository.add_history(
        conn,
        lead_id=call.lead_id,
        stage=step.stage,
        at=call.at,
        by=call.by,
        event_id=event.id,
        event_type=event.type,
        reason=f"{state.stage.value} → {step.stage.value}",
        note=reason,
    )
    await add_to_outbox(conn, outbox, [event])
    return Outcome(call.lead_id, state.route, step.stage, True, [event.id])


@dataclass(frozen=True)
class Payment:
    payment_id: str
    lead_id: str
    amount: Decimal
    currency: str
    at: datetime
    by: str | None
    event_id: str
    created: bool


async def record_payment(
    conn: AsyncConnection, call: Call, *, amount: Decimal, currency: str, payment_id: str | None
) -> Payment:
    """A payment on a won deal; the same `payment_id` again is the same payment, not a new one."""
    row, state = await _open(conn, call)
    if payment_id is not None:
        known = await repository.get_payment(conn, payment_id)
        if known is not None:
            if (known.lead_id, known.amount, known.currency) != (call.lead_id, amount, currency):
                raise PaymentConflict(
                    f"payment {payment_id!r} is already recorded as {known.amount} "
                    f"{known.currency} for lead {known.lead_id}"
                )
            return Payment(
                known.payment_id,
                known.lead_id,
                known.amount,
                known.currency,
                known.at,
                known.by,
                known.event_id,
                created=False,
            )
    stages.payment(state)
    _check_time(row, call)
    payment_id = payment_id or _new_id()
    event = LeadPaymentReceived(
        id=derived_event_id(f"payment/{payment_id}", "received"),
        source=SOURCE_QUALIFIER,
        time=call.at,
        subject=call.lead_id,
        data=LeadPaymentReceivedData(
            lead_id=call.lead_id,
            at=call.at,
            by=call.by,
            dimensions=dimensions_of(row),
            payment_id=payment_id,
            amount=amount,
            currency=currency,
        ),
    )
    await repository.insert_payment(
        conn,
        payment_id=payment_id,
        lead_id=call.lead_id,
        amount=amount,
        currency=currency,
        at=call.at,
        by=call.by,
        event_id=event.id,
        now=call.now,
    )
    await leads_repository.add_history(
        conn,
        lead_id=call.lead_id,
        stage=Stage.won,
        at=call.at,
        by=call.by,
        event_id=event.id,
        event_type=event.type,
        reason=f"payment {amount} {currency}",
    )
    await leads_repository.update_lead(conn, call.lead_id, updated_at=call.now)
    await add_to_outbox(conn, outbox, [event])
    return Payment(payment_id, call.lead_id, amount, currency, call.at, call.by, event.id, True)


async def back_to_nurture(conn: AsyncConnection, call: Call, reason: str | None) -> Outcome:
    """Sales hands a lost or rejected lead back to marketing: a new routing, to nurture.

    It is published as `lead.routed` (route nurture) because that is what nurturing
    tools subscribe to; the decision keeps the version and score of the last one and
    says who sent it back and why.
    """
    row, state = await _open(conn, call)
    step = stages.back_to_nurture(state)
    if not step.changed:
        return _unchanged(row)
    _check_time(row, call)
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
        id=_new_id(),
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
    await leads_repository.add_history(
        conn,
        lead_id=call.lead_id,
        stage=Stage.routed,
        at=call.at,
        by=call.by,
        event_id=routed.id,
        event_type=routed.type,
        reason=why,
        note=reason,
    )
    await add_to_outbox(conn, outbox, [routed])
    return Outcome(call.lead_id, Route.nurture, Stage.routed, True, [routed.id], decision)
