"""The Bitrix24 connector against the Bitrix24 simulator, over real HTTP: deals pushed
once, read back, erased, listed page by page; the portal's limits, faults and refusals as
the core's two exceptions; its outbound webhook's notifications checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiolimiter import AsyncLimiter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.qualifier.crm.adapter import (
    CrmRefused,
    CrmUnavailable,
    IncomingRequest,
    Notice,
    NotificationRefused,
    PushLead,
)
from services.qualifier.crm.bitrix24 import VENDOR
from services.qualifier.crm.bitrix24.client import Bitrix24Client
from services.qualifier.crm.config import Bitrix24Connector
from tests.crm_sim.bitrix24 import make_app
from tests.crm_sim.bitrix24_portal import Portal
from tests.crm_sim.server import serving

PORTAL = Portal()
SECRETS = {"webhook_code": PORTAL.code, "application_token": PORTAL.application_token}


@dataclass
class Sim:
    url: str
    control: httpx.AsyncClient

    async def config(self, **body: Any) -> None:
        (await self.control.post("/_sim/config", json=body)).raise_for_status()

    async def deal(self, crm_id: str) -> dict[str, Any]:
        answer = await self.control.get(f"/_sim/deals/{crm_id}")
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        return found

    async def counts(self) -> dict[str, int]:
        counts: dict[str, int] = (await self.control.get("/_sim/origins")).json()["counts"]
        return counts

    async def move(self, crm_id: str, **body: Any) -> None:
        (await self.control.post(f"/_sim/deals/{crm_id}/move", json=body)).raise_for_status()


@pytest.fixture
def sim_url() -> Iterator[str]:
    with serving(make_app(Portal())) as url:
        yield url


@pytest.fixture
async def sim(sim_url: str) -> AsyncIterator[Sim]:
    async with httpx.AsyncClient(base_url=sim_url) as control:
        s = Sim(sim_url, control)
        # Set-up traffic far past the documented burst; the limit test tightens it again.
        await s.config(rate_limit={"limit": 100_000, "drain_per_second": 1000})
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def connector(url: str, **overrides: Any) -> Bitrix24Connector:
    raw: dict[str, Any] = {
        "id": "bitrix-sim",
        "kind": "bitrix24",
        "base_url": url,
        "credentials": {
            "user_id": PORTAL.user_id,
            "webhook_code_env": "LEADFLOW_CRM_BITRIX_SIM_CODE",
            "application_token_env": "LEADFLOW_CRM_BITRIX_SIM_TOKEN",
        },
    }
    return Bitrix24Connector.model_validate(raw | overrides)


def client(
    sim: Sim, http: httpx.AsyncClient, secrets: dict[str, str] = SECRETS, **overrides: Any
) -> Bitrix24Client:
    made: Bitrix24Client = VENDOR.make_client(
        connector(sim.url, **overrides), secrets, http, AsyncLimiter(1000, 1)
    )
    return made


def lead(lead_id: str = "L-1", **overrides: Any) -> PushLead:
    values: dict[str, Any] = {
        "lead_id": lead_id,
        "title": "Anna Petrova, Acme",
        "name": "Anna Petrova",
        "email": "anna@example.ru",
        "phone": "+79990001122",
        "company": "Acme",
        "source": "web_form",
        "channel": "tilda",
        "utm": {"utm_source": "yandex"},
        "owner": "12",
        "note": "budget fits",
        "route": "sales",
        "team": None,
        "received_at": datetime(2026, 12, 1, tzinfo=UTC),
    }
    return PushLead(**(values | overrides))


class TestPush:
    async def test_create_then_fetch(self, sim: Sim, http: httpx.AsyncClient) -> None:
        crm = client(sim, http)
        crm_id = await crm.upsert(lead(), None)
        record = await crm.fetch(crm_id)
        assert record is not None
        assert (record.stage, record.semantic, record.owner) == ("NEW", "open", "12")
        assert record.lead_id == "L-1" and record.pipeline == "0"
        found = await sim.deal(crm_id)
        deal = found["deal"]
        assert deal["SOURCE_ID"] == "WEBFORM" and deal["UTM_SOURCE"] == "yandex"
        assert deal["TITLE"] == "Anna Petrova, Acme" and deal["ASSIGNED_BY_ID"] == "12"
        assert found["contact"]["PHONE"][0]["VALUE"] == "+79990001122"
        assert found["contact"]["EMAIL"][0]["VALUE"] == "anna@example.ru"
        assert found["company"]["TITLE"] == "Acme"
        assert found["contact"]["COMPANY_ID"] == deal["COMPANY_ID"]
        assert "budget fits" in found["comments"][0]["COMMENT"]

    async def test_upsert_twice_and_a_reroute_keep_one_deal(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        crm = client(sim, http)
        first = await crm.upsert(lead(), None)
        assert await crm.upsert(lead(), None) == first
        assert await crm.upsert(lead(owner="30"), first) == first
        assert (await sim.deal(first))["deal"]["ASSIGNED_BY_ID"] == "30"
        assert await sim.counts() == {"L-1": 1}

    async def test_a_create_whose_answer_is_lost(self, sim: Sim, http: httpx.AsyncClient) -> None:
        crm = client(sim, http)
        await sim.control.post(
            "/_sim/faults", json={"count": 1, "after_commit": True, "methods": ["batch"]}
        )
        with pytest.raises(CrmUnavailable):
            await crm.upsert(lead("L-lost"), None)
        crm_id = await crm.upsert(lead("L-lost"), None)
        assert await sim.counts() == {"L-lost": 1}
        assert (await sim.deal(crm_id))["deal"]["ORIGIN_ID"] == "L-lost"

    async def test_an_erased_lead_pushes_no_person(self, sim: Sim, http: httpx.AsyncClient) -> None:
        gone = lead(name=None, email=None, phone=None, company=None, title="")
        crm_id = await client(sim, http).upsert(gone, None)
        found = await sim.deal(crm_id)
        assert found["contact"] is None and found["deal"]["TITLE"] == "Leadflow lead L-1"


class TestFailures:
    async def test_the_portal_limit_is_unavailable_with_a_wait(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        crm = client(sim, http)
        crm_id = await crm.upsert(lead(), None)
        await sim.config(rate_limit={"limit": 0, "drain_per_second": 0})
        with pytest.raises(CrmUnavailable) as caught:
            await crm.fetch(crm_id)
        assert caught.value.retry_after == 1.0

    async def test_a_5xx_is_unavailable(self, sim: Sim, http: httpx.AsyncClient) -> None:
        await sim.control.post("/_sim/faults", json={"count": 1, "status": 503})
        with pytest.raises(CrmUnavailable):
            await client(sim, http).fetch("1")

    async def test_a_bad_code_is_refused_without_the_code(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        bad = {**SECRETS, "webhook_code": "wrong-code-123"}
        with pytest.raises(CrmRefused) as caught:
            await client(sim, http, bad).upsert(lead(), None)
        assert "NO_AUTH_FOUND" in str(caught.value) and "wrong-code" not in str(caught.value)

    async def test_no_portal_is_unavailable_without_the_url(self, http: httpx.AsyncClient) -> None:
        crm = VENDOR.make_client(
            connector("http://127.0.0.1:9"), SECRETS, http, AsyncLimiter(10, 1)
        )
        with pytest.raises(CrmUnavailable) as caught:
            await crm.fetch("1")
        assert PORTAL.code not in str(caught.value) and caught.value.__cause__ is None

    async def test_a_missing_deal_is_none(self, sim: Sim, http: httpx.AsyncClient) -> None:
        assert await client(sim, http).fetch("987654") is None


class TestRead:
    async def test_won_amount_and_loss_reasons(self, sim: Sim, http: httpx.AsyncClient) -> None:
        crm = client(sim, http, lost_reason_field="UF_CRM_LOSS")
        won, lost, apology = [await crm.upsert(lead(f"L-{i}"), None) for i in range(3)]
        await sim.move(won, stage="WON", amount="150000", currency="RUB")
        await sim.move(lost, stage="LOSE", fields={"UF_CRM_LOSS": "too expensive"})
        await sim.move(apology, stage="APOLOGY")
        got = [await crm.fetch(i) for i in (won, lost, apology)]
        assert got[0] is not None and got[0].semantic == "won"
        assert got[0].amount == Decimal("150000.00") and got[0].currency == "RUB"
        assert got[1] is not None and (got[1].semantic, got[1].loss_reason) == (
            "lost",
            "too expensive",
        )
        assert got[2] is not None and got[2].loss_reason == "Failure reason analysis"

    async def test_modified_since_reads_every_page(self, sim: Sim, http: httpx.AsyncClient) -> None:
        crm = client(sim, http)
        before = datetime.now(UTC) - timedelta(seconds=2)
        ids = [await crm.upsert(lead(f"L-{i}", note=""), None) for i in range(120)]
        records = await crm.modified_since(before)
        assert sorted(r.crm_id for r in records) == sorted(ids)
        assert {r.lead_id for r in records} == {f"L-{i}" for i in range(120)}
        await asyncio.sleep(1.1)  # DATE_MODIFY has whole seconds
        after = datetime.now(UTC)
        await sim.move(ids[7], stage="EXECUTING")
        changed = await crm.modified_since(after)
        assert [(r.crm_id, r.stage) for r in changed] == [(ids[7], "EXECUTING")]


class TestErase:
    async def test_the_person_leaves_the_contact_and_the_deal(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        crm = client(sim, http)
        crm_id = await crm.upsert(lead(), None)
        await crm.erase(crm_id)
        found = await sim.deal(crm_id)
        contact = found["contact"]
        assert contact["NAME"] == "" and "PHONE" not in contact and "EMAIL" not in contact
        assert found["deal"]["TITLE"] == "Leadflow lead L-1" and found["deal"]["COMMENTS"] == ""
        await crm.erase("987654")  # a deal already gone: nothing to do


class Receiver:
    def __init__(self) -> None:
        self.requests: list[IncomingRequest] = []

        async def hook(request: Request) -> PlainTextResponse:
            self.requests.append(
                IncomingRequest(
                    method=request.method,
                    url=str(request.url),
                    headers=dict(request.headers),
                    body=await request.body(),
                    path_secret=None,
                    received_at=datetime.now(UTC),
                )
            )
            return PlainTextResponse("")

        self.app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])


class TestNotifications:
    async def test_the_portal_s_notifications_parse_and_forgeries_do_not(
        self, sim: Sim, http: httpx.AsyncClient
    ) -> None:
        receiver = Receiver()
        with serving(receiver.app) as url:
            await sim.config(receiver_url=f"{url}/hook", events=["ONCRMDEALUPDATE"])
            crm_id = await client(sim, http).upsert(lead(), None)
            await sim.move(crm_id, stage="PREPARATION")
            for _ in range(200):
                if receiver.requests:
                    break
                await asyncio.sleep(0.05)
        arrived = receiver.requests[0]
        c = connector(sim.url, member_id=PORTAL.member_id)
        assert VENDOR.parse_notification(c, SECRETS, arrived) == [Notice(crm_id)]
        forged = {**SECRETS, "application_token": "another-token"}
        with pytest.raises(NotificationRefused) as caught:
            VENDOR.parse_notification(c, forged, arrived)
        assert caught.value.status_code == 403
        other = connector(sim.url, member_id="anotherportal1")
        with pytest.raises(NotificationRefused) as caught:
            VENDOR.parse_notification(other, SECRETS, arrived)
        assert caught.value.status_code == 403
        late = IncomingRequest(
            **{**arrived.__dict__, "received_at": arrived.received_at + timedelta(hours=1)}
        )
        strict = connector(sim.url, max_event_age_seconds=300)
        with pytest.raises(NotificationRefused) as caught:
            VENDOR.parse_notification(strict, SECRETS, late)
        assert caught.value.status_code == 401
