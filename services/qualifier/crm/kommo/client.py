"""The Kommo connector's calls: `https://{subdomain}.kommo.com/api/v4/...` with the
private integration's long-lived token (`Authorization: Bearer`,
https://developers.kommo.com/docs/long-lived-token), each call first waiting for the
account's budget. Nothing here logs: a failure is raised with our own message.

- Create: `POST leads/complex` (one lead, its contact and company), then the note
  (`POST leads/{id}/notes`, `note_type: common`). `request_id` is only echoed, so before
  creating, the lead id is searched (`GET leads?query=<lead id>`: "searches through the
  filled fields", https://developers.kommo.com/reference/leads-list) and a hit is
  confirmed on the lead id field itself.
- Reads: `GET leads/{id}?with=loss_reason` (204 when there is no such lead); lists are
  HAL with `_links.next`, at most 250 a page, 204 when empty
  (https://kommo.com/developers/content/api_v4/errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
from aiolimiter import AsyncLimiter

from services.qualifier.crm.adapter import CrmRecord, CrmRefused, CrmUnavailable, PushLead
from services.qualifier.crm.config import KommoConnector
from services.qualifier.crm.kommo import records
from services.qualifier.crm.kommo.errors import failure

PAGE = 250
# A bound on one poll: 250 000 leads modified since the last sync is a runaway, not a poll.
MAX_PAGES = 1000


class KommoClient:
    def __init__(
        self, connector: KommoConnector, token: str, http: httpx.AsyncClient, budget: AsyncLimiter
    ) -> None:
        self._connector = connector
        self._base = str(connector.base_url).rstrip("/") + "/api/v4/"
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._http = http
        self._budget = budget

    async def _call(
        self,
        method: str,
        path: str,
        call: str,
        *,
        params: Any = None,
        body: Any = None,
        absent_ok: bool = False,
    ) -> httpx.Response:
        async with self._budget:
            try:
                answer = await self._http.request(
                    method, self._base + path, params=params, json=body, headers=self._headers
                )
            except httpx.TimeoutException:
                raise CrmUnavailable(f"Kommo did not answer {call} in time") from None
            except httpx.TransportError as exc:
                # The exception's text may hold the URL; its class name is enough.
                raise CrmUnavailable(f"Kommo unreachable on {call}: {type(exc).__name__}") from None
        if answer.status_code == 404 and absent_ok:
            return answer
        if answer.status_code >= 300:
            raise failure(answer.status_code, dict(answer.headers), answer.content, call)
        return answer

    @staticmethod
    def _json(answer: httpx.Response, call: str) -> Any:
        try:
            return answer.json()
        except ValueError:
            raise CrmRefused(f"Kommo's answer to {call} is not JSON") from None

    async def _find(self, lead_id: str) -> str | None:
        answer = await self._call(
            "GET", "leads", "leads search", params={"query": lead_id, "limit": PAGE}
        )
        if answer.status_code == 204:
            return None
        hits = (self._json(answer, "leads search").get("_embedded") or {}).get("leads") or []
        found = sorted(
            _id(h.get("id")) for h in hits if records.carries(h, self._connector, lead_id)
        )
        # Two records for one lead id can only come from outside; keep the oldest.
        return str(found[0]) if found else None

    async def _note(self, crm_id: str, text: str) -> None:
        if text.strip():
            await self._call("POST", f"leads/{crm_id}/notes", "notes", body=records.note_body(text))

    async def upsert(self, lead: PushLead, crm_id: str | None) -> str:
        c = self._connector
        crm_id = crm_id or await self._find(lead.lead_id)
        if crm_id is not None:
            await self._call(
                "PATCH", f"leads/{_id(crm_id)}", "lead update", body=records.update_body(lead, c)
            )
        else:
            answer = await self._call(
                "POST", "leads/complex", "leads/complex", body=[records.complex_item(lead, c)]
            )
            crm_id = records.complex_answer(self._json(answer, "leads/complex"))
        await self._note(crm_id, lead.note)
        return crm_id

    async def erase(self, crm_id: str) -> None:
        answer = await self._call(
            "GET", f"leads/{_id(crm_id)}", "lead read", params={"with": "contacts"}, absent_ok=True
        )
        if answer.status_code in (204, 404):
            return
        lead = self._json(answer, "lead read")
        for contact in (lead.get("_embedded") or {}).get("contacts") or []:
            await self._call(
                "PATCH",
                f"contacts/{_id(contact.get('id'))}",
                "contact erase",
                body=records.erased_contact(),
            )
        # The title may carry the person's name too.
        await self._call("PATCH", f"leads/{_id(crm_id)}", "lead erase", body={"name": ""})

    async def fetch(self, crm_id: str) -> CrmRecord | None:
        answer = await self._call(
            "GET",
            f"leads/{_id(crm_id)}",
            "lead read",
            params={"with": "loss_reason"},
            absent_ok=True,
        )
        if answer.status_code in (204, 404):
            return None
        return records.record(self._json(answer, "lead read"), self._connector)

    async def modified_since(self, since: datetime) -> Sequence[CrmRecord]:
        found: list[CrmRecord] = []
        for page in range(1, MAX_PAGES + 1):
            params = {
                # Whole seconds, rounded down: `from` is inclusive, so nothing is skipped.
                "filter[updated_at][from]": int(since.timestamp()),
                "filter[pipeline_id]": self._connector.pipeline_id,
                "with": "loss_reason",
                "page": page,
                "limit": PAGE,
            }
            answer = await self._call("GET", "leads", "leads list", params=params)
            if answer.status_code == 204:
                break
            body = self._json(answer, "leads list")
            leads = (body.get("_embedded") or {}).get("leads") or []
            found += [records.record(x, self._connector) for x in leads]
            if "next" not in (body.get("_links") or {}):
                break
        return found


def _id(value: Any) -> int:
    """A Kommo id for a URL path: digits only, so nothing else reaches the path."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    raise CrmRefused("not a Kommo id (digits expected)")


def make_client(
    connector: KommoConnector,
    secrets: dict[str, str],
    http: httpx.AsyncClient,
    budget: AsyncLimiter,
) -> KommoClient:
    return KommoClient(connector, secrets["token"], http, budget)
