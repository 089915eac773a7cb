"""Partner webhooks to real HTTP receivers on 127.0.0.1: signed, retried with backoff, parked,
listed and retried by an operator."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn

from cli.kafka.ports import free_port
from services.qualifier.event_ids import derived_event_id
from services.qualifier.main import create_app
from services.qualifier.tables import deliveries, outbox
from shared.auth import Scope
from shared.events import LeadErased, LeadErasedData, LeadRouted, decode_event
from shared.migrations import migrate
from shared.settings import CommonSettings, InsecureSettings, Mode
from tests.fixtures.qualifier.harness import (
    CRM_AUTH,
    HERE,
    Harness,
    definition_text,
    publish,
    qualifier_app,
    settings_for,
    token,
)
from tests.support import received, serving

SECRET = "webstudio-shared-secret-0123456789"
FAST = {
    "partner_secrets": {"webstudio": SECRET},
    "partner_retry_base_seconds": 0.02,
    "partner_retry_max_seconds": 0.1,
    "partner_poll_seconds": 0.05,
    "partner_max_attempts": 4,
}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


@dataclass
class Receiver:
    """A partner's webhook endpoint: answers from a script, then `then`; checks signatures."""

    script: list[int] = field(default_factory=list)
    then: int = 200
    requests: list[Received] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        stamp = headers.get("x-leadflow-timestamp", "")
        expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        signed = headers.get("x-leadflow-signature", "")
        fresh = stamp.isdigit() and abs(time.time() - int(stamp)) < 300
        ok = fresh and hmac.compare_digest(signed, f"sha256={expected.hexdigest()}")
        self.requests.append(Received(headers, body, ok))
        status = self.script.pop(0) if self.script else self.then
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": f"status {status}".encode()})


@contextlib.asynccontextmanager
async def listening(app: Receiver) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 (uvicorn) in this event loop; yields its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/leadflow/leads"
    finally:
        server.should_exit = True
        await task


def hooked(url: str) -> str:
    return definition_text(
        ("    regions: [RU, KZ, BY]", f"    regions: [RU, KZ, BY]\n    webhook_url: {url}")
    )


@contextlib.asynccontextmanager
async def deliverer_running(q: Harness) -> AsyncIterator[None]:
    """The app's real background deliverer, as the runtime runs it."""
    task = asyncio.create_task(q.app.state.deliverer.run(q.runtime))
    try:
        yield
    finally:
        q.runtime.stopping.set()
        await asyncio.wait_for(task, 10)


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def delivery_of(q: Harness, lead_id: str) -> dict[str, Any]:
    r = await q.http.get("/v1/partners/deliveries", params={"lead_id": lead_id})
    assert r.status_code == 200, r.text
    (only,) = r.json()
    return dict(only)


async def partner_lead(q: Harness) -> str:
    lead = received(services=["web_development"], country="RU")
    await q.receive(lead)
    q.app.state.deliverer.wake()
    return lead.subject


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path, **FAST) as harness:
        yield harness


