"""The CRM loop through the qualifier, against a simulated Kommo account over real HTTP:
a routed lead becomes one CRM record owned by the mapped salesperson, the CRM's
notifications come back as lifecycle events (implied stages in order, a payment once),
a dropped notification is caught by reconciliation, an erasure reaches the CRM, and
notifications that must not be believed are refused with a clear 4xx, applying nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from cli.kafka.ports import free_port
from services.qualifier.main import create_app
from services.qualifier.tables import deliveries, stage_history
from shared.auth import Scope
from shared.events import LeadErased, LeadErasedData, LeadPaymentReceived, LeadStageChanged
from shared.settings import CommonSettings, InsecureSettings, Mode
from tests.crm_sim.kommo import ACCOUNT_ID, TOKEN, make_app
from tests.crm_sim.kommo_account import LOST, WON
from tests.crm_sim.server import serving as simulating
from tests.fixtures.qualifier.harness import Harness, qualifier_app, settings_for, token
from tests.support import received, serving

HOOK_SECRET = "kommo-url-secret-0123456789"
ENV = {"LF_TEST_KOMMO_TOKEN": TOKEN, "LF_TEST_KOMMO_HOOK": HOOK_SECRET}
FAST = {
    "partner_retry_base_seconds": 0.05,
    "partner_retry_max_seconds": 0.5,
    "partner_poll_seconds": 0.05,
    "crm_poll_seconds": 0.05,
}


def config(base_url: str) -> str:
    return f"""
kind: kommo
base_url: {base_url}
account_id: {ACCOUNT_ID}
pipeline_id: 7000
members: {{anna: "11", boris: "12", vera: "21", grigory: "22", dmitry: "23"}}
stages:
  - {{crm: "70001", to: accepted}}
  - {{crm: "70002", to: sql}}
  - {{crm: "70003", to: demo_held}}
  - {{crm: "70004", to: proposal_sent}}
  - {{crm: "70005", to: contract_sent}}
payments: on_won
reconcile_seconds: 3600
credentials:
  token_env: LF_TEST_KOMMO_TOKEN
  webhook_secret_env: LF_TEST_KOMMO_HOOK
"""


@pytest.fixture
def kommo(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with simulating(make_app()) as url:
        yield url


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path, **FAST) as harness:
        yield harness


@contextlib.asynccontextmanager
async def running(q: Harness) -> AsyncIterator[str]:
    """The qualifier's deliverer and CRM job as the runtime runs them, and the app on a real
    port (the simulator calls it); yields the app's URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(q.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    tasks = [
        asyncio.create_task(server.serve()),
        asyncio.create_task(q.app.state.deliverer.run(q.runtime)),
        asyncio.create_task(q.app.state.crm_sync.run(q.runtime)),
    ]
    await until(lambda: asyncio.sleep(0.01, server.started))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        q.runtime.stopping.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


async def until(check: Callable[[], Awaitable[Any]], seconds: float = 30.0) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.05)


