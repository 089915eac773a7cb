"""Fault tests: nothing acknowledged is lost, nothing is applied twice, under crashes and outages.

Kafka, a private PostgreSQL and the services run as separate processes, in production
mode with real tokens. Clients post leads and retry with the same Idempotency-Key until
answered, while the test SIGKILLs each service in turn, restarts Kafka and stops the
database (once with the qualifier's writes caught in flight). Then every acknowledged lead
must have exactly one decision and be counted exactly once, no event id may be applied
twice, and no log line or dead-letter header may name a person: no e-mail, phone or name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import string
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from cli.kafka import process as kafka_process
from shared.db import create_engine
from shared.events import (
    CONTENT_TYPE,
    LEAD_TOPICS,
    TOPIC_DEADLETTER,
    TOPIC_RECEIVED,
    TOPIC_ROUTED,
)
from tests.faults.cluster import Cluster, postgres_bin
from tests.support import event_of, read_to_end

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(
        postgres_bin() is None and not os.environ.get("CI"),
        reason="PostgreSQL server binaries are not installed (CI installs them)",
    ),
    # 2,000 leads through six faults on shared cores: past the suite's 300 s default (the
    # waits inside keep their own bounds), as the other fault tests.
    pytest.mark.timeout(900),
]

LEADS = 2000
CLIENTS = 4
WRITER_TOKEN = "fault-test-writer-" + uuid.uuid4().hex
READER_TOKEN = "fault-test-reader-" + uuid.uuid4().hex
# The qualifier's token for intake's key store (crypto-shredding).
KEYS_TOKEN = "fault-test-keys-" + uuid.uuid4().hex
MASTER_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()


def _tokens() -> str:
    def spec(name: str, token: str, scopes: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "scopes": scopes,
        }

    return json.dumps(
        [
            spec("load-clients", WRITER_TOKEN, ["intake:write"]),
            spec("checker", READER_TOKEN, ["leads:read", "kpi:read"]),
            spec("qualifier-keys", KEYS_TOKEN, ["keys:read"]),
        ]
    )


PRODUCTION_ENV = {
    "LEADFLOW_MODE": "production",
    "LEADFLOW_AUTH_TOKENS": _tokens(),
    "LEADFLOW_LOG_LEVEL": "INFO",
    # Secrets some services require in production mode.
    "LEADFLOW_INTAKE_ZOOM_SECRET_TOKEN": "zoom-" + uuid.uuid4().hex,
    "LEADFLOW_INTAKE_MASTER_KEYS": json.dumps({"m1": MASTER_KEY}),
    "LEADFLOW_INTAKE_MASTER_KEY_ID": "m1",
    "LEADFLOW_QUALIFIER_KEYS_TOKEN": KEYS_TOKEN,
    "LEADFLOW_QUALIFIER_PARTNER_SECRETS": json.dumps(
        {"webstudio": uuid.uuid4().hex, "smm-partner": uuid.uuid4().hex}
    ),
}


# Every person the test makes up is named "Faultperson <random word>" and has a phone
# +7 916 ..., so one pattern finds any of them, or a cut-off part of one, in any text.
NAME_MARK = "Faultperson"
PERSONAL_DATA = re.compile(
    rf"{NAME_MARK}|[\w.+-]+@faults\.example|\+7916\d{{7}}|\+7 916 \d{{3}} \d{{2}} \d{{2}}"
    r"|(?<!\d)916\d{7}(?!\d)",
    re.IGNORECASE,
)
# On a topic, where base64 ciphertext may hold any run of digits: the name and e-mail only.
IN_CLEAR = re.compile(rf"{NAME_MARK}|@faults\.example", re.IGNORECASE)
# A message on leads.received that is no Leadflow event, quoting a person in every field
# it gets wrong: the consumers park it, and the reason they give must not quote them.
POISON_KEY = b"fault-test-poison-" + uuid.uuid4().hex.encode()


@dataclass
class Figures:
    acknowledged: dict[str, str] = field(default_factory=dict)  # idempotency key -> lead id
    emails: list[str] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    faults: list[str] = field(default_factory=list)
    # The outage with the qualifier's writes in flight: how many it caught, and the logs
    # as they stood while the database was down.
    writes_caught_in_flight: int = 0
    logs_after_outage: str = ""


def _person(cid: int, i: int) -> dict[str, str]:
    word = "".join(random.choices(string.ascii_lowercase, k=10)).capitalize()
    digits = f"{cid}{i:03d}{random.randrange(1000):03d}"
    phone = f"+7 916 {digits[:3]} {digits[3:5]} {digits[5:]}"
    return {"name": f"{NAME_MARK} {word}", "phone": phone}


async def _client(cid: int, url: str, count: int, figures: Figures) -> None:
    headers = {"Authorization": f"Bearer {WRITER_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        for i in range(count):
            key = f"client{cid}-lead{i}"
            email = f"fault.{cid}.{i}.{uuid.uuid4().hex[:6]}@faults.example"
            figures.emails.append(email)
            body = {
                "source": "api",
                **_person(cid, i),
                "email": email,
                "company": "Acme",
                "services": ["seo"],
                "consent": True,
            }
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
        kafka_process.stop(cluster.broker)
        figures.faults.append("Kafka stopped and restarted")
        time.sleep(2)
        kafka_process.start(cluster.broker)

    def database_outage() -> None:
        cluster.postgres.stop()
        figures.faults.append("PostgreSQL stopped and restarted")
        time.sleep(3)
        cluster.postgres.start()

    def database_outage_mid_write() -> None:
        began = time.monotonic()
        figures.writes_caught_in_flight = asyncio.run(_stop_postgres_mid_write(cluster))
        figures.faults.append(
            f"PostgreSQL stopped with {figures.writes_caught_in_flight} qualifier write(s) "
            f"in flight after {time.monotonic() - began:.1f}s, and restarted"
        )
        time.sleep(3)
        # The failed writes were logged as they failed; what the services log as they
        # find the database back is in the final logs.
        figures.logs_after_outage = cluster.logs()
        cluster.postgres.start()

    # First, while the clients are surely still posting.
    steps.insert(0, ("database-mid-write", database_outage_mid_write))
    steps += [("kafka", kafka_outage), ("database", database_outage)]
    for _, step in steps:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(step)


async def _stop_postgres_mid_write(cluster: Cluster) -> int:
    """Stop PostgreSQL while the qualifier's statements that write leads wait in flight
    (a lock holds them), so they fail with their parameters in hand, people's data among
    them: what the services log of that failure is then checked. How many waited."""
    conn = await asyncpg.connect(cluster.postgres.dsn("qualifier"))
    try:
        # SHARE lets the qualifier read leads but holds every write to them.
        await conn.execute("BEGIN; LOCK TABLE leads IN SHARE MODE")
        waiting = 0
        deadline = time.monotonic() + 30
        while not waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE NOT l.granted AND c.relname = 'leads'"
            )
        await asyncio.sleep(0.5)  # a second replica's write may join it
        await asyncio.to_thread(cluster.postgres.stop)
        return int(waiting)
    finally:
        with contextlib.suppress(Exception):
            conn.terminate()


async def _send_poison(bootstrap: str) -> None:
    # Each of its personal fields is a list where a string belongs.
    person = {k: [v] for k, v in _person(9, 999).items()}
    email = f"poison.{uuid.uuid4().hex[:6]}@faults.example"
    data = {**person, "email": [email], "source": "api"}
    value = json.dumps(
        {
            "specversion": "1.0",
            "type": "lead.received",
            "id": str(uuid.uuid4()),
            "source": "/intake",
            "time": "2026-01-01T00:00:00Z",
            "subject": "x",
            "data": data,
        }
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        headers = [("content-type", CONTENT_TYPE.encode())]
        await producer.send_and_wait(TOPIC_RECEIVED, value.encode(), POISON_KEY, headers=headers)
    finally:
        await producer.stop()


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
    await _send_poison(cluster.broker.bootstrap_servers)
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
    per_lead = await _rows(
        pg.url("qualifier"),
        "SELECT lead_id, count(*) FROM decisions GROUP BY lead_id HAVING count(*) > 1",
    )
    kpi = cluster.replicas["kpi"][0].url
    window = {
        "from": (started - timedelta(days=1)).date().isoformat(),
        "to": (started + timedelta(days=2)).date().isoformat(),
    }

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

    received = [
        r
        for r in await read_to_end(cluster.broker.bootstrap_servers, TOPIC_RECEIVED)
        if r.key != POISON_KEY
    ]
    routed = await read_to_end(cluster.broker.bootstrap_servers, TOPIC_ROUTED)
    # Read keyless, as any consumer without keys reads them: personal fields sealed and
    # left out, ids and everything counted readable.
    received_ids = Counter(event_of(r).id for r in received)
    routed_events = [event_of(r) for r in routed]
    routed_ids_per_lead: dict[str, set[str]] = {}
    for event in routed_events:
        routed_ids_per_lead.setdefault(event.subject, set()).add(event.id)
    all_ids: set[str] = set()
    in_clear: list[str] = []
    for topic in LEAD_TOPICS:
        records = [
            r
            for r in await read_to_end(cluster.broker.bootstrap_servers, topic)
            if r.key != POISON_KEY
        ]
        all_ids |= {event_of(r).id for r in records}
        # Crypto-shredding: the people went out sealed (the name or e-mail of none in clear).
        in_clear += [topic for r in records if IN_CLEAR.search((r.value or b"").decode())]
    assert not in_clear, f"personal data in clear on {Counter(in_clear)}"
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
                    float(v)
                    for v in re.findall(
                        r"^leadflow_events_consumed_total\{[^}]*\} ([0-9.e+]+)$", text, re.M
                    )
                )
                assert consumed > 0, f"{replica.name} consumed nothing: no partitions?"

    logs = cluster.logs()
    for secret in (WRITER_TOKEN, READER_TOKEN, KEYS_TOKEN):
        assert secret not in logs, "a bearer token was written to a log"
    assert MASTER_KEY not in logs, "a master key was written to a log"
    leaked = [e for e in figures.emails if e in logs]
    assert not leaked, f"e-mail addresses in the logs: {leaked[:3]}"
    assert figures.writes_caught_in_flight > 0, "the outage caught no write in flight"
    for text, where in (
        (figures.logs_after_outage, "the logs of the outage mid-write"),
        (logs, "the logs"),
    ):
        found = PERSONAL_DATA.search(text)
        assert found is None, f"personal data in {where}: {_around(text, found)}"

    parked = await read_to_end(cluster.broker.bootstrap_servers, TOPIC_DEADLETTER)
    assert any(r.key == POISON_KEY for r in parked), "the poison message was not parked"
    headers = "\n".join(f"{k}: {v.decode(errors='replace')}" for r in parked for k, v in r.headers)
    found = PERSONAL_DATA.search(headers)
    assert found is None, f"personal data in dead-letter headers: {_around(headers, found)}"


def _around(text: str, found: re.Match[str] | None) -> str:
    """The line a match is on, cut to a readable length."""
    if found is None:
        return ""
    start = text.rfind("\n", 0, found.start()) + 1
    end = text.find("\n", found.end())
    return text[start : end if end >= 0 else len(text)][:400]
