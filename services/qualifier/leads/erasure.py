"""Erasure: the person is forgotten; the decisions, the route, the stages and the counts stay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.crm import pushes as crm_pushes
from services.qualifier.definitions.service import NoActiveDefinition, active
from services.qualifier.deliveries import repository as deliveries_repository
from services.qualifier.event_ids import derived_event_id
from services.qualifier.leads import repository
from services.qualifier.leads.snapshot import erase_person
from services.qualifier.subscriptions import service as subscriptions
from shared.events import (
    SOURCE_QUALIFIER,
    Event,
    LeadBriefFilled,
    LeadErased,
    LeadErasedData,
    LeadFeedback,
    LeadRouted,
    LeadRoutedData,
    LeadStageChanged,
    decode_event,
    encode_event,
)


async def erase_lead(conn: AsyncConnection, cause: LeadErased, *, now: datetime) -> None:
    """Forget the person; keep the decisions, the route, the stages and the counts.

    Partners that may have the lead (a delivery was attempted) are owed a signed
    `lead.erased` webhook, through the same queue as leads.
    """
    lead_id = cause.data.lead_id
    await repository.record_erasure(conn, lead_id, cause.data.at, cause.id)
    row = await repository.lock_lead(conn, lead_id)
    if row is None:
        return  # the tombstone erases it on arrival
    owed: list[dict[str, Any]] = []
    if row.erased_at is None:
        await repository.update_lead(
            conn,
            lead_id,
            snapshot=erase_person(row.snapshot),
            brief_answers=None,
            erased_at=cause.data.at,
            updated_at=now,
        )
        owed = await _erasure_webhooks(conn, cause, now=now)
        # Subscriptions wanting `lead.erased` get the erasure itself (it holds no person).
        await subscriptions.owe(conn, [cause], now=now)
    await repository.erase_history_text(conn, lead_id)
    # Every kind: partner and webhook bodies with the person, CRM pushes (their erase rows,
    # which hold nothing of the person, stay).
    await deliveries_repository.cancel_deliveries_of(conn, lead_id, now)
    # Each CRM that has the lead's record is owed an erase of its personal fields.
    await crm_pushes.owe_erasures(conn, lead_id, cause_id=cause.id, now=now)
    await deliveries_repository.insert_deliveries(conn, owed)
    # Events of the lead still waiting for Kafka go out without the person, too.
    for pending in await repository.pending_events_of(conn, lead_id):
        scrubbed = _without_person(decode_event(pending.payload))
        if scrubbed is not None:
            await repository.replace_pending_payload(conn, pending.id, encode_event(scrubbed))


async def _erasure_webhooks(
    conn: AsyncConnection, cause: LeadErased, *, now: datetime
) -> list[dict[str, Any]]:
    """One `lead.erased` delivery per partner that may have the lead: to its webhook in the
    active definition, else where the lead was sent. It is due once any attempt under way
    to send the lead has had its time, so the erasure does not overtake the lead."""
    lead_id = cause.data.lead_id
    sent = await deliveries_repository.partners_that_may_have_the_lead(conn, lead_id)
    if not sent:
        return []
    try:
        _, definition = await active(conn)
        current = {p.id: p.webhook_url for p in definition.partners if p.webhook_url}
    except NoActiveDefinition:
        current = {}
    leases = [r.next_attempt_at for r in sent if r.claim_token is not None]
    due = max([now, *leases])
    rows: list[dict[str, Any]] = []
    for partner_id in dict.fromkeys(r.partner_id for r in sent):
        last_url = next(r.url for r in sent if r.partner_id == partner_id)
        event = LeadErased(
            id=derived_event_id(cause.id, f"erased/{partner_id}"),
            source=SOURCE_QUALIFIER,
            time=cause.time,
            subject=lead_id,
            data=LeadErasedData(lead_id=lead_id, at=cause.data.at),
        )
        rows.append(
            deliveries_repository.delivery_row(
                delivery_id=derived_event_id(event.id, "delivery"),
                lead_id=lead_id,
                target_id=partner_id,
                event_id=event.id,
                event_type=event.type,
                url=current.get(partner_id, last_url),
                payload=encode_event(event),
                now=now,
                due=due,
            )
        )
    return rows


def _without_person(event: Event) -> Event | None:
    """A pending event of an erased lead rewritten without the person; None if it holds
    nothing of theirs. Sales' free text goes too (it may name people)."""
    if isinstance(event, LeadRouted):
        data = LeadRoutedData.model_validate(erase_person(event.data.model_dump(mode="json")))
        return event.model_copy(update={"data": data})
    if isinstance(event, LeadBriefFilled):
        return event.model_copy(update={"data": event.data.model_copy(update={"answers": {}})})
    if isinstance(event, LeadFeedback | LeadStageChanged) and event.data.reason is not None:
        return event.model_copy(update={"data": event.data.model_copy(update={"reason": None})})
    return None
