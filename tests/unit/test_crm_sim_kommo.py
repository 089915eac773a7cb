"""The Kommo simulator against the vendor's documented facts (the addresses are in
tests/crm_sim/kommo.py): shapes, auth refusals, the rate limit, the webhook format."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from tests.crm_sim.kommo import ACCOUNT_ID, SUBDOMAIN, TOKEN, make_app
from tests.crm_sim.kommo_account import LEAD_ID_FIELD_CODE, LOST, MAIN_PIPELINE, WON
from tests.crm_sim.server import serving

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app() -> FastAPI:
    return make_app()


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:
    # A frozen rate-limit clock: only the tests about the limit move it.
    now = [1000.0]
    app.state.sim.clock = lambda: now[0]
    app.state.now = now
    with TestClient(app) as client:
        yield client


def tick(app: FastAPI) -> None:
    app.state.now[0] += 1.0


def complex_lead(**over: Any) -> dict[str, Any]:
    lead: dict[str, Any] = {
        "name": "Website lead",
        "responsible_user_id": 12,
        "pipeline_id": MAIN_PIPELINE,
        "custom_fields_values": [
            {"field_code": LEAD_ID_FIELD_CODE, "values": [{"value": "lead-1"}]},
            {"field_code": "UTM_SOURCE", "values": [{"value": "google"}]},
        ],
        "_embedded": {
            "contacts": [
                {
                    "first_name": "Anna",
                    "custom_fields_values": [
                        {
                            "field_code": "PHONE",
                            "values": [{"value": "+79990001122", "enum_code": "WORK"}],
                        }
                    ],
                }
            ],
            "companies": [{"name": "Acme"}],
            "tags": [{"name": "leadflow"}],
        },
    }
    return lead | over


class TestAuth:
    def test_a_missing_or_wrong_token_is_401_problem_json(self, api: TestClient) -> None:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            answer = api.get("/api/v4/leads", headers=headers)
            assert answer.status_code == 401
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["status"] == 401


class TestComplexLeads:
    def test_answer_is_the_documented_array_with_request_id_echoed_as_array(
        self, api: TestClient
    ) -> None:
        answer = api.post(
            "/api/v4/leads/complex", json=[complex_lead(request_id="r-1")], headers=AUTH
        )
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/hal+json")
        [made] = answer.json()
        assert set(made) == {"id", "contact_id", "company_id", "request_id", "merged"}
        assert made["request_id"] == ["r-1"] and made["merged"] is False

    def test_the_same_request_id_twice_makes_two_leads(self, api: TestClient) -> None:
        ids = {
            api.post(
                "/api/v4/leads/complex", json=[complex_lead(request_id="same")], headers=AUTH
            ).json()[0]["id"]
            for _ in range(2)
        }
        assert len(ids) == 2
        assert api.get("/_sim/leads/by-lead-id/lead-1").json()["count"] == 2

    def test_more_than_50_or_two_contacts_is_a_400_validation_error(self, api: TestClient) -> None:
        too_many = api.post("/api/v4/leads/complex", json=[complex_lead()] * 51, headers=AUTH)
        two = complex_lead()
        two["_embedded"] = {"contacts": [{"name": "a"}, {"name": "b"}]}
        for answer in (too_many, api.post("/api/v4/leads/complex", json=[two], headers=AUTH)):
            assert answer.status_code == 400
            errors = answer.json()["validation-errors"][0]
            assert set(errors) == {"request_id", "errors"}
            assert set(errors["errors"][0]) == {"code", "path", "detail"}

    def test_an_unknown_custom_field_names_its_path(self, api: TestClient) -> None:
        bad = complex_lead(custom_fields_values=[{"field_id": 1, "values": [{"value": "x"}]}])
        answer = api.post("/api/v4/leads/complex", json=[bad], headers=AUTH)
        assert answer.status_code == 400
        assert (
            answer.json()["validation-errors"][0]["errors"][0]["path"]
            == "custom_fields_values.0.field_id"
        )


class TestReading:
    def test_a_lead_has_the_vendor_fields_and_loss_reason_is_an_embedded_array(
        self, api: TestClient
    ) -> None:
        lead_id = api.post("/api/v4/leads/complex", json=[complex_lead()], headers=AUTH).json()[0][
            "id"
        ]
        api.post(f"/_sim/leads/{lead_id}/move", json={"status_id": LOST, "loss_reason_id": 11})
        lead = api.get(f"/api/v4/leads/{lead_id}?with=loss_reason,contacts", headers=AUTH).json()
        for key in (
            "status_id",
            "pipeline_id",
            "price",
            "responsible_user_id",
            "loss_reason_id",
            "updated_at",
            "custom_fields_values",
        ):
            assert key in lead
        assert isinstance(lead["updated_at"], int) and lead["status_id"] == LOST
        assert lead["_embedded"]["loss_reason"][0]["name"] == "Too expensive"
        assert lead["_embedded"]["contacts"][0]["is_main"] is True

    def test_a_missing_lead_and_an_empty_list_are_204(self, api: TestClient) -> None:
        assert api.get("/api/v4/leads/1", headers=AUTH).status_code == 204
        assert api.get("/api/v4/leads", headers=AUTH).status_code == 204

    def test_lists_page_with_hal_next_and_filter_by_updated_at(
        self, api: TestClient, app: FastAPI
    ) -> None:
        for _ in range(3):
            api.post("/api/v4/leads/complex", json=[complex_lead()], headers=AUTH)
        tick(app)
        since = int(time.time()) - 5
        first = api.get(
            f"/api/v4/leads?filter[updated_at][from]={since}&limit=2", headers=AUTH
        ).json()
        assert len(first["_embedded"]["leads"]) == 2 and "next" in first["_links"]
        second = api.get(first["_links"]["next"]["href"].split(".com")[1], headers=AUTH).json()
        assert len(second["_embedded"]["leads"]) == 1 and "next" not in second["_links"]
        later = int(time.time()) + 5
        assert (
            api.get(f"/api/v4/leads?filter[updated_at][from]={later}", headers=AUTH).status_code
            == 204
        )
        assert api.get("/api/v4/leads?limit=251", headers=AUTH).status_code == 400

    def test_pipelines_have_won_142_and_lost_143(self, api: TestClient) -> None:
        pipeline = api.get(f"/api/v4/leads/pipelines/{MAIN_PIPELINE}", headers=AUTH).json()
        ids = [s["id"] for s in pipeline["_embedded"]["statuses"]]
        assert ids[-2:] == [WON, LOST]
        reasons = api.get("/api/v4/leads/loss_reasons", headers=AUTH).json()["_embedded"][
            "loss_reasons"
        ]
        assert {"id", "name"} <= set(reasons[0])


class TestRateLimit:
    def test_the_eighth_request_within_a_second_is_429_and_the_next_second_is_free(
        self, api: TestClient, app: FastAPI
    ) -> None:
        codes = [api.get("/api/v4/leads/loss_reasons", headers=AUTH).status_code for _ in range(8)]
        assert codes == [200] * 7 + [429]
        tick(app)
        assert api.get("/api/v4/leads/loss_reasons", headers=AUTH).status_code == 200

    def test_the_control_api_tightens_it_and_may_add_retry_after(self, api: TestClient) -> None:
        api.post("/_sim/config", json={"rate_limit": 1, "retry_after": 2})
        assert api.get("/api/v4/leads/loss_reasons", headers=AUTH).status_code == 200
        over = api.get("/api/v4/leads/loss_reasons", headers=AUTH)
        assert over.status_code == 429 and over.headers["retry-after"] == "2"


class TestFailures:
    def test_after_commit_failure_creates_the_lead_but_answers_500(self, api: TestClient) -> None:
        api.post("/_sim/fail", json={"count": 1, "status": 500, "after_commit": True})
        assert (
            api.post("/api/v4/leads/complex", json=[complex_lead()], headers=AUTH).status_code
            == 500
        )
        assert api.get("/_sim/leads/by-lead-id/lead-1").json()["count"] == 1


def _receiver() -> tuple[FastAPI, list[tuple[str, bytes]]]:
    got: list[tuple[str, bytes]] = []
    receiver = FastAPI()

    @receiver.post("/hook/{secret}")
    async def hook(secret: str, request: Request) -> dict[str, bool]:
        got.append((request.headers["content-type"], await request.body()))
        return {"ok": True}

    return receiver, got


class TestWebhooks:
    def test_a_stage_change_posts_the_documented_form(self) -> None:
        receiver, got = _receiver()
        with (
            serving(receiver) as hook_url,
            serving(make_app()) as sim_url,
            httpx.Client(base_url=sim_url) as http,
        ):
            http.post("/_sim/config", json={"receiver_url": f"{hook_url}/hook/s3cret"})
            lead_id = http.post(
                "/api/v4/leads/complex", json=[complex_lead()], headers=AUTH
            ).json()[0]["id"]
            http.post(f"/_sim/leads/{lead_id}/move", json={"status_id": WON, "price": 5000})
            deadline = time.monotonic() + 30
            while not got and time.monotonic() < deadline:
                time.sleep(0.05)
        content_type, body = got[0]
        assert content_type == "application/x-www-form-urlencoded"
        form = dict(parse_qsl(body.decode()))
        assert form["leads[status][0][id]"] == str(lead_id)
        assert form["leads[status][0][status_id]"] == str(WON)
        assert form["leads[status][0][old_status_id]"] == "70001"
        assert form["leads[status][0][pipeline_id]"] == str(MAIN_PIPELINE)
        assert form["leads[status][0][responsible_user_id]"] == "12"
        assert form["account[id]"] == str(ACCOUNT_ID) and form["account[subdomain]"] == SUBDOMAIN
        assert not any("signature" in k.lower() for k in form)

    def test_drops_are_seeded_and_recorded(self, api: TestClient) -> None:
        api.post(
            "/_sim/config", json={"receiver_url": "http://127.0.0.1:9/none", "drop_fraction": 1.0}
        )
        lead_id = api.post("/api/v4/leads/complex", json=[complex_lead()], headers=AUTH).json()[0][
            "id"
        ]
        api.post(f"/_sim/leads/{lead_id}/move", json={"status_id": 70002})
        [sent] = api.get("/_sim/notifications").json()
        assert sent["dropped"] is True and sent["attempts"] == 0

    def test_early_notification_goes_before_the_record_changes(self) -> None:
        receiver, got = _receiver()
        seen: list[int] = []
        with (
            serving(receiver) as hook_url,
            serving(make_app()) as sim_url,
            httpx.Client(base_url=sim_url, timeout=30) as http,
        ):
            http.post(
                "/_sim/config", json={"receiver_url": f"{hook_url}/hook/x", "early_seconds": 1.0}
            )
            lead_id = http.post(
                "/api/v4/leads/complex", json=[complex_lead()], headers=AUTH
            ).json()[0]["id"]
            # The webhook arrives while the move is still pending: the read-back is stale.
            mover = threading.Thread(
                target=lambda: http.post(f"/_sim/leads/{lead_id}/move", json={"status_id": WON})
            )
            mover.start()
            deadline = time.monotonic() + 30
            while not got and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append(http.get(f"/api/v4/leads/{lead_id}", headers=AUTH).json()["status_id"])
            mover.join()
            seen.append(http.get(f"/api/v4/leads/{lead_id}", headers=AUTH).json()["status_id"])
        assert seen[0] != WON and seen[1] == WON
