"""A CRM record read back, applied to its lead: the planned lifecycle steps, each through
the same use case a sales tool's call goes through (`lifecycle.service`), so the state
machine, the history, the outbox and the KPI see a CRM's change exactly as an API call.

Idempotent by state: a record applied twice plans nothing the second time (its stage is
the lead's), and a won record's payment has an id derived from the record. So a
notification, its redelivery and the reconciliation poll may all read the same change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.crm import mapping, repository
from services.qualifier.crm.adapter import CrmRecord
from services.qualifier.crm.secrets import AnyConnector
from services.qualifier.lifecycle import payments, service
from services.qualifier.lifecycle.stages import Refused
from shared.events import LeadSnapshot, Stage

log = logging.getLogger(__name__)

STAGE_STEPS = Counter(
    "leadflow_crm_stage_steps_total",
    "Lifecycle steps taken from CRM records (applied, implied, skipped, unknown)",
    ["connector", "result"],
)

Result = Literal["applied", "unchanged", "skipped", "unknown", "erased"]


@dataclass(frozen=True)
class Applied:
    result: Result
    lead_id: str | None = None
    steps: int = 0
    skipped: str | None = None


async def apply_record(
    conn: AsyncConnection,
    connector: AnyConnector,
    record: CrmRecord,
    *,
    currency: str,
    now: datetime,
    skew: timedelta,
) -> Applied:
    link = await repository.lead_of_record(conn, connector.id, record.crm_id)
    lead_id = link.lead_id if link is not None else record.lead_id
    if lead_id is None:
        # A record someone made in the CRM by hand: not a Leadflow lead.
        STAGE_STEPS.labels(connector.id, "unknown").inc()
        return Applied("unknown")
    probe = service.Call(lead_id, now, None, now, skew)
    try:
        row, state = await service.open_lead(conn, probe)
    except service.LeadNotFound:
        STAGE_STEPS.labels(connector.id, "unknown").inc()
        return Applied("unknown", lead_id)
    if row.erased_at is not None:
        return Applied("erased", lead_id)
    if link is None:
        # Created, but the answer with its id was lost: the record carried our lead id.
        await repository.remember_record(
            conn, connector_id=connector.id, lead_id=lead_id, crm_id=record.crm_id, now=now
        )
    plan = mapping.plan(record, connector.stages, state, pay_on_won=connector.payments == "on_won")
    call = service.Call(
        lead_id, _business_time(record, row.snapshot, now), f"crm:{connector.id}", now, skew
    )
    taken = 0
    skipped = plan.skipped
    try:
        for step in plan.steps:
            if step.stage in (Stage.accepted, Stage.rejected):
                outcome = await service.feedback(conn, call, step.stage, step.reason)
            else:
                outcome = await service.change_stage(conn, call, step.stage, step.reason)
            taken += outcome.changed
            STAGE_STEPS.labels(connector.id, "implied" if step.implied else "applied").inc()
        if plan.payment is not None:
            skipped = await _pay(conn, connector, record, plan.payment, call, currency) or skipped
    except Refused as exc:
        # The lead moved meanwhile (a sales tool's call): what the machine says, kept.
        skipped = f"CRM stage {record.stage!r} not applied: {exc}"
    if skipped is not None:
        STAGE_STEPS.labels(connector.id, "skipped").inc()
        log.info("connector %s, lead %s: %s", connector.id, lead_id, skipped)
    await repository.note_stage(
        conn,
        connector_id=connector.id,
        lead_id=lead_id,
        stage=record.stage,
        skipped=skipped,
        now=now,
    )
    if skipped is not None:
        return Applied("skipped", lead_id, taken, skipped)
    return Applied("applied" if taken else "unchanged", lead_id, taken)


async def _pay(
    conn: AsyncConnection,
    connector: AnyConnector,
    record: CrmRecord,
    amount: Decimal,
    call: service.Call,
    currency: str,
) -> str | None:
    if record.currency is not None and record.currency != currency:
        return f"the won amount is in {record.currency}; Leadflow counts {currency} only"
    try:
        await payments.record_payment(
            conn,
            call,
            amount=amount,
            currency=currency,
            payment_id=f"crm:{connector.id}:{record.crm_id}",
        )
    except payments.PaymentConflict:
        return "the won amount changed after its payment was recorded; the first one stands"
    return None


def _business_time(record: CrmRecord, snapshot: object, now: datetime) -> datetime:
    """When it happened, as the CRM says, kept between the lead's arrival and now (the
    CRM's clock is not ours)."""
    received = LeadSnapshot.model_validate(snapshot).occurred_at
    return min(max(record.modified_at, received), now)
