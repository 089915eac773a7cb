"""Poison messages are parked on the dead-letter topic with a reason; consumers keep going.

Also: an event from a newer producer (fields this code does not know) is applied as usual.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.events import TOPIC_DEADLETTER, TOPIC_LIFECYCLE, TOPIC_RECEIVED, encode_event
from tests.e2e.conftest import Stack
from tests.support import DEV_AUTH, header, read_topic, received

pytestmark = pytest.mark.e2e


async def test_poison_is_parked_and_newer_events_still_apply(stack: Stack) -> None:
    poison_key = f"poison-{uuid.uuid4().hex}".encode()
    newer = received()
    wire = json.loads(encode_event(newer))
    wire["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    wire["data"]["lead_score_v2"] = {"model": "next", "value": 0.93}  # from a newer producer
    poison = [
        (TOPIC_RECEIVED, b"this is not json"),
        (
            TOPIC_RECEIVED,
            json.dumps({**wire, "type": "lead.teleported", "id": str(uuid.uuid4())}).encode(),
        ),
        (
            TOPIC_LIFECYCLE,
            json.dumps(
                {**wire, "type": "lead.contacted", "id": str(uuid.uuid4()), "data": {"lead_id": 42}}
            ).encode(),
        ),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)
    await producer.start()
    try:
        for topic, value in poison:
            await producer.send_and_wait(topic, value, key=poison_key)
        await producer.send_and_wait(
            TOPIC_RECEIVED, json.dumps(wire).encode(), key=newer.subject.encode()
        )
    finally:
        await producer.stop()

    async with httpx.AsyncClient(headers=DEV_AUTH, timeout=10) as http:
        for _ in range(150):
            r = await http.get(f"{stack.urls['qualifier']}/v1/leads/{newer.subject}")
            if r.status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert r.status_code == 200, "the newer event was not applied"
        assert r.json()["route"] == "sales"
        # The consumers did not stop: a lead posted now is still routed.
        posted = await http.post(
            f"{stack.urls['intake']}/v1/leads",
            json={
                "source": "api",
                "email": f"{uuid.uuid4().hex}@after-poison.example",
                "consent": True,
            },
        )
        lead_id = posted.json()["lead_id"]
        for _ in range(150):
            if (await http.get(f"{stack.urls['qualifier']}/v1/leads/{lead_id}")).status_code == 200:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the qualifier stopped consuming after the poison")

    # Qualifier and KPI both read leads.received and leads.lifecycle, so each parks its
    # copy of all three: six. (Reading until five arrived raced the last one.) Every parked
    # message says why, who parked it, and where it came from.
    parked = await read_topic(stack.kafka, TOPIC_DEADLETTER, lambda r: r.key == poison_key, 6)
    reasons = {(header(r, "dlq_service"), header(r, "dlq_topic")) for r in parked}
    assert reasons == {
        (service, topic) for service in ("qualifier", "kpi") for topic, _ in poison
    }, reasons
    assert all((header(r, "dlq_reason") or "").startswith("undecodable") for r in parked)
    assert {r.value for r in parked} <= {value for _, value in poison}
