"""The Kommo client against the Kommo simulator over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aiolimiter import AsyncLimiter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.qualifier.crm.adapter import (
    CrmRefused,
    CrmUnavailable,
    IncomingRequest,
    NotificationRefused,
)
from services.qualifier.crm.kommo import VENDOR
from services.qualifier.crm.kommo import client as kommo_client
from services.qualifier.crm.kommo.client import KommoClient
from tests.crm_sim.kommo import ACCOUNT_ID, TOKEN, make_app
from tests.crm_sim.kommo_account import LOST, WON
from tests.crm_sim.server import serving
from tests.unit.test_crm_kommo import connector, push

SECRETS = {"token": TOKEN, "webhook_secret": "s3cret-path"}


@pytest.fixture
def sim_url() -> Iterator[str]:
    with serving(make_app()) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def client(
    sim_url: str,
    http: httpx.AsyncClient,
    *,
    token: str = TOKEN,
    budget: AsyncLimiter | None = None,
) -> KommoClient:
    c = connector(base_url=sim_url, account_id=ACCOUNT_ID)
    # The vendor's default budget, as the core gives it: under the simulator's 7 a second.
    budget = budget or AsyncLimiter(*VENDOR.default_rate_limit)
    return VENDOR.make_client(c, {**SECRETS, "token": token}, http, budget)  # type: ignore[return-value]


async def sim(http: httpx.AsyncClient, url: str, path: str, body: Any = None) -> Any:
    answer = await (http.post(url + path, json=body) if body is not None else http.get(url + path))
    answer.raise_for_status()
    return answer.json()


async def test_create_then_fetch_shows_stage_owner_and_fields(
    sim_url: str, http: httpx.AsyncClient
) -> None:
    kommo = client(sim_url, http)
    lead_id = f"lf-{uuid4()}"
    crm_id = await kommo.upsert(push(lead_id=lead_id), None)
    record = await kommo.fetch(crm_id)
    assert record is not None
    assert (record.stage, record.pipeline, record.semantic) == ("70001", "7000", "open")
    assert (record.owner, record.lead_id) == ("12", lead_id)
    [stored] = [x for x in await sim(http, sim_url, "/_sim/leads") if str(x["id"]) == crm_id]
    codes = {f["field_code"] for f in stored["custom_fields_values"]}
    assert {"LEADFLOW_ID", "UTM_SOURCE", "UTM_CAMPAIGN"} <= codes
    assert stored["notes"][0]["params"]["text"] == "score 80 >= 60"
    await sim(
        http,
        sim_url,
        f"/_sim/leads/{crm_id}/move",
        {"status_id": LOST, "loss_reason_id": 11, "price": 700},
    )
    lost = await kommo.fetch(crm_id)
    assert lost is not None
    assert (lost.semantic, lost.loss_reason, lost.amount) == ("lost", "Too expensive", 700)
    assert await kommo.fetch("999") is None


async def test_upsert_twice_and_a_lost_answer_make_one_record(
    sim_url: str, http: httpx.AsyncClient
) -> None:
    kommo = client(sim_url, http)
    lead_id = f"lf-{uuid4()}"
    await sim(http, sim_url, "/_sim/fail", {"count": 1, "status": 502, "after_commit": True})
    with pytest.raises(CrmUnavailable):
        await kommo.upsert(push(lead_id=lead_id), None)
    first = await kommo.upsert(push(lead_id=lead_id), None)
    again = await kommo.upsert(push(lead_id=lead_id, owner="13"), None)
    assert first == again
    assert (await sim(http, sim_url, f"/_sim/leads/by-lead-id/{lead_id}"))["count"] == 1
    record = await kommo.fetch(first)
    assert record is not None and record.owner == "13"


async def test_the_rate_limit_is_unavailable_with_retry_after(
    sim_url: str, http: httpx.AsyncClient
) -> None:
    await sim(http, sim_url, "/_sim/config", {"rate_limit": 1})
    kommo = client(sim_url, http, budget=AsyncLimiter(1000, 1.0))
    with pytest.raises(CrmUnavailable) as unavailable:
        for _ in range(20):
            await kommo.fetch("1")
    assert unavailable.value.retry_after == 1.0


async def test_a_bad_token_is_refused(sim_url: str, http: httpx.AsyncClient) -> None:
    with pytest.raises(CrmRefused, match="401"):
        await client(sim_url, http, token="wrong").upsert(push(), None)


async def test_erase_clears_the_persons_fields(sim_url: str, http: httpx.AsyncClient) -> None:
    kommo = client(sim_url, http)
    crm_id = await kommo.upsert(push(lead_id=f"lf-{uuid4()}"), None)
    [stored] = [x for x in await sim(http, sim_url, "/_sim/leads") if str(x["id"]) == crm_id]
    contact_id = stored["_embedded"]["contacts"][0]["id"]
    await kommo.erase(crm_id)
    contact = await sim(http, sim_url, f"/_sim/contacts/{contact_id}")
    assert contact["name"] == "" and contact["custom_fields_values"] is None
    [after] = [x for x in await sim(http, sim_url, "/_sim/leads") if str(x["id"]) == crm_id]
    assert after["name"] == ""
    assert "Anna" not in str(after) and "anna@" not in str(contact)


async def test_modified_since_reads_every_page(
    sim_url: str, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    kommo = client(sim_url, http)
    since = datetime.now(UTC) - timedelta(seconds=2)
    made = {await kommo.upsert(push(lead_id=f"lf-{uuid4()}"), None) for _ in range(3)}
    monkeypatch.setattr(kommo_client, "PAGE", 2)  # two pages, without 251 leads
    found = await kommo.modified_since(since)
    assert {r.crm_id for r in found} == made
    assert await kommo.modified_since(datetime.now(UTC) + timedelta(hours=1)) == []


async def test_a_webhook_from_the_simulator_parses_and_a_forged_one_is_refused(
    sim_url: str, http: httpx.AsyncClient
) -> None:
    got: list[IncomingRequest] = []

    async def hook(request: Request) -> Response:
        got.append(
            IncomingRequest(
                method="POST",
                url=str(request.url),
                headers=dict(request.headers),
                body=await request.body(),
                path_secret=request.path_params["secret"],
                received_at=datetime.now(UTC),
            )
        )
        return Response(status_code=200)

    kommo = client(sim_url, http)
    with serving(Starlette(routes=[Route("/hook/{secret}", hook, methods=["POST"])])) as hook_url:
        await sim(http, sim_url, "/_sim/config", {"receiver_url": f"{hook_url}/hook/s3cret-path"})
        crm_id = await kommo.upsert(push(lead_id=f"lf-{uuid4()}"), None)
        await sim(http, sim_url, f"/_sim/leads/{crm_id}/move", {"status_id": WON, "price": 100})
        for _ in range(600):
            if got:
                break
            await asyncio.sleep(0.05)
    c = connector(base_url=sim_url, account_id=ACCOUNT_ID)
    notices = VENDOR.parse_notification(c, SECRETS, got[0])
    assert [n.crm_id for n in notices] == [crm_id]
    forged = IncomingRequest(**{**got[0].__dict__, "path_secret": "guess"})
    with pytest.raises(NotificationRefused) as refused:
        VENDOR.parse_notification(c, SECRETS, forged)
    assert refused.value.status_code == 403
    other = connector(base_url=sim_url, account_id=ACCOUNT_ID + 1)
    with pytest.raises(NotificationRefused) as refused:
        VENDOR.parse_notification(other, SECRETS, got[0])
    assert refused.value.status_code == 403
