"""Qualifier use cases. They run inside the caller's transaction: they may write, never commit."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
import yaml
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier import repository
from services.qualifier.definition import Assignment, LeadDefinition
from services.qualifier.evaluator import AssignmentState, evaluate
from services.qualifier.tables import outbox
from shared.events import SOURCE_QUALIFIER, Decision, LeadReceived, LeadRouted, LeadRoutedData
from shared.outbox import add_to_outbox

# Ids of events derived from another event are a function of the cause, so even a
# second run of the same cause could only ever publish the same event id.
_DERIVED_ID_NAMESPACE = uuid.UUID("6f1c8a52-3f0e-4d8e-9a57-1d7c1f4e2b10")


class NoActiveDefinition(RuntimeError):
    pass


def derived_event_id(cause_id: str, what: str) -> str:
    return str(uuid.uuid5(_DERIVED_ID_NAMESPACE, f"{cause_id}/{what}"))


def parse_definition_text(text: str) -> dict[str, Any]:
    """YAML is a superset of JSON, so one parser takes both formats."""
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        raise ValueError("a lead definition is a mapping (YAML or JSON object)")
    return document


@lru_cache(maxsize=64)
def _definition(version: int, document_json: bytes) -> LeadDefinition:
    return LeadDefinition.model_validate(orjson.loads(document_json))


def definition_of(version: int, document: dict[str, Any]) -> LeadDefinition:
    """Parsed definitions are immutable per version, so they are parsed once."""
    return _definition(version, orjson.dumps(document, option=orjson.OPT_SORT_KEYS))


async def ensure_initial_definition(conn: AsyncConnection, text: str, now: datetime) -> None:
    """Publish the given definition (the bundled one) as version 1 on a fresh database."""
    if await repository.has_definitions(conn):
        return
    document = parse_definition_text(text)
    parsed = LeadDefinition.model_validate(document)
    await repository.insert_definition(
        conn, version=1, name=parsed.name, status="active", document=document,
        source_text=text, at=now, by="leadflow (initial definition)",
    )  # fmt: skip


async def qualify_lead(conn: AsyncConnection, cause: LeadReceived, *, now: datetime) -> Decision:
    """Decide a received lead with the active definition; store it; owe `lead.routed`."""
    active = await repository.active_definition(conn)
    if active is None:
        raise NoActiveDefinition("no active lead definition; publish one")
    definition = definition_of(active.version, active.document)
    await repository.lock_round_robin(conn)
    least_loaded = any(t.assign is Assignment.least_loaded for t in definition.sales_teams)
    state = AssignmentState(
        round_robin_next=await repository.round_robin_counters(conn),
        open_leads=await repository.open_leads_by_assignee(conn) if least_loaded else {},
    )
    lead = cause.data
    result = evaluate(lead, definition, active.version, now=now, assignment=state)
    if result.round_robin_advance is not None:
        await repository.set_round_robin(conn, *result.round_robin_advance)
    await repository.save_decision(
        conn, lead=lead, decision=result.decision, cause_event_id=cause.id, now=now
    )
    routed = LeadRouted(
        id=derived_event_id(cause.id, "routed"),
        source=SOURCE_QUALIFIER,
        time=cause.time,  # a decision carries the business time of its cause
        subject=lead.lead_id,
        data=LeadRoutedData(**lead.model_dump(), decision=result.decision),
    )
    await add_to_outbox(conn, outbox, [routed])
    return result.decision
