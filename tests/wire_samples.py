"""One event of every type, each of its times given in a zone of the caller's choosing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.events import (
    EVENT_TYPES,
    SOURCE_INTAKE,
    SOURCE_QUALIFIER,
    Decision,
    Dimensions,
    LeadSnapshot,
    _Envelope,
)
from tests.support import snapshot


def one_of_each_type(at: datetime) -> list[_Envelope]:
    """Every event type once, for one new lead; every time field set (none left out as
    None), at `at` or a few hours after it, in `at`'s zone."""
    lead_id = str(uuid.uuid4())
    hour = timedelta(hours=1)
    lead = snapshot(
        lead_id=lead_id,
        occurred_at=at,
        received_at=at + hour,
        consent_at=at,
        webinar_attended_at=at + 2 * hour,
    )
    decision = Decision(
        route="sales",
        score=80,
        definition_version=1,
        reasons=["budget"],
        team="smb",
        assignee="vera",
        sla_due_at=at + 4 * hour,
        decided_at=at + hour,
    )
    dimensions = Dimensions(source="web_form", route="sales", definition_version=1)
    lifecycle: dict[str, Any] = {
        "lead_id": lead_id,
        "at": at + 3 * hour,
        "by": "vera",
        "dimensions": dimensions,
    }
    data: dict[str, Any] = {
        "lead.received": lead,
        "lead.webinar_attended": lead,
        "lead.routed": {**lead.model_dump(), "decision": decision},
        "lead.contacted": lifecycle,
        "lead.brief_filled": {**lifecycle, "answers": {"budget": "200000"}},
        "lead.feedback": {**lifecycle, "decision": "accepted"},
        "lead.stage_changed": {**lifecycle, "stage": "sql", "previous_stage": "accepted"},
        "lead.payment_received": {
            **lifecycle,
            "payment_id": "inv-1",
            "amount": Decimal("1500.50"),
            "currency": "RUB",
        },
        "lead.erased": {"lead_id": lead_id, "at": at + 5 * hour, "by": "dpo"},
        "lead.sla_breached": {
            **lifecycle,
            "team": "smb",
            "assignee": "vera",
            "sla_due_at": at + 4 * hour,
        },
    }
    assert set(data) == set(EVENT_TYPES), "a new event type needs a sample here"
    events = []
    for event_type, model in EVENT_TYPES.items():
        body = data[event_type]
        source = (
            SOURCE_INTAKE
            if event_type in ("lead.received", "lead.webinar_attended", "lead.erased")
            else SOURCE_QUALIFIER
        )
        time = body.occurred_at if isinstance(body, LeadSnapshot) else body.get("at", at)
        events.append(
            model.model_validate({"source": source, "time": time, "subject": lead_id, "data": body})
        )
    return events
