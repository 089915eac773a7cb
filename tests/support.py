"""Test helpers: factories, running an app with its lifespan, reading real topics."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.crypto import LeadKey, open_event
from shared.events import (
    TOPIC_RECEIVED,
    Event,
    LeadReceived,
    LeadSnapshot,
    encode_event,
)
from shared.kafka_security import Kafka, client_kwargs

DEV_AUTH = {"Authorization": "Bearer dev"}


def lead_payload(**overrides: Any) -> dict[str, Any]:
    """A valid `POST /v1/leads` body that the example definition routes to sales."""
    unique = uuid.uuid4().hex[:12]
    body: dict[str, Any] = {
        "source": "web_form",
        "form_id": "contact-us",
        "name": "Анна Петрова",
        "email": f"anna.{unique}@acme-corp.example",
        "company": "Acme Corp",
        "company_size": "101-500",
        "services": ["seo"],
        "budget": "200000",
        "timeframe": "now",
        "role_in_purchase": "decision_maker",
        "industry": "ecommerce",
        "country": "RU",
        "consent": True,
        "utm": {"source": "google", "medium": "cpc", "campaign": "autumn"},
    }
    body.update(overrides)
    return body


def snapshot(**overrides: Any) -> LeadSnapshot:
    """A normalized lead as intake would publish it."""
    now = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "lead_id": str(uuid.uuid4()),
        "source": "web_form",
        "form_id": "contact-us",
        "name": "Anna",
        "email": "anna@acme-corp.example",
        "company": "Acme Corp",
        "company_size": "101-500",
        "services": ["seo"],
        "budget": "200000",
        "timeframe": "now",
        "role_in_purchase": "decision_maker",
        "industry": "ecommerce",
        "country": "RU",
        "consent": True,
        "occurred_at": now,
        "received_at": now,
    }
    values.update(overrides)
    return LeadSnapshot.model_validate(values)


def received(**overrides: Any) -> LeadReceived:
    lead = snapshot(**overrides)
    return LeadReceived(source="/intake", time=lead.occurred_at, subject=lead.lead_id, data=lead)


@contextlib.asynccontextmanager
async def serving(
    app: FastAPI, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client talking to it in-process.

    `raise_app_exceptions=False` answers an unhandled error with the 500 a client would see.
    """
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def read_topic(
    bootstrap: str,
    topic: str,
    want: Callable[[ConsumerRecord[bytes, bytes]], bool],
    count: int,
    wait_seconds: float = 30.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `topic` from the beginning until `count` records satisfy `want`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(wait_seconds):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    found.extend(r for r in records if want(r))
    finally:
        await consumer.stop()
    return found


async def read_to_end(bootstrap: Kafka, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic, from the beginning to its end as it is when read
    (`bootstrap`: the servers, or a KafkaConnection for a secured cluster)."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_kwargs(bootstrap),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        while not consumer.assignment():
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        partitions = list(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def schema_differences(
    conn: AsyncConnection, service: str, metadata: sa.MetaData
) -> list[object]:
    """What a migrated database and a service's tables disagree on (tables, columns, types,
    nullability, indexes; Alembic does not compare a partial index's condition)."""

    def compare(sync_conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "version_table": f"alembic_version_{service}"}
        )
        return list(compare_metadata(context, metadata))

    return await conn.run_sync(compare)


def event_of(
    record: ConsumerRecord[bytes, bytes], keys: Mapping[str, LeadKey] | None = None
) -> Event:
    """A record's event, its sealed fields opened with `keys` (left out without them)."""
    return open_event(record.value or b"", keys or {})


class StaticKeys:
    """A `shared.keys.KeySource` holding a test's own keys (for a relay alone on a topic;
    whole services use intake's key store)."""

    def __init__(self, keys: Mapping[str, LeadKey]) -> None:
        self.keys = dict(keys)

    async def fetch(
        self, lead_ids: Collection[str], *, within: AsyncConnection | None = None
    ) -> dict[str, LeadKey]:
        return {i: self.keys[i] for i in lead_ids if i in self.keys}

    def forget(self, lead_id: str) -> None:
        self.keys.pop(lead_id, None)


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return value.decode()
    return None


class ReceivedRecord:
    """What the consumer loop reads of a Kafka record: a `lead.received` at `offset` of
    partition 0 (for loop tests that hand out records themselves)."""

    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset = TOPIC_RECEIVED, 0, offset
        self.key = b"k"
        self.value = encode_event(received())
        self.timestamp = int(datetime.now(UTC).timestamp() * 1000)
