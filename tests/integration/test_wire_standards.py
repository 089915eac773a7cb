"""The wire as the standards read it: the CloudEvents SDK decodes every record the relay
publishes, each read in the content mode the CloudEvents Kafka binding assigns it, and
every time on the wire is UTC, whatever offset a caller sent."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, from_structured
from cloudevents.core.formats.json import JSONFormat
from sqlalchemy.ext.asyncio import AsyncEngine

from services.qualifier.tables import metadata, outbox
from shared.db import create_engine
from shared.events import LEAD_TOPICS, TOPIC_LIFECYCLE, TOPIC_OF_TYPE, _Envelope
from shared.kafka import ensure_topics, make_producer
from shared.outbox import OutboxRelay, add_to_outbox
from tests.fixtures.qualifier.harness import qualifier_app
from tests.support import read_topic, received
from tests.wire_samples import one_of_each_type

MSK = timezone(timedelta(hours=3))


def binding_read(record: ConsumerRecord[bytes, bytes]) -> BaseCloudEvent:
    """A record as a CloudEvents receiver reads it (Kafka binding, section 3): structured
    mode when its `content-type` header starts with `application/cloudevents`, else binary."""
    headers = {name: value for name, value in record.headers}
    message = KafkaMessage(headers=headers, key=record.key, value=record.value or b"")
    content_type = headers.get("content-type", b"").decode().lower()
    if content_type.startswith("application/cloudevents"):
        return from_structured(message, JSONFormat())
    return from_binary(message, JSONFormat())


async def relay_all(engine: AsyncEngine, bootstrap: str) -> None:
    """What the outbox holds, published by the real relay."""
    producer = make_producer(bootstrap, "test-wire-relay")
    await producer.start()
    try:
        relay = OutboxRelay(service="test", engine=engine, table=outbox, producer=producer)
        while await relay.publish_batch():
            pass
    finally:
        await producer.stop()


async def records_of(
    bootstrap: str, lead_id: str, events: Sequence[_Envelope]
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of `events` (one lead's), read back from each topic they went to."""
    found: list[ConsumerRecord[bytes, bytes]] = []
    for topic in LEAD_TOPICS:
        count = sum(1 for e in events if e.topic == topic)
        if count:
            found += await read_topic(bootstrap, topic, lambda r: r.key == lead_id.encode(), count)
    return found


def assert_same_event(decoded: BaseCloudEvent, event: _Envelope, value: bytes) -> None:
    assert decoded.get_specversion() == "1.0"
    assert (decoded.get_id(), decoded.get_type()) == (event.id, event.type)
    assert (decoded.get_source(), decoded.get_subject()) == (event.source, event.subject)
    assert decoded.get_datacontenttype() == "application/json"
    assert decoded.get_data() == json.loads(value)["data"]
    time = decoded.get_time()
    assert time is not None and time == event.time and time.utcoffset() == timedelta(0)


async def test_the_cloudevents_sdk_reads_every_event_type_off_the_topics(
    database_url: str, kafka_bootstrap: str
) -> None:
    await ensure_topics(kafka_bootstrap, 6)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        events = one_of_each_type(datetime(2026, 10, 15, 15, 0, tzinfo=MSK))
        async with engine.begin() as conn:
            await add_to_outbox(conn, outbox, events)
        await relay_all(engine, kafka_bootstrap)
    finally:
        await engine.dispose()

    records = await records_of(kafka_bootstrap, events[0].subject, events)
    by_id = {e.id: e for e in events}
    assert len(records) == len(events)
    for record in records:
        decoded = binding_read(record)
        event = by_id[decoded.get_id()]
        assert record.topic == TOPIC_OF_TYPE[event.type]
        assert_same_event(decoded, event, record.value or b"")
        assert json.loads(record.value or b"")["time"].endswith("Z")


async def test_lifecycle_times_sent_with_an_offset_go_out_in_utc(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A sales tool reports `at` as +03:00: the events on `leads.lifecycle` say UTC, in
    the envelope's `time` and in `data.at`, read by the CloudEvents SDK."""
    await ensure_topics(kafka_bootstrap, 6)
    async with qualifier_app(database_url, tmp_path) as q:
        lead = received(occurred_at=datetime(2026, 10, 15, 9, 0, tzinfo=UTC))
        await q.receive(lead)
        lead_id = lead.subject
        stages = enumerate(["sql", "demo_held", "proposal_sent", "contract_sent", "won"])
        calls: list[tuple[str, dict[str, Any]]] = [
            ("contact", {"at": "2026-10-15T15:30:00+03:00"}),
            ("feedback", {"decision": "accepted", "at": "2026-10-15T16:00:00+03:00"}),
            *[("stage", {"stage": s, "at": f"2026-10-{16 + i}T10:00:00+03:00"}) for i, s in stages],
            ("payments", {"amount": "1500.00", "at": "2026-10-21T11:00:00+03:00"}),
        ]
        for call, body in calls:
            r = await q.http.post(f"/v1/leads/{lead_id}/{call}", json=body)
            assert r.is_success, r.text
        written = [e for e in await q.events(lead_id=lead_id) if e.topic == TOPIC_LIFECYCLE]
        await relay_all(q.runtime.engine, kafka_bootstrap)

    moves = ["lead.stage_changed"] * 5
    assert [e.type for e in written] == [
        "lead.contacted",
        "lead.feedback",
        *moves,
        "lead.payment_received",
    ]
    by_id = {e.id: e for e in written}
    sent_at = {
        e.id: datetime.fromisoformat(b["at"]) for e, (_, b) in zip(written, calls, strict=True)
    }
    records = await read_topic(
        kafka_bootstrap, TOPIC_LIFECYCLE, lambda r: r.key == lead_id.encode(), len(calls)
    )
    assert len(records) == len(calls)
    for record in records:
        wire = json.loads(record.value or b"")
        instant = sent_at[wire["id"]]
        utc_text = instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert (wire["time"], wire["data"]["at"]) == (utc_text, utc_text)
        decoded = binding_read(record)
        assert decoded.get_time() == instant
        assert_same_event(decoded, by_id[wire["id"]], record.value or b"")
