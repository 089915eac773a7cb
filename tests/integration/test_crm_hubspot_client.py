"""The HubSpot connector against the HubSpot simulator over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiolimiter import AsyncLimiter

from services.qualifier.crm.adapter import (
    CrmClient,
    CrmRefused,
    CrmUnavailable,
    IncomingRequest,
    Notice,
    NotificationRefused,
    PushLead,
)
from services.qualifier.crm.config import HubSpotConnector
from services.qualifier.crm.hubspot import VENDOR
from tests.crm_sim.hubspot import create_app
from tests.crm_sim.hubspot_receiver import Receiver
from tests.crm_sim.server import serving

TOKEN = "pat-na1-test"
SECRET = "client-secret-1"
PORTAL = 62515


class Sim:
    def __init__(self, url: str) -> None:
        self.url = url
        self.control = httpx.Client(base_url=url, timeout=10)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        answer = self.control.post(f"/_sim{path}", json=body)
        assert answer.is_success, answer.text
        return answer.json()

    def get(self, path: str) -> Any:
        return self.control.get(f"/_sim{path}").json()


@pytest.fixture
def sim() -> Iterator[Sim]:
    with serving(create_app(token=TOKEN, client_secret=SECRET, portal_id=PORTAL)) as url:
        yield Sim(url)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def connector(sim: Sim, **extra: Any) -> HubSpotConnector:
    return HubSpotConnector.model_validate(
        {
            "id": f"hubspot-{time.monotonic_ns()}",
            "kind": "hubspot",
            "base_url": sim.url,
            "portal_id": PORTAL,
            "credentials": {"token_env": "HS_TOKEN", "client_secret_env": "HS_SECRET"},
            **extra,
        }
    )


def client(sim: Sim, http: httpx.AsyncClient, token: str = TOKEN) -> CrmClient:
    secrets = {"token": token, "client_secret": SECRET}
    return VENDOR.make_client(connector(sim), secrets, http, AsyncLimiter(100, 10))


def lead(lead_id: str = "lead-1", **extra: Any) -> PushLead:
    values: dict[str, Any] = {
        "lead_id": lead_id,
        "title": "Acme: CRM rollout (Anna Petrova)",
        "name": "Anna Petrova",
        "email": f"{lead_id}@example.com",
        "phone": "+79990001122",
        "company": "Acme",
        "source": "web_form",
        "channel": "ads",
        "utm": {"source": "google", "campaign": "winter"},
        "owner": "7001",
        "note": "budget fits\nteam matches",
        "route": "sales",
        "team": "smb",
        "received_at": datetime.now(UTC),
    }
    values.update(extra)
    return PushLead(**values)


class TestPush:
    async def test_a_created_deal_reads_back_with_stage_owner_and_fields(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        hub = client(sim, http)
        crm_id = await hub.upsert(lead(), None)
        record = await hub.fetch(crm_id)
        assert record is not None
        assert (record.stage, record.semantic, record.pipeline) == (
            "appointmentscheduled",
            "open",
            "default",
        )
        assert record.owner == "7001" and record.lead_id == "lead-1"
        deal = sim.get(f"/deals/{crm_id}")
        assert deal["properties"]["leadflow_utm_source"] == "google"
        assert deal["properties"]["leadflow_source"] == "web_form"
        assert len(deal["contacts"]) == 1 and len(deal["notes"]) == 1
        (contact,) = sim.get("/state")["contacts"]
        assert contact["properties"]["email"] == "lead-1@example.com"
        assert contact["properties"]["firstname"] == "Anna"

    async def test_upserting_twice_and_after_a_lost_answer_makes_one_deal(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        hub = client(sim, http)
        first = await hub.upsert(lead(), None)
        assert await hub.upsert(lead(), None) == first
        # The next deal's create is carried out but its answer is lost.
        await hub.fetch(first)  # warms the pipeline cache: the next call is the upsert
        sim.post("/fail", {"count": 1, "status": 502, "after_commit": True})
        with pytest.raises(CrmUnavailable):
            await hub.upsert(lead("lead-2", email=None), None)
        second = await hub.upsert(lead("lead-2", email=None), None)
        assert second != first
        assert sim.get("/state")["deals_created_per_lead"] == {"lead-1": 1, "lead-2": 1}

    async def test_a_reroute_moves_the_owner_and_keeps_the_salespersons_stage(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        hub = client(sim, http)
        crm_id = await hub.upsert(lead(), None)
        sim.post(f"/deals/{crm_id}/move", {"stage": "qualifiedtobuy"})
        assert await hub.upsert(replace(lead(), owner="7002"), crm_id) == crm_id
        record = await hub.fetch(crm_id)
        assert record is not None
        assert (record.owner, record.stage) == ("7002", "qualifiedtobuy")

    async def test_won_and_lost_read_amount_and_reason(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        hub = client(sim, http)
        won, lost = await hub.upsert(lead("a"), None), await hub.upsert(lead("b"), None)
        sim.post(f"/deals/{won}/move", {"stage": "closedwon", "amount": "1500.50"})
        sim.post(f"/deals/{lost}/move", {"stage": "closedlost", "closed_lost_reason": "budget"})
        got_won, got_lost = await hub.fetch(won), await hub.fetch(lost)
        assert got_won is not None and got_lost is not None
        assert (got_won.semantic, got_won.amount) == ("won", Decimal("1500.50"))
        assert (got_lost.semantic, got_lost.loss_reason) == ("lost", "budget")
        assert await hub.fetch("999") is None

    async def test_erase_removes_the_contact_and_the_name_in_the_title(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        hub = client(sim, http)
        crm_id = await hub.upsert(lead(), None)
        await hub.erase(crm_id)
        deal = sim.get(f"/deals/{crm_id}")
        assert deal["contacts"] == []
        assert sim.get("/state")["contacts"] == []
        assert deal["properties"]["dealname"] == "Leadflow lead lead-1"
        assert "Anna" not in json.dumps(deal)
        await hub.erase(crm_id)  # again: nothing left to erase, no error


class TestFailures:
    async def test_the_rate_limit_is_unavailable_with_retry_after(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        hub = client(sim, http)
        sim.post("/knobs", {"rate_limit": {"requests": 2, "per_seconds": 30}})
        await hub.fetch("1")
        await hub.fetch("2")
        with pytest.raises(CrmUnavailable) as unavailable:
            await hub.fetch("3")
        assert unavailable.value.retry_after == 30.0

    async def test_5xx_is_unavailable_and_a_bad_token_is_refused(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        sim.post("/fail", {"count": 1, "status": 503, "retry_after": 3})
        with pytest.raises(CrmUnavailable) as unavailable:
            await client(sim, http).fetch("1")
        assert unavailable.value.retry_after == 3.0
        with pytest.raises(CrmRefused, match="HubSpot 401 INVALID_AUTHENTICATION"):
            await client(sim, http, token="wrong").upsert(lead(), None)

    async def test_a_crm_that_is_not_there_is_unavailable(self, http: httpx.AsyncClient) -> None:
        with serving(create_app()) as url:
            gone = Sim(url)
        with pytest.raises(CrmUnavailable, match="unreachable"):
            await client(gone, http).fetch("1")


class TestPull:
    async def test_modified_since_reads_every_page(self, sim: Sim, http: httpx.AsyncClient) -> None:
        since = datetime.now(UTC) - timedelta(seconds=1)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=sim.url, headers=headers) as raw:
            for batch in range(3):
                inputs = [
                    {"idProperty": "leadflow_id", "id": f"l{batch}-{n}", "properties": {}}
                    for n in range(100)
                ]
                answer = await raw.post(
                    "/crm/v3/objects/deals/batch/upsert", json={"inputs": inputs}
                )
                assert answer.is_success
        found = await client(sim, http).modified_since(since)
        assert len(found) == 300
        assert {r.lead_id for r in found} == {f"l{b}-{n}" for b in range(3) for n in range(100)}
        assert await client(sim, http).modified_since(datetime.now(UTC) + timedelta(1)) == []


class TestNotifications:
    @pytest.fixture
    def received(self, sim: Sim) -> Iterator[Receiver]:
        rec = Receiver()
        with serving(rec.app()) as url:
            sim.post("/receiver", {"url": f"{url}/hooks/hubspot"})
            yield rec

    async def test_an_authentic_notification_parses_a_forged_one_does_not(
        self, sim: Sim, http: httpx.AsyncClient, received: Receiver
    ) -> None:
        crm_id = await client(sim, http).upsert(lead(), None)
        sim.post(f"/deals/{crm_id}/move", {"stage": "closedwon"})
        deadline = time.monotonic() + 10
        while not any(b"closedwon" in r.body for r in received.got):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        got = next(r for r in received.got if b"closedwon" in r.body)
        request = IncomingRequest("POST", got.url, got.headers, got.body, None, datetime.now(UTC))
        secrets = {"client_secret": SECRET}
        notices = VENDOR.parse_notification(connector(sim), secrets, request)
        assert Notice(crm_id=crm_id, key=str(json.loads(got.body)[-1]["eventId"])) in notices

        cases = [
            (connector(sim), {"client_secret": "forged"}, request, 401),
            (
                connector(sim),
                secrets,
                replace(request, received_at=request.received_at + timedelta(minutes=6)),
                401,
            ),
            (connector(sim, portal_id=1), secrets, request, 403),
        ]
        for conn, keys, req, status in cases:
            with pytest.raises(NotificationRefused) as refused:
                VENDOR.parse_notification(conn, keys, req)
            assert refused.value.status_code == status
