"""A rebalance while the database is down: the surviving qualifier replica takes over the
dead one's partitions in the middle of its retries, says it is stuck while it is, and once
PostgreSQL is back every lead is decided exactly once.

Two qualifier replicas run as processes on a private PostgreSQL and Kafka (tests/faults/
cluster.py); the test publishes `lead.received` events itself, stops PostgreSQL, SIGKILLs
one replica, and starts PostgreSQL again.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from shared.db import create_engine
from shared.events import TOPIC_RECEIVED, TOPIC_ROUTED, LeadReceived, decode_event, encode_event
from tests.faults.cluster import Cluster, Replica, postgres_bin
from tests.support import read_to_end, received

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(
        postgres_bin() is None and not os.environ.get("CI"),
        reason="PostgreSQL server binaries are not installed (CI installs them)",
    ),
]

STALL_SECONDS = 3
PARTITIONS = 12  # the qualifier reads leads.received and leads.lifecycle, six each
LEADS = 40  # each phase


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    env = {"LEADFLOW_CONSUMER_STALL_SECONDS": str(STALL_SECONDS), "LEADFLOW_LOG_LEVEL": "INFO"}
    # One intake: the qualifier's key store (crypto-shredding), which its relay asks before
    # it publishes; it knows none of the leads this test publishes itself, so their routed
    # events go out without personal fields.
    built = Cluster.create(tmp_path, env, {"intake": 1, "qualifier": 2, "kpi": 0})
    try:
        yield built
    finally:
        built.destroy()


async def _until(check: Callable[[], Awaitable[Any]], what: str, seconds: float = 120) -> Any:
    """Poll `check` until it returns something true; return that."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: not within {seconds:g}s")


async def _readyz(replica: Replica) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(f"{replica.url}/readyz", timeout=5)


async def _partitions(replica: Replica) -> int:
    return int((await _readyz(replica)).json()["consumers"]["qualifier"]["partitions_assigned"])


async def _decisions(url: str) -> Counter[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT lead_id, count(*) FROM decisions GROUP BY 1"))
            return Counter({lead_id: n for lead_id, n in rows})
    finally:
        await engine.dispose()


async def _publish(bootstrap: str, leads: list[LeadReceived]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for lead in leads:
            await producer.send_and_wait(
                TOPIC_RECEIVED, encode_event(lead), key=lead.subject.encode()
            )
    finally:
        await producer.stop()


async def _routed_ids_per_lead(bootstrap: str) -> dict[str, set[str]]:
    """Every `lead.routed` event id on the topic, by lead (read to its current end)."""
    records = await read_to_end(bootstrap, TOPIC_ROUTED)
    found: dict[str, set[str]] = {}
    for record in records:
        event = decode_event(record.value or b"")
        found.setdefault(event.subject, set()).add(event.id)
    return found


def _leads() -> list[LeadReceived]:
    return [received(email=f"stall.{uuid.uuid4().hex[:10]}@faults.example") for _ in range(LEADS)]


async def test_a_rebalance_during_a_database_outage_loses_and_doubles_nothing(
    cluster: Cluster,
) -> None:
    bootstrap = cluster.broker.bootstrap_servers
    decided_url = cluster.postgres.url("qualifier")
    survivor, victim = cluster.replicas["qualifier"][1], cluster.replicas["qualifier"][0]

    async def spread() -> bool:
        return await _partitions(victim) == await _partitions(survivor) == PARTITIONS // 2

    await _until(spread, "the group spreading six partitions over the two replicas")
    before = _leads()
    await _publish(bootstrap, before)

    def all_decided(leads: list[LeadReceived]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return {lead.subject for lead in leads} <= set(await _decisions(decided_url))

        return check

    await _until(all_decided(before), "the first leads decided")

    cluster.postgres.stop()
    during = _leads()
    await _publish(bootstrap, during)

    # Stuck behind the outage, each replica's /readyz names its consumer as stalled.
    async def stalled() -> dict[str, Any] | None:
        answer = await _readyz(survivor)
        body = answer.json()
        if answer.status_code == 503 and body["checks"].get("consumer qualifier") == "stalled":
            return body  # type: ignore[no-any-return]
        return None

    body = await _until(stalled, "the survivor's /readyz naming its stalled consumer", 60)
    # The answer rounds the seconds: a consumer stalled just past the limit reads as the limit.
    assert body["consumers"]["qualifier"]["seconds_since_poll"] >= STALL_SECONDS

    # One replica dies while both retry: the group gives its partitions to the other in
    # the middle of its retries.
    cluster.replicas["qualifier"][0].kill()

    async def took_over() -> bool:
        return await _partitions(survivor) == PARTITIONS

    await _until(took_over, "the survivor taking every partition", 90)
    assert (await _readyz(survivor)).status_code == 503  # still stuck: no database

    cluster.postgres.start()
    await _until(all_decided(before + during), "every lead decided after the outage", 120)

    async def ready() -> bool:
        return (await _readyz(survivor)).status_code == 200

    await _until(ready, "the survivor ready again", 60)

    counts = await _decisions(decided_url)
    assert [counts[lead.subject] for lead in before + during] == [1] * (2 * LEADS)

    async def routed_all() -> dict[str, set[str]] | None:
        routed = await _routed_ids_per_lead(bootstrap)
        return routed if all(lead.subject in routed for lead in before + during) else None

    routed = await _until(routed_all, "a lead.routed event for every lead", 60)
    doubled = {lead.subject for lead in before + during if len(routed[lead.subject]) != 1}
    assert not doubled, f"leads decided under two event ids: {sorted(doubled)[:3]}"

    logs = cluster.logs()
    assert "consumer crashed" not in logs  # the survivor never needed its supervisor
    for lead in before + during:
        assert lead.data.email not in logs
