"""Crypto-shredding end to end (issue 20): after an erasure no topic holds the person
readably, another lead still opens with its key, and the KPI numbers, live and rebuilt
from the topics, are those from before.

Leads go through the real stack (`leadflow up`): one to primary processing, briefed, then
to sales and lost; one won and paid; one rejected by sales; one nurtured. A lifecycle event
whose data names another lead than its subject (a faulty producer) is parked by the KPI on
the dead-letter topic as it was read, sealed fields and all. The payment-in-another-
currency route cannot be taken through the API (the qualifier refuses other currencies)
and would park no personal field anyway.

Every topic is then read from the beginning with a plain aiokafka consumer, and the raw
bytes (key, value, headers) and everything intake's `POST /v1/keys:batch` still opens are
searched for each of the person's values.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import httpx
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from shared.crypto import LeadKey, is_sealed
from shared.events import TOPIC_DEADLETTER, TOPIC_LIFECYCLE, TOPIC_RECEIVED, TOPIC_ROUTED
from shared.keys import parse_keys
from tests.e2e.conftest import Stack
from tests.support import DEV_AUTH, event_of, header, lead_payload, read_to_end

pytestmark = pytest.mark.e2e

TOPICS = (TOPIC_RECEIVED, TOPIC_ROUTED, TOPIC_LIFECYCLE, TOPIC_DEADLETTER)
Record: TypeAlias = ConsumerRecord[bytes, bytes]


async def _until(check: Callable[[], Awaitable[Any]], what: str, seconds: float = 90) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: not within {seconds:g}s")


async def _kpi(http: httpx.AsyncClient, stack: Stack) -> dict[str, Any]:
    """The summary and the funnel over the days these leads fall in."""
    today = datetime.now(UTC).date()
    params = {"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))}
    numbers: dict[str, Any] = {}
    for name in ("summary", "funnel"):
        r = await http.get(f"{stack.urls['kpi']}/v1/kpi/{name}", params=params)
        assert r.status_code == 200, r.text
        numbers[name] = r.json()
    return numbers


async def _keys(http: httpx.AsyncClient, stack: Stack, lead_ids: set[str]) -> dict[str, Any]:
    """Intake's key endpoint, as a subscriber with `keys:read` calls it."""
    r = await http.post(
        f"{stack.urls['intake']}/v1/keys:batch", json={"lead_ids": sorted(lead_ids)}
    )
    assert r.status_code == 200, r.text
    return r.json()


def _person(tag: str) -> dict[str, str]:
    """Someone whose every value is found by `tag` (or the phone's digits) in any text."""
    name = f"Zyx{tag} Erasova"
    phone = "+7916" + "".join(random.choices("0123456789", k=7))
    return {
        "name": name,
        "email": f"zyx{tag}@shred.example",
        "phone": phone,
        "company": f"Zyx{tag} Holdings",
        "job_title": f"Head of Zyx{tag} marketing",
        "message": f"Please call {name} on {phone} about an SEO audit",
        "page_url": f"https://acme.example/landing?email=zyx{tag}%40shred.example&gclid=gc{tag}",
        "referrer": f"https://search.example/?q=zyx{tag}+seo",
    }


async def _post_lead(http: httpx.AsyncClient, stack: Stack, body: dict[str, Any]) -> str:
    r = await http.post(f"{stack.urls['intake']}/v1/leads", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["lead_id"])


async def _routed(http: httpx.AsyncClient, stack: Stack, lead_id: str, route: str) -> None:
    async def check() -> bool:
        r = await http.get(f"{stack.urls['qualifier']}/v1/leads/{lead_id}")
        return r.status_code == 200 and r.json()["route"] == route

    await _until(check, f"lead routed to {route}")


async def _step(
    http: httpx.AsyncClient, stack: Stack, lead_id: str, path: str, body: dict[str, Any]
) -> None:
    r = await http.post(f"{stack.urls['qualifier']}/v1/leads/{lead_id}/{path}", json=body)
    assert r.status_code in (200, 201), f"{path}: {r.text}"


async def _topics(stack: Stack) -> dict[str, list[Record]]:
    return {topic: await read_to_end(stack.kafka, topic) for topic in TOPICS}


def _raw(record: Record) -> str:
    """Everything a reader of the record gets, as text: key, value and headers."""
    parts = [record.key or b"", record.value or b""]
    parts += [k.encode() + b"=" + v for k, v in record.headers]
    return b"\n".join(parts).decode(errors="replace")


