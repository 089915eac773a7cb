"""Webhook subscriptions (Standard Webhooks) to a real HTTP receiver on 127.0.0.1, on
PostgreSQL: made over the API, owed in the transaction that publishes each event, signed
so the reference library (`standardwebhooks`) accepts them, rotated with an overlap,
retried, parked, listed and replayed; the secret shown once and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from cli.kafka.ports import free_port
from services.qualifier.tables import deliveries, outbox
from shared.events import LeadErased, LeadErasedData, decode_event
from tests.fixtures.qualifier.harness import Harness, qualifier_app
from tests.support import received

FAST = {
    "partner_retry_base_seconds": 0.02,
    "partner_retry_max_seconds": 0.1,
    "partner_poll_seconds": 0.05,
    "partner_max_attempts": 3,
}
SUBSCRIPTIONS = "/v1/webhooks/subscriptions"


@dataclass
class Receiver:
    """A tool's webhook endpoint: answers `status`, keeps what it got."""

    status: int = 200
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"said something"})

    def of_type(self, event_type: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.requests if decode_event(b).type == event_type]


@contextlib.asynccontextmanager
async def listening(app: Receiver) -> AsyncIterator[str]:
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
        yield f"http://127.0.0.1:{port}/hooks/leadflow"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def deliverer_running(q: Harness) -> AsyncIterator[None]:
    task = asyncio.create_task(q.app.state.deliverer.run(q.runtime))
    try:
        yield
    finally:
        q.runtime.stopping.set()
        await asyncio.wait_for(task, 10)


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 30.0) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path, **FAST) as harness:
        yield harness


async def subscribe(q: Harness, url: str, *types: str) -> dict[str, Any]:
    r = await q.http.post(SUBSCRIPTIONS, json={"url": url, "event_types": list(types)})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    return body


async def lead_in(q: Harness) -> str:
    lead = received()
    await q.receive(lead)
    q.app.state.deliverer.wake()
    return lead.subject


async def webhooks(q: Harness, **params: str) -> list[dict[str, Any]]:
    r = await q.http.get("/v1/deliveries", params={"kind": "webhook", **params})
    assert r.status_code == 200, r.text
    listed: list[dict[str, Any]] = r.json()
    return listed


class TestDelivery:
    async def test_a_routed_lead_and_a_stage_change_arrive_signed(self, q: Harness) -> None:
        receiver = Receiver()
        async with listening(receiver) as url:
            made = await subscribe(q, url, "lead.routed", "lead.stage_changed")
            secret = made["secret"]
            async with deliverer_running(q):
                lead_id = await lead_in(q)
                r = await q.http.post(
                    f"/v1/leads/{lead_id}/feedback", json={"decision": "accepted"}
                )
                assert r.status_code == 200, r.text
                r = await q.http.post(f"/v1/leads/{lead_id}/stage", json={"stage": "sql"})
                assert r.status_code == 200, r.text

                async def both() -> bool:
                    return len(receiver.requests) >= 2

                await until(both)
        verifier = Webhook(secret)
        got = {}
        for headers, body in receiver.requests:
            event = verifier.verify(body, headers)  # raises unless valid and fresh
            got[event["type"]] = (headers, body)
        # Only the types subscribed: the feedback (lead.feedback) is not sent.
        assert sorted(got) == ["lead.routed", "lead.stage_changed"]
        assert len(receiver.requests) == 2
        listed = {d["event_type"]: d for d in await webhooks(q, target=made["id"])}
        async with q.runtime.engine.connect() as conn:
            published = dict(
                (await conn.execute(sa.select(outbox.c.event_type, outbox.c.payload))).all()
            )
        for event_type, (headers, body) in got.items():
            delivery = listed[event_type]
            assert headers["webhook-id"] == delivery["id"]
            assert delivery["status"] == "delivered" and delivery["lead_id"] == lead_id
            assert headers["content-type"] == "application/json"
            # The structured CloudEvent, exactly as published to Kafka.
            assert body == published[event_type]
            assert decode_event(body).subject == lead_id

    async def test_nothing_is_owed_to_a_disabled_subscription_or_for_other_types(
        self, q: Harness
    ) -> None:
        made = await subscribe(q, "http://127.0.0.1:9/never", "lead.sla_breached")
        other = await subscribe(q, "http://127.0.0.1:9/never", "lead.routed")
        r = await q.http.patch(f"{SUBSCRIPTIONS}/{other['id']}", json={"disabled": True})
        assert r.status_code == 200 and r.json()["disabled_at"] is not None
        await q.receive(received())
        assert await q.rows(deliveries, deliveries.c.kind == "webhook") == []
        # Enabled again, it gets what is published from then on.
        r = await q.http.patch(f"{SUBSCRIPTIONS}/{other['id']}", json={"disabled": False})
        assert r.json()["disabled_at"] is None
        await q.receive(received())
        (row,) = await q.rows(deliveries, deliveries.c.kind == "webhook")
        assert (row.target_id, row.event_type) == (other["id"], "lead.routed")
        assert made["id"] != other["id"]

    async def test_a_redelivered_event_owes_each_subscription_once(self, q: Harness) -> None:
        first = await subscribe(q, "http://127.0.0.1:9/a", "lead.routed")
        second = await subscribe(q, "http://127.0.0.1:9/b", "lead.routed")
        lead = received()
        await q.receive(lead)
        await q.receive(lead)  # Kafka redelivers
        rows = await q.rows(deliveries, deliveries.c.kind == "webhook")
        assert sorted(r.target_id for r in rows) == sorted([first["id"], second["id"]])
        assert len({r.event_id for r in rows}) == 1 and len({r.id for r in rows}) == 2

    async def test_an_erasure_cancels_what_is_owed_and_tells_who_wants_to_know(
        self, q: Harness
    ) -> None:
        routed = await subscribe(q, "http://127.0.0.1:9/never", "lead.routed")
        erased = await subscribe(q, "http://127.0.0.1:9/never", "lead.erased")
        lead = received()
        await q.receive(lead)
        await q.receive(
            LeadErased(
                source="/intake",
                time=lead.time,
                subject=lead.subject,
                data=LeadErasedData(lead_id=lead.subject, at=lead.time),
            )
        )
        (sent,) = await webhooks(q, target=routed["id"])
        assert sent["status"] == "cancelled"
        (row,) = await q.rows(deliveries, deliveries.c.id == sent["id"])
        assert row.payload is None  # the person's data goes with it
        (notice,) = await webhooks(q, target=erased["id"])
        assert (notice["status"], notice["event_type"]) == ("pending", "lead.erased")


