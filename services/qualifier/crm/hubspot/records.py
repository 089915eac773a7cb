"""HubSpot's bodies and answers for Leadflow's records, pure (no I/O).

Facts relied on (developers.hubspot.com):
- A record is `{"id", "properties": {name: string | null}, "createdAt", "updatedAt"}`
  (docs/api-reference/legacy/crm/objects/...); `hs_lastmodifieddate` is ISO 8601.
- Deal properties `dealname`, `pipeline`, `dealstage`, `amount`, `deal_currency_code`,
  `hubspot_owner_id`, `closed_lost_reason` (the default deal properties); contact
  properties `email`, `firstname`, `lastname`, `phone`, `company`, `hubspot_owner_id`.
- Upserts: `POST /crm/v3/objects/{type}/batch/upsert` with `{"inputs": [{"id",
  "idProperty", "properties"}]}`, keyed by a property with `hasUniqueValue` (contacts
  may use `email`) (docs/api-reference/legacy/crm/objects/contacts/batch/upsert-contacts).
- Pipelines: `GET /crm/v3/pipelines/deals`, each stage's `metadata` holds `isClosed` and
  `probability` as strings (docs/api-reference/latest/crm/pipelines/guide): closed with
  probability 1.0 is won, closed with 0.0 is lost.
- Search: filter `hs_lastmodifieddate` GTE a time in ms, sorts, `limit` <= 200, `after`
  (docs/api-reference/2026-03/crm/search-the-crm).
- No writable standard UTM property is documented (*unconfirmed*): Leadflow writes the
  custom deal properties `leadflow_source`, `leadflow_channel`, `leadflow_route`,
  `leadflow_team` and `leadflow_utm_{source,medium,campaign,content,term}`, which the
  account must define (docs/crm.md).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from services.qualifier.crm.adapter import CrmRecord, PushLead, Semantic
from services.qualifier.crm.config import HubSpotConnector

UTM_KEYS = ("source", "medium", "campaign", "content", "term")
# HubSpot-defined association type: note -> deal (docs/api-reference/latest/crm/
# associations/overview, "association type ID values").
NOTE_TO_DEAL = 214
SEARCH_LIMIT = 200
# A search answers at most 10,000 results; past them the window moves on (modified_since).
SEARCH_MAX = 10_000


def deal_read_properties(connector: HubSpotConnector) -> list[str]:
    return [
        "dealstage",
        "pipeline",
        "amount",
        "deal_currency_code",
        "hubspot_owner_id",
        "hs_lastmodifieddate",
        connector.lost_reason_property,
        connector.id_property,
    ]


def split_name(name: str | None) -> tuple[str | None, str | None]:
    parts = (name or "").split(maxsplit=1)
    return (parts[0] if parts else None, parts[1] if len(parts) > 1 else None)


def contact_properties(lead: PushLead) -> dict[str, str]:
    first, last = split_name(lead.name)
    values = {
        "email": lead.email,
        "firstname": first,
        "lastname": last,
        "phone": lead.phone,
        "company": lead.company,
        "hubspot_owner_id": lead.owner,
    }
    return {k: v for k, v in values.items() if v}


def contact_upsert(lead: PushLead, connector: HubSpotConnector) -> dict[str, Any] | None:
    """The contact keyed by e-mail (one person, many leads), else by the lead id; None
    when the lead holds nobody to contact (erased, or no personal field at all)."""
    props = contact_properties(lead)
    if lead.email:
        props.pop("email")
        return {"inputs": [{"idProperty": "email", "id": lead.email, "properties": props}]}
    if not any(k in props for k in ("firstname", "lastname", "phone")):
        return None
    return {
        "inputs": [{"idProperty": connector.id_property, "id": lead.lead_id, "properties": props}]
    }


def deal_properties(lead: PushLead, connector: HubSpotConnector) -> dict[str, str]:
    values: dict[str, str | None] = {
        "dealname": lead.title,
        "hubspot_owner_id": lead.owner,
        connector.id_property: lead.lead_id,
        "leadflow_source": lead.source,
        "leadflow_channel": lead.channel,
        "leadflow_route": lead.route,
        "leadflow_team": lead.team,
    }
    for key in UTM_KEYS:
        values[f"leadflow_utm_{key}"] = lead.utm.get(key)
    return {k: v for k, v in values.items() if v}


def deal_upsert(lead: PushLead, connector: HubSpotConnector, stage: str) -> dict[str, Any]:
    props = deal_properties(lead, connector)
    props.pop(connector.id_property)
    props.update(pipeline=connector.pipeline, dealstage=stage)
    return {
        "inputs": [{"idProperty": connector.id_property, "id": lead.lead_id, "properties": props}]
    }


def note_body(lead: PushLead, deal_id: str, now: datetime) -> dict[str, Any]:
    # hs_note_body is HTML: the reasons are escaped text, one per line.
    text = "<br>".join(html.escape(line) for line in lead.note.splitlines())
    return {
        "properties": {"hs_timestamp": iso(now), "hs_note_body": text},
        "associations": [
            {
                "to": {"id": deal_id},
                "types": [
                    {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_DEAL}
                ],
            }
        ],
    }


def erased_dealname(lead_id: str | None) -> str:
    return f"Leadflow lead {lead_id}" if lead_id else "Leadflow lead (erased)"


def search_body(connector: HubSpotConnector, since: datetime, after: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filterGroups": [
            {
                "filters": [
                    {
                        "propertyName": "hs_lastmodifieddate",
                        "operator": "GTE",
                        "value": str(int(since.timestamp() * 1000)),
                    }
                ]
            }
        ],
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": deal_read_properties(connector),
        "limit": SEARCH_LIMIT,
    }
    if after is not None:
        body["after"] = after
    return body


def next_after(page: Mapping[str, Any]) -> str | None:
    after = (page.get("paging") or {}).get("next", {}).get("after")
    return str(after) if after is not None else None


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    text = str(value)
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class Stages:
    """The account's deal stages: (pipeline, stage) -> semantic, and each pipeline's
    first stage (where new deals go unless `dealstage` says otherwise)."""

    semantic: Mapping[tuple[str, str], Semantic]
    first: Mapping[str, str]


def read_pipelines(answer: Mapping[str, Any]) -> Stages:
    semantic: dict[tuple[str, str], Semantic] = {}
    first: dict[str, str] = {}
    for pipeline in answer.get("results", []):
        pid = str(pipeline.get("id"))
        stages = sorted(pipeline.get("stages", []), key=lambda s: s.get("displayOrder", 0))
        if stages:
            first[pid] = str(stages[0].get("id"))
        for stage in stages:
            meta = stage.get("metadata") or {}
            closed = str(meta.get("isClosed", "false")).lower() == "true"
            probability = _decimal(meta.get("probability")) or Decimal(0)
            semantic[(pid, str(stage.get("id")))] = (
                "open" if not closed else ("won" if probability > 0 else "lost")
            )
    return Stages(semantic, first)


def read_deal(deal: Mapping[str, Any], connector: HubSpotConnector, stages: Stages) -> CrmRecord:
    props = deal.get("properties") or {}
    pipeline = props.get("pipeline") or None
    stage = str(props.get("dealstage") or "")
    modified = parse_time(props.get("hs_lastmodifieddate")) or parse_time(deal.get("updatedAt"))
    return CrmRecord(
        crm_id=str(deal["id"]),
        stage=stage,
        semantic=stages.semantic.get((str(pipeline), stage), "open"),
        modified_at=modified or datetime.now(UTC),
        pipeline=pipeline,
        amount=_decimal(props.get("amount")),
        currency=props.get("deal_currency_code") or None,
        loss_reason=props.get(connector.lost_reason_property) or None,
        owner=props.get("hubspot_owner_id") or None,
        lead_id=props.get(connector.id_property) or None,
    )
