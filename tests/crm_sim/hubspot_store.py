"""The HubSpot simulator's account: CRM objects, pipelines, associations, in memory.

Shapes follow HubSpot's CRM v3 object API (developers.hubspot.com/docs/api-reference/
legacy/crm/objects/...): a record is `{"id", "properties", "createdAt", "updatedAt",
"archived"}`, every property value a string (or null when asked for and unset), ids are
numeric strings, times ISO 8601 with milliseconds and `Z`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# The built-in deal pipeline every account starts with, stage ids and metadata as
# `GET /crm/v3/pipelines/deals` gives them (v3 metadata values are strings):
# developers.hubspot.com/docs/api-reference/latest/crm/pipelines/guide. Every account has
# a pipeline with id "default" (developers.hubspot.com/docs/methods/pipelines/
# pipelines_overview).
DEFAULT_STAGES: tuple[tuple[str, str, str, str], ...] = (
    ("appointmentscheduled", "Appointment Scheduled", "false", "0.2"),
    ("qualifiedtobuy", "Qualified To Buy", "false", "0.4"),
    ("presentationscheduled", "Presentation Scheduled", "false", "0.6"),
    ("decisionmakerboughtin", "Decision Maker Bought-In", "false", "0.8"),
    ("contractsent", "Contract Sent", "false", "0.9"),
    ("closedwon", "Closed Won", "true", "1.0"),
    ("closedlost", "Closed Lost", "true", "0.0"),
)
# A pipeline created in the account: HubSpot gives custom pipelines and their stages
# numeric ids.
CUSTOM_PIPELINE = "1467291"
CUSTOM_STAGES: tuple[tuple[str, str, str, str], ...] = (
    ("2493301", "New", "false", "0.1"),
    ("2493302", "Negotiation", "false", "0.5"),
    ("2493303", "Won", "true", "1.0"),
    ("2493304", "Lost", "true", "0.0"),
)

# Properties every account has (developers.hubspot.com/docs/guides/crm/...: the default
# contact and deal properties) plus the custom ones a sales ops person creates for
# Leadflow; the unique one (`hasUniqueValue`) holds the Leadflow lead id.
CONTACT_PROPERTIES = frozenset(
    {"email", "firstname", "lastname", "phone", "company", "hubspot_owner_id", "leadflow_id"}
)
DEAL_PROPERTIES = frozenset(
    {
        "dealname",
        "pipeline",
        "dealstage",
        "amount",
        "deal_currency_code",
        "hubspot_owner_id",
        "closed_lost_reason",
        "closedate",
        "description",
        "leadflow_id",
        "leadflow_source",
        "leadflow_channel",
        "leadflow_route",
        "leadflow_team",
        "leadflow_utm_source",
        "leadflow_utm_medium",
        "leadflow_utm_campaign",
        "leadflow_utm_content",
        "leadflow_utm_term",
    }
)
NOTE_PROPERTIES = frozenset({"hs_timestamp", "hs_note_body", "hubspot_owner_id"})
READ_ONLY = frozenset({"hs_object_id", "createdate", "hs_lastmodifieddate", "lastmodifieddate"})
# `hasUniqueValue` properties: email is unique for contacts; leadflow_id is the custom one.
UNIQUE = {"contacts": ("email", "leadflow_id"), "deals": ("leadflow_id",), "notes": ()}
# Properties a GET returns when none are asked for.
DEFAULT_READ = {
    "contacts": (
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    ),
    "deals": (
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ),
    "notes": ("hs_timestamp", "hs_note_body", "hs_object_id"),
}
MODIFIED = {
    "contacts": "lastmodifieddate",
    "deals": "hs_lastmodifieddate",
    "notes": "hs_lastmodifieddate",
}
# HUBSPOT_DEFINED association type ids (developers.hubspot.com/docs/api-reference/latest/
# crm/associations/overview, "association type ID values"): deal->contact 3,
# contact->deal 4, note->deal 214, deal->note 213.
DEAL_TO_CONTACT, CONTACT_TO_DEAL, NOTE_TO_DEAL, DEAL_TO_NOTE = 3, 4, 214, 213


def iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Record:
    kind: str
    id: str
    properties: dict[str, str | None]
    created: datetime
    updated: datetime

    def view(self, names: list[str] | None = None) -> dict[str, Any]:
        wanted = names if names else DEFAULT_READ[self.kind]
        props = {name: self.properties.get(name) for name in wanted}
        props["hs_object_id"] = self.id
        return {
            "id": self.id,
            "properties": props,
            "createdAt": iso(self.created),
            "updatedAt": iso(self.updated),
            "archived": False,
        }


@dataclass
class Stage:
    id: str
    label: str
    is_closed: str
    probability: str
    order: int


@dataclass
class Account:
    """One portal: its objects, pipelines and associations (deal id <-> contact ids)."""

    objects: dict[str, dict[str, Record]] = field(
        default_factory=lambda: {"contacts": {}, "deals": {}, "notes": {}}
    )
    pipelines: dict[str, tuple[str, list[Stage]]] = field(default_factory=dict)
    deal_contacts: dict[str, set[str]] = field(default_factory=dict)
    note_deals: dict[str, set[str]] = field(default_factory=dict)
    blocklist: set[str] = field(default_factory=set)
    # How many deals were ever created per Leadflow lead id: duplicates show as > 1.
    created_per_lead: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10_000_000_001))

    def __post_init__(self) -> None:
        for pid, label, stages in (
            ("default", "Sales Pipeline", DEFAULT_STAGES),
            (CUSTOM_PIPELINE, "Partners", CUSTOM_STAGES),
        ):
            self.pipelines[pid] = (
                label,
                [Stage(s, lab, c, p, i) for i, (s, lab, c, p) in enumerate(stages)],
            )

    def known(self, kind: str) -> frozenset[str]:
        return {"contacts": CONTACT_PROPERTIES, "deals": DEAL_PROPERTIES, "notes": NOTE_PROPERTIES}[
            kind
        ]

    def find(self, kind: str, prop: str, value: str) -> Record | None:
        for record in self.objects[kind].values():
            if prop == "hs_object_id" and record.id == value:
                return record
            if record.properties.get(prop) == value:
                return record
        return None

    def get(self, kind: str, key: str, id_property: str | None = None) -> Record | None:
        if id_property and id_property != "hs_object_id":
            return self.find(kind, id_property, key)
        return self.objects[kind].get(key)

    def create(self, kind: str, properties: dict[str, str | None], now: datetime) -> Record:
        record = Record(kind, str(next(self._ids)), {}, now, now)
        record.properties.update(properties)
        record.properties["createdate"] = iso(now)
        record.properties[MODIFIED[kind]] = iso(now)
        self.objects[kind][record.id] = record
        lead = properties.get("leadflow_id")
        if kind == "deals" and lead:
            self.created_per_lead[lead] = self.created_per_lead.get(lead, 0) + 1
        return record

    def update(self, record: Record, properties: dict[str, str | None], now: datetime) -> None:
        record.properties.update(properties)
        record.updated = now
        record.properties[MODIFIED[record.kind]] = iso(now)

    def stage(self, pipeline: str, stage: str) -> Stage | None:
        found = self.pipelines.get(pipeline)
        return next((s for s in found[1] if s.id == stage), None) if found else None

    def pipelines_view(self) -> dict[str, Any]:
        stamp = "2024-01-01T00:00:00.000Z"
        results = []
        for order, (pid, (label, stages)) in enumerate(self.pipelines.items()):
            results.append(
                {
                    "id": pid,
                    "label": label,
                    "displayOrder": order,
                    "archived": False,
                    "createdAt": stamp,
                    "updatedAt": stamp,
                    "stages": [
                        {
                            "id": s.id,
                            "label": s.label,
                            "displayOrder": s.order,
                            "metadata": {"isClosed": s.is_closed, "probability": s.probability},
                            "archived": False,
                            "createdAt": stamp,
                            "updatedAt": stamp,
                            "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
                        }
                        for s in stages
                    ],
                }
            )
        return {"results": results}

    def erase_contact(self, contact_id: str) -> None:
        """GDPR delete: the contact and its associations go for good."""
        record = self.objects["contacts"].pop(contact_id)
        if record.properties.get("email"):
            self.blocklist.add(str(record.properties["email"]))
        for contacts in self.deal_contacts.values():
            contacts.discard(contact_id)
