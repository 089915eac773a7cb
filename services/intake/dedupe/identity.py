"""Who a lead is for de-duplication, and which known lead it repeats. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from services.intake.normalize.fields import WEBINAR_SOURCES
from shared.events import LeadSnapshot


@dataclass(frozen=True)
class DedupeKey:
    """Who a lead is, for de-duplication: the same person from the same place."""

    source: str
    origin_id: str
    email: str | None
    phone: str | None

    @property
    def is_webinar(self) -> bool:
        return self.source in WEBINAR_SOURCES

    def lock_ids(self) -> list[int]:
        """Advisory-lock ids, one per identity, sorted so two writers never deadlock.

        Registration and attendance of one webinar share a lock scope: they are one lead.
        """
        scope = "webinar" if self.is_webinar else self.source
        ids = set()
        for ident in (self.email, self.phone):
            if ident:
                digest = hashlib.sha256(f"{scope}|{self.origin_id}|{ident}".encode()).digest()
                ids.add(int.from_bytes(digest[:8], "big", signed=True))
        return sorted(ids)


class KnownLead(NamedTuple):
    """A stored (or just accepted) lead as de-duplication sees it."""

    lead_id: str
    source: str
    origin_id: str
    email: str | None
    phone: str | None
    received_at: datetime


def find_original(known: Iterable[KnownLead], key: DedupeKey, since: datetime) -> str | None:
    """The first lead of this person (same e-mail or phone) from this source and form
    received since `since`, or None. `known` holds no bot (honeypot) submissions."""
    if not key.email and not key.phone:
        return None
    matches = [
        k
        for k in known
        if k.source == key.source
        and k.origin_id == key.origin_id
        and k.received_at >= since
        and (
            (key.email is not None and k.email == key.email)
            or (key.phone is not None and k.phone == key.phone)
        )
    ]
    return min(matches, key=lambda k: k.received_at).lead_id if matches else None


class KnownLeads:
    """Known leads by identity (source, origin and e-mail, or source, origin and phone), so
    a batch finds each lead's possible originals without scanning every other lead of it."""

    def __init__(self, leads: Iterable[KnownLead] = ()) -> None:
        self._by_identity: dict[tuple[str, str, str, str], list[KnownLead]] = {}
        for lead in leads:
            self.add(lead)

    def add(self, lead: KnownLead) -> None:
        for identity in _identities(lead.source, lead.origin_id, lead.email, lead.phone):
            self._by_identity.setdefault(identity, []).append(lead)

    def like(self, key: DedupeKey) -> list[KnownLead]:
        """The known leads sharing an identity with `key`: all `find_original` may pick."""
        found: list[KnownLead] = []
        for identity in _identities(key.source, key.origin_id, key.email, key.phone):
            found += self._by_identity.get(identity, ())
        return found


def _identities(
    source: str, origin_id: str, email: str | None, phone: str | None
) -> list[tuple[str, str, str, str]]:
    identities = []
    if email is not None:
        identities.append((source, origin_id, "email", email))
    if phone is not None:
        identities.append((source, origin_id, "phone", phone))
    return identities


def dedupe_email(email: str | None) -> str | None:
    """Mailboxes compare case-insensitively in practice."""
    return email.lower() if email else None


def dedupe_key(snapshot: LeadSnapshot) -> DedupeKey:
    return DedupeKey(
        source=snapshot.source.value,
        origin_id=snapshot.form_id or snapshot.webinar_id or "",
        email=dedupe_email(snapshot.email),
        phone=snapshot.phone,
    )
