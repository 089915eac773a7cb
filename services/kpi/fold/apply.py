"""Folding events into a generation: which events can be folded, and a batch into the
generations the live consumer writes. In the caller's transaction; nothing commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.fold import durations
from services.kpi.fold.facts import fold
from services.kpi.fold.lead_state import concerns_kpi
from services.kpi.store import generations, writes
from shared.events import Event, LeadPaymentReceived

# Bump when the fold's rules change: generations folded by older rules must be rebuilt.
# Each generation keeps folding by the rules it was created with until a rebuild replaces
# it. v2: duration value bins 2% wide instead of 20% (services/kpi/fold/durations.py).
FOLD_VERSION = 2


class UnfoldableEvent(ValueError):
    """An event the KPI cannot count (another currency, a mismatched lead id): parked."""


def check_foldable(event: Event, currency: str) -> None:
    lead_id = event.data.lead_id
    if lead_id != event.subject:
        raise UnfoldableEvent(f"subject {event.subject!r} is not the data's lead {lead_id!r}")
    if isinstance(event, LeadPaymentReceived) and event.data.currency.upper() != currency.upper():
        raise UnfoldableEvent(
            f"payment {event.data.payment_id!r} is in {event.data.currency}, "
            f"not in the deployment's currency {currency}"
        )


def foldable(event: Event, currency: str) -> bool:
    try:
        check_foldable(event, currency)
    except UnfoldableEvent:
        return False
    return True


async def fold_into(
    conn: AsyncConnection, generation: int, fold_version: int, events: Sequence[Event]
) -> int:
    """Fold events into one generation, by the rules it was created with; how many leads
    changed."""
    relevant = [e for e in events if concerns_kpi(e)]
    if not relevant:
        return 0
    edges = durations.bin_edges(fold_version)
    states = await writes.lock_leads(conn, generation, (e.subject for e in relevant))
    changes = fold(states, relevant, edges)
    await writes.write_changes(conn, generation, changes)
    return len(changes.states)


async def apply_live(conn: AsyncConnection, events: Sequence[Event]) -> None:
    """The live consumer's batch: into the active generation and one being rebuilt."""
    for generation, fold_version in await generations.lock_generations_to_fold(conn):
        await fold_into(conn, generation, fold_version, events)
