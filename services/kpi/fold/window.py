"""A fold window: many reads of events folded in memory, then written to one generation
at once, in one transaction.

Folding batch by batch writes a lead's state, facts and aggregate increments once per
batch its events fall in; a lead's five or six events spread over many batches. A
window merges its events into states of their own, apart from the stored ones (no
database involved, so the next window is read and folded while this one is written),
and holds those states, not the events (a decoded event is several kilobytes, a
lead's state a fraction of that). Writing it locks and reads the stored states of its
leads, joins each with the window's (`lead_state.join`: the same as merging the
events one by one), and writes each lead's rows and the aggregate increments once (or
stages the increments, for a rebuild: see `writes.stage_fact_deltas`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from itertools import islice

from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.fold import durations
from services.kpi.fold.facts import FactDelta, changes_between, merge_events
from services.kpi.fold.lead_state import LeadState, join
from services.kpi.store import writes
from shared.events import Event

# Leads diffed and written at a time: a chunk's state and fact rows are built, sent and
# dropped before the next, so the write's memory does not grow with the window. The
# aggregate increments of every chunk go in one statement, in key order, so that two
# writers never lock aggregate rows in crossing orders.
WRITE_CHUNK_LEADS = 2_000


class FoldWindow:
    """Events merged into per-lead states of the window's own. Pure until `write`."""

    def __init__(self) -> None:
        self._states: dict[str, LeadState] = {}
        self.events = 0

    def add(self, events: Sequence[Event]) -> None:
        merge_events({}, events, self._states)
        self.events += len(events)

    def split(self, parts: int) -> list[FoldWindow]:
        """The window's leads in `parts` windows (by a hash of the lead id), to be written in
        concurrent transactions: no two of them lock the same lead."""
        out = [FoldWindow() for _ in range(parts)]
        for lead_id, state in self._states.items():
            out[zlib.crc32(lead_id.encode()) % parts]._states[lead_id] = state
        return [w for w in out if w._states]

    async def write(
        self, conn: AsyncConnection, generation: int, fold_version: int, *, stage: bool = False
    ) -> int:
        """Write the window into `generation` (by its fold rules) in the caller's
        transaction; how many fact deltas it made. `stage`: append the aggregate increments
        as fact deltas for `writes.compact_fact_deltas` (a generation no read sees yet)."""
        edges = durations.bin_edges(fold_version)
        # Every lead locked at once, in key order: writers on the same leads take turns.
        stored = await writes.lock_leads(conn, generation, self._states)
        deltas: list[FactDelta] = []
        leads = iter(sorted(self._states.items()))
        while chunk := list(islice(leads, WRITE_CHUNK_LEADS)):
            joined = [
                (lead_id, join(stored.get(lead_id) or LeadState(lead_id), state))
                for lead_id, state in chunk
            ]
            changes = changes_between(stored, joined, edges)
            await writes.write_lead_rows(conn, generation, changes)
            deltas += changes.fact_deltas
        if stage:
            await writes.stage_fact_deltas(conn, generation, deltas)
        else:
            await writes.add_fact_deltas(conn, generation, deltas)
        return len(deltas)
