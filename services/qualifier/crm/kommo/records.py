"""Kommo's request bodies and answers, as pure functions: a routed lead as a complex-add
item, the erasure patches, and a lead read back as a CrmRecord.

Facts relied on (Kommo API v4):
- `POST /api/v4/leads/complex` takes an array of leads with `name`, `price`,
  `responsible_user_id`, `pipeline_id`, `status_id`, `custom_fields_values` and
  `_embedded: {contacts: [one], companies: [one], tags}`; it answers
  `[{"id", "contact_id", "company_id", "request_id": [...], "merged"}]`
  (https://developers.kommo.com/reference/complex-leads).
- Custom field values are `[{"field_id" | "field_code", "values": [{"value"}]}]`; phones
  and e-mails are the contact's `PHONE`/`EMAIL` fields with an `enum_code` such as `WORK`;
  UTM tags go to the leads' `tracking_data` fields (https://developers.kommo.com/reference/custom-fields).
  The `UTM_*` codes are what integrations write (e.g. `field_code: UTM_SOURCE`), not a
  vendor page: configurable as `utm_field_codes`.
- `"values": null` clears a field (the vendor SDK's `NullCustomFieldValueCollection`,
  github.com/amocrm/amocrm-api-php).
- Every pipeline has the system statuses 142 (won) and 143 (lost)
  (https://developers.kommo.com/reference/leads-pipelines-and-stages); `updated_at` is
  Unix seconds; with `with=loss_reason` the reason is `_embedded.loss_reason`, an array of
  one `{id, name}` in the vendor SDK (`src/AmoCRM/Models/LeadModel.php` reads `[0]`); an
  object is accepted too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.qualifier.crm.adapter import CrmRecord, CrmRefused, PushLead, Semantic
from services.qualifier.crm.config import KommoConnector

WON, LOST = 142, 143
# Kommo's field limits: names are cut rather than refused.
MAX_NAME = 255
Json = dict[str, Any]


def semantic(status_id: int) -> Semantic:
    return "won" if status_id == WON else "lost" if status_id == LOST else "open"


def user_id(value: str | None, what: str) -> int | None:
    """A Kommo user id from the member mapping; refused when it is not one."""
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise CrmRefused(f"{what} is not a Kommo user id (digits expected)")
    return int(value)


def lead_id_field(connector: KommoConnector, value: str | None) -> Json:
    ref: Json = (
        {"field_id": connector.lead_id_field_id}
        if connector.lead_id_field_id is not None
        else {"field_code": connector.lead_id_field_code}
    )
    return ref | {"values": None if value is None else [{"value": value}]}


def owner_of(lead: PushLead, connector: KommoConnector) -> int | None:
    return user_id(lead.owner or connector.default_owner, "the owner")


def complex_item(lead: PushLead, connector: KommoConnector) -> Json:
    """One `leads/complex` item: the lead, its contact and company, source and UTM."""
    fields = [lead_id_field(connector, lead.lead_id)]
    for key, code in connector.utm_field_codes.items():
        # PushLead.utm is keyed as Leadflow's snapshot is (`source`); accept `utm_source` too.
        value = lead.utm.get(key) or lead.utm.get(key.removeprefix("utm_"))
        if value:
            fields.append({"field_code": code, "values": [{"value": value[:MAX_NAME]}]})
    contact: Json = {"name": (lead.name or "")[:MAX_NAME]}
    contact_fields = [
        {"field_code": code, "values": [{"value": value, "enum_code": "WORK"}]}
        for code, value in (("PHONE", lead.phone), ("EMAIL", lead.email))
        if value
    ]
    if contact_fields:
        contact["custom_fields_values"] = contact_fields
    tags = ["leadflow", lead.source, *([lead.channel] if lead.channel else [])]
    embedded: Json = {"tags": [{"name": t[:MAX_NAME]} for t in tags]}
    if lead.name or contact_fields:
        embedded["contacts"] = [contact]
    if lead.company:
        embedded["companies"] = [{"name": lead.company[:MAX_NAME]}]
    item: Json = {
        "name": lead.title[:MAX_NAME],
        "pipeline_id": connector.pipeline_id,
        "custom_fields_values": fields,
        "_embedded": embedded,
        # Only echoed by Kommo, never de-duplicated; it ties the answer to the lead.
        "request_id": lead.lead_id,
    }
    if connector.status_id is not None:
        item["status_id"] = connector.status_id
    owner = owner_of(lead, connector)
    if owner is not None:
        item["responsible_user_id"] = owner
    return item


def update_body(lead: PushLead, connector: KommoConnector) -> Json:
    """A re-route: the same record gets the new owner and title."""
    body: Json = {"name": lead.title[:MAX_NAME]}
    owner = owner_of(lead, connector)
    if owner is not None:
        body["responsible_user_id"] = owner
    return body


def note_body(text: str) -> list[Json]:
    return [{"note_type": "common", "params": {"text": text}}]


def erased_contact() -> Json:
    """The contact patch that removes the person: no name, no phone, no e-mail."""
    return {
        "name": "",
        "first_name": "",
        "last_name": "",
        "custom_fields_values": [
            {"field_code": "PHONE", "values": None},
            {"field_code": "EMAIL", "values": None},
        ],
    }


def complex_answer(answer: Any) -> str:
    try:
        return str(int(answer[0]["id"]))
    except (LookupError, TypeError, ValueError):
        raise CrmRefused("Kommo's leads/complex answer has no lead id") from None


def _field_value(lead: Json, connector: KommoConnector) -> str | None:
    for entry in lead.get("custom_fields_values") or []:
        if not isinstance(entry, dict):
            continue
        if connector.lead_id_field_id is not None:
            if entry.get("field_id") != connector.lead_id_field_id:
                continue
        elif entry.get("field_code") != connector.lead_id_field_code:
            continue
        values = entry.get("values") or []
        if values and isinstance(values[0], dict) and values[0].get("value") is not None:
            return str(values[0]["value"])
    return None


def _loss_reason(lead: Json) -> str | None:
    reason = (lead.get("_embedded") or {}).get("loss_reason")
    if isinstance(reason, list):
        reason = reason[0] if reason else None
    if isinstance(reason, dict) and isinstance(reason.get("name"), str):
        return str(reason["name"])
    return None


def record(lead: Any, connector: KommoConnector) -> CrmRecord:
    """A lead as Kommo answers it (`GET /api/v4/leads/{id}` or one of a list's)."""
    try:
        status_id, pipeline_id = int(lead["status_id"]), int(lead["pipeline_id"])
        crm_id, updated_at = str(int(lead["id"])), int(lead["updated_at"])
    except (LookupError, TypeError, ValueError):
        raise CrmRefused("a Kommo lead lacks id, status_id, pipeline_id or updated_at") from None
    price = lead.get("price")
    owner = lead.get("responsible_user_id")
    return CrmRecord(
        crm_id=crm_id,
        stage=str(status_id),
        semantic=semantic(status_id),
        modified_at=datetime.fromtimestamp(updated_at, UTC),
        pipeline=str(pipeline_id),
        amount=Decimal(str(price)) if isinstance(price, int | float) and price else None,
        loss_reason=_loss_reason(lead),
        owner=str(owner) if owner else None,
        lead_id=_field_value(lead, connector),
    )


def carries(lead: Any, connector: KommoConnector, lead_id: str) -> bool:
    """Whether a search hit really is the lead's record (`query` matches substrings)."""
    return isinstance(lead, dict) and _field_value(lead, connector) == lead_id
