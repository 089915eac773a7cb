"""Payments on won deals: the same `payment_id` again is the same payment, not a new one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.event_ids import derived_event_id
from services.qualifier.leads import repository as leads_repository
from services.qualifier.lifecycle import repository, stages
from services.qualifier.lifecycle.service import (
    Call,
    check_time,
    lifecycle_event,
    new_id,
    open_lead,
    record,
)
from shared.events import LeadPaymentReceived, LeadPaymentReceivedData, Stage


class PaymentConflict(Exception):
    """A payment id already recorded with other facts (HTTP 409)."""


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
    row, state = await open_lead(conn, call)
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
    check_time(row, call)
    payment_id = payment_id or new_id()
    event = lifecycle_event(
        LeadPaymentReceived,
        LeadPaymentReceivedData,
        call,
        row,
        event_id=derived_event_id(f"payment/{payment_id}", "received"),
        payment_id=payment_id,
        amount=amount,
        currency=currency,
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
    await record(conn, call, event, stage=Stage.won, reason=f"payment {amount} {currency}")
    await leads_repository.update_lead(conn, call.lead_id, updated_at=call.now)
    return Payment(payment_id, call.lead_id, amount, currency, call.at, call.by, event.id, True)
