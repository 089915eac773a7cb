"""The three services on a three-node SASL_SSL cluster (cli/kafka/cluster.py) with ACLs:
2,000 leads posted while one node is SIGKILLed and restarted, then another. Every
acknowledged lead is decided once and counted once; a client with a wrong password, a
plaintext client and a principal writing a topic it has no right to are refused; the
services' logs carry no secret and no person.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr

from cli.kafka import cluster
from cli.kafka.ports import free_port
from shared.events import LEAD_TOPICS, TOPIC_RECEIVED, TOPIC_ROUTED
from shared.kafka import make_producer
from shared.migrations import SERVICES, migrate
from shared.topics import start_admin
from tests.faults.cluster import PostgresInstance, Replica, postgres_bin
from tests.faults.test_no_loss_no_double import (
    CLIENTS,
    PERSONAL_DATA,
    PRODUCTION_ENV,
    READER_TOKEN,
    Figures,
    _client,
    _rows,
    _scalar,
    _until,
)
from tests.support import read_to_end

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(
        postgres_bin() is None and not os.environ.get("CI"),
        reason="PostgreSQL server binaries are not installed (CI installs them)",
    ),
]

LEADS = 2000


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[cluster.ClusterConfig]:
    cfg = cluster.ClusterConfig.on_free_ports(tmp_path)
    cluster.start(cfg)
    try:
        yield cfg
    finally:
        cluster.stop(cfg)


@pytest.fixture
def postgres() -> Iterator[PostgresInstance]:
    instance = PostgresInstance()
    instance.init(SERVICES)
    try:
        yield instance
    finally:
        instance.destroy()


def _replicas(
    cfg: cluster.ClusterConfig, postgres: PostgresInstance, root: Path
) -> dict[str, Replica]:
    replicas = {}
    ports = {service: free_port() for service in SERVICES}
    for service in SERVICES:
        migrate(service, postgres.url(service))
        port = ports[service]
        env = {
            **os.environ,
            **PRODUCTION_ENV,
            # The qualifier opens leads with intake's keys (PRODUCTION_ENV has the token).
            "LEADFLOW_QUALIFIER_KEYS_URL": f"http://127.0.0.1:{ports['intake']}",
            **cluster.service_env(cfg, service),
            # The suite allows the plaintext test broker (tests/conftest.py): not here.
            "LEADFLOW_KAFKA_PLAINTEXT_ALLOWED": "false",
            "LEADFLOW_DATA_DIR": str(root),
            "LEADFLOW_TOPIC_PARTITIONS": "6",
            f"LEADFLOW_{service.upper()}_PORT": str(port),
            f"LEADFLOW_{service.upper()}_DATABASE_URL": postgres.url(service),
        }
        replicas[service] = Replica(service, 0, port, env, root / f"{service}.log")
    return replicas


async def _fully_replicated(cfg: cluster.ClusterConfig, seconds: float = 180) -> None:
    """Wait until every partition of the lead topics is in sync on every node again."""
    admin = await start_admin(cluster.connection(cfg, cluster.ADMIN), wait_seconds=60)
    try:
        deadline = time.monotonic() + seconds
        while True:
            described = await admin.describe_topics(list(LEAD_TOPICS))
            short = [
                (d["topic"], p["partition"])
                for d in described
                for p in d["partitions"]
                if len(p["isr"]) < len(cfg.client_ports)
            ]
            if not short:
                return
            assert time.monotonic() < deadline, f"not in sync after {seconds}s: {short}"
            await asyncio.sleep(1)
    finally:
        await admin.close()


async def _kill_and_restart(cfg: cluster.ClusterConfig, node: int, killed: list[str]) -> None:
    await _fully_replicated(cfg)
    await asyncio.to_thread(cluster.kill_node, cfg, node)
    killed.append(f"SIGKILL node {node}")
    await asyncio.sleep(5)  # leaders move, producers and consumers find them
    await asyncio.to_thread(cluster.start_node, cfg, node)


async def _refused(cfg: cluster.ClusterConfig, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Which of the three clients that must be refused were; each within a bound."""
    refused = []
    wrong = cluster.connection(cfg, "intake", SecretStr("wrong-" + uuid.uuid4().hex))
    for name, kafka in (("wrong password", wrong), ("plaintext", cfg.bootstrap_servers)):
        producer = make_producer(kafka, f"test-{name}")
        try:
            async with asyncio.timeout(60):
                await producer.start()
        except (KafkaError, TimeoutError):
            refused.append(name)
        finally:
            await producer.stop()
    assert "SaslAuthenticationFailed" in caplog.text, "the wrong password was not what failed"
    intake = make_producer(cluster.connection(cfg, "intake"), "test-trespasser")
    await intake.start()
    try:
        await intake.send_and_wait(TOPIC_RECEIVED, b"{}", key=b"allowed")  # its right
        async with asyncio.timeout(60):
            await intake.send_and_wait(TOPIC_ROUTED, b"{}", key=b"forged")
    except TopicAuthorizationFailedError:
        refused.append("intake writing leads.routed")
    finally:
        await intake.stop()
    return refused