class TestRetries:
    async def test_a_failing_receiver_is_retried_parked_and_replayed(self, q: Harness) -> None:
        receiver = Receiver(status=500)
        async with listening(receiver) as url:
            made = await subscribe(q, url, "lead.routed")
            async with deliverer_running(q):
                await lead_in(q)

                async def parked() -> bool:
                    return len(await webhooks(q, status="failed")) == 1

                await until(parked)
                (failed,) = await webhooks(q, status="failed")
                assert (failed["attempts"], failed["last_status_code"]) == (3, 500)
                assert (failed["last_outcome"], failed["last_error"]) == ("http_5xx", "HTTP 500")
                assert len(receiver.requests) == 3
                # The same id on every attempt: the receiver de-duplicates on it.
                assert {h["webhook-id"] for h, _ in receiver.requests} == {failed["id"]}
                got = await q.http.get(f"{SUBSCRIPTIONS}/{made['id']}")
                assert got.json()["deliveries"]["failed"] == 1
                assert got.json()["deliveries"]["last_error"] == "HTTP 500"

                receiver.status = 204
                r = await q.http.post(f"/v1/deliveries/{failed['id']}/retry")
                assert r.status_code == 202, r.text

                async def delivered() -> bool:
                    one = await q.http.get(f"/v1/deliveries/{failed['id']}")
                    return bool(one.json()["status"] == "delivered")

                await until(delivered)
        assert "said something" not in (await q.http.get("/v1/deliveries")).text
        headers, body = receiver.requests[-1]
        Webhook(made["secret"]).verify(body, headers)

    async def test_gone_disables_the_subscription(self, q: Harness) -> None:
        receiver = Receiver(status=410)
        async with listening(receiver) as url:
            made = await subscribe(q, url, "lead.routed")
            async with deliverer_running(q):
                await lead_in(q)

                async def parked() -> bool:
                    return len(await webhooks(q, status="failed")) == 1

                await until(parked)
        assert len(receiver.requests) == 1  # a 410 is not retried
        got = (await q.http.get(f"{SUBSCRIPTIONS}/{made['id']}")).json()
        assert got["disabled_at"] is not None


