"""The HubSpot simulator against HubSpot's documented facts (tests/crm_sim/hubspot.py cites
each address): shapes, refusals, the rate limit, notifications and their v3 signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.crm_sim.hubspot import create_app
from tests.crm_sim.hubspot_receiver import Receiver
from tests.crm_sim.hubspot_webhooks import sign_v3
from tests.crm_sim.server import serving

TOKEN = "pat-na1-test"
SECRET = "client-secret-1"
PORTAL = 62515


@pytest.fixture
def hub() -> Iterator[httpx.Client]:
    app = create_app(token=TOKEN, client_secret=SECRET, portal_id=PORTAL)
    with (
        serving(app) as url,
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        ) as client,
    ):
        yield client


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    with serving(rec.app()) as url:
        yield rec, f"{url}/hooks/hubspot"


def upsert_deal(hub: httpx.Client, lead: str, **props: str) -> dict[str, Any]:
    answer = hub.post(
        "/crm/v3/objects/deals/batch/upsert",
        json={
            "inputs": [
                {"idProperty": "leadflow_id", "id": lead, "properties": {"dealname": lead, **props}}
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()["results"][0]
    return result


def wait_for(check: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


class TestAuthAndShapes:
    def test_a_bad_token_is_refused_with_hubspots_error_json(self, hub: httpx.Client) -> None:
        answer = hub.get("/crm/v3/pipelines/deals", headers={"Authorization": "Bearer nope"})
        assert answer.status_code == 401
        body = answer.json()
        assert body["status"] == "error"
        assert body["category"] == "INVALID_AUTHENTICATION"
        assert body["correlationId"] and body["message"]

    def test_default_pipeline_stages_and_their_metadata(self, hub: httpx.Client) -> None:
        pipelines = {p["id"]: p for p in hub.get("/crm/v3/pipelines/deals").json()["results"]}
        stages = pipelines["default"]["stages"]
        assert [s["id"] for s in stages] == [
            "appointmentscheduled",
            "qualifiedtobuy",
            "presentationscheduled",
            "decisionmakerboughtin",
            "contractsent",
            "closedwon",
            "closedlost",
        ]
        meta = {s["id"]: s["metadata"] for s in stages}
        assert meta["closedwon"] == {"isClosed": "true", "probability": "1.0"}
        assert meta["closedlost"] == {"isClosed": "true", "probability": "0.0"}
        assert meta["qualifiedtobuy"]["isClosed"] == "false"
        custom = next(p for p in pipelines.values() if p["id"] != "default")
        assert all(s["id"].isdigit() for s in custom["stages"])

    def test_batch_upsert_by_the_unique_property_creates_once(self, hub: httpx.Client) -> None:
        first = upsert_deal(hub, "lead-1")
        again = upsert_deal(hub, "lead-1", amount="10")
        assert first["new"] is True and again["new"] is False
        assert first["id"] == again["id"]
        got = hub.get(
            "/crm/v3/objects/deals/lead-1",
            params={"idProperty": "leadflow_id", "properties": "dealstage,amount,pipeline"},
        ).json()
        assert got["id"] == first["id"]
        assert got["properties"]["dealstage"] == "appointmentscheduled"
        assert got["properties"]["amount"] == "10"
        state = hub.get("/_sim/state").json()
        assert state["deals_created_per_lead"] == {"lead-1": 1}

    def test_an_existing_email_answers_409_conflict(self, hub: httpx.Client) -> None:
        body = {"properties": {"email": "a@example.com", "firstname": "A"}}
        first = hub.post("/crm/v3/objects/contacts", json=body)
        assert first.status_code == 201
        again = hub.post("/crm/v3/objects/contacts", json=body)
        assert again.status_code == 409
        assert again.json()["category"] == "CONFLICT"
        assert f"Existing ID: {first.json()['id']}" in again.json()["message"]

    def test_an_unknown_property_is_a_validation_error(self, hub: httpx.Client) -> None:
        answer = hub.patch("/crm/v3/objects/deals/1", json={"properties": {}})
        assert answer.status_code == 404
        deal = upsert_deal(hub, "lead-2")
        answer = hub.patch(
            f"/crm/v3/objects/deals/{deal['id']}", json={"properties": {"no_such": "x"}}
        )
        assert answer.status_code == 400
        body = answer.json()
        assert body["category"] == "VALIDATION_ERROR"
        assert body["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
        assert body["errors"][0]["context"] == {"propertyName": ["no_such"]}

    def test_contact_association_note_and_gdpr_delete(self, hub: httpx.Client) -> None:
        deal = upsert_deal(hub, "lead-3")
        contact = hub.post(
            "/crm/v3/objects/contacts/batch/upsert",
            json={"inputs": [{"idProperty": "email", "id": "p@example.com", "properties": {}}]},
        ).json()["results"][0]
        put = hub.put(
            f"/crm/v4/objects/deal/{deal['id']}/associations/default/contact/{contact['id']}"
        )
        assert put.status_code == 200 and put.json()["status"] == "COMPLETE"
        note = hub.post(
            "/crm/v3/objects/notes",
            json={
                "properties": {"hs_timestamp": "2026-12-07T10:00:00Z", "hs_note_body": "why"},
                "associations": [
                    {
                        "to": {"id": deal["id"]},
                        "types": [
                            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 214}
                        ],
                    }
                ],
            },
        )
        assert note.status_code == 201
        read = hub.get(f"/crm/v3/objects/deals/{deal['id']}", params={"associations": "contacts"})
        assert read.json()["associations"]["contacts"]["results"][0]["id"] == contact["id"]
        assert hub.get(f"/_sim/deals/{deal['id']}").json()["notes"] == [note.json()["id"]]
        gone = hub.post("/crm/v3/objects/contacts/gdpr-delete", json={"objectId": contact["id"]})
        assert gone.status_code == 204
        assert hub.get(f"/crm/v3/objects/contacts/{contact['id']}").status_code == 404
        assert hub.get(f"/_sim/deals/{deal['id']}").json()["contacts"] == []


class TestLimits:
    def test_the_documented_budget_is_100_per_10_seconds(self, hub: httpx.Client) -> None:
        for _ in range(100):
            assert hub.get("/crm/v3/pipelines/deals").status_code == 200
        answer = hub.get("/crm/v3/pipelines/deals")
        assert answer.status_code == 429
        body = answer.json()
        assert body["errorType"] == "RATE_LIMIT"
        assert body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert answer.headers["X-HubSpot-RateLimit-Max"] == "100"
        assert answer.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert answer.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"

    def test_search_has_its_own_lower_limit_and_no_headers(self, hub: httpx.Client) -> None:
        hub.post("/_sim/knobs", json={"search_rate_limit": {"requests": 2, "per_seconds": 30}})
        body = {"limit": 10}
        for _ in range(2):
            ok = hub.post("/crm/v3/objects/deals/search", json=body)
            assert ok.status_code == 200
            assert "X-HubSpot-RateLimit-Max" not in ok.headers
        refused = hub.post("/crm/v3/objects/deals/search", json=body)
        assert refused.status_code == 429 and refused.json()["errorType"] == "RATE_LIMIT"

    def test_search_pages_with_after_and_caps_limit_at_200(self, hub: httpx.Client) -> None:
        since = int(time.time() * 1000) - 1000
        for n in range(5):
            upsert_deal(hub, f"lead-{n}")
        query = {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": "hs_lastmodifieddate",
                            "operator": "GTE",
                            "value": str(since),
                        }
                    ]
                }
            ],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["leadflow_id"],
            "limit": 2,
        }
        seen, after = [], None
        while True:
            page = hub.post("/crm/v3/objects/deals/search", json={**query, "after": after}).json()
            assert page["total"] == 5
            seen += [r["properties"]["leadflow_id"] for r in page["results"]]
            after = page.get("paging", {}).get("next", {}).get("after")
            if after is None:
                break
        assert sorted(seen) == [f"lead-{n}" for n in range(5)]
        too_many = hub.post("/crm/v3/objects/deals/search", json={**query, "limit": 201})
        assert too_many.status_code == 400

    def test_failures_before_and_after_the_write(self, hub: httpx.Client) -> None:
        hub.post("/_sim/fail", json={"count": 1, "status": 503})
        assert (
            hub.post(
                "/crm/v3/objects/deals/batch/upsert",
                json={"inputs": [{"idProperty": "leadflow_id", "id": "x", "properties": {}}]},
            ).status_code
            == 503
        )
        assert hub.get("/_sim/state").json()["deals_created_per_lead"] == {}
        hub.post("/_sim/fail", json={"count": 1, "status": 502, "after_commit": True})
        lost = hub.post(
            "/crm/v3/objects/deals/batch/upsert",
            json={"inputs": [{"idProperty": "leadflow_id", "id": "x", "properties": {}}]},
        )
        assert lost.status_code == 502
        assert hub.get("/_sim/state").json()["deals_created_per_lead"] == {"x": 1}


class TestNotifications:
    def test_signature_matches_hubspots_reference_test_vector(self) -> None:
        # hubspot-api-python tests/spec/utils/test_signature.py, test_get_signature__v3.
        signature = sign_v3(
            "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
            "POST",
            "https://www.example.com/webhook_uri",
            b"{'example_field':'example_value'}",
            "15000000",
        )
        assert signature == "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="

    def test_a_move_is_notified_in_hubspots_format_and_signed(
        self, hub: httpx.Client, receiver: tuple[Receiver, str]
    ) -> None:
        rec, url = receiver
        hub.post("/_sim/receiver", json={"url": url})
        deal = upsert_deal(hub, "lead-n")
        hub.post(
            f"/_sim/deals/{deal['id']}/move",
            json={"stage": "closedlost", "closed_lost_reason": "budget"},
        )
        wait_for(lambda: sum(len(json.loads(r.body)) for r in rec.got) >= 3)
        events = [e for r in rec.got for e in json.loads(r.body)]
        stage = next(e for e in events if e.get("propertyName") == "dealstage")
        assert stage["subscriptionType"] == "deal.propertyChange"
        assert stage["propertyValue"] == "closedlost"
        assert stage["objectId"] == int(deal["id"]) and stage["portalId"] == PORTAL
        assert stage["attemptNumber"] == 0 and stage["changeSource"] == "CRM_UI"
        for key in ("eventId", "subscriptionId", "appId", "occurredAt"):
            assert isinstance(stage[key], int)
        assert any(e["subscriptionType"] == "deal.creation" for e in events)
        assert max(len(json.loads(r.body)) for r in rec.got) >= 2  # batched
        for got in rec.got:
            stamp = got.headers["x-hubspot-request-timestamp"]
            assert abs(int(stamp) - time.time() * 1000) < 60_000
            source = b"POST" + got.url.encode() + got.body + stamp.encode()
            expected = base64.b64encode(hmac.new(SECRET.encode(), source, hashlib.sha256).digest())
            assert got.headers["x-hubspot-signature-v3"] == expected.decode()

    def test_failed_deliveries_are_retried_with_the_attempt_number(
        self, hub: httpx.Client, receiver: tuple[Receiver, str]
    ) -> None:
        rec, url = receiver
        rec.statuses = [500, 503]
        hub.post("/_sim/knobs", json={"retry_delays": [0.1, 0.1, 0.1]})
        hub.post("/_sim/receiver", json={"url": url})
        upsert_deal(hub, "lead-r")
        wait_for(lambda: len(rec.got) >= 3)
        attempts = [json.loads(r.body)[0]["attemptNumber"] for r in rec.got]
        assert attempts == [0, 1, 2]
        assert hub.get("/_sim/state").json()["notifications"]["delivered"] == 1

    def test_dropped_notifications_never_arrive(
        self, hub: httpx.Client, receiver: tuple[Receiver, str]
    ) -> None:
        rec, url = receiver
        hub.post("/_sim/knobs", json={"drop_fraction": 1.0})
        hub.post("/_sim/receiver", json={"url": url})
        upsert_deal(hub, "lead-d")
        wait_for(lambda: hub.get("/_sim/state").json()["notifications"]["dropped"] == 1)
        time.sleep(0.3)
        assert rec.got == []

    def test_an_early_notification_precedes_the_change(
        self, hub: httpx.Client, receiver: tuple[Receiver, str]
    ) -> None:
        rec, url = receiver
        deal = upsert_deal(hub, "lead-e")
        hub.post("/_sim/receiver", json={"url": url})
        hub.post(
            f"/_sim/deals/{deal['id']}/move", json={"stage": "closedwon", "early_seconds": 1.5}
        )
        wait_for(lambda: any(b"closedwon" in r.body for r in rec.got))
        now = hub.get(f"/crm/v3/objects/deals/{deal['id']}", params={"properties": "dealstage"})
        assert now.json()["properties"]["dealstage"] == "appointmentscheduled"
        wait_for(
            lambda: (
                hub.get(
                    f"/crm/v3/objects/deals/{deal['id']}", params={"properties": "dealstage"}
                ).json()["properties"]["dealstage"]
                == "closedwon"
            )
        )
