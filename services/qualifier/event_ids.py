"""Ids of events the qualifier derives from another event, and its name as an author."""

from __future__ import annotations

import uuid

# Ids of events derived from another event are a function of the cause, so even a
# second run of the same cause could only ever publish the same event id.
_DERIVED_ID_NAMESPACE = uuid.UUID("6f1c8a52-3f0e-4d8e-9a57-1d7c1f4e2b10")
# Who the qualifier is when it records something itself (history entries, SLA breaches).
QUALIFIER = "qualifier"


def derived_event_id(cause_id: str, what: str) -> str:
    return str(uuid.uuid5(_DERIVED_ID_NAMESPACE, f"{cause_id}/{what}"))
