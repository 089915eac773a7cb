"""Deciding leads: one path for every cause (a received lead, a webinar attendance, a brief).

It runs inside the caller's transaction (a consumed batch, an HTTP request): it may
write, never commit, so a decision, its history and the events it owes commit together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.definitions.model import Assignment, LeadDefinition
from services.qualifier.definitions.service import active
from services.qualifier.deliveries import repository as deliveries_repository
from services.qualifier.event_ids import QUALIFIER, derived_event_id
from services.qualifier.leads import repository as leads_repository
from services.qualifier.leads.snapshot import erase_person, merge_answers
from services.qualifier.outbound import publish
from services.qualifier.routing import repository
from services.qualifier.routing.evaluator import AssignmentState, evaluate
from services.qualifier.sla import repository as sla_repository
from shared.events import (
    SOURCE_QUALIFIER,
    Decision,
    LeadReceived,
    LeadRouted,
    LeadRoutedData,
    LeadSnapshot,
    LeadWebinarAttended,
    Route,
    Stage,
    encode_event,
)

log = logging.getLogger(__name__)

# Attending a webinar is news for a lead still being warmed up or still missing
# information; one that sales or a partner already works is left as it is.
_REQUALIFY_ON_ATTENDANCE = {Route.nurture, Route.processing}


async def assignment_state(
    conn: AsyncConnection, definition: LeadDefinition, now: datetime
) -> AssignmentState:
    """Counters, loads and absences, under the lock that serializes assignment."""
    await repository.lock_round_robin(conn)
    least_loaded = any(t.assign is Assignment.least_loaded for t in definition.sales_teams)
    return AssignmentState(
        round_robin_next=await repository.round_robin_counters(conn),
        open_leads=await repository.open_leads_by_assignee(conn) if least_loaded else {},
        absent=await sla_repository.absent_members(conn, now),
    )


@dataclass(frozen=True)
class Cause:
    """A lead to decide, and the event that asks for it (its id and business time)."""

    lead: LeadSnapshot
    cause_id: str
    time: datetime
    # The lead has a row already: it is updated, not inserted.
    stored: bool = False
    # Already contacted: if it still lacks information it stays `contacted`, so its brief
    # can be completed without a second first contact.
    contacted: bool = False
    # The person was erased: the decision is made and counted, but what is stored and
    # published about them holds no personal data and no partner receives it.
    erased_at: datetime | None = None


async def decide(
    conn: AsyncConnection, causes: Sequence[Cause], *, now: datetime
) -> list[tuple[Decision, LeadRouted]]:
    """Decide leads with the active definition, store them and owe their `lead.routed`
    (and partner deliveries), as if one after the other, in a few multi-row statements:
    the definition and the assignment state are read once, and the state moves on in
    memory from one lead's assignment to the next.

    Each event's id derives from its cause, and it carries the cause's business `time`.
    """
    number, definition = await active(conn)
    state = await assignment_state(conn, definition, now)
    writes = _Writes()
    decided: list[tuple[Decision, LeadRouted]] = []
    for cause in causes:
        result = evaluate(cause.lead, definition, number, now=now, assignment=state)
        decision = result.decision
        state = _advance(state, result.round_robin_advance, decision)
        if result.round_robin_advance is not None:
            team, next_index = result.round_robin_advance
            writes.round_robin[team] = next_index
        decided.append((decision, writes.add(cause, decision, definition, now=now)))
    await writes.flush(conn, now=now)
    return decided


async def qualify_leads(
    conn: AsyncConnection, causes: Sequence[LeadReceived], *, now: datetime
) -> list[Decision]:
    """Decide received leads together (`decide`); one decision per cause.

    A lead that came in first by another event (its webinar attendance, say) was decided
    then; a second `lead.received` for it is not a second lead.
    """
    ids = [c.data.lead_id for c in causes]
    existing = {
        lead_id: Decision.model_validate(stored)
        for lead_id, stored in (await repository.current_decisions(conn, ids)).items()
    }
    erased_at = await leads_repository.erasures_of(conn, ids)
    new: dict[str, Cause] = {}
    for received in causes:
        lead = received.data
        if lead.lead_id in existing or lead.lead_id in new:
            log.warning(
                "lead %s is already qualified; ignoring lead.received %s", lead.lead_id, received.id
            )
            continue
        erased = erased_at.get(lead.lead_id)
        new[lead.lead_id] = Cause(lead, received.id, received.time, erased_at=erased)
    decided = await decide(conn, list(new.values()), now=now)
    existing |= {lead_id: decision for lead_id, (decision, _) in zip(new, decided, strict=True)}
    return [existing[c.data.lead_id] for c in causes]


def _advance(
    state: AssignmentState, advance: tuple[str, int] | None, decision: Decision
) -> AssignmentState:
    """The assignment state the next lead of a run sees: what re-reading it would give."""
    counters = dict(state.round_robin_next)
    if advance is not None:
        counters[advance[0]] = advance[1]
    loads = dict(state.open_leads)
    if decision.route is Route.sales and decision.assignee is not None:
        loads[decision.assignee] = loads.get(decision.assignee, 0) + 1
    return AssignmentState(round_robin_next=counters, open_leads=loads, absent=state.absent)


class _Writes:
    """The rows a run of decisions owes, written together at the end."""

    def __init__(self) -> None:
        self.new_leads: list[dict[str, Any]] = []
        self.stored_leads: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.events: list[LeadRouted] = []
        self.deliveries: list[dict[str, Any]] = []
        self.round_robin: dict[str, int] = {}

    def add(
        self, cause: Cause, decision: Decision, definition: LeadDefinition, *, now: datetime
    ) -> LeadRouted:
        lead, erased = cause.lead, cause.erased_at is not None
        stage = (
            Stage.contacted
            if cause.contacted and decision.route is Route.processing
            else Stage.routed
        )
        stored = lead.model_dump(mode="json")
        if erased:
            stored = erase_person(stored)
        routed = _routed(lead, stored, decision, cause_id=cause.cause_id, time=cause.time)
        row = {"lead_id": lead.lead_id} | repository.lead_row(lead, stored, decision, stage, now)
        if not cause.stored:
            self.new_leads.append(row | {"erased_at": cause.erased_at})
        else:
            self.stored_leads.append(row | ({"erased_at": cause.erased_at} if erased else {}))
        self.decisions.append(repository.decision_row(lead.lead_id, decision, cause.cause_id))
        self.history.append(
            leads_repository.history_row(
                lead_id=lead.lead_id,
                stage=stage,
                at=cause.time,
                by=QUALIFIER,
                reason=" ".join(decision.reasons),
                event_id=routed.id,
                event_type=routed.type,
            )
        )
        self.events.append(routed)
        partner = definition.partner(decision.partner) if decision.partner else None
        if partner is not None and partner.webhook_url and not erased:
            self.deliveries.append(
                deliveries_repository.delivery_row(
                    delivery_id=derived_event_id(routed.id, "delivery"),
                    lead_id=lead.lead_id,
                    target_id=partner.id,
                    event_id=routed.id,
                    url=partner.webhook_url,
                    payload=encode_event(routed),
                    now=now,
                )
            )
        return routed

    async def flush(self, conn: AsyncConnection, *, now: datetime) -> None:
        for team, next_index in self.round_robin.items():
            await repository.set_round_robin(conn, team, next_index)
        for row in self.stored_leads:
            await leads_repository.update_lead(conn, **row)
        await repository.insert_decided(conn, self.new_leads, self.decisions, self.history)
        await deliveries_repository.insert_deliveries(conn, self.deliveries)
        await publish(conn, self.events, now=now)


def _routed(
    lead: LeadSnapshot, stored: dict[str, Any], decision: Decision, *, cause_id: str, time: datetime
) -> LeadRouted:
    return LeadRouted(
        id=derived_event_id(cause_id, "routed"),
        source=SOURCE_QUALIFIER,
        time=time,
        subject=lead.lead_id,
        data=LeadRoutedData(**LeadSnapshot.model_validate(stored).model_dump(), decision=decision),
    )


async def record_webinar_attendance(
    conn: AsyncConnection, cause: LeadWebinarAttended, *, now: datetime
) -> Decision | None:
    """Keep the updated snapshot; qualify again a lead still warmed up or in processing.

    A new routing is stored and published only when the route changes: a nurtured lead
    that still scores too low stays nurtured without a second `lead.routed` to count.
    Returns the new decision, if any.
    """
    lead = cause.data
    row = await leads_repository.lock_lead(conn, lead.lead_id)
    if row is None:
        # Attendance is the first we hear of this lead: it is a lead like any other.
        erased_at = await leads_repository.erasure_of(conn, lead.lead_id)
        [(decision, _)] = await decide(
            conn, [Cause(lead, cause.id, cause.time, erased_at=erased_at)], now=now
        )
        return decision
    if row.erased_at is not None:
        return None
    if row.brief_answers:
        lead = merge_answers(lead, row.brief_answers)
    await leads_repository.update_snapshot(conn, lead.lead_id, lead.model_dump(mode="json"), now)
    route, stage = Route(row.route), Stage(row.stage)
    if route not in _REQUALIFY_ON_ATTENDANCE or stage not in (Stage.routed, Stage.contacted):
        return None
    number, definition = await active(conn)
    preview = evaluate(lead, definition, number, now=now).decision
    if preview.route is route:
        return None
    again = Cause(lead, cause.id, cause.time, stored=True, contacted=stage is Stage.contacted)
    [(decision, _)] = await decide(conn, [again], now=now)
    return decision
