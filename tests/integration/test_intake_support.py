"""Helpers the intake integration tests share: a running intake, counts, the real topics.

(No tests here; the module sits beside the tests that import it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Collection, Mapping
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.intake.config import IntakeSettings
from services.intake.keys.repository import live_keys
from services.intake.keys.ring import ring
from services.intake.main import create_app
from services.intake.sources.zoom import signature
from services.intake.tables import leads, outbox
from shared.auth import Scope
from shared.crypto import LeadKey, open_event
from shared.db import create_engine
from shared.events import TOPIC_LIFECYCLE, TOPIC_RECEIVED, Event
from shared.migrations import migrate
from shared.settings import CommonSettings, TokenSpec
from tests.support import serving

KPI_ONLY = TokenSpec(
    name="bi", token_sha256=hashlib.sha256(b"bi-token").hexdigest(), scopes=[Scope.kpi_read]
)
WRITER = TokenSpec(
    name="website-backend",
    token_sha256=hashlib.sha256(b"writer-token").hexdigest(),
    scopes=[Scope.intake_write, Scope.leads_read],
)
WRITER_AUTH = {"Authorization": "Bearer writer-token"}
ZOOM_SECRET = "zoom-secret-for-tests"
LOCALHOST = {"Origin": "http://localhost"}


@contextlib.asynccontextmanager
async def running_intake(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A migrated database and the intake app (dev mode, so the demo form exists)."""
    await asyncio.to_thread(migrate, "intake", database_url)
    settings = IntakeSettings(
        database_url=database_url,
        zoom_secret_token=ZOOM_SECRET,
        common=CommonSettings(
            data_dir=tmp_path,
            kafka_bootstrap_servers=kafka_bootstrap,
            auth_tokens=[KPI_ONLY, WRITER],
        ),
        **overrides,
    )
    async with serving(create_app(settings)) as client:
        yield client


async def count(database_url: str, table: sa.Table = leads, *where: Any) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(table)
            if where:
                query = query.where(*where)
            return int(await conn.scalar(query) or 0)
    finally:
        await engine.dispose()


async def rows(database_url: str, query: Any) -> list[Any]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(query)).all())
    finally:
        await engine.dispose()


async def drained(database_url: str, wait_seconds: float = 30.0) -> None:
    """Wait until the relay has published every outbox row (and Kafka acknowledged them)."""
    deadline = time.monotonic() + wait_seconds
    while await count(database_url, outbox):
        assert time.monotonic() < deadline, "the outbox did not drain"
        await asyncio.sleep(0.05)


async def intake_keys(database_url: str, lead_ids: Collection[str]) -> dict[str, LeadKey]:
    """The live keys of these leads in intake's key store, as its key endpoint serves them."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            live, _ = await live_keys(conn, ring(), lead_ids)
    finally:
        await engine.dispose()
    return live


async def topic_events(
    bootstrap: str, topic: str = TOPIC_RECEIVED, keys: Mapping[str, LeadKey] | None = None
) -> list[Event]:
    """Every event on `topic` up to its current end, in order per partition, its sealed
    fields opened with `keys` (left out without them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        async with asyncio.timeout(30):
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    found.extend(
                        r for r in records if r.offset < end[TopicPartition(r.topic, r.partition)]
                    )
    finally:
        await consumer.stop()
    return [open_event(r.value or b"", keys or {}) for r in found]


async def published(
    database_url: str, bootstrap: str, lead_ids: set[str], topic: str = TOPIC_RECEIVED
) -> list[Event]:
    """The events of these leads on the real topic, once the outbox has drained."""
    await drained(database_url)
    keys = await intake_keys(database_url, lead_ids)
    return [e for e in await topic_events(bootstrap, topic, keys) if e.subject in lead_ids]


async def lifecycle(database_url: str, bootstrap: str, lead_ids: set[str]) -> list[Event]:
    return await published(database_url, bootstrap, lead_ids, TOPIC_LIFECYCLE)


def zoom_headers(
    body: bytes, *, secret: str = ZOOM_SECRET, at: float | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {
        "Content-Type": "application/json",
        "x-zm-request-timestamp": timestamp,
        "x-zm-signature": signature(secret, timestamp, body),
    }