async def sim(url: str, method: str, path: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(base_url=url) as http:
        r = await http.request(method, path, **kwargs)
        assert r.status_code < 300, r.text
        return r.json()


async def setup(q: Harness, kommo: str, app_url: str) -> None:
    r = await q.http.put(
        "/v1/crm/connectors/kommo-main",
        content=config(kommo),
        headers={"content-type": "application/yaml"},
    )
    assert r.status_code == 201, r.text
    hook = f"{app_url}/v1/crm/connectors/kommo-main/notifications/{HOOK_SECRET}"
    await sim(kommo, "POST", "/_sim/config", json={"receiver_url": hook})


async def pushed(q: Harness, kommo: str, lead_id: str) -> dict[str, Any]:
    """The lead's CRM record, once its push is delivered (record, contact and note)."""

    async def delivered() -> bool:
        rows = await q.rows(deliveries, deliveries.c.lead_id == lead_id)
        return any(r.kind == "crm" and r.status == "delivered" for r in rows)

    await until(delivered)

    async def found() -> dict[str, Any] | None:
        leads = await sim(kommo, "GET", "/_sim/leads")
        mine = [x for x in leads if _lead_id_of(x) == lead_id]
        return mine[0] if mine else None

    lead: dict[str, Any] = await until(found)
    return lead


def _lead_id_of(crm_lead: dict[str, Any]) -> str | None:
    for field in crm_lead.get("custom_fields_values") or []:
        if field.get("field_code") == "LEADFLOW_ID":
            return str(field["values"][0]["value"])
    return None


async def stages_of(q: Harness, lead_id: str) -> list[tuple[str, str | None]]:
    rows = await q.rows(stage_history, stage_history.c.lead_id == lead_id)
    return [(r.stage, r.by) for r in sorted(rows, key=lambda r: r.id)]


async def test_a_sales_lead_is_pushed_once_and_its_stages_come_back(q: Harness, kommo: str) -> None:
    async with running(q) as app_url:
        await setup(q, kommo, app_url)
        lead = received()
        await q.receive(lead)
        await q.receive(lead)  # redelivered: still one push
        crm = await pushed(q, kommo, lead.subject)
        decided = await q.lead(lead.subject)
        owner = {"anna": 11, "boris": 12, "vera": 21, "grigory": 22, "dmitry": 23}
        assert crm["responsible_user_id"] == owner[decided["assignee"]]
        assert (await sim(kommo, "GET", f"/_sim/leads/by-lead-id/{lead.subject}"))["count"] == 1
        assert any("score" in n["params"]["text"] for n in crm["notes"])

        # The salesperson drags the deal from its first stage straight to won, with an amount.
        await sim(
            kommo, "POST", f"/_sim/leads/{crm['id']}/move", json={"status_id": WON, "price": 250000}
        )

        async def won() -> bool:
            return (await q.lead(lead.subject))["stage"] == "won"

        await until(won)
        history = await stages_of(q, lead.subject)
        crm_steps = [stage for stage, by in history if by == "crm:kommo-main"]
        assert crm_steps == [
            "accepted",
            "sql",
            "demo_held",
            "proposal_sent",
            "contract_sent",
            "won",
            "won",
        ]  # the last "won" is the payment's history entry
        payments = await q.events(lead_id=lead.subject, type="lead.payment_received")
        assert [p.data.amount for p in payments if isinstance(p, LeadPaymentReceived)] == [250000]
        implied = [
            e
            for e in await q.events(lead_id=lead.subject, type="lead.stage_changed")
            if isinstance(e, LeadStageChanged) and "implied" in (e.data.reason or "")
        ]
        assert [e.data.stage.value for e in implied] == [
            "sql",
            "demo_held",
            "proposal_sent",
            "contract_sent",
        ]
        # Read back again by a sync round: nothing new is applied, nothing paid twice.
        r = await q.http.post("/v1/crm/connectors/kommo-main/sync")
        assert r.status_code == 200 and r.json()["records"] >= 1
        assert await stages_of(q, lead.subject) == history
        status = (await q.http.get("/v1/crm/connectors/kommo-main/status")).json()
        assert status["pushed"] == 1 and status["parked"] == 0 and status["last_error"] is None


async def test_a_dropped_notification_is_caught_by_reconciliation(q: Harness, kommo: str) -> None:
    async with running(q) as app_url:
        await setup(q, kommo, app_url)
        lead = received()
        await q.receive(lead)
        crm = await pushed(q, kommo, lead.subject)
        await sim(kommo, "POST", "/_sim/config", json={"drop_fraction": 1.0})
        await sim(
            kommo,
            "POST",
            f"/_sim/leads/{crm['id']}/move",
            json={"status_id": LOST, "loss_reason_id": 1},
        )
        await asyncio.sleep(0.5)
        assert (await q.lead(lead.subject))["stage"] == "routed"
        r = await q.http.post("/v1/crm/connectors/kommo-main/sync")
        assert r.status_code == 200, r.text
        decided = await q.lead(lead.subject)
        # Lost before anyone accepted it: sales rejected the lead, with the CRM's reason.
        assert (decided["stage"], decided["feedback"]) == ("rejected", "rejected")


async def test_an_erasure_reaches_the_crm_record(q: Harness, kommo: str) -> None:
    async with running(q) as app_url:
        await setup(q, kommo, app_url)
        lead = received(name="Anna Erasable", phone="+79990001122")
        await q.receive(lead)
        crm = await pushed(q, kommo, lead.subject)
        contact_id = crm["_embedded"]["contacts"][0]["id"]
        before = await sim(kommo, "GET", f"/_sim/contacts/{contact_id}")
        assert "Anna Erasable" in str(before)
        await q.receive(
            LeadErased(
                source="/intake",
                time=lead.time,
                subject=lead.subject,
                data=LeadErasedData(lead_id=lead.subject, at=lead.time),
            )
        )

        async def erased() -> bool:
            contact = await sim(kommo, "GET", f"/_sim/contacts/{contact_id}")
            return "Anna Erasable" not in str(contact) and "anna@acme" not in str(contact)

        await until(erased)

        async def both_delivered() -> bool:
            rows = await q.rows(
                deliveries, deliveries.c.lead_id == lead.subject, deliveries.c.kind == "crm"
            )
            return sorted((r.operation, r.status) for r in rows) == [
                ("erase", "delivered"),
                ("push", "delivered"),
            ]

        await until(both_delivered)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("notifications/wrong-secret", {"account[id]": str(ACCOUNT_ID)}, 403),
        (f"notifications/{HOOK_SECRET}", {"account[id]": "999", "leads[status][0][id]": "1"}, 403),
        (
            f"notifications/{HOOK_SECRET}",
            {"leads[status][0][id]": "not-a-number", "account[id]": str(ACCOUNT_ID)},
            400,
        ),
    ],
)
async def test_notifications_not_to_be_believed_are_refused(
    q: Harness,
    kommo: str,
    path: str,
    body: dict[str, str],
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running(q) as app_url:
        await setup(q, kommo, app_url)
        r = await q.http.post(
            f"/v1/crm/connectors/kommo-main/{path}", data=body, headers={"authorization": ""}
        )
        assert r.status_code == status, r.text
        assert r.json()["detail"][0]["msg"]
        async with q.runtime.engine.connect() as conn:
            owed = await conn.scalar(sa.text("select count(*) from crm_pulls"))
        assert owed == 0
        r = await q.http.post("/v1/crm/connectors/nobody/notifications", data=body)
        assert r.status_code == 404


async def test_a_re_route_updates_the_same_record(q: Harness, kommo: str) -> None:
    async with running(q) as app_url:
        await setup(q, kommo, app_url)
        lead = received()
        await q.receive(lead)
        crm = await pushed(q, kommo, lead.subject)
        await sim(
            kommo,
            "POST",
            f"/_sim/leads/{crm['id']}/move",
            json={"status_id": LOST, "loss_reason_id": 1},
        )

        async def rejected() -> bool:
            return (await q.lead(lead.subject))["stage"] == "rejected"

        await until(rejected)
        r = await q.http.post(f"/v1/leads/{lead.subject}/nurture", json={"reason": "not now"})
        assert r.status_code == 200, r.text

        async def updated() -> bool:
            rows = await q.rows(
                deliveries, deliveries.c.lead_id == lead.subject, deliveries.c.kind == "crm"
            )
            return len(rows) == 2 and all(r.status == "delivered" for r in rows)

        await until(updated)
        assert (await sim(kommo, "GET", f"/_sim/leads/by-lead-id/{lead.subject}"))["count"] == 1
        (again,) = [x for x in await sim(kommo, "GET", "/_sim/leads") if x["id"] == crm["id"]]
        assert any("nurture" in n["params"]["text"] for n in again["notes"])


async def test_a_disabled_connector_believes_and_reads_nothing(q: Harness, kommo: str) -> None:
    async with running(q) as app_url:
        await setup(q, kommo, app_url)
        lead = received()
        await q.receive(lead)
        crm = await pushed(q, kommo, lead.subject)
        off = config(kommo) + "enabled: false\n"
        r = await q.http.put(
            "/v1/crm/connectors/kommo-main",
            content=off,
            headers={"content-type": "application/yaml"},
        )
        assert r.status_code == 200, r.text
        await sim(kommo, "POST", f"/_sim/leads/{crm['id']}/move", json={"status_id": WON})
        await asyncio.sleep(0.5)
        sent = await sim(kommo, "GET", "/_sim/notifications")
        assert sent, "the simulator sent its notification"
        assert (await q.lead(lead.subject))["stage"] == "routed"
        async with q.runtime.engine.connect() as conn:
            assert await conn.scalar(sa.text("select count(*) from crm_pulls")) == 0


async def test_production_refuses_to_start_with_a_connector_lacking_its_secrets(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with qualifier_app(database_url, tmp_path) as dev:
        r = await dev.http.put(
            "/v1/crm/connectors/kommo-main",
            content=config("https://leadflow.kommo.com"),
            headers={"content-type": "application/yaml"},
        )
        assert r.status_code == 201, r.text  # dev mode saves it (and says what is missing)
    monkeypatch.delenv("LF_TEST_KOMMO_TOKEN", raising=False)
    monkeypatch.setenv("LF_TEST_KOMMO_HOOK", HOOK_SECRET)
    admin, _ = token("admin", Scope.definitions_admin)
    common = CommonSettings(
        mode=Mode.production,
        data_dir=tmp_path,
        kafka_bootstrap_servers="127.0.0.1:1",
        auth_tokens=[admin],
    )
    settings = settings_for(database_url, tmp_path, common=common, keys_token="k" * 32)
    with pytest.raises(InsecureSettings, match="LF_TEST_KOMMO_TOKEN") as refused:
        async with serving(create_app(settings)):
            pass
    assert HOOK_SECRET not in str(refused.value)