async def test_three_brokers_sasl_ssl_nothing_lost_or_doubled(
    secured: cluster.ClusterConfig,
    postgres: PostgresInstance,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = secured
    await cluster.configure(cfg)
    replicas = await asyncio.to_thread(_replicas, cfg, postgres, tmp_path)
    for replica in replicas.values():
        await asyncio.to_thread(replica.start)
    try:
        figures = Figures()
        killed: list[str] = []
        load = [
            asyncio.create_task(_client(c, replicas["intake"].url, LEADS // CLIENTS, figures))
            for c in range(CLIENTS)
        ]
        await asyncio.sleep(5)
        await _kill_and_restart(cfg, 2, killed)
        await _kill_and_restart(cfg, 3, killed)
        await asyncio.gather(*load)
        await _check_once(cfg, postgres, replicas, figures, killed)
        with caplog.at_level(logging.ERROR, logger="aiokafka"):
            refused = await _refused(cfg, caplog)
        print(f"  refused clients {len(refused)} of 3 ({', '.join(refused)})")
        assert len(refused) == 3
    finally:
        for replica in replicas.values():
            replica.terminate()
    logs = "\n".join(r.log.read_text(errors="replace") for r in replicas.values())
    secrets = [p.get_secret_value() for p in cluster.credentials(cfg).values()]
    secrets.append(cluster.tls_files(cfg).store_password)
    assert not [s for s in secrets if s in logs], "a Kafka secret is in the services' logs"
    found = PERSONAL_DATA.search(logs)
    assert found is None, f"personal data in the logs: {found.group(0)}"


def _envelope(value: bytes | None) -> dict[str, Any]:
    """The CloudEvents envelope alone (its personal fields are sealed: crypto-shredding)."""
    envelope: dict[str, Any] = json.loads(value or b"{}")
    return envelope


async def _check_once(
    cfg: cluster.ClusterConfig,
    postgres: PostgresInstance,
    replicas: dict[str, Replica],
    figures: Figures,
    killed: list[str],
) -> None:
    acked = set(figures.acknowledged.values())
    assert len(acked) == LEADS

    async def decided() -> tuple[bool, int]:
        sql = "SELECT count(DISTINCT lead_id) FROM decisions"
        n = await _scalar(postgres.url("qualifier"), sql)
        return n == len(acked), n

    await _until(decided, "a decision for every acknowledged lead", seconds=300)
    twice = await _rows(
        postgres.url("qualifier"),
        "SELECT lead_id FROM decisions GROUP BY lead_id HAVING count(*) > 1",
    )

    async def counted() -> tuple[bool, int]:
        headers = {"Authorization": f"Bearer {READER_TOKEN}"}
        today = datetime.now(UTC).date()
        window = {
            "from": (today - timedelta(days=1)).isoformat(),
            "to": (today + timedelta(days=2)).isoformat(),
        }
        async with httpx.AsyncClient(headers=headers) as http:
            r = await http.get(f"{replicas['kpi'].url}/v1/kpi/summary", params=window, timeout=10)
        value = r.json()["metrics"]["leads_received"]["value"] if r.status_code == 200 else -1
        return value >= len(acked), value

    await _until(counted, "the KPI counting every acknowledged lead", seconds=300)
    await asyncio.sleep(2)  # anything in flight that would double-count lands now
    _, kpi_count = await counted()
    admin = cluster.connection(cfg, cluster.ADMIN)
    routed: dict[str, set[str]] = {}
    for record in await read_to_end(admin, TOPIC_ROUTED):
        event = _envelope(record.value)
        routed.setdefault(event["subject"], set()).add(event["id"])
    received = Counter(_envelope(r.value)["id"] for r in await read_to_end(admin, TOPIC_RECEIVED))
    lost = len(acked - set(routed))
    doubled = (
        len(twice)
        + max(0, kpi_count - len(acked))
        + sum(1 for ids in routed.values() if len(ids) > 1)
    )
    print(
        f"\nTHREE-BROKER SASL_SSL TEST: leads acknowledged {len(acked)}, brokers killed "
        f"{len(killed)} ({'; '.join(killed)}), lost {lost}, doubled {doubled}; answers "
        f"{dict(figures.answers)}, transport errors {figures.transport_errors}"
    )
    assert len(killed) == 2
    assert lost == 0 and doubled == 0
    assert kpi_count == len(acked)
    assert len(received) == len(acked), "intake published a lead under two event ids"
