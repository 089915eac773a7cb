"""Notifications the qualifier must not believe, from Bitrix24 and HubSpot, through its own
endpoint: each is refused with a clear 4xx naming the problem, nothing is applied (no pull
owed, the lead unchanged although the CRM's record really moved), and the log lines hold
none of the lead's personal data. A stage the mapping does not know is not the CRM's
fault: it is answered 2xx, applies nothing and shows as `skipped` on the status.

Forgeries are built by hand; genuine notifications come from the simulators over HTTP
(tests/crm_sim), which sign and shape them from the vendors' documentation."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from services.qualifier.tables import crm_records, deliveries
from tests.crm_sim import bitrix24, hubspot
from tests.crm_sim.bitrix24_portal import Portal
from tests.crm_sim.hubspot_webhooks import sign_v3
from tests.crm_sim.server import serving
from tests.fixtures.qualifier.harness import Harness, qualifier_app
from tests.integration.test_crm_loop import FAST, running, until
from tests.support import received

NAME, EMAIL, PHONE = "Irina Forgerova", "irina.forgerova@private.example", "+79997776655"
MEMBERS = '{anna: "11", boris: "12", vera: "21", grigory: "22", dmitry: "23"}'

PORTAL = Portal()
B24_ENV = {"LF_TEST_B24_CODE": PORTAL.code, "LF_TEST_B24_TOKEN": PORTAL.application_token}
HS_TOKEN, HS_SECRET, HS_PORTAL = "pat-na1-refusals", "hs-client-secret-refusals", 62515
HS_ENV = {"LF_TEST_HS_TOKEN": HS_TOKEN, "LF_TEST_HS_SECRET": HS_SECRET}


def b24_config(base_url: str) -> str:
    # PREPAYMENT_INVOICE is a stage of the portal the mapping leaves out.
    return f"""
kind: bitrix24
base_url: {base_url}
member_id: "{PORTAL.member_id}"
members: {MEMBERS}
stages:
  - {{crm: PREPARATION, to: accepted}}
  - {{crm: EXECUTING, to: sql}}
  - {{crm: FINAL_INVOICE, to: contract_sent}}
reconcile_seconds: 3600
credentials:
  user_id: {PORTAL.user_id}
  webhook_code_env: LF_TEST_B24_CODE
  application_token_env: LF_TEST_B24_TOKEN
"""


def hs_config(base_url: str) -> str:
    # decisionmakerboughtin is a stage of the default pipeline the mapping leaves out.
    return f"""
kind: hubspot
base_url: {base_url}
portal_id: {HS_PORTAL}
members: {MEMBERS}
stages:
  - {{crm: qualifiedtobuy, to: accepted}}
  - {{crm: presentationscheduled, to: demo_held}}
  - {{crm: contractsent, to: contract_sent}}
reconcile_seconds: 3600
credentials:
  token_env: LF_TEST_HS_TOKEN
  client_secret_env: LF_TEST_HS_SECRET
