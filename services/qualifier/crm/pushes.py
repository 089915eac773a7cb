"""Pushes: routed leads into the CRM, as rows of the delivery list (kind `crm`).

`owe` runs in the transaction that publishes the events (`outbound.publish`): a lead
routed to a route a connector pushes, a re-route or a reassignment of a lead the CRM
already has, each owes that connector one `push`; an erasure owes an `erase` to every
connector holding the lead (`owe_erasures`). The deliverer leases the rows and calls
`send`, which reads the lead as it is now (a later re-route is pushed with its own
owner), upserts the record and remembers lead id -> CRM id.

Created once: the push of one lead to one connector holds a transaction-scoped advisory
lock for the whole call (two pushes of a lead never run at once), and the vendor's
upsert finds a record it created before its answer was lost (by the lead id it carries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.qualifier.crm import connectors as connector_configs
from services.qualifier.crm import repository
from services.qualifier.crm.adapter import CrmClient, CrmRefused, CrmUnavailable, PushLead
from services.qualifier.crm.clients import CrmClients
from services.qualifier.crm.secrets import AnyConnector, MissingSecret
from services.qualifier.deliveries import repository as deliveries
from services.qualifier.deliveries.deliverer import AttemptResult
from services.qualifier.event_ids import derived_event_id
from services.qualifier.leads import repository as leads_repository
from services.qualifier.tables import crm_records
from services.qualifier.tables import deliveries as deliveries_table
from shared.db import AnyRow, utcnow
from shared.events import Decision, Event, LeadRouted, LeadSlaBreached, LeadSnapshot, Route

log = logging.getLogger(__name__)

PUSHES = Counter(
    "leadflow_crm_pushes_total",
    "CRM pushes and erasures by connector and outcome (created, updated, erased, failed)",
    ["connector", "outcome"],
)

_BUSY = AttemptResult(
    "crm_busy", None, "another push of this lead is under way", permanent=False, retry_after=1.0
)


async def owe(conn: AsyncConnection, events: Sequence[Event], *, now: datetime) -> int:
    """Owe a push per connector for each routing or reassignment it must see."""
    relevant = [e for e in events if isinstance(e, LeadRouted | LeadSlaBreached)]
    if not relevant:
        return 0
    configured = [c for c in await connector_configs.load_all(conn) if c.enabled]
    if not configured:
        return 0
    known = await _known(conn, {e.data.lead_id for e in relevant})
    rows = []
    for event in relevant:
        lead_id = event.data.lead_id
        for connector in configured:
            # A lead the CRM has (or is being sent): its re-route or new owner is news there.
            if not (pushable(connector, event) or (connector.id, lead_id) in known):
                continue
            known.add((connector.id, lead_id))
            rows.append(
                deliveries.delivery_row(
                    delivery_id=derived_event_id(event.id, f"crm/{connector.id}"),
                    lead_id=lead_id,
                    target_id=connector.id,
                    event_id=derived_event_id(event.id, f"crm/{connector.id}/push"),
                    url=None,
                    payload=None,
                    now=now,
                    kind="crm",
                    operation="push",
                    event_type=event.type,
                )
            )
    await deliveries.insert_deliveries(conn, rows)
    return len(rows)


def pushable(connector: AnyConnector, event: Event) -> bool:
    """A routing this connector creates records for: its routes, and its teams if any."""
    if not isinstance(event, LeadRouted):
        return False
    decision = event.data.decision
    return creates(connector, decision.route, decision.team)


def creates(connector: AnyConnector, route: str, team: str | None) -> bool:
    return route in connector.push_routes and (connector.teams is None or team in connector.teams)


async def _known(conn: AsyncConnection, lead_ids: set[str]) -> set[tuple[str, str]]:
    """(connector, lead) pairs with a CRM record, or a push owed that will make one."""
    r, d = crm_records, deliveries_table
    has_record = sa.select(r.c.connector_id, r.c.lead_id).where(r.c.lead_id.in_(lead_ids))
    push_owed = sa.select(d.c.target_id, d.c.lead_id).where(
        d.c.lead_id.in_(lead_ids), d.c.kind == "crm", d.c.operation == "push"
    )
    found = await conn.execute(sa.union(has_record, push_owed))
    return {(c, lead) for c, lead in found}


async def owe_erasures(
    conn: AsyncConnection, lead_id: str, *, cause_id: str, now: datetime
) -> None:
    """An erased person is erased in every CRM that has their record."""
    rows = [
        deliveries.delivery_row(
            delivery_id=derived_event_id(cause_id, f"crm/{record.connector_id}/erase"),
            lead_id=lead_id,
            target_id=record.connector_id,
            event_id=derived_event_id(cause_id, f"crm/{record.connector_id}/erase/event"),
            url=None,
            payload=None,
            now=now,
            kind="crm",
            operation="erase",
            event_type="lead.erased",
        )
        for record in await repository.records_of_lead(conn, lead_id)
    ]
    await deliveries.insert_deliveries(conn, rows)


class CrmSender:
    """The deliverer's sender for kind `crm`."""

    def __init__(self, engine: Callable[[], AsyncEngine], clients: CrmClients) -> None:
        # The runtime's engine, read when a push is sent (the app makes it at start-up).
        self._engine = engine
        self._clients = clients

    async def __call__(self, row: AnyRow) -> AttemptResult:
        async with self._engine().begin() as conn:
            locked = await conn.scalar(
                sa.select(
                    sa.func.pg_try_advisory_xact_lock(
                        sa.func.hashtext(f"crm:{row.target_id}:{row.lead_id}")
                    )
                )
            )
            if not locked:
                return _BUSY
            try:
                _, connector = await connector_configs.load(conn, row.target_id)
            except connector_configs.ConnectorNotFound:
                return _parked("connector_gone", "the connector was deleted")
            if not connector.enabled:
                return AttemptResult("crm_disabled", None, "the connector is disabled", False, 60.0)
            try:
                client = self._clients.client(connector)
            except MissingSecret:
                return _parked("no_secret", "the connector's secrets are not set")
            try:
                if row.operation == "erase":
                    return await self._erase(conn, connector, client, row)
                return await self._push(conn, connector, client, row)
            except CrmUnavailable as exc:
                PUSHES.labels(connector.id, "retry").inc()
                return AttemptResult("crm_unavailable", None, str(exc), False, exc.retry_after)
            except CrmRefused as exc:
                PUSHES.labels(connector.id, "failed").inc()
                return _parked("crm_refused", str(exc))

    async def _push(
        self, conn: AsyncConnection, connector: AnyConnector, client: CrmClient, row: AnyRow
    ) -> AttemptResult:
        lead = await leads_repository.get_lead(conn, row.lead_id)
        if lead is None:
            return _parked("no_lead", "the lead is not in the qualifier's database")
        if lead.erased_at is not None:
            return _parked("erased", "the person was erased; there is nothing to send")
        known = await repository.record_of_lead(conn, connector.id, row.lead_id)
        if known is None and not creates(connector, lead.route, lead.team):
            # Re-routed (to nurture, say) before its first push went out: nothing to create.
            PUSHES.labels(connector.id, "not_needed").inc()
            return AttemptResult("crm_not_needed", None, None, False)
        crm_id = await client.upsert(push_lead(lead, connector), known.crm_id if known else None)
        now = utcnow()
        # An erasure that committed while the CRM was being called found no record to
        # erase; one under way waits for this lock and then finds the record remembered.
        locked = await leads_repository.lock_lead(conn, row.lead_id, share=True)
        await repository.remember_record(
            conn, connector_id=connector.id, lead_id=row.lead_id, crm_id=crm_id, now=now
        )
        if locked is not None and locked.erased_at is not None:
            await client.erase(crm_id)
            await repository.mark_erased(conn, connector.id, row.lead_id, now)
            PUSHES.labels(connector.id, "erased").inc()
            return AttemptResult("crm_ok", None, None, False)
        PUSHES.labels(connector.id, "updated" if known else "created").inc()
        return AttemptResult("crm_ok", None, None, False)

    async def _erase(
        self, conn: AsyncConnection, connector: AnyConnector, client: CrmClient, row: AnyRow
    ) -> AttemptResult:
        known = await repository.record_of_lead(conn, connector.id, row.lead_id)
        if known is None:
            return AttemptResult("crm_ok", None, None, False)
        await client.erase(known.crm_id)
        await repository.mark_erased(conn, connector.id, row.lead_id, utcnow())
        PUSHES.labels(connector.id, "erased").inc()
        return AttemptResult("crm_ok", None, None, False)


