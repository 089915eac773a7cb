"""The SLA watch: sales leads nobody answered in time are reported and reassigned.

A lead routed to sales and neither accepted nor rejected by its `sla_due_at` gets one
`lead.sla_breached` per missed deadline and a new assignee by its team's rule, with a
new deadline. Exactly once across replicas: the deadline moves only by a conditional
UPDATE on the old value (plus `SKIP LOCKED`, so replicas share the work instead of
queueing on one row), and the event id derives from the lead and the missed deadline,
so even a repeated computation could only publish the same id.
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.qualifier.definitions import service as definitions
from services.qualifier.event_ids import QUALIFIER, derived_event_id
from services.qualifier.leads import repository as leads_repository
from services.qualifier.lifecycle.service import dimensions_of
from services.qualifier.outbound import publish
from services.qualifier.routing import repository as routing_repository
from services.qualifier.routing.evaluator import reassign
from services.qualifier.routing.service import assignment_state
from services.qualifier.sla import repository
from shared.db import error_summary, utcnow
from shared.events import SOURCE_QUALIFIER, LeadSlaBreached, LeadSlaBreachedData, Stage
from shared.runtime import Runtime

log = logging.getLogger(__name__)

SLA_BREACHES = Counter("leadflow_sla_breaches_total", "Sales deadlines missed", ["team"])


async def breach(conn: AsyncConnection, lead_id: str, *, now: datetime) -> LeadSlaBreached | None:
    """Report and reassign one overdue lead; None when it is not (or no longer) overdue."""
    row = await repository.lock_overdue_lead(conn, lead_id, now)
    if row is None:
        return None
    missed: datetime = row.sla_due_at
    _, active = await definitions.active(conn)
    _, decided_by = await definitions.version(conn, row.definition_version)
    # Today's staffing if the team still exists, else the team as the lead's version had it.
    team = (active.team(row.team) or decided_by.team(row.team)) if row.team else None
    if team is None:
        log.error("overdue lead %s has no sales team %r in any definition", lead_id, row.team)
        return None
    state = await assignment_state(conn, active, now)
    moved = reassign(team, row.assignee, now=now, assignment=state)
    if not await repository.reassign_overdue(
        conn,
        lead_id,
        expected_due=missed,
        assignee=moved.assignee,
        sla_due_at=moved.sla_due_at,
        now=now,
    ):
        return None
    if moved.round_robin_advance is not None:
        await routing_repository.set_round_robin(conn, *moved.round_robin_advance)
    reassigned_to = moved.assignee if moved.assignee != row.assignee else None
    event = LeadSlaBreached(
        id=derived_event_id(f"{lead_id}@{missed.isoformat()}", "sla_breached"),
        source=SOURCE_QUALIFIER,
        time=missed,
        subject=lead_id,
        data=LeadSlaBreachedData(
            lead_id=lead_id,
            at=missed,
            by=QUALIFIER,
            dimensions=dimensions_of(row),
            team=team.team,
            assignee=row.assignee,
            sla_due_at=missed,
            reassigned_to=reassigned_to,
        ),
    )
    who = row.assignee or "nobody (every member was absent)"
    then = (
        f"reassigned to {reassigned_to}" if reassigned_to else f"still with {moved.assignee or who}"
    )
    await leads_repository.add_history(
        conn,
        lead_id=lead_id,
        stage=Stage(row.stage),
        at=missed,
        by=QUALIFIER,
        event_id=event.id,
        event_type=event.type,
        reason=f"No answer from {who} by {missed.isoformat()}; {then}, answer by "
        f"{moved.sla_due_at.isoformat()}.",
    )
    await publish(conn, [event], now=now)
    SLA_BREACHES.labels(team.team).inc()
    return event


async def breach_overdue(engine: AsyncEngine, *, now: datetime, batch: int = 100) -> int:
    """One sweep: every lead overdue at `now`, each in its own transaction. Returns how many."""
    async with engine.connect() as conn:
        overdue = await repository.overdue_sales_leads(conn, now, batch)
        await conn.rollback()
    reported = 0
    for lead_id in overdue:
        async with engine.begin() as conn:
            if await breach(conn, lead_id, now=now) is not None:
                reported += 1
    return reported


async def watch(runtime: Runtime, interval: float) -> None:
    """The background job: sweep, publish, sleep; until the process stops."""
    while not runtime.stopping.is_set():
        try:
            while await breach_overdue(runtime.engine, now=utcnow()):
                runtime.committed()  # the relay, and the deliverer: breaches owe webhooks
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            log.warning("SLA watch: %s; trying again in %.0fs", error_summary(exc), interval)
        if await runtime.sleep_unless_stopping(interval):
            return
