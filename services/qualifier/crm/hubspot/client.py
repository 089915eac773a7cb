"""The HubSpot connector's calls (CrmClient), over a private app's token.

Calls (developers.hubspot.com; details in records.py): contacts and deals through
`POST /crm/v3/objects/{type}/batch/upsert` keyed by a unique property, so a create whose
answer was lost is found, not repeated; `PUT /crm/v4/objects/deal/{id}/associations/
default/contact/{id}`; `POST /crm/v3/objects/notes` associated to the deal;
`PATCH /crm/v3/objects/deals/{id}` for a re-route; `GET /crm/v3/objects/deals/{id}`;
`POST /crm/v3/objects/contacts/gdpr-delete` (docs/api-reference/legacy/crm/objects/
contacts/gdpr/gdpr-delete-contact); `POST /crm/v3/objects/deals/search`, whose results
trail writes by a few seconds and stop at 10,000 per query, and which has its own limit
(4 a second per the changelog "CRM Search API Rate Limit Increase", 5 in today's usage
guidelines: the lower is kept).

Nothing here logs: errors carry our own messages (errors.py). The token travels only in
the Authorization header, never in a URL.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from aiolimiter import AsyncLimiter

from services.qualifier.crm.adapter import CrmRecord, CrmUnavailable, PushLead
from services.qualifier.crm.config import HubSpotConnector
from services.qualifier.crm.hubspot import records
from services.qualifier.crm.hubspot.errors import check

# Stage metadata changes rarely; read it again after this long, or on an unknown stage.
PIPELINES_TTL = 600.0
SEARCH_RATE = (4, 1.0)
_pipelines: dict[tuple[str, str], tuple[float, records.Stages]] = {}
_search_budgets: dict[str, AsyncLimiter] = {}


class HubSpotClient:
    def __init__(
        self,
        connector: HubSpotConnector,
        secrets: Mapping[str, str],
        http: httpx.AsyncClient,
        budget: AsyncLimiter,
    ) -> None:
        self._c = connector
        self._base = str(connector.base_url).rstrip("/")
        self._headers = {"Authorization": f"Bearer {secrets['token']}"}
        self._http = http
        self._budget = budget
        self._search = _search_budgets.setdefault(connector.id, AsyncLimiter(*SEARCH_RATE))

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        search: bool = False,
    ) -> httpx.Response:
        async with self._budget:
            if search:
                await self._search.acquire()
            try:
                return await self._http.request(
                    method, self._base + path, json=body, params=params, headers=self._headers
                )
            except httpx.TimeoutException:
                raise CrmUnavailable("HubSpot did not answer in time") from None
            except httpx.HTTPError as exc:
                raise CrmUnavailable(f"HubSpot unreachable ({type(exc).__name__})") from None

    async def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        response = await self._call(method, path, **kw)
        check(response)
        if response.status_code == 204 or not response.content:
            return {}
        found: dict[str, Any] = response.json()
        return found

    async def _stages(self, *, fresh: bool = False) -> records.Stages:
        key = (self._c.id, self._base)
        cached = _pipelines.get(key)
        if cached and not fresh and time.monotonic() - cached[0] < PIPELINES_TTL:
            return cached[1]
        stages = records.read_pipelines(await self._json("GET", "/crm/v3/pipelines/deals"))
        _pipelines[key] = (time.monotonic(), stages)
        return stages

    async def _first_stage(self) -> str:
        if self._c.dealstage:
            return self._c.dealstage
        stages = await self._stages()
        if self._c.pipeline not in stages.first:
            stages = await self._stages(fresh=True)
        return stages.first.get(self._c.pipeline, "appointmentscheduled")

    async def _record(self, deal: Mapping[str, Any]) -> CrmRecord:
        stages = await self._stages()
        props = deal.get("properties") or {}
        if (str(props.get("pipeline")), str(props.get("dealstage"))) not in stages.semantic:
            stages = await self._stages(fresh=True)
        return records.read_deal(deal, self._c, stages)

    async def upsert(self, lead: PushLead, crm_id: str | None) -> str:
        contact_id: str | None = None
        contact = records.contact_upsert(lead, self._c)
        if contact is not None:
            answer = await self._json("POST", "/crm/v3/objects/contacts/batch/upsert", body=contact)
            contact_id = str(answer["results"][0]["id"])
        if crm_id is not None:
            # A re-route: owner, title and source follow; the stage is the salesperson's.
            props = records.deal_properties(lead, self._c)
            await self._json("PATCH", f"/crm/v3/objects/deals/{crm_id}", body={"properties": props})
            deal_id = crm_id
        else:
            body = records.deal_upsert(lead, self._c, await self._first_stage())
            answer = await self._json("POST", "/crm/v3/objects/deals/batch/upsert", body=body)
            deal_id = str(answer["results"][0]["id"])
        if contact_id is not None:
            path = f"/crm/v4/objects/deal/{deal_id}/associations/default/contact/{contact_id}"
            await self._json("PUT", path)
        # Notes have no unique key: a retry after a lost answer may repeat the note, never
        # the deal.
        note = records.note_body(lead, deal_id, datetime.now(UTC))
        await self._json("POST", "/crm/v3/objects/notes", body=note)
        return deal_id

    async def erase(self, crm_id: str) -> None:
        response = await self._call(
            "GET",
            f"/crm/v3/objects/deals/{crm_id}",
            params={"properties": self._c.id_property, "associations": "contacts"},
        )
        if response.status_code == 404:
            return
        check(response)
        deal = response.json()
        linked = ((deal.get("associations") or {}).get("contacts") or {}).get("results") or []
        for contact in linked:
            gone = await self._call(
                "POST",
                "/crm/v3/objects/contacts/gdpr-delete",
                body={"objectId": str(contact["id"])},
            )
            if gone.status_code != 404:
                check(gone)
        lead_id = (deal.get("properties") or {}).get(self._c.id_property)
        name = {"dealname": records.erased_dealname(lead_id)}
        await self._json("PATCH", f"/crm/v3/objects/deals/{crm_id}", body={"properties": name})

    async def fetch(self, crm_id: str) -> CrmRecord | None:
        response = await self._call(
            "GET",
            f"/crm/v3/objects/deals/{crm_id}",
            params={"properties": ",".join(records.deal_read_properties(self._c))},
        )
        if response.status_code == 404:
            return None
        check(response)
        return await self._record(response.json())

    async def modified_since(self, since: datetime) -> Sequence[CrmRecord]:
        found: dict[str, CrmRecord] = {}
        after: str | None = None
        while True:
            page = await self._json(
                "POST",
                "/crm/v3/objects/deals/search",
                body=records.search_body(self._c, since, after),
                search=True,
            )
            for deal in page.get("results", []):
                record = await self._record(deal)
                found[record.crm_id] = record
            after = records.next_after(page)
            if after is None and int(page.get("total", 0)) > records.SEARCH_MAX and found:
                # Past 10,000 a query stops: start a new one from the last time seen.
                latest = max(r.modified_at for r in found.values())
                if latest <= since:
                    break
                since, after = latest, None
                continue
            if after is None:
                break
        return list(found.values())
