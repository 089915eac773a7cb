"""The Bitrix24 connector's calls: a routed lead as a deal with its contact, company and
note; erasure; a deal read back; the deals modified since the last sync.

Calls per lead: a create is two requests (the ORIGINATOR_ID + ORIGIN_ID look-up, then one
`batch` adding company, contact, deal and the timeline note), an update one; a request
counts once against the portal's 2-a-second budget however many commands it carries
(limits.md: "use the batch method ... up to 50 method calls in a single HTTP request").

Facts (github.com/bitrix24/b24restdocs):
- crm.deal.list filter keys take the prefixes `>=`, `>`...; pages are always 50, the next
  page is `start` = the answer's `next`; `order` sorts (api-reference/crm/deals/crm-deal-list.md).
- ORIGINATOR_ID + ORIGIN_ID link a deal to its source, but nothing documents them as
  unique (*unconfirmed*): the look-up before each create is what keeps one deal per lead,
  with the core's own lead -> deal map.
- crm.timeline.comment.add takes `fields` {ENTITY_ID, ENTITY_TYPE: "deal", COMMENT}, in
  lowercase only (api-reference/crm/timeline/comments/crm-timeline-comment-add.md).
- crm.status.list with filter ENTITY_ID `DEAL_STAGE` (funnel 0) or `DEAL_STAGE_{id}` lists a
  funnel's stages with their NAME (api-reference/crm/status/crm-status-list.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
from aiolimiter import AsyncLimiter

from services.qualifier.crm.adapter import CrmRecord, CrmRefused, CrmUnavailable, PushLead
from services.qualifier.crm.bitrix24 import records
from services.qualifier.crm.bitrix24.wire import NotFound, Portal, result_ref
from services.qualifier.crm.config import Bitrix24Connector

# Stage names change rarely; a loss reason read from a name a few minutes old is fine.
STAGE_NAMES_TTL = 300.0
# A reconciliation poll reads at most this many pages (10,000 deals); the rest waits for
# the next poll, which starts from the last record read.
MAX_PAGES = 200
_stage_names: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}


class Bitrix24Client:
    def __init__(self, connector: Bitrix24Connector, portal: Portal) -> None:
        self._connector = connector
        self._portal = portal

    # ---- push
    async def upsert(self, lead: PushLead, crm_id: str | None) -> str:
        if crm_id is None:
            crm_id = await self._find(lead.lead_id)
        if crm_id is not None:
            await self._update(lead, crm_id)
            return crm_id
        return await self._create(lead)

    async def _find(self, lead_id: str) -> str | None:
        flt = {"ORIGINATOR_ID": records.ORIGINATOR, "ORIGIN_ID": lead_id}
        params = {"filter": flt, "select": ["ID"], "order": {"ID": "ASC"}}
        found = (await self._portal.call("crm.deal.list", params))["result"]
        if isinstance(found, list) and found and isinstance(found[0], dict) and found[0].get("ID"):
            return str(found[0]["ID"])  # the oldest, should a duplicate ever exist
        return None

    async def _create(self, lead: PushLead) -> str:
        commands: dict[str, tuple[str, Mapping[str, Any]]] = {}
        deal = records.deal_fields(lead, category_id=self._connector.category_id, new=True)
        if lead.company:
            commands["company"] = ("crm.company.add", {"fields": records.company_fields(lead)})
            deal["COMPANY_ID"] = result_ref("company")
        if records.has_person(lead):
            contact = records.contact_fields(lead)
            if lead.company:
                contact["COMPANY_ID"] = result_ref("company")
            commands["contact"] = ("crm.contact.add", {"fields": contact})
            deal["CONTACT_ID"] = result_ref("contact")
        commands["deal"] = ("crm.deal.add", {"fields": deal})
        if lead.note.strip():
            commands["note"] = ("crm.timeline.comment.add", {"fields": self._note(lead, None)})
        results = await self._portal.batch(commands)
        crm_id = str(results["deal"])
        if not crm_id.isdigit():
            raise CrmUnavailable("bitrix24 crm.deal.add: an id that is not a number")
        return crm_id

    async def _update(self, lead: PushLead, crm_id: str) -> None:
        """A re-route: the same deal gets the new owner and fields, and the new reasons as
        a note (a retried update may add that note twice; the deal stays one)."""
        fields = records.deal_fields(lead, category_id=self._connector.category_id, new=False)
        commands: dict[str, tuple[str, Mapping[str, Any]]] = {
            "deal": ("crm.deal.update", {"id": crm_id, "fields": fields})
        }
        if lead.note.strip():
            commands["note"] = ("crm.timeline.comment.add", {"fields": self._note(lead, crm_id)})
        try:
            await self._portal.batch(commands)
        except NotFound:
            raise records_gone(crm_id) from None

    @staticmethod
    def _note(lead: PushLead, crm_id: str | None) -> dict[str, Any]:
        return {
            "ENTITY_ID": crm_id or result_ref("deal"),
            "ENTITY_TYPE": "deal",
            "COMMENT": f"Leadflow ({lead.route}):\n{lead.note}",
        }

    # ---- erasure
    async def erase(self, crm_id: str) -> None:
        """The contact's names, phones and e-mails, and the deal's title and comments. The
        company is left: it is the business's record, shared by its other deals."""
        try:
            deal = (await self._portal.batch({"deal": ("crm.deal.get", {"id": crm_id})}))["deal"]
        except NotFound:
            return  # gone from the CRM: nothing of the person left there
        if not isinstance(deal, dict):
            raise CrmUnavailable("bitrix24 crm.deal.get: an answer without a deal")
        commands: dict[str, tuple[str, Mapping[str, Any]]] = {}
        contact_id = deal.get("CONTACT_ID")
        if contact_id:
            try:
                got = await self._portal.call("crm.contact.get", {"id": contact_id})
            except NotFound:
                got = None
            if got is not None and isinstance(got["result"], dict):
                fields = records.erase_contact_fields(got["result"])
                commands["contact"] = ("crm.contact.update", {"id": contact_id, "fields": fields})
        lead_id = deal.get("ORIGIN_ID") if deal.get("ORIGINATOR_ID") == records.ORIGINATOR else None
        fields = records.erase_deal_fields(lead_id, crm_id)
        commands["deal"] = ("crm.deal.update", {"id": crm_id, "fields": fields})
        try:
            await self._portal.batch(commands)
        except NotFound:
            return

    # ---- pull
    async def fetch(self, crm_id: str) -> CrmRecord | None:
        params = {"id": crm_id}
        try:
            deal = (await self._portal.call("crm.deal.get", params))["result"]
        except NotFound:
            return None
        return (await self._read([deal]))[0]

    async def modified_since(self, since: datetime) -> Sequence[CrmRecord]:
        select = list(records.DEAL_SELECT)
        if self._connector.lost_reason_field:
            select.append(self._connector.lost_reason_field)
        flt = {">=DATE_MODIFY": records.format_time(since), "ORIGINATOR_ID": records.ORIGINATOR}
        params: dict[str, Any] = {
            "filter": flt,
            "select": select,
            "order": {"DATE_MODIFY": "ASC", "ID": "ASC"},
        }
        deals: list[Any] = []
        start: Any = 0
        for _ in range(MAX_PAGES):
            page = await self._portal.call("crm.deal.list", {**params, "start": start})
            if not isinstance(page["result"], list):
                raise CrmUnavailable("bitrix24 crm.deal.list: a result that is not a list")
            deals.extend(page["result"])
            start = page.get("next")
            if not start:
                break
        return await self._read(deals)

    async def _read(self, deals: list[Any]) -> list[CrmRecord]:
        names: dict[str, str] = {}
        lost = {str(d.get("CATEGORY_ID") or "0") for d in deals if _is_lost(d)}
        for category in sorted(lost):
            names |= await self._stage_names(category)
        out = []
        for deal in deals:
            if not isinstance(deal, dict):
                raise CrmUnavailable("bitrix24: a deal that is not an object")
            try:
                out.append(
                    records.read_deal(
                        deal,
                        stage_names=names,
                        lost_reason_field=self._connector.lost_reason_field,
                    )
                )
            except ValueError as e:
                raise CrmUnavailable(f"bitrix24: unreadable deal, {e}") from None
        return out

    async def _stage_names(self, category: str) -> dict[str, str]:
        key = (self._connector.id, category)
        cached = _stage_names.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        entity = "DEAL_STAGE" if category == "0" else f"DEAL_STAGE_{category}"
        answer = await self._portal.call("crm.status.list", {"filter": {"ENTITY_ID": entity}})
        names = records.stage_names(answer["result"])
        _stage_names[key] = (time.monotonic() + STAGE_NAMES_TTL, names)
        return names


def _is_lost(deal: Any) -> bool:
    return isinstance(deal, dict) and deal.get("STAGE_SEMANTIC_ID") == "F"


def records_gone(crm_id: str) -> Exception:
    return CrmRefused(f"bitrix24 crm.deal.update: deal {crm_id} not found")


def make_client(
    connector: Bitrix24Connector,
    secrets: Mapping[str, str],
    http: httpx.AsyncClient,
    budget: AsyncLimiter,
) -> Bitrix24Client:
    portal = Portal(
        str(connector.base_url),
        connector.credentials.user_id,
        secrets["webhook_code"],
        http,
        budget,
    )
    return Bitrix24Client(connector, portal)