def _readable(text: str, values: dict[str, str], tag: str) -> set[str]:
    """Which of the person's values the text holds (the tag catches any part of them)."""
    found = {field for field, value in values.items() if value in text}
    if tag.lower() in text.lower():
        found.add("tag")
    digits = values["phone"][2:]  # 916xxxxxxx: the phone written any way
    if digits in text.replace(" ", "").replace("-", ""):
        found.add("phone")
    return found


def _opened(record: Record, keys: dict[str, LeadKey]) -> str:
    """The record as a subscriber holding `keys` reads it: its sealed fields opened where
    a live key opens them (what no key opens is left out)."""
    try:
        return event_of(record, keys).model_dump_json()
    except Exception:  # not a Leadflow event at all: its raw bytes are what can be read
        return (record.value or b"").decode(errors="replace")


def _sealed_fields(record: Record) -> int:
    try:
        data = json.loads(record.value or b"").get("data")
    except (ValueError, AttributeError):
        return 0
    return sum(1 for v in data.values() if is_sealed(v)) if isinstance(data, dict) else 0


async def test_an_erased_person_is_unreadable_on_every_topic_and_the_kpi_holds(
    stack: Stack,
) -> None:
    tag = uuid.uuid4().hex[:12]
    person = _person(tag)
    kept = _person(uuid.uuid4().hex[:12])
    async with httpx.AsyncClient(headers=DEV_AUTH, timeout=15) as http:
        # The person: no budget, so primary processing first; a brief (naming them) sends
        # them to sales, who take them and then lose the deal with a reason naming them.
        body = lead_payload(**person)
        del body["budget"]
        erased_id = await _post_lead(http, stack, body)
        # Another lead, won and paid: it must stay readable to whoever holds its key.
        kept_id = await _post_lead(http, stack, lead_payload(**kept))
        rejected_id = await _post_lead(http, stack, lead_payload())
        nurtured_id = await _post_lead(
            http,
            stack,
            lead_payload(
                role_in_purchase="other",
                company_size="2-10",
                timeframe="6-12 months",
                industry="other",
            ),
        )
        await _routed(http, stack, erased_id, "processing")
        brief_note = f"{person['name']} prefers calls at {person['phone']}"
        await _step(http, stack, erased_id, "contact", {"by": "vera"})
        await _step(
            http, stack, erased_id, "brief", {"answers": {"budget": 200000, "note": brief_note}}
        )
        await _routed(http, stack, erased_id, "sales")
        lost_reason = f"{person['name']} chose another agency"
        for path, step in [
            ("feedback", {"decision": "accepted"}),
            ("stage", {"stage": "sql"}),
            ("stage", {"stage": "demo_held", "reason": f"demo with {person['name']}"}),
            ("stage", {"stage": "lost", "reason": lost_reason}),
        ]:
            await _step(http, stack, erased_id, path, step)
        await _routed(http, stack, kept_id, "sales")
        await _step(http, stack, kept_id, "contact", {"by": "vera"})
        await _step(http, stack, kept_id, "feedback", {"decision": "accepted"})
        for stage in ("sql", "demo_held", "proposal_sent", "contract_sent", "won"):
            await _step(http, stack, kept_id, "stage", {"stage": stage})
        await _step(
            http, stack, kept_id, "payments", {"amount": "150000", "payment_id": uuid.uuid4().hex}
        )
        await _routed(http, stack, rejected_id, "sales")
        await _step(http, stack, rejected_id, "contact", {})
        await _step(
            http, stack, rejected_id, "feedback", {"decision": "rejected", "reason": "too small"}
        )
        await _routed(http, stack, nurtured_id, "nurture")

        # A faulty producer re-sends the person's lost-deal event naming another lead in
        # its data: the KPI parks it on the dead-letter topic as read, its reason sealed.
        lifecycle = await read_to_end(stack.kafka, TOPIC_LIFECYCLE)
        lost = next(
            r
            for r in lifecycle
            if r.key == erased_id.encode()
            and header(r, "ce_type") == "lead.stage_changed"
            and b'"stage":"lost"' in (r.value or b"")
        )
        mislabelled = json.loads(lost.value or b"")
        mislabelled["data"]["lead_id"] = str(uuid.uuid4())
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)
        await producer.start()
        try:
            await producer.send_and_wait(
                TOPIC_LIFECYCLE,
                json.dumps(mislabelled).encode(),
                key=lost.key,
                headers=list(lost.headers),
            )
        finally:
            await producer.stop()

        async def parked() -> Record | None:
            for r in await read_to_end(stack.kafka, TOPIC_DEADLETTER):
                if r.key == erased_id.encode() and header(r, "dlq_service") == "kpi":
                    return r
            return None

        parked_copy: Record = await _until(parked, "the mislabelled event parked")

        async def settled() -> dict[str, Any] | None:
            numbers = await _kpi(http, stack)
            s = {k: v["value"] for k, v in numbers["summary"]["metrics"].items()}
            done = (s["leads_received"], s["sal"], s["sales_rejected"], s["deals_won"]) == (
                4,
                2,
                1,
                1,
            ) and (s["deals_lost"], s["payments_count"]) == (1, 1)
            return numbers if done else None

        await _until(settled, "the KPI counting every step")
        await asyncio.sleep(1.0)  # anything in flight lands before the numbers are taken
        before = await _kpi(http, stack)

        # Before the erasure the person is on the topics, sealed: no byte reads them, their
        # key opens them (in the dead-letter copy too).
        topics = await _topics(stack)
        leads = {r.key.decode() for rs in topics.values() for r in rs if r.key}
        answer = await _keys(http, stack, leads)
        live = parse_keys(answer)
        assert erased_id in live and kept_id in live
        raw_before = [
            (t, header(r, "ce_type"), f)
            for t, rs in topics.items()
            for r in rs
            for f in _readable(_raw(r), person, tag)
        ]
        assert not raw_before, f"the person in clear on a topic: {raw_before[:5]}"
        opened_before = {
            f
            for rs in topics.values()
            for r in rs
            for f in _readable(_opened(r, live), person, tag)
        }
        assert set(person) <= opened_before, "the key did not open every field of the person"
        assert event_of(parked_copy, live).data.reason == lost_reason  # type: ignore[union-attr]

        erased = await http.delete(f"{stack.urls['intake']}/v1/leads/{erased_id}/personal-data")
        assert erased.status_code == 200, erased.text

        async def forgotten() -> bool:
            view = await http.get(f"{stack.urls['qualifier']}/v1/leads/{erased_id}")
            return tag not in view.text.lower()

        await _until(forgotten, "the qualifier forgetting the person")
        await asyncio.sleep(1.0)
        after_erasure = await _kpi(http, stack)

        topics = await _topics(stack)
        leads = {r.key.decode() for rs in topics.values() for r in rs if r.key}
        answer = await _keys(http, stack, leads)
        live = parse_keys(answer)
        assert erased_id in answer["destroyed"] and erased_id not in live
        readable: Counter[str] = Counter()
        for records in topics.values():
            for r in records:
                readable.update(_readable(_raw(r), person, tag))
                readable.update(_readable(_opened(r, live), person, tag))
        sealed = {t: sum(_sealed_fields(r) for r in rs) for t, rs in topics.items()}
        erased_sealed = sum(
            _sealed_fields(r) for rs in topics.values() for r in rs if r.key == erased_id.encode()
        )
        # The other lead's sealed fields still open with its key from the key endpoint.
        kept_received = next(
            event_of(r, live)
            for r in topics[TOPIC_RECEIVED]
            if r.key == kept_id.encode() and header(r, "ce_type") == "lead.received"
        )
        kept_data = kept_received.data
        opened_kept = {f: getattr(kept_data, f) for f in ("name", "email", "company", "page_url")}
        assert opened_kept == {f: kept[f] for f in opened_kept}
        assert _sealed_fields(
            next(r for r in topics[TOPIC_RECEIVED] if r.key == kept_id.encode())
        ) >= len(kept)

        # The KPI folded from the topics again, into a new generation.
        r = await http.post(f"{stack.urls['kpi']}/v1/admin/rebuild")
        assert r.status_code == 202, r.text
        status_url = f"{stack.urls['kpi']}{r.headers['location']}"

        async def rebuilt() -> bool:
            status = (await http.get(status_url)).json()
            assert status["status"] in ("running", "done"), status
            return bool(status["status"] == "done")

        await _until(rebuilt, "the KPI rebuild", 180)
        after_rebuild = await _kpi(http, stack)

    print(
        "\ncrypto-shredding: records read per topic "
        + ", ".join(f"{t} {len(rs)}" for t, rs in topics.items())
        + f"; sealed fields {sum(sealed.values())} ("
        + ", ".join(f"{t} {n}" for t, n in sealed.items())
        + f"), {erased_sealed} of them the erased person's; the person's values readable "
        + f"before erasure with their key {len(opened_before & set(person))} of {len(person)}, "
        + f"after erasure {len(readable)}; KPI numbers identical after erasure "
        + f"{after_erasure == before} and after rebuild {after_rebuild == before}"
    )
    assert not readable, f"the erased person still readable: {dict(readable)}"
    assert sum(len(rs) for rs in topics.values()) > 0 and erased_sealed > 0
    assert after_erasure == before, "the erasure changed the KPI numbers"
    assert after_rebuild == before, "a rebuild after the erasure gave other numbers"
