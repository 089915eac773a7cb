"""Erasing the person behind a lead. Runs inside the caller's transaction: never commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.erasure import repository
from services.intake.erasure.redact import redact
from services.intake.erasure.schemas import ErasureResult
from services.intake.keys.repository import destroy_key
from services.intake.leads import repository as leads_repository
from services.intake.tables import outbox
from shared.events import (
    SOURCE_INTAKE,
    LeadErased,
    LeadErasedData,
    LeadReceived,
    LeadSnapshot,
    LeadWebinarAttended,
    decode_event,
    encode_event,
)
from shared.outbox import add_to_outbox


async def erase_personal_data(
    conn: AsyncConnection, lead_id: str, *, by: str, now: datetime
) -> ErasureResult | None:
    """Forget the person behind a lead, keep the lead, and tell the other services.

    None when there is no such lead. A second erasure changes nothing and emits nothing.
    """
    row = await leads_repository.get_lead(conn, lead_id, for_update=True)
    if row is None:
        return None
    if row.erased_at is not None:
        return ErasureResult(lead_id=lead_id, status="already_erased", erased_at=row.erased_at)
    await repository.erase_lead(conn, redact(LeadSnapshot.model_validate(row.snapshot)), now)
    # Crypto-shredding: every sealed copy of the person, on every topic, becomes noise.
    await destroy_key(conn, lead_id, now)
    # Events of this lead still waiting for Kafka go out without the person, too.
    for pending in await repository.pending_events_of(conn, lead_id):
        event = decode_event(pending.payload)
        if isinstance(event, LeadReceived | LeadWebinarAttended):
            scrubbed = event.model_copy(update={"data": redact(event.data)})
            await repository.replace_pending_payload(conn, pending.id, encode_event(scrubbed))
    erased = LeadErased(
        source=SOURCE_INTAKE,
        time=now,
        subject=lead_id,
        data=LeadErasedData(lead_id=lead_id, at=now, by=by),
    )
    await add_to_outbox(conn, outbox, [erased])
    return ErasureResult(lead_id=lead_id, status="erased", erased_at=now)
