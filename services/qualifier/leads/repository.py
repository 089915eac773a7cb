"""Every query of the qualifier service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import (
    decisions,
    definitions,
    erasures,
    idempotency_keys,
    leads,
    outbox,
    partner_deliveries,
    payments,
    round_robin,
    sales_members,
    stage_history,
)
from shared.db import AnyRow, in_list
from shared.events import Decision, LeadSnapshot, Route, Stage
from shared.outbox import pending_of

# Advisory lock ids: transaction-scoped locks that serialize work across replicas.
_ROUND_ROBIN_LOCK = 0x1EAD0A55
_DEFINITIONS_LOCK = 0x1EAD0DEF


# Definitions ------------------------------------------------------------------------------


async def active_definition(conn: AsyncConnection) -> AnyRow | None:
    """The active version's number and creation time, without its document."""
    return (
        await conn.execute(
            sa.select(definitions.c.version, definitions.c.created_at).where(
                definitions.c.status == "active"
            )
        )
    ).first()


async def has_definitions(conn: AsyncConnection) -> bool:
    return bool(await conn.scalar(sa.select(sa.func.count()).select_from(definitions)))


async def lock_definitions(conn: AsyncConnection) -> None:
    """Creating and publishing versions one at a time keeps numbers dense and one active."""
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_DEFINITIONS_LOCK)))


async def highest_definition_version(conn: AsyncConnection) -> int:
    """The highest version number so far (0 on an empty table)."""
    highest = await conn.scalar(sa.select(sa.func.max(definitions.c.version)))
    return int(highest or 0)


async def insert_definition(
    conn: AsyncConnection,
    *,
    version: int,
    name: str,
    status: str,
    document: dict[str, Any],
    source_text: str,
    at: datetime,
    by: str | None,
) -> bool:
    """Insert a definition version; False if that version exists already (a racing replica)."""
    result = await conn.execute(
        postgresql.insert(definitions).on_conflict_do_nothing().values(
            version=version, name=name, status=status, document=document,
            source_text=source_text, created_at=at, created_by=by,
            published_at=at if status == "active" else None,
            published_by=by if status == "active" else None,
        )
    )  # fmt: skip
    return bool(result.rowcount)


async def list_definitions(conn: AsyncConnection) -> list[AnyRow]:
    d = definitions
    return list(
        (
            await conn.execute(
                sa.select(d.c.version, d.c.name, d.c.status, d.c.created_at, d.c.created_by,
                          d.c.published_at, d.c.published_by).order_by(d.c.version)
            )
        ).all()
    )  # fmt: skip


async def get_definition(conn: AsyncConnection, version: int) -> AnyRow | None:
    return (
        await conn.execute(sa.select(definitions).where(definitions.c.version == version))
    ).first()


async def activate_definition(
    conn: AsyncConnection, version: int, *, at: datetime, by: str | None
) -> None:
    """Retire the active version and activate `version`, in the caller's transaction."""
    d = definitions
    await conn.execute(d.update().where(d.c.status == "active").values(status="retired"))
    await conn.execute(
        d.update()
        .where(d.c.version == version)
        .values(status="active", published_at=at, published_by=by)
    )


# Assignment -------------------------------------------------------------------------------


async def round_robin_counters(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(sa.select(round_robin.c.team, round_robin.c.next_index))
    return {team: index for team, index in rows}


async def lock_round_robin(conn: AsyncConnection) -> None:
    """Replicas assigning at once would hand two leads to the same person."""
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_ROUND_ROBIN_LOCK)))


async def set_round_robin(conn: AsyncConnection, team: str, next_index: int) -> None:
    updated = await conn.execute(
        round_robin.update().where(round_robin.c.team == team).values(next_index=next_index)
    )
    if not updated.rowcount:
        await conn.execute(round_robin.insert().values(team=team, next_index=next_index))


