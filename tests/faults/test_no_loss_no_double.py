"""Fault tests: nothing acknowledged is lost, nothing is applied twice, under crashes and outages.

Kafka, a private PostgreSQL and the services run as separate processes, in production
mode with real tokens. Clients post leads and retry with the same Idempotency-Key until
answered, while the test SIGKILLs each service in turn, restarts Kafka and stops the
database. Then every acknowledged lead must have exactly one decision and be counted
exactly once, and no event id may be applied twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer

from cli import kafka_broker
from shared.db import create_engine
from shared.events import LEAD_TOPICS, TOPIC_RECEIVED, TOPIC_ROUTED, decode_event
from tests.faults.cluster import Cluster, postgres_bin

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(
        postgres_bin() is None and not os.environ.get("CI"),
        reason="PostgreSQL server binaries are not installed (CI installs them)",
    ),
]

LEADS = 2000
CLIENTS = 4
WRITER_TOKEN = "fault-test-writer-" + uuid.uuid4().hex
READER_TOKEN = "fault-test-reader-" + uuid.uuid4().hex


def _tokens() -> str:
    def spec(name: str, token: str, scopes: list[str]) -> dict[str, Any]:
        return {"name": name, "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                "scopes": scopes}  # fmt: skip

    return json.dumps([
        spec("load-clients", WRITER_TOKEN, ["intake:write"]),
        spec("checker", READER_TOKEN, ["leads:read", "kpi:read"]),
    ])  # fmt: skip


PRODUCTION_ENV = {
    "LEADFLOW_MODE": "production",
    "LEADFLOW_AUTH_TOKENS": _tokens(),
    "LEADFLOW_LOG_LEVEL": "INFO",
    # Secrets some services require in production mode.
    "LEADFLOW_INTAKE_ZOOM_SECRET_TOKEN": "zoom-" + uuid.uuid4().hex,
    "LEADFLOW_QUALIFIER_PARTNER_SECRETS": json.dumps(
        {"webstudio": uuid.uuid4().hex, "smm-partner": uuid.uuid4().hex}
    ),
}


@dataclass
class Figures:
    acknowledged: dict[str, str] = field(default_factory=dict)  # idempotency key -> lead id
    emails: list[str] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    faults: list[str] = field(default_factory=list)


async def _client(cid: int, url: str, count: int, figures: Figures) -> None:
    headers = {"Authorization": f"Bearer {WRITER_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        for i in range(count):
            key = f"client{cid}-lead{i}"
            email = f"fault.{cid}.{i}.{uuid.uuid4().hex[:6]}@faults.example"
            figures.emails.append(email)
            body = {"source": "api", "name": "Fault Test", "email": email, "company": "Acme",
                    "services": ["seo"], "consent": True}  # fmt: skip
            while True:
                try:
                    r = await http.post("/v1/leads", json=body, headers={"Idempotency-Key": key})
                except httpx.TransportError:
                    figures.transport_errors += 1
                    await asyncio.sleep(0.2)
                    continue
                figures.answers[r.status_code] += 1
                if r.status_code == 202:
                    figures.acknowledged[key] = r.json()["lead_id"]
                    break
                assert r.status_code in (409, 503), f"{r.status_code}: {r.text}"
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.05)  # spread the load over the faults


async def _inject_faults(cluster: Cluster, figures: Figures, replicated: bool) -> None:
    def crash_and_restart(service: str, index: int = 0) -> None:
        replica = cluster.replicas[service][index]
        replica.kill()
        figures.faults.append(f"SIGKILL {replica.name}")
        time.sleep(0.5)
        replica.start()

    steps: list[tuple[str, Any]] = [
        ("qualifier", lambda: crash_and_restart("qualifier")),
        ("kpi", lambda: crash_and_restart("kpi")),
        ("intake", lambda: crash_and_restart("intake")),
    ]
    if replicated:
        steps.insert(1, ("qualifier-1", lambda: crash_and_restart("qualifier", 1)))
        steps.insert(3, ("kpi-1", lambda: crash_and_restart("kpi", 1)))

    def kafka_outage() -> None:
        kafka_broker.stop(cluster.broker)
        figures.faults.append("Kafka stopped and restarted")
        time.sleep(2)
        kafka_broker.start(cluster.broker)

    def database_outage() -> None:
        cluster.postgres.stop()
        figures.faults.append("PostgreSQL stopped and restarted")
        time.sleep(3)
        cluster.postgres.start()

    steps += [("kafka", kafka_outage), ("database", database_outage)]
    for _, step in steps:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(step)


async def _read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic, from the beginning to its current end."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    records: list[Any] = []
    try:
        while not consumer.assignment():
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        partitions = list(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def _scalar(url: str, sql: str) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(sa.text(sql))
    finally:
        await engine.dispose()


async def _rows(url: str, sql: str) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(sa.text(sql)))
    finally:
        await engine.dispose()


async def _until(check: Any, what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        ok, last = await check()
        if ok:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} not reached in {seconds}s (last: {last})")


@pytest.fixture(params=["single", "two-replicas"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    counts = {"intake": 1, "qualifier": 1, "kpi": 1}
    if request.param == "two-replicas":
        counts = {"intake": 1, "qualifier": 2, "kpi": 2}
    built = Cluster.create(tmp_path, PRODUCTION_ENV, counts)
    try:
        yield built
    finally:
        built.destroy()


async def test_nothing_is_lost_or_doubled_under_faults(cluster: Cluster) -> None:
    replicated = len(cluster.replicas["qualifier"]) > 1
    figures = Figures()
    intake = cluster.replicas["intake"][0].url
    started = datetime.now(UTC)
    load = [
        asyncio.create_task(_client(c, intake, LEADS // CLIENTS, figures)) for c in range(CLIENTS)
    ]
    await _inject_faults(cluster, figures, replicated)
    await asyncio.gather(*load)

    acked = set(figures.acknowledged.values())
    pg = cluster.postgres
    # Every 202 was stored: intake never acknowledged what it did not commit.
    stored = {r[0] for r in await _rows(pg.url("intake"), "SELECT lead_id FROM leads")}
    assert acked <= stored

    async def decided() -> tuple[bool, int]:
        n = await _scalar(pg.url("qualifier"), "SELECT count(DISTINCT lead_id) FROM decisions")
        return n == len(acked), n

    await _until(decided, "a decision for every acknowledged lead")
    per_lead = await _rows(pg.url("qualifier"), "SELECT lead_id, count(*) FROM decisions "
                           "GROUP BY lead_id HAVING count(*) > 1")  # fmt: skip
    kpi = cluster.replicas["kpi"][0].url
    window = {"from": (started - timedelta(days=1)).date().isoformat(),
              "to": (started + timedelta(days=2)).date().isoformat()}  # fmt: skip

    async def counted() -> tuple[bool, Any]:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {READER_TOKEN}"}) as h:
            r = await h.get(f"{kpi}/v1/kpi/summary", params=window, timeout=10)
        if r.status_code != 200:
            return False, r.status_code
        value = r.json()["metrics"]["leads_received"]["value"]
        return value >= len(acked), value

    await _until(counted, "the KPI counting every acknowledged lead")
    await asyncio.sleep(2)  # anything in flight that would double-count lands now
    _, kpi_count = await counted()

    received = await _read_all(cluster.broker.bootstrap_servers, TOPIC_RECEIVED)
    routed = await _read_all(cluster.broker.bootstrap_servers, TOPIC_ROUTED)
    received_ids = Counter(decode_event(r.value).id for r in received)
    routed_events = [decode_event(r.value) for r in routed]
    routed_ids_per_lead: dict[str, set[str]] = {}
    for event in routed_events:
        routed_ids_per_lead.setdefault(event.subject, set()).add(event.id)
    all_ids: set[str] = set()
    for topic in LEAD_TOPICS:
        all_ids |= {decode_event(r.value).id for r in await _read_all(
            cluster.broker.bootstrap_servers, topic)}  # fmt: skip
    kpi_applied = await _scalar(pg.url("kpi"), "SELECT count(*) FROM inbox")
    qualifier_applied = await _scalar(
        pg.url("qualifier"), "SELECT count(*) FROM inbox WHERE event_type = 'lead.received'"
    )

    lost = len(acked) - len(set(routed_ids_per_lead) & acked)
    doubled = (
        len(per_lead)
        + max(0, kpi_count - len(acked))
        + sum(1 for ids in routed_ids_per_lead.values() if len(ids) > 1)
    )
    print(
        f"\nFAULT TEST ({'2 qualifier + 2 kpi replicas' if replicated else 'one replica each'}):"
        f" leads acknowledged {len(acked)}, faults injected {len(figures.faults)} "
        f"({'; '.join(figures.faults)}), lost {lost}, double-counted {doubled}; "
        f"answers {dict(figures.answers)}, transport errors {figures.transport_errors}, "
        f"events redelivered on the wire {sum(n - 1 for n in received_ids.values())}"
    )
    assert len(acked) == LEADS
    assert lost == 0 and doubled == 0
    assert len(received_ids) == len(acked), "intake published a lead under two event ids"
    assert qualifier_applied == len(received_ids)
    assert kpi_applied == len(all_ids), "the KPI applied an event id twice or missed one"
    assert kpi_count == len(acked)
    assert figures.answers[500] == 0 and figures.answers[502] == 0
    assert len(figures.faults) >= 5

    if replicated:
        # Kafka spread the partitions: every replica of each group applied events.
        for service in ("qualifier", "kpi"):
            for replica in cluster.replicas[service]:
                async with httpx.AsyncClient() as http:
                    text = (await http.get(f"{replica.url}/metrics", timeout=5)).text
                consumed = sum(
                    float(v) for v in re.findall(
                        r"^leadflow_events_consumed_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
                )  # fmt: skip
                assert consumed > 0, f"{replica.name} consumed nothing: no partitions?"

    logs = cluster.logs()
    for secret in (WRITER_TOKEN, READER_TOKEN):
        assert secret not in logs, "a bearer token was written to a log"
    leaked = [e for e in figures.emails if e in logs]
    assert not leaked, f"e-mail addresses in the logs: {leaked[:3]}"
    assert not re.search(r"[\w.+-]+@faults\.example", logs)
