"""Bitrix24 records as Leadflow writes and reads them: a deal's, contact's and company's
fields from a PushLead, what erasure writes, and a CrmRecord from a deal. Pure.

Facts (github.com/bitrix24/b24restdocs, served at apidocs.bitrix24.com):
- Deal fields TITLE, CATEGORY_ID (cannot change later), ASSIGNED_BY_ID, SOURCE_ID,
  SOURCE_DESCRIPTION, UTM_SOURCE/MEDIUM/CAMPAIGN/CONTENT/TERM, ORIGINATOR_ID ("identifier
  of the data source"), ORIGIN_ID ("identifier of the element in the data source"),
  COMMENTS (BB-code), CONTACT_ID, COMPANY_ID (api-reference/crm/deals/crm-deal-add.md).
- crm.deal.get answers every value as a string; STAGE_SEMANTIC_ID is P in progress,
  S successful, F unsuccessful; DATE_MODIFY is ISO 8601 with the portal's offset
  (api-reference/crm/deals/crm-deal-get.md).
- SOURCE_ID values are the portal's `SOURCE` list (crm.status.list); the stock ones used
  here, WEB, WEBFORM, TRADE_SHOW and OTHER, appear in the vendor's examples; a portal
  may rename or remove them, so the map is a default (see SOURCES).
- Contacts have NAME, LAST_NAME, COMPANY_ID, ORIGINATOR_ID, ORIGIN_ID and the
  multi-fields PHONE and EMAIL: `[{"VALUE", "VALUE_TYPE"}]`; an item sent back with its
  ID and an empty VALUE is deleted (api-reference/crm/contacts/crm-contact-add.md,
  crm-contact-update.md "Delete a Single Value from a Multiple Field"). A contact has no
  company title: the company is a record of its own (crm.company.add, TITLE).
- No loss-reason field is built in (*unconfirmed*): a configured user field
  (`lost_reason_field`), else the stage's name from crm.status.list.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from services.qualifier.crm.adapter import CrmRecord, PushLead, Semantic

ORIGINATOR = "leadflow"
# Leadflow's source -> the portal's SOURCE list. Webinars have no stock source; TRADE_SHOW
# ("exhibition") is the nearest event-like one, kept apart from OTHER for reporting.
SOURCES = {
    "web_form": "WEBFORM",
    "webinar_registration": "TRADE_SHOW",
    "webinar_attendance": "TRADE_SHOW",
    "import": "OTHER",
    "api": "WEB",
}
SEMANTICS: dict[str, Semantic] = {"P": "open", "S": "won", "F": "lost"}
UTM_KEYS = ("source", "medium", "campaign", "content", "term")
# What a deal is read with: the fields a CrmRecord needs, plus the links erasure follows.
DEAL_SELECT = (
    "ID",
    "STAGE_ID",
    "STAGE_SEMANTIC_ID",
    "CATEGORY_ID",
    "OPPORTUNITY",
    "CURRENCY_ID",
    "ASSIGNED_BY_ID",
    "DATE_MODIFY",
    "ORIGINATOR_ID",
    "ORIGIN_ID",
    "CONTACT_ID",
)
TITLE_MAX = 255


def erased_title(lead_id: str) -> str:
    return f"Leadflow lead {lead_id}"


def _comments(lead: PushLead) -> str:
    """The deal's COMMENTS: where the lead came from and the fields the form asked for."""
    lines = [f"Leadflow lead: {lead.lead_id}", f"Route: {lead.route}"]
    if lead.team:
        lines.append(f"Team: {lead.team}")
    if lead.channel:
        lines.append(f"Channel: {lead.channel}")
    lines.extend(f"{key}: {value}" for key, value in sorted(lead.extra.items()))
    return "\n".join(lines)


def deal_fields(lead: PushLead, *, category_id: int, new: bool) -> dict[str, Any]:
    """crm.deal.add / crm.deal.update fields. CATEGORY_ID only on create: it cannot change."""
    fields: dict[str, Any] = {
        "TITLE": (lead.title or erased_title(lead.lead_id))[:TITLE_MAX],
        "SOURCE_ID": SOURCES.get(lead.source, "OTHER"),
        "SOURCE_DESCRIPTION": f"Leadflow: {lead.source}"
        + (f" / {lead.channel}" if lead.channel else ""),
        "ORIGINATOR_ID": ORIGINATOR,
        "ORIGIN_ID": lead.lead_id,
        "COMMENTS": _comments(lead),
    }
    if lead.owner:
        fields["ASSIGNED_BY_ID"] = lead.owner
    for key in UTM_KEYS:
        value = lead.utm.get(f"utm_{key}") or lead.utm.get(key)
        if value:
            fields[f"UTM_{key.upper()}"] = value
    if new:
        fields["CATEGORY_ID"] = category_id
    return fields


