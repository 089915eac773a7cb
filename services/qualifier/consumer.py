"""The qualifier's Kafka handler: each batch in one transaction with its inbox rows.

From `leads.received` it takes `lead.received` (decide) and `lead.webinar_attended`
(update, maybe decide again); from `leads.lifecycle` it takes `lead.erased` (forget
the person). Its own lifecycle events come back on that topic too: they were applied
when they were written, so they are skipped without an inbox row.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence

from services.qualifier.deliveries.repository import take_owed
from services.qualifier.leads.erasure import erase_lead
from services.qualifier.routing.service import qualify_leads, record_webinar_attendance
from services.qualifier.tables import inbox
from shared.db import utcnow
from shared.delivery import BatchHandler, Delivered
from shared.events import LeadErased, LeadReceived, LeadWebinarAttended
from shared.inbox import claim_events
from shared.runtime import Runtime

log = logging.getLogger(__name__)

_APPLIED = (LeadReceived, LeadWebinarAttended, LeadErased)


def make_handler(
    runtime: Runtime,
    *,
    after_commit: Callable[[], None] | None = None,
    kill_after_commit: int | None = None,
) -> BatchHandler:
    """`after_commit` runs once a batch's transaction has committed deliveries owed (a
    partner's webhook, a subscription's, a CRM push or erasure): it wakes the deliverer.

    `kill_after_commit=N` is the exactly-once test's fault (dev mode only, refused in
    production by the settings): the process SIGKILLs itself right after the N-th batch's
    database commit, before the consumer loop commits the batch's Kafka offsets.
    """
    committed = 0

    async def handle(batch: Sequence[Delivered]) -> None:
        nonlocal committed
        mine = [d for d in batch if isinstance(d.event, _APPLIED)]
        owed = 0
        if mine:
            now = utcnow()
            async with runtime.consumer_db.begin() as conn:
                take_owed(conn)
                new = await claim_events(
                    conn, inbox, [(d.event.id, d.event.type, d.topic) for d in mine]
                )
                # Runs of received leads are decided together; anything else between them
                # is applied in its place, so each lead's events keep their order.
                received: list[LeadReceived] = []
                for item in mine:
                    event = item.event
                    if event.id not in new:
                        continue
                    if isinstance(event, LeadReceived):
                        received.append(event)
                        continue
                    if received:
                        await qualify_leads(conn, received, now=now)
                        received = []
                    if isinstance(event, LeadWebinarAttended):
                        await record_webinar_attendance(conn, event, now=now)
                    elif isinstance(event, LeadErased):
                        await erase_lead(conn, event, now=now)
                        if runtime.keys is not None:  # intake destroyed it: no copy stays
                            runtime.keys.forget(event.data.lead_id)
                if received:
                    await qualify_leads(conn, received, now=now)
                owed = take_owed(conn)
            committed += 1
            if kill_after_commit is not None and committed >= kill_after_commit:
                log.warning(
                    "fault injection: SIGKILL after the database commit of batch %d, "
                    "before its offsets are committed",
                    committed,
                )
                os.kill(os.getpid(), signal.SIGKILL)
        runtime.wake_relay()
        if after_commit is not None and owed:
            after_commit()

    return handle
