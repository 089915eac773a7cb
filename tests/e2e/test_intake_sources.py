"""Intake's public sources on the stack `leadflow up` starts in dev mode: the demo form, a bot
caught by the honeypot (which the qualifier then rejects as spam), and a signed Zoom event."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest

from services.intake.config import DEV_ZOOM_SECRET_TOKEN
from services.intake.sources.zoom import signature
from shared.events import TOPIC_RECEIVED, TOPIC_ROUTED, LeadReceived, LeadRouted
from shared.keys import HttpKeySource
from shared.settings import DEV_TOKEN
from tests.e2e.conftest import Stack
from tests.support import DEV_AUTH, event_of, read_to_end, read_topic

pytestmark = pytest.mark.e2e


async def test_form_bot_and_zoom_leads_reach_the_qualifier(stack: Stack) -> None:
    intake = stack.urls["intake"]
    unique = uuid.uuid4().hex[:8]
    person, bot, registrant = (f"{who}.{unique}@acme.example" for who in ("anna", "bot", "vera"))
    form = {
        "name": "Анна Петрова",
        "email": person,
        "company": "Acme",
        "consent": "yes",
        "services": "seo",
        "website": "",
    }
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{intake}/readyz")).status_code == 200
        origin = {"Origin": "http://localhost"}
        r = await http.post(f"{intake}/v1/forms/contact-us/submissions", data=form, headers=origin)
        assert r.status_code == 202, r.text
        r = await http.post(
            f"{intake}/v1/forms/contact-us/submissions",
            data={**form, "email": bot, "website": "http://spam.example"},
            headers=origin,
        )
        assert r.status_code == 202 and r.json() == {"status": "accepted"}

        r = await http.put(
            f"{intake}/v1/webinars/webinar-demo",
            json={"zoom_webinar_id": "81234567890", "consent_text_version": "webinar-dev-1"},
            headers=DEV_AUTH,
        )
        assert r.status_code == 200, r.text
        body = json.dumps(
            {
                "event": "webinar.registration_created",
                "event_ts": int(time.time() * 1000),
                "payload": {
                    "object": {
                        "id": 81234567890,
                        "registrant": {
                            "email": registrant,
                            "first_name": "Vera",
                            "org": "Orlova & Co",
                        },
                    }
                },
            }
        ).encode()
        ts = str(int(time.time()))
        r = await http.post(
            f"{intake}/v1/webhooks/zoom",
            content=body,
            headers={
                "Content-Type": "application/json",
                "x-zm-request-timestamp": ts,
                "x-zm-signature": signature(DEV_ZOOM_SECRET_TOKEN, ts, body),
            },
        )
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text

    emails = {person, bot, registrant}
    # E-mails travel sealed (crypto-shredding): opened with intake's keys, as a subscriber
    # holding `keys:read` opens them.
    key_store = HttpKeySource(intake, DEV_TOKEN, ttl=0)

    async def received_leads() -> dict[str, str]:
        records = await read_to_end(stack.kafka, TOPIC_RECEIVED)
        keys = await key_store.fetch({r.key.decode() for r in records if r.key})
        events = [event_of(r, keys) for r in records]
        return {
            e.data.email: e.subject
            for e in events
            if isinstance(e, LeadReceived) and e.data.email in emails
        }

    lead_of: dict[str, str] = {}
    for _ in range(120):
        lead_of = await received_leads()
        if set(lead_of) == emails:
            break
        await asyncio.sleep(0.5)
    assert set(lead_of) == emails
    keys = {lead_id.encode() for lead_id in lead_of.values()}
    routed = [
        event_of(r) for r in await read_topic(stack.kafka, TOPIC_ROUTED, lambda r: r.key in keys, 3)
    ]
    by_lead = {e.subject: e.data.decision for e in routed if isinstance(e, LeadRouted)}
    decision = {email: by_lead[lead_id] for email, lead_id in lead_of.items()}
    assert decision[bot].route.value == "rejected"
    assert any("spam" in reason for reason in decision[bot].reasons)
    assert decision[person].route.value != "rejected"
    assert decision[registrant].route.value != "rejected"
