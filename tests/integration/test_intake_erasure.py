"""Erasure on request: the person leaves intake's store, the lead stays, `lead.erased` goes out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import sqlalchemy as sa

from services.intake.config import IntakeSettings
from services.intake.main import create_app
from services.intake.tables import leads, outbox
from shared.events import LeadErased, LeadReceived, decode_event
from shared.migrations import migrate
from shared.runtime import Runtime
from shared.settings import CommonSettings
from tests.integration.test_intake_support import (
    WRITER_AUTH,
    count,
    lifecycle,
    rows,
)
from tests.support import DEV_AUTH, lead_payload


def personal(email: str) -> dict[str, object]:
    return lead_payload(
        name="Анна Петрова",
        email=email,
        phone="+7 912 555 44 33",
        job_title="CEO",
        message="Call me at +7 912 555 44 33",
        fields={"linkedin": "anna-p"},
        page_url=f"https://acme.example/contact?email={email}&utm_source=google",
        referrer="https://mail.example/inbox?u=anna",
    )


class TestErasure:
    async def test_the_person_goes_the_lead_stays_and_the_others_are_told(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        body = personal("anna.erase@acme.example")
        lead_id = (await intake.post("/v1/leads", json=body, headers=DEV_AUTH)).json()["lead_id"]
        r = await intake.delete(f"/v1/leads/{lead_id}/personal-data", headers=DEV_AUTH)
        assert r.status_code == 200 and r.json()["status"] == "erased"

        got = (await intake.get(f"/v1/leads/{lead_id}", headers=DEV_AUTH)).json()
        lead = got["lead"]
        assert got["erased"] is True
        for gone in ("name", "email", "phone", "company", "job_title", "message"):
            assert lead[gone] is None, gone
        assert lead["fields"] == {}
        assert lead["page_url"] == "https://acme.example/contact"
        assert lead["referrer"] == "https://mail.example/inbox"
        assert lead["lead_id"] == lead_id and lead["source"] == "web_form"
        assert lead["utm"]["source"] == "google" and lead["occurred_at"]
        assert lead["services"] == ["seo"] and lead["budget"] == "200000"
        (row,) = await rows(
            database_url, sa.select(leads.c.email, leads.c.phone, leads.c.erased_at)
        )
        assert (row.email, row.phone) == (None, None) and row.erased_at is not None

        (event,) = await lifecycle(database_url, kafka_bootstrap, {lead_id})
        assert isinstance(event, LeadErased)
        assert event.source == "/intake" and event.data.by == "dev" and event.subject == lead_id

        again = await intake.delete(f"/v1/leads/{lead_id}/personal-data", headers=DEV_AUTH)
        assert again.status_code == 200 and again.json()["status"] == "already_erased"
        assert len(await lifecycle(database_url, kafka_bootstrap, {lead_id})) == 1

    async def test_an_erased_person_who_comes_back_is_a_new_lead(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        body = personal("anna.back@acme.example")
        first = (await intake.post("/v1/leads", json=body, headers=DEV_AUTH)).json()["lead_id"]
        await intake.delete(f"/v1/leads/{first}/personal-data", headers=DEV_AUTH)
        second = (await intake.post("/v1/leads", json=body, headers=DEV_AUTH)).json()
        assert second["status"] == "accepted" and second["lead_id"] != first
        assert await count(database_url) == 2

    async def test_erasure_needs_the_admin_scope(self, intake: httpx.AsyncClient) -> None:
        lead_id = (await intake.post("/v1/leads", json=lead_payload(), headers=DEV_AUTH)).json()[
            "lead_id"
        ]
        r = await intake.delete(f"/v1/leads/{lead_id}/personal-data", headers=WRITER_AUTH)
        assert r.status_code == 403


async def test_events_still_waiting_for_kafka_go_out_without_the_person(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The lead's `lead.received` still waits in the outbox (the relay has not run: the app
    is served without its lifespan). Erasure scrubs it and queues `lead.erased` behind it,
    in the same transaction."""
    await asyncio.to_thread(migrate, "intake", database_url)
    settings = IntakeSettings(
        database_url=database_url,
        common=CommonSettings(data_dir=tmp_path, kafka_bootstrap_servers=kafka_bootstrap),
    )
    app = create_app(settings)
    runtime = Runtime(settings, outbox=outbox)  # never started: no relay
    app.state.runtime = runtime
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as intake:
            body = personal("anna.pending@acme.example")
            r = await intake.post("/v1/leads", json=body, headers=DEV_AUTH)
            lead_id = r.json()["lead_id"]
            r = await intake.delete(f"/v1/leads/{lead_id}/personal-data", headers=DEV_AUTH)
            assert r.status_code == 200
    finally:
        await runtime.engine.dispose()
    pending = await rows(database_url, sa.select(outbox.c.payload).order_by(outbox.c.id))
    events = [decode_event(p.payload) for p in pending]
    assert [type(e) for e in events] == [LeadReceived, LeadErased]
    received = events[0]
    assert isinstance(received, LeadReceived)
    assert (received.data.email, received.data.name, received.data.phone) == (None, None, None)
    assert all(b"anna.pending" not in p.payload for p in pending)