async def open_leads_by_assignee(conn: AsyncConnection) -> dict[str, int]:
    """Leads each person holds that still wait for sales: routed or contacted, no feedback."""
    open_stages = [Stage.routed.value, Stage.contacted.value]
    rows = await conn.execute(
        sa.select(leads.c.assignee, sa.func.count())
        .where(
            leads.c.assignee.is_not(None),
            leads.c.route == Route.sales.value,
            leads.c.stage.in_(open_stages),
        )
        .group_by(leads.c.assignee)
    )
    return {assignee: count for assignee, count in rows}


async def absent_members(conn: AsyncConnection, now: datetime) -> frozenset[str]:
    m = sales_members
    rows = await conn.execute(
        sa.select(m.c.member).where(
            m.c.absent.is_(True), sa.or_(m.c.absent_until.is_(None), m.c.absent_until > now)
        )
    )
    return frozenset(r[0] for r in rows)


async def set_absence(
    conn: AsyncConnection,
    member: str,
    *,
    absent: bool,
    until: datetime | None,
    note: str | None,
    now: datetime,
    by: str | None,
) -> None:
    values = {
        "absent": absent, "absent_until": until if absent else None, "note": note,
        "updated_at": now, "updated_by": by,
    }  # fmt: skip
    updated = await conn.execute(
        sales_members.update().where(sales_members.c.member == member).values(**values)
    )
    if not updated.rowcount:
        await conn.execute(sales_members.insert().values(member=member, **values))


async def list_absences(conn: AsyncConnection) -> list[AnyRow]:
    return list(
        (await conn.execute(sa.select(sales_members).order_by(sales_members.c.member))).all()
    )


# Leads ------------------------------------------------------------------------------------


async def get_lead(conn: AsyncConnection, lead_id: str) -> AnyRow | None:
    return (await conn.execute(sa.select(leads).where(leads.c.lead_id == lead_id))).first()


async def lock_lead(conn: AsyncConnection, lead_id: str) -> AnyRow | None:
    """The lead, locked for this transaction: two calls on one lead apply one after the other."""
    stmt = sa.select(leads).where(leads.c.lead_id == lead_id).with_for_update()
    return (await conn.execute(stmt)).first()


async def lead_exists(conn: AsyncConnection, lead_id: str) -> bool:
    return (await conn.scalar(sa.select(sa.func.count()).where(leads.c.lead_id == lead_id))) == 1