class TestRotation:
    async def test_the_old_secret_signs_too_until_the_overlap_ends(self, q: Harness) -> None:
        receiver = Receiver()
        async with listening(receiver) as url:
            made = await subscribe(q, url, "lead.routed")
            old = made["secret"]
            r = await q.http.post(f"{SUBSCRIPTIONS}/{made['id']}/rotate-secret?overlap_hours=2")
            assert r.status_code == 200, r.text
            assert r.headers["cache-control"] == "no-store"
            new = r.json()["secret"]
            assert new.startswith("whsec_") and new != old
            shown = (await q.http.get(f"{SUBSCRIPTIONS}/{made['id']}")).json()
            assert shown["previous_secret_valid_until"] == r.json()["previous_secret_valid_until"]
            async with deliverer_running(q):
                await lead_in(q)

                async def arrived() -> bool:
                    return len(receiver.requests) == 1

                await until(arrived)
            headers, body = receiver.requests[0]
            assert len(headers["webhook-signature"].split(" ")) == 2
            Webhook(new).verify(body, headers)
            Webhook(old).verify(body, headers)  # a receiver not switched yet still accepts

            # An overlap of 0: the old secret stops signing at once.
            r = await q.http.post(f"{SUBSCRIPTIONS}/{made['id']}/rotate-secret?overlap_hours=0")
            newest = r.json()["secret"]
            q.runtime.stopping.clear()
            async with deliverer_running(q):
                await lead_in(q)

                async def again() -> bool:
                    return len(receiver.requests) == 2

                await until(again)
        headers, body = receiver.requests[1]
        assert len(headers["webhook-signature"].split(" ")) == 1
        Webhook(newest).verify(body, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(new).verify(body, headers)

    async def test_the_overlap_is_bounded(self, q: Harness) -> None:
        made = await subscribe(q, "http://127.0.0.1:9/x", "lead.routed")
        r = await q.http.post(f"{SUBSCRIPTIONS}/{made['id']}/rotate-secret?overlap_hours=169")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "overlap_hours"]
        assert (await q.http.post(f"{SUBSCRIPTIONS}/nope/rotate-secret")).status_code == 404


class TestTheApi:
    async def test_a_bad_event_type_or_url_is_named(self, q: Harness) -> None:
        cases: list[tuple[dict[str, Any], list[Any], str]] = [
            (
                {"event_types": ["lead.routed", "lead.nope"]},
                ["body", "event_types", 1],
                "lead.nope",
            ),
            ({"event_types": ["lead.received"]}, ["body", "event_types", 0], "lead.received"),
            ({"event_types": []}, ["body", "event_types"], ""),
            ({"url": "ftp://files.example/x"}, ["body", "url"], "http"),
            ({"url": "http://169.254.169.254/latest"}, ["body", "url"], "public addresses"),
            ({"url": "http://10.0.0.7/hook"}, ["body", "url"], "public addresses"),
        ]
        for change, loc, said in cases:
            body = {"url": "https://tool.example/hook", "event_types": ["lead.routed"]} | change
            r = await q.http.post(SUBSCRIPTIONS, json=body)
            assert r.status_code == 422, (change, r.text)
            (problem,) = r.json()["detail"]
            assert problem["loc"] == loc and said in problem["msg"], (change, problem)
        made = await subscribe(q, "https://tool.example/hook", "lead.routed")
        r = await q.http.patch(f"{SUBSCRIPTIONS}/{made['id']}", json={"event_types": ["x.y"]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "event_types", 0]
        r = await q.http.patch(f"{SUBSCRIPTIONS}/{made['id']}", json={"url": "http://127.0.0.2/"})
        assert r.status_code == 200  # dev mode allows loopback (local receivers)
        r = await q.http.patch(f"{SUBSCRIPTIONS}/{made['id']}", json={"url": "http://[fe80::1]/"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "url"]
        assert await q.rows(deliveries) == []

    async def test_the_secret_is_shown_once_and_never_logged(
        self, q: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        receiver = Receiver(status=400)
        async with listening(receiver) as url:
            made = await subscribe(q, url, "lead.routed", "lead.contacted")
            secret = made["secret"]
            rotated = await q.http.post(f"{SUBSCRIPTIONS}/{made['id']}/rotate-secret")
            async with deliverer_running(q):
                await lead_in(q)

                async def parked() -> bool:
                    return len(await webhooks(q, status="failed")) == 1

                await until(parked)
        answers = [
            await q.http.get(SUBSCRIPTIONS),
            await q.http.get(f"{SUBSCRIPTIONS}/{made['id']}"),
            await q.http.patch(f"{SUBSCRIPTIONS}/{made['id']}", json={"description": "BI"}),
            await q.http.get("/v1/deliveries"),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert "whsec_" not in answer.text and secret not in answer.text
        (listed,) = answers[0].json()
        assert listed["event_types"] == ["lead.routed", "lead.contacted"]
        assert listed["description"] == "BI" or answers[2].json()["description"] == "BI"
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "whsec_" not in logged
        assert secret not in logged and rotated.json()["secret"] not in logged

    async def test_delete(self, q: Harness) -> None:
        made = await subscribe(q, "http://127.0.0.1:9/never", "lead.routed")
        await q.receive(received())
        assert (await q.http.delete(f"{SUBSCRIPTIONS}/{made['id']}")).status_code == 204
        assert (await q.http.delete(f"{SUBSCRIPTIONS}/{made['id']}")).status_code == 404
        assert (await q.http.get(f"{SUBSCRIPTIONS}/{made['id']}")).status_code == 404
        assert (await q.http.get(SUBSCRIPTIONS)).json() == []
        # What was owed stays listed, and is parked by the deliverer in our words.
        await q.app.state.deliverer.deliver_due(q.runtime.engine)
        (parked,) = await webhooks(q, target=made["id"])
        assert (parked["status"], parked["last_error"]) == (
            "failed",
            "the subscription was deleted",
        )
