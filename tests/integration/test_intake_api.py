"""Intake over HTTP on a real database (PostgreSQL) with real Kafka."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from services.intake.config import IntakeSettings
from services.intake.main import create_app
from services.intake.tables import leads, outbox
from shared.auth import Scope
from shared.db import create_engine
from shared.events import TOPIC_RECEIVED, LeadReceived
from shared.migrations import migrate
from shared.settings import CommonSettings, TokenSpec
from tests.integration.test_intake_support import published
from tests.support import DEV_AUTH, event_of, header, lead_payload, read_topic, serving

KPI_ONLY = TokenSpec(
    name="bi", token_sha256=hashlib.sha256(b"bi-token").hexdigest(), scopes=[Scope.kpi_read]
)


@pytest.fixture
async def intake(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    await asyncio.to_thread(migrate, "intake", database_url)
    settings = IntakeSettings(
        database_url=database_url,
        common=CommonSettings(
            data_dir=tmp_path, kafka_bootstrap_servers=kafka_bootstrap, auth_tokens=[KPI_ONLY]
        ),
    )
    async with serving(create_app(settings)) as client:
        yield client


async def _count(database_url: str, table: sa.Table) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
    finally:
        await engine.dispose()


class TestAcceptance:
    async def test_a_lead_is_stored_and_published(
        self, intake: httpx.AsyncClient, kafka_bootstrap: str
    ) -> None:
        body = lead_payload(name="  Анна 😀 \u200fПетрова ", phone="8 912 345-67-89")
        r = await intake.post("/v1/leads", json=body, headers=DEV_AUTH)
        assert r.status_code == 202, r.text
        answer = r.json()
        assert answer["status"] == "accepted" and answer["duplicate_of"] is None
        lead_id = answer["lead_id"]

        stored = (await intake.get(f"/v1/leads/{lead_id}", headers=DEV_AUTH)).json()["lead"]
        assert stored["name"] == "Анна 😀 \u200fПетрова"
        assert stored["phone"] == "+79123456789"
        assert stored["email"] == body["email"]

        records = await read_topic(
            kafka_bootstrap, TOPIC_RECEIVED, lambda r: r.key == lead_id.encode(), 1
        )
        event = event_of(records[0])
        assert isinstance(event, LeadReceived)
        assert event.data.lead_id == lead_id and event.subject == lead_id
        assert header(records[0], "ce_type") == "lead.received"
        assert header(records[0], "ce_id") == event.id

    async def test_the_same_person_from_the_same_form_is_a_duplicate(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        body = lead_payload()
        first = (await intake.post("/v1/leads", json=body, headers=DEV_AUTH)).json()
        again = lead_payload(email=body["email"].upper(), name="Someone else")
        second = await intake.post("/v1/leads", json=again, headers=DEV_AUTH)
        assert second.status_code == 202
        assert second.json() == {
            "lead_id": first["lead_id"],
            "status": "duplicate",
            "duplicate_of": first["lead_id"],
        }
        # Another form is another lead.
        other = await intake.post(
            "/v1/leads", json={**body, "form_id": "pricing"}, headers=DEV_AUTH
        )
        assert other.json()["status"] == "accepted"
        assert await _count(database_url, leads) == 2

    async def test_concurrent_identical_submissions_make_one_lead_and_one_event(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        # Real concurrency: twelve requests in flight at once, each on its own connection.
        body = lead_payload()
        answers = await asyncio.gather(
            *(intake.post("/v1/leads", json=body, headers=DEV_AUTH) for _ in range(12))
        )
        assert {a.status_code for a in answers} == {202}
        statuses = sorted(a.json()["status"] for a in answers)
        assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 11
        lead_ids = {a.json()["lead_id"] for a in answers}
        assert len(lead_ids) == 1
        assert await _count(database_url, leads) == 1
        events = await published(database_url, kafka_bootstrap, lead_ids)
        assert [e.type for e in events] == ["lead.received"]

    async def test_a_lead_naming_a_configured_form_gets_its_consent_text(
        self, intake: httpx.AsyncClient
    ) -> None:
        r = await intake.post("/v1/leads", json=lead_payload(), headers=DEV_AUTH)
        got = await intake.get(f"/v1/leads/{r.json()['lead_id']}", headers=DEV_AUTH)
        assert got.json()["lead"]["consent_text_version"] == "privacy-dev-1"


class TestIdempotencyKey:
    async def test_the_same_key_and_body_replay_the_answer(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        body = lead_payload()
        headers = {**DEV_AUTH, "Idempotency-Key": "order-42"}
        first = await intake.post("/v1/leads", json=body, headers=headers)
        again = await intake.post("/v1/leads", json=body, headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()
        assert again.headers.get("idempotent-replayed") == "true"
        assert await _count(database_url, leads) == 1

    async def test_the_same_key_with_another_body_is_refused(
        self, intake: httpx.AsyncClient
    ) -> None:
        headers = {**DEV_AUTH, "Idempotency-Key": "order-43"}
        await intake.post("/v1/leads", json=lead_payload(), headers=headers)
        r = await intake.post("/v1/leads", json=lead_payload(), headers=headers)
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


class TestRefusals:
    async def test_missing_token_is_401_and_wrong_scope_403(
        self, intake: httpx.AsyncClient
    ) -> None:
        assert (await intake.post("/v1/leads", json=lead_payload())).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await intake.post("/v1/leads", json=lead_payload(), headers=bad)).status_code == 401
        bi = {"Authorization": "Bearer bi-token"}
        r = await intake.post("/v1/leads", json=lead_payload(), headers=bi)
        assert r.status_code == 403 and "intake:write" in r.json()["detail"]

    @pytest.mark.parametrize(
        ("change", "loc"),
        [
            ({"shoe_size": 42}, ["body", "shoe_size"]),
            ({"email": "not-an-email"}, ["body", "email"]),
            ({"phone": "123", "email": None}, ["body", "phone"]),
            ({"consent": False}, ["body", "consent"]),
            ({"email": None}, ["body", "email"]),
            ({"budget": "lots"}, ["body", "budget"]),
            ({"source": "carrier_pigeon"}, ["body", "source"]),
            ({"services": "seo"}, ["body", "services"]),
        ],
    )
    async def test_bad_fields_are_named(
        self, intake: httpx.AsyncClient, change: dict[str, object], loc: list[str]
    ) -> None:
        r = await intake.post("/v1/leads", json=lead_payload(**change), headers=DEV_AUTH)
        assert r.status_code == 422, r.text
        assert any(e["loc"][: len(loc)] == loc for e in r.json()["detail"]), r.json()

    async def test_malformed_json_and_huge_bodies_are_4xx(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        headers = {**DEV_AUTH, "Content-Type": "application/json"}
        r = await intake.post("/v1/leads", content=b'{"email": ', headers=headers)
        assert r.status_code == 422
        huge = lead_payload(message="x" * 70_000)
        r = await intake.post("/v1/leads", json=huge, headers=DEV_AUTH)
        assert r.status_code == 413
        assert await _count(database_url, leads) == 0
        assert await _count(database_url, outbox) == 0

    async def test_an_unknown_lead_is_404(self, intake: httpx.AsyncClient) -> None:
        assert (await intake.get("/v1/leads/nope", headers=DEV_AUTH)).status_code == 404


class TestProbes:
    async def test_health_ready_and_metrics(self, intake: httpx.AsyncClient) -> None:
        assert (await intake.get("/healthz")).json() == {"status": "ok"}
        for _ in range(100):
            ready = await intake.get("/readyz")
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert ready.json()["checks"] == {"database": "ok", "kafka": "ok"}
        await intake.post("/v1/leads", json=lead_payload(), headers=DEV_AUTH)
        metrics = (await intake.get("/metrics")).text
        assert 'leadflow_http_requests_total{method="POST",route="/v1/leads"' in metrics