def lead_row(
    lead: LeadSnapshot, stored_snapshot: dict[str, Any], decision: Decision, stage: Stage,
    now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """A decided lead's columns (insert or update)."""
    return {
        "snapshot": stored_snapshot,
        "received_at": lead.received_at,
        "route": decision.route.value,
        "stage": stage.value,
        "definition_version": decision.definition_version,
        "team": decision.team,
        "assignee": decision.assignee,
        "sla_due_at": decision.sla_due_at,
        "decision": decision.model_dump(mode="json"),
        "updated_at": now,
    }


def decision_row(lead_id: str, decision: Decision, cause_event_id: str) -> dict[str, Any]:
    return {
        "lead_id": lead_id, "definition_version": decision.definition_version,
        "route": decision.route.value, "score": decision.score,
        "decision": decision.model_dump(mode="json"), "decided_at": decision.decided_at,
        "cause_event_id": cause_event_id,
    }  # fmt: skip


async def save_decision(
    conn: AsyncConnection,
    *,
    lead: LeadSnapshot,
    stored_snapshot: dict[str, Any],
    decision: Decision,
    stage: Stage,
    cause_event_id: str,
    now: datetime,
) -> None:
    """Store the lead with its current decision, and the decision in its history."""
    values = lead_row(lead, stored_snapshot, decision, stage, now)
    updated = await conn.execute(
        leads.update().where(leads.c.lead_id == lead.lead_id).values(**values)
    )
    if not updated.rowcount:
        await conn.execute(leads.insert().values(lead_id=lead.lead_id, **values))
    await conn.execute(
        decisions.insert().values(decision_row(lead.lead_id, decision, cause_event_id))
    )


async def insert_decided(
    conn: AsyncConnection,
    lead_rows: Sequence[dict[str, Any]],
    decision_rows: Sequence[dict[str, Any]],
    history_rows: Sequence[dict[str, Any]],
) -> None:
    """Leads decided for the first time (`lead_row` plus lead_id), and the decisions and
    history rows of a run of decisions, in three multi-row statements."""
    for table, rows in (
        (leads, lead_rows),
        (decisions, decision_rows),
        (stage_history, history_rows),
    ):
        if rows:
            await conn.execute(table.insert(), list(rows))


async def current_decisions(conn: AsyncConnection, lead_ids: Sequence[str]) -> dict[str, Any]:
    """The current decision of each of these leads that is already stored."""
    rows = await conn.execute(
        sa.select(leads.c.lead_id, leads.c.decision).where(in_list(conn, leads.c.lead_id, lead_ids))
    )
    return {lead_id: decision for lead_id, decision in rows}


async def update_snapshot(
    conn: AsyncConnection, lead_id: str, snapshot: dict[str, Any], now: datetime
) -> None:
    await conn.execute(
        leads.update().where(leads.c.lead_id == lead_id).values(snapshot=snapshot, updated_at=now)
    )


async def update_lead(conn: AsyncConnection, lead_id: str, **values: Any) -> None:
    await conn.execute(leads.update().where(leads.c.lead_id == lead_id).values(**values))


def history_row(
    *,
    lead_id: str,
    stage: Stage,
    at: datetime,
    by: str | None,
    event_id: str,
    event_type: str,
    reason: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "lead_id": lead_id, "stage": stage.value, "at": at, "by": by, "reason": reason,
        "note": note, "event_id": event_id, "event_type": event_type,
    }  # fmt: skip


async def add_history(
    conn: AsyncConnection,
    *,
    lead_id: str,
    stage: Stage,
    at: datetime,
    by: str | None,
    event_id: str,
    event_type: str,
    reason: str | None = None,
    note: str | None = None,
) -> None:
    await conn.execute(
        stage_history.insert().values(
            history_row(
                lead_id=lead_id, stage=stage, at=at, by=by, reason=reason, note=note,
                event_id=event_id, event_type=event_type,
            )
        )
    )  # fmt: skip


async def stage_history_of(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    h = stage_history
    return list(
        (
            await conn.execute(
                sa.select(h.c.stage, h.c.at, h.c.by, h.c.reason, h.c.note, h.c.event_type,
                          h.c.event_id)
                .where(h.c.lead_id == lead_id)
                .order_by(h.c.at, h.c.id)
            )
        ).all()
    )  # fmt: skip


async def decisions_of(conn: AsyncConnection, lead_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        sa.select(decisions.c.decision)
        .where(decisions.c.lead_id == lead_id)
        .order_by(decisions.c.id)
    )
    return [r[0] for r in rows]


async def leads_for_backtest(
    conn: AsyncConnection, *, since: datetime, until: datetime, after: str | None, limit: int
) -> list[AnyRow]:
    """One page of leads received in [since, until), by lead id (keyset paging)."""
    stmt = (
        sa.select(leads.c.lead_id, leads.c.snapshot, leads.c.feedback, leads.c.erased_at)
        .where(leads.c.received_at >= since, leads.c.received_at < until)
        .order_by(leads.c.lead_id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(leads.c.lead_id > after)
    return list((await conn.execute(stmt)).all())


# SLA --------------------------------------------------------------------------------------


async def overdue_sales_leads(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Sales leads past their deadline with no feedback yet, the longest overdue first."""
    rows = await conn.execute(
        sa.select(leads.c.lead_id)
        .where(
            leads.c.route == Route.sales.value,
            leads.c.stage.in_([Stage.routed.value, Stage.contacted.value]),
            leads.c.sla_due_at <= now,
        )
        .order_by(leads.c.sla_due_at)
        .limit(limit)
    )
    return [r[0] for r in rows]


async def lock_overdue_lead(conn: AsyncConnection, lead_id: str, now: datetime) -> AnyRow | None:
    """The lead if it is still overdue, locked; None if another replica has it or handled it.

    `SKIP LOCKED` lets a second replica pass over a lead the first is reassigning rather
    than wait for it and then find the work done.
    """
    stmt = (
        sa.select(leads)
        .where(
            leads.c.lead_id == lead_id,
            leads.c.route == Route.sales.value,
            leads.c.stage.in_([Stage.routed.value, Stage.contacted.value]),
            leads.c.sla_due_at <= now,
        )
        .with_for_update(skip_locked=True)
    )
    return (await conn.execute(stmt)).first()


async def reassign_overdue(
    conn: AsyncConnection,
    lead_id: str,
    *,
    expected_due: datetime,
    assignee: str | None,
    sla_due_at: datetime,
    now: datetime,
) -> bool:
    """Move the deadline on, only if nobody moved it first: True when this call did."""
    result = await conn.execute(
        leads.update()
        .where(leads.c.lead_id == lead_id, leads.c.sla_due_at == expected_due)
        .values(assignee=assignee, sla_due_at=sla_due_at, updated_at=now)
    )
    return result.rowcount == 1


# Erasure ----------------------------------------------------------------------------------


async def record_erasure(
    conn: AsyncConnection, lead_id: str, erased_at: datetime, event_id: str
) -> None:
    await conn.execute(
        postgresql.insert(erasures)
        .on_conflict_do_nothing()
        .values(lead_id=lead_id, erased_at=erased_at, event_id=event_id)
    )


async def erasure_of(conn: AsyncConnection, lead_id: str) -> datetime | None:
    erased: datetime | None = await conn.scalar(
        sa.select(erasures.c.erased_at).where(erasures.c.lead_id == lead_id)
    )
    return erased


async def erasures_of(conn: AsyncConnection, lead_ids: Sequence[str]) -> dict[str, datetime]:
    rows = await conn.execute(
        sa.select(erasures.c.lead_id, erasures.c.erased_at).where(
            in_list(conn, erasures.c.lead_id, lead_ids)
        )
    )
    return {lead_id: at for lead_id, at in rows}


async def erase_history_text(conn: AsyncConnection, lead_id: str) -> None:
    """The lead's history keeps its stages, times and who; the words go (notes sales
    wrote, reasons that may repeat what the person said)."""
    await conn.execute(
        stage_history.update()
        .where(stage_history.c.lead_id == lead_id)
        .values(note=None, reason=None)
    )


async def pending_events_of(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    """The lead's events still in the outbox, safe to rewrite (`shared.outbox.pending_of`)."""
    return await pending_of(conn, outbox, lead_id)


async def replace_pending_payload(conn: AsyncConnection, row_id: int, payload: bytes) -> None:
    await conn.execute(outbox.update().where(outbox.c.id == row_id).values(payload=payload))


# Payments ---------------------------------------------------------------------------------


async def get_payment(conn: AsyncConnection, payment_id: str) -> AnyRow | None:
    return (
        await conn.execute(sa.select(payments).where(payments.c.payment_id == payment_id))
    ).first()


async def insert_payment(
    conn: AsyncConnection,
    *,
    payment_id: str,
    lead_id: str,
    amount: Decimal,
    currency: str,
    at: datetime,
    by: str | None,
    event_id: str,
    now: datetime,
) -> None:
    await conn.execute(
        payments.insert().values(
            payment_id=payment_id, lead_id=lead_id, amount=amount, currency=currency, at=at,
            by=by, event_id=event_id, created_at=now,
        )
    )  # fmt: skip


async def payments_of(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    return list(
        (
            await conn.execute(
                sa.select(payments).where(payments.c.lead_id == lead_id).order_by(payments.c.at)
            )
        ).all()
    )


# Idempotency keys -------------------------------------------------------------------------


async def lock_idempotency_key(conn: AsyncConnection, principal: str, key: str) -> None:
    await conn.execute(
        sa.select(
            sa.func.pg_advisory_xact_lock(
                sa.func.hashtextextended(f"qualifier|{principal}|{key}", 0)
            )
        )
    )


async def get_idempotent_response(
    conn: AsyncConnection, principal: str, key: str, not_before: datetime
) -> AnyRow | None:
    k = idempotency_keys
    return (
        await conn.execute(
            sa.select(k.c.request_hash, k.c.status_code, k.c.response).where(
                k.c.principal == principal, k.c.key == key, k.c.created_at >= not_before
            )
        )
    ).first()


async def save_idempotent_response(
    conn: AsyncConnection,
    *,
    principal: str,
    key: str,
    request_hash: str,
    status_code: int,
    response: dict[str, Any],
    now: datetime,
) -> None:
    k = idempotency_keys
    # An expired row for the same key is replaced, not kept beside the new one.
    await conn.execute(k.delete().where(k.c.principal == principal, k.c.key == key))
    await conn.execute(
        k.insert().values(
            principal=principal, key=key, request_hash=request_hash, status_code=status_code,
            response=response, created_at=now,
        )
    )  # fmt: skip


async def delete_idempotency_keys_before(conn: AsyncConnection, before: datetime) -> int:
    result = await conn.execute(
        idempotency_keys.delete().where(idempotency_keys.c.created_at < before)
    )
    return int(result.rowcount or 0)


# Partner deliveries -----------------------------------------------------------------------


def delivery_row(
    *,
    delivery_id: str,
    lead_id: str,
    partner_id: str,
    event_id: str,
    url: str,
    payload: bytes,
    now: datetime,
    event_type: str = "lead.routed",
    due: datetime | None = None,
) -> dict[str, Any]:
    return {
        "id": delivery_id, "lead_id": lead_id, "partner_id": partner_id, "event_id": event_id,
        "event_type": event_type, "url": url, "payload": payload, "status": "pending",
        "attempts": 0, "next_attempt_at": due or now, "created_at": now, "updated_at": now,
    }  # fmt: skip


async def insert_delivery(
    conn: AsyncConnection,
    *,
    delivery_id: str,
    lead_id: str,
    partner_id: str,
    event_id: str,
    url: str,
    payload: bytes,
    now: datetime,
) -> None:
    await insert_deliveries(
        conn,
        [delivery_row(delivery_id=delivery_id, lead_id=lead_id, partner_id=partner_id,
                      event_id=event_id, url=url, payload=payload, now=now)],
    )  # fmt: skip


async def insert_deliveries(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Partner deliveries owed; one already owed (a replayed decision) is kept as it is."""
    if rows:
        await conn.execute(
            postgresql.insert(partner_deliveries).on_conflict_do_nothing(), list(rows)
        )


async def due_deliveries(conn: AsyncConnection, now: datetime, limit: int) -> list[AnyRow]:
    p = partner_deliveries
    return list(
        (
            await conn.execute(
                sa.select(p.c.id, p.c.next_attempt_at)
                .where(p.c.status == "pending", p.c.next_attempt_at <= now)
                .order_by(p.c.next_attempt_at)
                .limit(limit)
            )
        ).all()
    )


async def next_delivery_due(conn: AsyncConnection) -> datetime | None:
    p = partner_deliveries
    due: datetime | None = await conn.scalar(
        sa.select(sa.func.min(p.c.next_attempt_at)).where(p.c.status == "pending")
    )
    return due


async def claim_delivery(
    conn: AsyncConnection, delivery_id: str, *, token: str, now: datetime, lease_until: datetime
) -> AnyRow | None:
    """Lease a due delivery for one attempt; None when another deliverer got it first.

    The conditional UPDATE is the arbiter: of two replicas claiming the same row, the
    second finds `next_attempt_at` already moved to the lease's end and updates nothing.
    """
    p = partner_deliveries
    result = await conn.execute(
        p.update()
        .where(p.c.id == delivery_id, p.c.status == "pending", p.c.next_attempt_at <= now)
        .values(
            claim_token=token, next_attempt_at=lease_until, attempts=p.c.attempts + 1,
            updated_at=now,
        )
    )  # fmt: skip
    if result.rowcount != 1:
        return None
    return (
        await conn.execute(
            sa.select(p.c.id, p.c.lead_id, p.c.partner_id, p.c.event_id, p.c.url, p.c.payload,
                      p.c.attempts).where(p.c.id == delivery_id)
        )
    ).first()  # fmt: skip


async def finish_attempt(
    conn: AsyncConnection, delivery_id: str, *, token: str, **values: Any
) -> bool:
    """Record an attempt's outcome, if the attempt still owns the delivery."""
    p = partner_deliveries
    result = await conn.execute(
        p.update()
        .where(p.c.id == delivery_id, p.c.claim_token == token)
        .values(claim_token=None, **values)
    )
    return result.rowcount == 1


async def list_deliveries(
    conn: AsyncConnection,
    *,
    status: str | None,
    partner_id: str | None,
    lead_id: str | None,
    limit: int,
) -> list[AnyRow]:
    p = partner_deliveries
    stmt = sa.select(*_delivery_columns()).order_by(p.c.created_at.desc(), p.c.id).limit(limit)
    if status is not None:
        stmt = stmt.where(p.c.status == status)
    if partner_id is not None:
        stmt = stmt.where(p.c.partner_id == partner_id)
    if lead_id is not None:
        stmt = stmt.where(p.c.lead_id == lead_id)
    return list((await conn.execute(stmt)).all())


async def get_delivery(
    conn: AsyncConnection, delivery_id: str, *, for_update: bool = False
) -> AnyRow | None:
    stmt = sa.select(*_delivery_columns(), partner_deliveries.c.payload).where(
        partner_deliveries.c.id == delivery_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await conn.execute(stmt)).first()


def _delivery_columns() -> Sequence[sa.Column[Any]]:
    p = partner_deliveries
    return (
        p.c.id, p.c.lead_id, p.c.partner_id, p.c.event_id, p.c.event_type, p.c.url, p.c.status,
        p.c.attempts, p.c.next_attempt_at, p.c.last_status_code, p.c.last_outcome,
        p.c.last_error, p.c.created_at, p.c.updated_at, p.c.delivered_at,
    )  # fmt: skip


async def requeue_delivery(conn: AsyncConnection, delivery_id: str, now: datetime) -> None:
    """Send again from a clean slate: the attempt count starts over, the lease is dropped."""
    p = partner_deliveries
    await conn.execute(
        p.update()
        .where(p.c.id == delivery_id)
        .values(status="pending", attempts=0, next_attempt_at=now, claim_token=None,
                updated_at=now)
    )  # fmt: skip


async def cancel_deliveries_of(conn: AsyncConnection, lead_id: str, now: datetime) -> None:
    """An erased person is sent nowhere again; the bodies holding their data go too
    (the `lead.erased` webhooks, which hold none, stay)."""
    p = partner_deliveries
    routed = sa.and_(p.c.lead_id == lead_id, p.c.event_type == "lead.routed")
    await conn.execute(
        p.update()
        .where(routed, p.c.status.in_(["pending", "failed"]))
        .values(status="cancelled", claim_token=None, last_error="the person was erased",
                updated_at=now)
    )  # fmt: skip
    await conn.execute(p.update().where(routed).values(payload=None))


async def partners_that_may_have_the_lead(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    """Routings of the lead that were attempted at least once (an attempt that timed out may
    have arrived all the same), newest first: partner, URL, and for one under way its lease."""
    p = partner_deliveries
    return list(
        (
            await conn.execute(
                sa.select(p.c.partner_id, p.c.url, p.c.claim_token, p.c.next_attempt_at)
                .where(p.c.lead_id == lead_id, p.c.event_type == "lead.routed",
                       p.c.attempts > 0)
                .order_by(p.c.created_at.desc())
            )
        ).all()
    )  # fmt: skip