def has_person(lead: PushLead) -> bool:
    return any((lead.name, lead.email, lead.phone))


def contact_fields(lead: PushLead) -> dict[str, Any]:
    """crm.contact.add fields. The full name goes to NAME: splitting it into first and
    last would guess (Russian forms often put the surname first)."""
    fields: dict[str, Any] = {"ORIGINATOR_ID": ORIGINATOR, "ORIGIN_ID": lead.lead_id}
    if lead.name:
        fields["NAME"] = lead.name
    if lead.phone:
        fields["PHONE"] = [{"VALUE": lead.phone, "VALUE_TYPE": "WORK"}]
    if lead.email:
        fields["EMAIL"] = [{"VALUE": lead.email, "VALUE_TYPE": "WORK"}]
    if lead.owner:
        fields["ASSIGNED_BY_ID"] = lead.owner
    return fields


def company_fields(lead: PushLead) -> dict[str, Any]:
    fields: dict[str, Any] = {"TITLE": lead.company}
    if lead.owner:
        fields["ASSIGNED_BY_ID"] = lead.owner
    return fields


def erase_contact_fields(contact: Mapping[str, Any]) -> dict[str, Any]:
    """crm.contact.update fields that remove the person: names emptied, every PHONE and
    EMAIL item sent back by its ID with an empty VALUE (the documented deletion)."""
    fields: dict[str, Any] = {"NAME": "", "LAST_NAME": "", "SECOND_NAME": ""}
    for key in ("PHONE", "EMAIL"):
        items = contact.get(key)
        if isinstance(items, list):
            ids = [item.get("ID") for item in items if isinstance(item, dict)]
            fields[key] = [{"ID": i, "VALUE": ""} for i in ids if i is not None]
    return fields


def erase_deal_fields(lead_id: str | None, crm_id: str) -> dict[str, Any]:
    """The deal's TITLE (often the person's name) and COMMENTS (form answers) replaced."""
    return {"TITLE": erased_title(lead_id or f"deal {crm_id}"), "COMMENTS": ""}


def parse_time(value: Any) -> datetime:
    """A Bitrix24 date (`2024-08-30T14:29:00+02:00`) as UTC; ValueError if unreadable."""
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError("a Bitrix24 date without an offset")
    return moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """For a filter: ISO 8601 with its offset, whole seconds rounded down (DATE_MODIFY has
    no fractions, so `>=` keeps every record of that second)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.replace(microsecond=0).isoformat()


def _amount(value: Any) -> Decimal | None:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() and amount > 0 else None


def read_deal(
    deal: Mapping[str, Any],
    *,
    stage_names: Mapping[str, str],
    lost_reason_field: str | None,
) -> CrmRecord:
    """A CrmRecord from crm.deal.get / crm.deal.list's item; ValueError when a field the
    record needs is missing or unreadable (the message names the field, not its value)."""
    for key in ("ID", "STAGE_ID", "STAGE_SEMANTIC_ID", "DATE_MODIFY"):
        if not deal.get(key):
            raise ValueError(f"the deal has no {key}")
    semantic = SEMANTICS.get(str(deal["STAGE_SEMANTIC_ID"]))
    if semantic is None:
        raise ValueError("the deal's STAGE_SEMANTIC_ID is not P, S or F")
    try:
        modified = parse_time(deal["DATE_MODIFY"])
    except ValueError:
        raise ValueError("the deal's DATE_MODIFY is not a date with an offset") from None
    stage = str(deal["STAGE_ID"])
    reason = None
    if semantic == "lost":
        custom = deal.get(lost_reason_field) if lost_reason_field else None
        reason = str(custom).strip() if custom else None
        reason = reason or stage_names.get(stage) or stage
    originator = deal.get("ORIGINATOR_ID")
    origin = deal.get("ORIGIN_ID")
    return CrmRecord(
        crm_id=str(deal["ID"]),
        stage=stage,
        semantic=semantic,
        modified_at=modified,
        pipeline=str(deal.get("CATEGORY_ID") or "0"),
        amount=_amount(deal.get("OPPORTUNITY")),
        currency=str(deal["CURRENCY_ID"]) if deal.get("CURRENCY_ID") else None,
        loss_reason=reason[:500] if reason else None,
        owner=str(deal["ASSIGNED_BY_ID"]) if deal.get("ASSIGNED_BY_ID") else None,
        lead_id=str(origin) if originator == ORIGINATOR and origin else None,
    )


def stage_names(statuses: Any) -> dict[str, str]:
    """STATUS_ID -> NAME from crm.status.list's result (entity DEAL_STAGE[_{id}])."""
    names: dict[str, str] = {}
    for item in statuses if isinstance(statuses, list) else []:
        if isinstance(item, dict) and item.get("STATUS_ID") and item.get("NAME"):
            names[str(item["STATUS_ID"])] = str(item["NAME"])
    return names