"""


@pytest.fixture
def b24(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in B24_ENV.items():
        monkeypatch.setenv(name, value)
    with serving(bitrix24.make_app(Portal())) as url:
        yield url


@pytest.fixture
def hs(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in HS_ENV.items():
        monkeypatch.setenv(name, value)
    app = hubspot.create_app(token=HS_TOKEN, client_secret=HS_SECRET, portal_id=HS_PORTAL)
    with serving(app) as url:
        yield url


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path, **FAST) as harness:
        yield harness


async def sim(url: str, method: str, path: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.request(method, path, **kwargs)
        assert r.status_code < 300, r.text
        return r.json()


async def save(q: Harness, connector_id: str, text: str) -> None:
    r = await q.http.put(
        f"/v1/crm/connectors/{connector_id}",
        content=text,
        headers={"content-type": "application/yaml"},
    )
    assert r.status_code == 201, r.text

    async def first_round_done() -> bool:
        # The first reconciliation round runs on save; later ones are an hour away, so
        # only a notification can bring a change in after this.
        return (await status(q, connector_id))["last_sync_at"] is not None

    await until(first_round_done)


async def status(q: Harness, connector_id: str) -> dict[str, Any]:
    r = await q.http.get(f"/v1/crm/connectors/{connector_id}/status")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


async def push_one(q: Harness, connector_id: str) -> str:
    """A sales lead with personal data, once its push is delivered; its CRM id."""
    lead = received(name=NAME, email=EMAIL, phone=PHONE)
    await q.receive(lead)

    async def delivered() -> str | None:
        rows = await q.rows(crm_records, crm_records.c.lead_id == lead.subject)
        sent = await q.rows(deliveries, deliveries.c.lead_id == lead.subject)
        if rows and any(r.kind == "crm" and r.status == "delivered" for r in sent):
            assert rows[0].connector_id == connector_id
            return str(rows[0].crm_id)
        return None

    crm_id: str = await until(delivered)
    return crm_id


async def lead_of(q: Harness, crm_id: str) -> str:
    rows = await q.rows(crm_records, crm_records.c.crm_id == crm_id)
    return str(rows[0].lead_id)


async def pulls_owed(q: Harness) -> int:
    async with q.runtime.engine.connect() as conn:
        return int(await conn.scalar(sa.text("select count(*) from crm_pulls")) or 0)


async def assert_nothing_applied(q: Harness, lead_id: str) -> None:
    assert await pulls_owed(q) == 0
    await asyncio.sleep(0.5)  # the sync job had time to apply anything owed
    lead = await q.lead(lead_id)
    assert (lead["stage"], lead["feedback"]) == ("routed", None)


def assert_no_personal_data(caplog: pytest.LogCaptureFixture) -> None:
    text = caplog.text
    for secret in (NAME, "Irina", "Forgerova", EMAIL, PHONE, PHONE[1:]):
        assert secret not in text


# ---- Bitrix24


def b24_form(deal_id: str, **overrides: str) -> dict[str, str]:
    """An outbound-webhook body as Bitrix24 documents it (the simulator's shape)."""
    form = {
        "event": "ONCRMDEALUPDATE",
        "event_handler_id": "7",
        "data[FIELDS][ID]": deal_id,
        "ts": str(int(time.time())),
        "auth[domain]": PORTAL.domain,
        "auth[client_endpoint]": f"https://{PORTAL.domain}/rest/",
        "auth[server_endpoint]": "https://oauth.bitrix.info/rest/",
        "auth[member_id]": PORTAL.member_id,
        "auth[scope]": "crm",
        "auth[status]": "L",
        "auth[application_token]": PORTAL.application_token,
    }
    return form | overrides


FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    ("case", "status", "named"),
    [
        ("wrong_token", 403, "auth[application_token]"),
        ("other_portal", 403, "auth[member_id]"),
        ("not_a_form", 400, "application/x-www-form-urlencoded"),
        ("no_deal_id", 400, "data[FIELDS][ID]"),
    ],
)
async def test_bitrix24_notifications_not_to_be_believed_are_refused(
    q: Harness,
    b24: str,
    case: str,
    status: int,
    named: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running(q):
        await save(q, "b24-main", b24_config(b24))
        deal_id = await push_one(q, "b24-main")
        lead_id = await lead_of(q, deal_id)
        # The deal really is won in the CRM (no receiver: no notification left): a forged
        # notification naming it, if believed, would make the lead won.
        await sim(b24, "POST", f"/_sim/deals/{deal_id}/move", json={"stage": "WON"})
        headers, body = FORM, urlencode(b24_form(deal_id))
        if case == "wrong_token":
            body = urlencode(b24_form(deal_id, **{"auth[application_token]": "guessed"}))
        elif case == "other_portal":
            body = urlencode(b24_form(deal_id, **{"auth[member_id]": "0" * 32}))
        elif case == "not_a_form":
            headers = {"content-type": "application/json"}
            body = json.dumps(b24_form(deal_id))
        elif case == "no_deal_id":
            body = urlencode(b24_form(deal_id, **{"data[FIELDS][ID]": "<script>"}))
        r = await q.http.post(
            "/v1/crm/connectors/b24-main/notifications",
            content=body,
            headers={**headers, "authorization": ""},
        )
        assert r.status_code == status, r.text
        assert named in r.json()["detail"][0]["msg"]
        await assert_nothing_applied(q, lead_id)
        assert "a notification refused" in caplog.text
        assert_no_personal_data(caplog)


async def test_bitrix24_the_same_notification_genuine_is_applied(q: Harness, b24: str) -> None:
    """The control: what the refusals above keep out would otherwise have moved the lead."""
    async with running(q):
        await save(q, "b24-main", b24_config(b24))
        deal_id = await push_one(q, "b24-main")
        lead_id = await lead_of(q, deal_id)
        await sim(b24, "POST", f"/_sim/deals/{deal_id}/move", json={"stage": "WON"})
        r = await q.http.post(
            "/v1/crm/connectors/b24-main/notifications",
            content=urlencode(b24_form(deal_id)),
            headers={**FORM, "authorization": ""},
        )
        assert r.status_code == 200, r.text

        async def won() -> bool:
            return (await q.lead(lead_id))["stage"] == "won"

        await until(won)


async def test_bitrix24_a_stage_the_mapping_does_not_know_is_skipped_not_refused(
    q: Harness, b24: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(q) as app_url:
        await save(q, "b24-main", b24_config(b24))
        hook = f"{app_url}/v1/crm/connectors/b24-main/notifications"
        await sim(b24, "POST", "/_sim/config", json={"receiver_url": hook})
        deal_id = await push_one(q, "b24-main")
        lead_id = await lead_of(q, deal_id)
        await sim(b24, "POST", f"/_sim/deals/{deal_id}/move", json={"stage": "PREPARATION"})

        async def accepted() -> bool:
            return (await q.lead(lead_id))["feedback"] == "accepted"

        await until(accepted)
        await sim(b24, "POST", f"/_sim/deals/{deal_id}/move", json={"stage": "PREPAYMENT_INVOICE"})

        async def skipped() -> Any:
            rows = await q.rows(crm_records, crm_records.c.crm_id == deal_id)
            return rows[0] if rows[0].stage == "PREPAYMENT_INVOICE" else None

        record = await until(skipped)
        assert "PREPAYMENT_INVOICE" in record.skipped
        assert "not in the stage mapping" in record.skipped
        lead = await q.lead(lead_id)
        assert (lead["stage"], lead["feedback"]) == ("accepted", "accepted")
        seen = await status(q, "b24-main")
        assert (seen["skipped"], seen["pulls_owed"]) == (1, 0)
        stats = await sim(b24, "GET", "/_sim/stats")
        # Every notification was answered 2xx: an unknown stage is not the CRM's fault.
        assert stats["notified"] >= 3 and stats["undelivered"] == 0
        assert_no_personal_data(caplog)


# ---- HubSpot


def hs_events(deal_id: str, **overrides: Any) -> list[dict[str, Any]]:
    """A webhook batch as HubSpot documents it: the deal's stage changed to closedwon."""
    event = {
        "eventId": 700_000_001,
        "subscriptionId": 1002,
        "portalId": HS_PORTAL,
        "appId": 987654,
        "occurredAt": int(time.time() * 1000),
        "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0,
        "objectId": int(deal_id),
        "propertyName": "dealstage",
        "propertyValue": "closedwon",
        "changeSource": "CRM_UI",
    }
    return [event | overrides]


HS_PATH = "/v1/crm/connectors/hs-main/notifications"


@pytest.mark.parametrize(
    ("case", "status", "named"),
    [
        ("bad_signature", 401, "X-HubSpot-Signature-v3 does not match"),
        ("no_signature", 401, "X-HubSpot-Signature-v3 is missing"),
        ("stale", 401, "older than 5 minutes"),
        ("other_portal", 403, "another HubSpot account"),
        ("not_json", 400, "not JSON"),
        ("not_an_array", 400, "not a JSON array"),
    ],
)
async def test_hubspot_notifications_not_to_be_believed_are_refused(
    q: Harness,
    hs: str,
    case: str,
    status: int,
    named: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running(q):
        await save(q, "hs-main", hs_config(hs))
        deal_id = await push_one(q, "hs-main")
        lead_id = await lead_of(q, deal_id)
        # Won in the CRM, announced to nobody (no receiver set).
        await sim(hs, "POST", f"/_sim/deals/{deal_id}/move", json={"stage": "closedwon"})
        body = json.dumps(hs_events(deal_id)).encode()
        secret, stamp = HS_SECRET, str(int(time.time() * 1000))
        if case == "bad_signature":
            secret = "not-the-client-secret"
        elif case == "stale":
            stamp = str(int((time.time() - 6 * 60) * 1000))
        elif case == "other_portal":
            body = json.dumps(hs_events(deal_id, portalId=HS_PORTAL + 1)).encode()
        elif case == "not_json":
            body = b'[{"eventId": 1, "portalId": 62515,'
        elif case == "not_an_array":
            body = json.dumps(hs_events(deal_id)[0]).encode()
        # Signed as HubSpot signs (the simulator's own code): the URL the app was called at.
        signature = sign_v3(secret, "POST", f"http://test{HS_PATH}", body, stamp)
        headers = {
            "content-type": "application/json",
            "x-hubspot-signature-v3": signature,
            "x-hubspot-request-timestamp": stamp,
            "authorization": "",
        }
        if case == "no_signature":
            del headers["x-hubspot-signature-v3"]
        r = await q.http.post(HS_PATH, content=body, headers=headers)
        assert r.status_code == status, r.text
        assert named in r.json()["detail"][0]["msg"]
        await assert_nothing_applied(q, lead_id)
        async with q.runtime.engine.connect() as conn:
            # Not even its event id is remembered: a genuine redelivery stays welcome.
            assert await conn.scalar(sa.text("select count(*) from crm_notices")) == 0
        assert "a notification refused" in caplog.text
        assert_no_personal_data(caplog)


async def test_hubspot_the_same_notification_genuine_is_applied(q: Harness, hs: str) -> None:
    """The control: a correctly signed, recent event of this portal moves the lead."""
    async with running(q):
        await save(q, "hs-main", hs_config(hs))
        deal_id = await push_one(q, "hs-main")
        lead_id = await lead_of(q, deal_id)
        await sim(hs, "POST", f"/_sim/deals/{deal_id}/move", json={"stage": "closedwon"})
        body, stamp = json.dumps(hs_events(deal_id)).encode(), str(int(time.time() * 1000))
        headers = {
            "content-type": "application/json",
            "x-hubspot-signature-v3": sign_v3(
                HS_SECRET, "POST", f"http://test{HS_PATH}", body, stamp
            ),
            "x-hubspot-request-timestamp": stamp,
            "authorization": "",
        }
        r = await q.http.post(HS_PATH, content=body, headers=headers)
        assert r.status_code == 200, r.text

        async def won() -> bool:
            return (await q.lead(lead_id))["stage"] == "won"

        await until(won)


async def test_hubspot_a_stage_the_mapping_does_not_know_is_skipped_not_refused(
    q: Harness, hs: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(q) as app_url:
        await save(q, "hs-main", hs_config(hs))
        await sim(hs, "POST", "/_sim/receiver", json={"url": f"{app_url}{HS_PATH}"})
        await sim(hs, "POST", "/_sim/knobs", json={"retry_delays": [0.2, 0.2]})
        deal_id = await push_one(q, "hs-main")
        lead_id = await lead_of(q, deal_id)
        await sim(hs, "POST", f"/_sim/deals/{deal_id}/move", json={"stage": "qualifiedtobuy"})

        async def accepted() -> bool:
            return (await q.lead(lead_id))["feedback"] == "accepted"

        await until(accepted)
        await sim(
            hs, "POST", f"/_sim/deals/{deal_id}/move", json={"stage": "decisionmakerboughtin"}
        )

        async def skipped() -> Any:
            rows = await q.rows(crm_records, crm_records.c.crm_id == deal_id)
            return rows[0] if rows[0].stage == "decisionmakerboughtin" else None

        record = await until(skipped)
        assert "decisionmakerboughtin" in record.skipped
        assert "not in the stage mapping" in record.skipped
        lead = await q.lead(lead_id)
        assert (lead["stage"], lead["feedback"]) == ("accepted", "accepted")
        seen = await status(q, "hs-main")
        assert (seen["skipped"], seen["pulls_owed"]) == (1, 0)
        state = await sim(hs, "GET", "/_sim/state")
        # Every event was answered 2xx on its first attempt: nothing for HubSpot to retry.
        notes = state["notifications"]
        assert notes["delivered"] >= 3 and notes["failed_attempts"] == 0
        assert_no_personal_data(caplog)