def _parked(outcome: str, error: str) -> AttemptResult:
    return AttemptResult(outcome, None, error, permanent=True)


def push_lead(lead: AnyRow, connector: AnyConnector) -> PushLead:
    """The lead as the CRM record shows it: who, from where, and why it is theirs."""
    snapshot = LeadSnapshot.model_validate(lead.snapshot)
    decision = Decision.model_validate(lead.decision)
    member = lead.assignee
    owner = (
        connector.members.get(member, connector.default_owner)
        if member
        else connector.default_owner
    )
    utm = {k: v for k, v in snapshot.utm.model_dump().items() if v}
    topic = ", ".join(snapshot.services) or snapshot.source
    title = f"{snapshot.company or snapshot.name or 'Lead'}: {topic}"
    lines = [
        f"Leadflow: routed to {decision.route.value}"
        + (f" ({decision.team}, {member})" if decision.team else "")
        + f", score {decision.score}, definition v{decision.definition_version}."
    ]
    lines += [f"- {reason}" for reason in decision.reasons]
    if decision.sla_due_at is not None and decision.route is Route.sales:
        lines.append(f"Answer by {decision.sla_due_at.isoformat()}.")
    extra = {
        key: str(value)
        for key, value in (
            ("services", ", ".join(snapshot.services)),
            ("budget", snapshot.budget),
            ("timeframe", snapshot.timeframe),
            ("role_in_purchase", snapshot.role_in_purchase),
            ("industry", snapshot.industry),
            ("company_size", snapshot.company_size),
            ("job_title", snapshot.job_title),
        )
        if value
    }
    return PushLead(
        lead_id=lead.lead_id,
        title=title[:250],
        name=snapshot.name,
        email=snapshot.email,
        phone=snapshot.phone,
        company=snapshot.company,
        source=snapshot.source,
        channel=snapshot.dimensions().channel,
        utm=utm,
        owner=owner,
        note="\n".join(lines),
        route=decision.route.value,
        team=decision.team,
        received_at=snapshot.received_at,
        extra=extra,
    )
