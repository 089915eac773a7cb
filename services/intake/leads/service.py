"""Accepting leads: stored with their event, or named as the duplicate of an earlier one. They
run inside the caller's transaction: they may write, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.admin import repository as admin_repository
from services.intake.dedupe import repository as dedupe_repository
from services.intake.dedupe.identity import (
    DedupeKey,
    KnownLead,
    KnownLeads,
    dedupe_key,
    find_original,
)
from services.intake.leads import repository
from services.intake.leads.schemas import LeadAccepted
from services.intake.tables import outbox
from shared.events import SOURCE_INTAKE, LeadReceived, LeadSnapshot, LeadWebinarAttended
from shared.outbox import add_to_outbox


async def accept_lead(
    conn: AsyncConnection, snapshot: LeadSnapshot, *, dedupe_window: timedelta
) -> LeadAccepted:
    """Store a new lead with its event, record attendance on a registrant, or name the lead
    this one duplicates (then nothing is written)."""
    (result,) = await accept_leads(conn, [snapshot], dedupe_window=dedupe_window)
    return result


async def accept_leads(
    conn: AsyncConnection, snapshots: Sequence[LeadSnapshot], *, dedupe_window: timedelta
) -> list[LeadAccepted]:
    """Several leads in one transaction (a batch, an import chunk, a group commit), answered
    in order, as if accepted one after the other.

    The writes are batched: one statement locks everyone, one finds possible originals,
    one inserts the new leads and one their events. A webinar's registration and
    attendance of one person are one lead, whenever they come: attendance of a registrant
    updates that lead (`lead.webinar_attended`); those go one at a time.
    """
    keys = [dedupe_key(s) for s in snapshots]
    await dedupe_repository.lock_identities(conn, keys)
    results: dict[int, LeadAccepted] = {}
    plain = [i for i, key in enumerate(keys) if not key.is_webinar]
    known = KnownLeads()
    if plain and dedupe_window > timedelta(0):
        since = min(snapshots[i].received_at for i in plain) - dedupe_window
        known = KnownLeads(
            await dedupe_repository.recent_leads_like(conn, [keys[i] for i in plain], since)
        )
    new: list[tuple[LeadSnapshot, DedupeKey]] = []
    for i in plain:
        snapshot, key = snapshots[i], keys[i]
        original = (
            find_original(known.like(key), key, since=snapshot.received_at - dedupe_window)
            if dedupe_window > timedelta(0)
            else None
        )
        if original is not None:
            results[i] = LeadAccepted(lead_id=original, status="duplicate", duplicate_of=original)
            continue
        new.append((snapshot, key))
        results[i] = LeadAccepted(lead_id=snapshot.lead_id, status="accepted")
        if not snapshot.honeypot_filled:
            known.add(_known(snapshot, key))
    await _insert(conn, new)
    for i, key in enumerate(keys):
        if key.is_webinar:
            results[i] = await _accept_webinar_lead(conn, snapshots[i], key)
    return [results[i] for i in range(len(snapshots))]


@dataclass(frozen=True)
class LeadWriter:
    """`accept_leads` as a group commit's batch handler; equal writers batch together."""

    dedupe_window: timedelta

    async def __call__(
        self, conn: AsyncConnection, snapshots: Sequence[LeadSnapshot]
    ) -> list[LeadAccepted]:
        return await accept_leads(conn, snapshots, dedupe_window=self.dedupe_window)


def _known(snapshot: LeadSnapshot, key: DedupeKey) -> KnownLead:
    return KnownLead(
        snapshot.lead_id, key.source, key.origin_id, key.email, key.phone, snapshot.received_at
    )


async def _insert(conn: AsyncConnection, new: Sequence[tuple[LeadSnapshot, DedupeKey]]) -> None:
    await repository.insert_leads(
        conn,
        [
            (LeadReceived(source=SOURCE_INTAKE, time=s.occurred_at, subject=s.lead_id, data=s), key)
            for s, key in new
        ],
    )


async def _accept_webinar_lead(
    conn: AsyncConnection, snapshot: LeadSnapshot, key: DedupeKey
) -> LeadAccepted:
    found = await dedupe_repository.find_webinar_lead(conn, key)
    if found is None:
        await _insert(conn, [(snapshot, key)])
        return LeadAccepted(lead_id=snapshot.lead_id, status="accepted")
    existing = LeadSnapshot.model_validate(found.snapshot)
    if not snapshot.webinar_attended or existing.webinar_attended:
        return LeadAccepted(
            lead_id=existing.lead_id, status="duplicate", duplicate_of=existing.lead_id
        )
    attended = existing.model_copy(
        update={
            "webinar_attended": True,
            "webinar_attended_at": snapshot.webinar_attended_at,
            # What the attendance adds (minutes in session...) without rewriting answers.
            "fields": {**snapshot.fields, **existing.fields},
        }
    )
    await repository.update_snapshot(conn, attended)
    assert attended.webinar_attended_at is not None
    event = LeadWebinarAttended(
        source=SOURCE_INTAKE,
        time=attended.webinar_attended_at,
        subject=attended.lead_id,
        data=attended,
    )
    await add_to_outbox(conn, outbox, [event])
    return LeadAccepted(lead_id=attended.lead_id, status="updated")


async def origin_defaults(
    conn: AsyncConnection, form_id: str | None, webinar_id: str | None
) -> tuple[str | None, str | None]:
    """(phone region, consent text version) of the form or webinar a lead names, if known."""
    if form_id and (form := await admin_repository.get_form(conn, form_id)) is not None:
        return form.default_phone_region, form.consent_text_version
    if webinar_id and (webinar := await admin_repository.get_webinar(conn, webinar_id)) is not None:
        return webinar.default_phone_region, webinar.consent_text_version
    return None, None