class TestDelivery:
    async def test_a_delivery_survives_a_receiver_failing_twice(self, q: Harness) -> None:
        receiver = Receiver(script=[503, 500])
        async with listening(receiver) as url:
            await publish(q.http, hooked(url))
            async with deliverer_running(q):
                lead_id = await partner_lead(q)

                async def delivered() -> bool:
                    return (await delivery_of(q, lead_id))["status"] == "delivered"

                await until(delivered)
        delivery = await delivery_of(q, lead_id)
        assert (delivery["attempts"], delivery["last_status_code"]) == (3, 200)
        assert delivery["partner_id"] == "webstudio" and delivery["last_error"] is None
        assert len(receiver.requests) == 3
        assert all(r.signature_ok for r in receiver.requests)
        assert {r.headers["x-leadflow-delivery-id"] for r in receiver.requests} == {delivery["id"]}
        assert len({r.headers["x-leadflow-timestamp"] for r in receiver.requests}) >= 1
        routed = decode_event(receiver.requests[-1].body)
        assert isinstance(routed, LeadRouted) and routed.subject == lead_id
        assert routed.data.decision.partner == "webstudio"
        assert receiver.requests[-1].headers["x-leadflow-event-id"] == routed.id
        assert receiver.requests[-1].headers["content-type"] == "application/json"

    async def test_the_delivery_commits_with_the_decision_and_only_once(self, q: Harness) -> None:
        await publish(q.http, hooked("http://127.0.0.1:9/never-called"))
        lead = received(services=["design"], country="KZ")
        await q.receive(lead)
        await q.receive(lead)  # redelivered
        rows = await q.rows(deliveries, deliveries.c.lead_id == lead.subject)
        assert len(rows) == 1
        async with q.runtime.engine.connect() as conn:
            published = await conn.scalar(
                sa.select(outbox.c.payload).where(
                    outbox.c.event_type == "lead.routed", outbox.c.key == lead.subject
                )
            )
        (row,) = rows
        assert row.payload == published  # the partner gets exactly what sales tools get
        routed = decode_event(published)
        assert row.event_id == routed.id and row.id == derived_event_id(routed.id, "delivery")

    async def test_a_partner_without_a_webhook_gets_no_delivery(self, q: Harness) -> None:
        lead = received(services=["smm"])
        await q.receive(lead)
        assert await q.rows(deliveries) == []


class TestParking:
    async def test_the_last_failure_parks_it_and_an_operator_sends_it_again(
        self, q: Harness
    ) -> None:
        receiver = Receiver(then=500)
        async with listening(receiver) as url:
            await publish(q.http, hooked(url))
            async with deliverer_running(q):
                lead_id = await partner_lead(q)

                async def parked() -> bool:
                    return (await delivery_of(q, lead_id))["status"] == "failed"

                await until(parked)
                failed = (await q.http.get("/v1/partners/deliveries?status=failed")).json()
                assert [d["lead_id"] for d in failed] == [lead_id]
                assert failed[0]["attempts"] == 4 and failed[0]["last_status_code"] == 500
                assert failed[0]["last_error"] == "HTTP 500"
                assert failed[0]["last_outcome"] == "http_5xx"
                assert len(receiver.requests) == 4

                receiver.then = 200
                r = await q.http.post(f"/v1/partners/deliveries/{failed[0]['id']}/retry")
                assert r.status_code == 202 and r.json()["status"] == "pending"

                async def delivered() -> bool:
                    return (await delivery_of(q, lead_id))["status"] == "delivered"

                await until(delivered)
        assert (await q.http.get("/v1/partners/deliveries?status=failed")).json() == []
        assert len(receiver.requests) == 5 and all(r.signature_ok for r in receiver.requests)

    async def test_a_refusal_is_parked_without_retrying(self, q: Harness) -> None:
        receiver = Receiver(then=401)
        async with listening(receiver) as url:
            await publish(q.http, hooked(url))
            async with deliverer_running(q):
                lead_id = await partner_lead(q)

                async def parked() -> bool:
                    return (await delivery_of(q, lead_id))["status"] == "failed"

                await until(parked)
        assert len(receiver.requests) == 1
        assert (await delivery_of(q, lead_id))["last_status_code"] == 401

    async def test_an_unreachable_receiver_is_retried_then_parked(self, q: Harness) -> None:
        await publish(q.http, hooked(f"http://127.0.0.1:{free_port()}/gone"))
        async with deliverer_running(q):
            lead_id = await partner_lead(q)

            async def parked() -> bool:
                return (await delivery_of(q, lead_id))["status"] == "failed"

            await until(parked)
        delivery = await delivery_of(q, lead_id)
        assert delivery["attempts"] == 4 and delivery["last_status_code"] is None
        assert delivery["last_outcome"] == "connect_error"

    async def test_retrying_a_pending_or_unknown_delivery(self, q: Harness) -> None:
        await publish(q.http, hooked("http://127.0.0.1:9/never-called"))
        lead_id = await partner_lead(q)
        delivery = await delivery_of(q, lead_id)
        r = await q.http.post(f"/v1/partners/deliveries/{delivery['id']}/retry")
        assert r.status_code == 409
        assert (await q.http.post("/v1/partners/deliveries/nope/retry")).status_code == 404

    async def test_deliveries_are_for_admins(self, q: Harness) -> None:
        r = await q.http.get("/v1/partners/deliveries", headers={"Authorization": "Bearer x"})
        assert r.status_code == 401
        assert (await q.http.get("/v1/partners/deliveries", headers=CRM_AUTH)).status_code == 403


