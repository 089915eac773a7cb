"""The delivery list of every kind: the deliverer hands each leased row to the sender of
its kind, keeps the lease/retry/park rules for all of them, honours a receiver's
Retry-After, and `/v1/deliveries` lists, shows and replays them; an erasure cancels what
holds the person whatever the kind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.qualifier.consumer import make_handler
from services.qualifier.deliveries import repository
from services.qualifier.deliveries.deliverer import AttemptResult, Deliverer
from services.qualifier.tables import deliveries
from shared.db import AnyRow, utcnow
from shared.delivery import Delivered
from shared.events import TOPIC_RECEIVED
from tests.fixtures.qualifier.harness import BI_AUTH, CRM_AUTH, Harness, qualifier_app
from tests.support import received

DELIVERED = AttemptResult("http_2xx", 200, None, permanent=False)
REFUSED = AttemptResult("crm_refused", 400, "the CRM refused the record", permanent=True)
BUSY = AttemptResult("crm_unavailable", 429, "rate-limited", permanent=False, retry_after=600)


@pytest.fixture
async def q(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with qualifier_app(database_url, tmp_path) as harness:
        yield harness


class Recording:
    """A sender that answers what it is told and remembers what it was handed."""

    def __init__(self, *answers: AttemptResult) -> None:
        self.answers = list(answers)
        self.seen: list[AnyRow] = []

    async def __call__(self, row: AnyRow) -> AttemptResult:
        self.seen.append(row)
        return self.answers.pop(0)


async def owe(q: Harness, **fields: Any) -> str:
    delivery_id = str(uuid.uuid4())
    row = {
        "delivery_id": delivery_id,
        "lead_id": "lead-1",
        "target_id": "kommo-main",
        "event_id": str(uuid.uuid4()),
        "url": None,
        "payload": b"{}",
        "now": utcnow(),
        "kind": "crm",
        "operation": "push",
    } | fields
    async with q.runtime.engine.begin() as conn:
        await repository.insert_deliveries(conn, [repository.delivery_row(**row)])
    return delivery_id


async def one(q: Harness, delivery_id: str) -> Any:
    (found,) = await q.rows(deliveries, deliveries.c.id == delivery_id)
    return found


async def test_each_kind_goes_to_its_own_sender(q: Harness) -> None:
    crm, webhook = Recording(DELIVERED), Recording(DELIVERED)
    pushed = await owe(q)
    hooked = await owe(q, kind="webhook", target_id="sub-1", operation=None, url="https://w.test/")
    deliverer = Deliverer(q.settings, {"crm": crm})
    deliverer.register("webhook", webhook)
    assert await deliverer.deliver_due(q.runtime.engine) == 2
    (row,) = crm.seen
    assert (row.id, row.kind, row.target_id, row.operation, row.url, row.attempts) == (
        pushed,
        "crm",
        "kommo-main",
        "push",
        None,
        1,
    )
    assert [r.id for r in webhook.seen] == [hooked]
    assert (await one(q, pushed)).status == (await one(q, hooked)).status == "delivered"


async def test_a_kind_nobody_sends_is_parked_not_lost(q: Harness) -> None:
    delivery_id = await owe(q)
    await Deliverer(q.settings, {}).deliver_due(q.runtime.engine)
    found = await one(q, delivery_id)
    assert (found.status, found.last_outcome) == ("failed", "no_sender")


async def test_a_sender_that_raises_is_a_failed_attempt_retried_later(q: Harness) -> None:
    async def broken(row: AnyRow) -> AttemptResult:
        raise ValueError("a body with a person: ann@example.com")

    delivery_id = await owe(q)
    await Deliverer(q.settings, {"crm": broken}).deliver_due(q.runtime.engine)
    found = await one(q, delivery_id)
    assert (found.status, found.last_outcome) == ("pending", "sender_error")
    assert "ann@example.com" not in (found.last_error or "")


async def test_retry_after_holds_the_next_attempt_back(q: Harness) -> None:
    delivery_id = await owe(q)
    before = utcnow()
    await Deliverer(q.settings, {"crm": Recording(BUSY)}).deliver_due(q.runtime.engine)
    found = await one(q, delivery_id)
    assert (found.status, found.last_status_code, found.last_error) == (
        "pending",
        429,
        "rate-limited",
    )
    # The backoff alone would be seconds (retry base 5 s); the receiver asked for 600.
    assert found.next_attempt_at >= before + timedelta(seconds=600)


async def test_the_list_shows_filters_and_replays_every_kind(q: Harness) -> None:
    parked = await owe(q)
    await owe(q, kind="webhook", target_id="sub-1", operation=None, url="https://w.test/")
    sender = Recording(REFUSED, DELIVERED)
    deliverer = Deliverer(q.settings, {"crm": sender, "webhook": Recording(DELIVERED)})
    await deliverer.deliver_due(q.runtime.engine)

    r = await q.http.get("/v1/deliveries", params={"status": "failed"})
    assert r.status_code == 200, r.text
    (listed,) = r.json()
    assert listed["id"] == parked
    assert (listed["kind"], listed["target_id"], listed["operation"], listed["url"]) == (
        "crm",
        "kommo-main",
        "push",
        None,
    )
    assert (listed["last_outcome"], listed["last_error"]) == (
        "crm_refused",
        "the CRM refused the record",
    )
    kinds = [d["kind"] for d in (await q.http.get("/v1/deliveries")).json()]
    assert sorted(kinds) == ["crm", "webhook"]
    webhooks = (await q.http.get("/v1/deliveries", params={"kind": "webhook"})).json()
    assert [d["target_id"] for d in webhooks] == ["sub-1"]
    assert (await q.http.get("/v1/deliveries", params={"target": "nope"})).json() == []
    assert (await q.http.get("/v1/deliveries", params={"kind": "fax"})).status_code == 422
    # A CRM push is not a partner's: the partners' list (kept one release) does not show it.
    assert (await q.http.get(f"/v1/partners/deliveries/{parked}")).status_code == 404

    r = await q.http.post(f"/v1/deliveries/{parked}/retry")
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["attempts"]) == ("pending", 0)
    assert (await q.http.post(f"/v1/deliveries/{parked}/retry")).status_code == 409
    assert (await q.http.post("/v1/deliveries/nope/retry")).status_code == 404
    await deliverer.deliver_due(q.runtime.engine)
    assert (await q.http.get(f"/v1/deliveries/{parked}")).json()["status"] == "delivered"
    assert (await q.http.get("/v1/deliveries/nope")).status_code == 404


async def test_the_list_is_for_admins(q: Harness) -> None:
    for auth in (CRM_AUTH, BI_AUTH):
        assert (await q.http.get("/v1/deliveries", headers=auth)).status_code == 403
    r = await q.http.get("/v1/deliveries", headers={"Authorization": "Bearer x"})
    assert r.status_code == 401


async def test_a_summary_per_target(q: Harness) -> None:
    refused, delivered, _pending = await owe(q), await owe(q), await owe(q)
    await owe(q, target_id="bitrix-main")
    answers = {refused: REFUSED, delivered: DELIVERED}

    async def sender(row: AnyRow) -> AttemptResult:
        return answers.get(row.id, BUSY)

    await Deliverer(q.settings, {"crm": sender}).deliver_due(q.runtime.engine)
    async with q.runtime.engine.connect() as conn:
        got = await repository.summary(conn, "crm", "kommo-main")
        empty = await repository.summary(conn, "crm", "hubspot")
    assert isinstance(got.pop("last_delivered_at"), datetime)
    assert got == {
        "pending": 1,
        "delivered": 1,
        "failed": 1,
        "cancelled": 0,
        "last_error": got["last_error"],
    }
    assert got["last_error"] in {"rate-limited", "the CRM refused the record"}
    assert empty == dict.fromkeys(("pending", "delivered", "failed", "cancelled"), 0) | {
        "last_error": None,
        "last_delivered_at": None,
    }


async def test_an_erasure_cancels_what_holds_the_person_whatever_the_kind(q: Harness) -> None:
    push = await owe(q, lead_id="lead-9")
    hook = await owe(
        q, lead_id="lead-9", kind="webhook", target_id="s", operation=None, url="https://w/"
    )
    partner = await owe(
        q, lead_id="lead-9", kind="partner", target_id="p", operation=None, url="https://p/"
    )
    erase = await owe(q, lead_id="lead-9", operation="erase", payload=None)
    notice = await owe(
        q,
        lead_id="lead-9",
        kind="partner",
        target_id="p",
        operation=None,
        url="https://p/",
        event_type="lead.erased",
    )
    other = await owe(q, lead_id="lead-8")
    async with q.runtime.engine.begin() as conn:
        await repository.cancel_deliveries_of(conn, "lead-9", utcnow())
    for cancelled in (push, hook, partner):
        found = await one(q, cancelled)
        assert (found.status, found.payload) == ("cancelled", None)
    for kept in (erase, notice, other):
        assert (await one(q, kept)).status == "pending"
    assert (await q.http.post(f"/v1/deliveries/{hook}/retry")).status_code == 409


async def test_a_consumer_batch_wakes_the_deliverer_only_when_it_owes_deliveries(
    q: Harness,
) -> None:
    """A decision that owes nothing leaves the deliverer asleep (a wake costs it two
    queries); one that owes a subscription's webhook wakes it once committed, whatever
    the route (no partner here); a redelivered batch owes nothing new."""
    woken: list[bool] = []
    handle = make_handler(q.runtime, after_commit=lambda: woken.append(True))
    await handle([Delivered(received(), TOPIC_RECEIVED, 0, 0)])  # routed to sales
    assert woken == []
    r = await q.http.post(
        "/v1/webhooks/subscriptions",
        json={"url": "https://tool.example/hook", "event_types": ["lead.routed"]},
    )
    assert r.status_code == 201, r.text
    lead = received()
    await handle([Delivered(lead, TOPIC_RECEIVED, 0, 0)])
    assert woken == [True]
    async with q.runtime.engine.connect() as conn:
        owed = (
            await conn.execute(
                sa.select(deliveries.c.kind).where(deliveries.c.lead_id == lead.data.lead_id)
            )
        ).all()
    assert [row.kind for row in owed] == ["webhook"]
    await handle([Delivered(lead, TOPIC_RECEIVED, 0, 0)])  # redelivered: nothing new
    assert woken == [True]