class TestErasure:
    async def test_an_erased_person_is_sent_nowhere(self, q: Harness) -> None:
        await publish(q.http, hooked("http://127.0.0.1:9/never-called"))
        lead_id = await partner_lead(q)
        now = datetime.now(UTC)
        await q.receive(
            LeadErased(
                source="/intake",
                time=now,
                subject=lead_id,
                data=LeadErasedData(lead_id=lead_id, at=now),
            )
        )
        delivery = await delivery_of(q, lead_id)
        assert delivery["status"] == "cancelled"
        (row,) = await q.rows(deliveries, deliveries.c.lead_id == lead_id)
        assert row.payload is None
        r = await q.http.post(f"/v1/partners/deliveries/{delivery['id']}/retry")
        assert r.status_code == 409
        # It was never sent: the partner does not have the lead, so it is told nothing.
        assert len(await q.rows(deliveries)) == 1

    async def test_a_partner_that_got_the_lead_is_told_of_the_erasure(self, q: Harness) -> None:
        receiver = Receiver()
        async with listening(receiver) as url:
            await publish(q.http, hooked(url))
            async with deliverer_running(q):
                lead_id = await partner_lead(q)

                async def delivered(n: int) -> bool:
                    r = await q.http.get("/v1/partners/deliveries", params={"lead_id": lead_id})
                    return sum(d["status"] == "delivered" for d in r.json()) == n

                await until(lambda: delivered(1))
                now = datetime.now(UTC)
                data = LeadErasedData(lead_id=lead_id, at=now, by="dpo")
                cause = LeadErased(source="/intake", time=now, subject=lead_id, data=data)
                await q.receive(cause)
                await q.receive(cause)  # redelivered: still one webhook
                await until(lambda: delivered(2))
        routed, erasure = receiver.requests
        assert erasure.signature_ok  # signed as leads are, with the partner's secret
        event = decode_event(erasure.body)
        assert isinstance(event, LeadErased) and event.subject == lead_id
        assert (event.data.lead_id, event.data.at, event.data.by) == (lead_id, cause.data.at, None)
        assert erasure.headers["x-leadflow-event-id"] == event.id
        assert erasure.headers["x-leadflow-delivery-id"] != routed.headers["x-leadflow-delivery-id"]
        listed = (await q.http.get("/v1/partners/deliveries", params={"lead_id": lead_id})).json()
        kinds = sorted((d["event_type"], d["status"], d["last_outcome"]) for d in listed)
        assert kinds == [
            ("lead.erased", "delivered", "http_2xx"),
            ("lead.routed", "delivered", "http_2xx"),
        ]
        # The routed body that held the person is gone; the erasure's holds nobody.
        bodies = {r.event_type: r.payload for r in await q.rows(deliveries)}
        assert bodies["lead.routed"] is None and b"@" not in bodies["lead.erased"]


class TestProduction:
    async def test_refuses_to_start_with_an_unsigned_partner_webhook(
        self, database_url: str, tmp_path: Path
    ) -> None:
        admin, _ = token("admin", Scope.definitions_admin)
        common = CommonSettings(
            mode=Mode.production,
            data_dir=tmp_path,
            kafka_bootstrap_servers="127.0.0.1:1",
            auth_tokens=[admin],
        )
        await asyncio.to_thread(migrate, "qualifier", database_url)
        settings = settings_for(
            database_url, tmp_path, common=common, initial_definition=HERE / "partner-webhook.yaml"
        )
        with pytest.raises(InsecureSettings, match="webstudio"):
            async with serving(create_app(settings)):
                pass
