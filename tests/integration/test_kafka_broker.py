"""Integration tests for cli.kafka: a real Kafka broker, started, used, stopped, restarted.

One broker start / stop / start cycle on free ports in a temp dir (first run also fetches the
jars from Maven Central into ~/.cache/leadflow, about 45 MB).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from cli.kafka import config as kafka_config
from cli.kafka import ports as kafka_ports
from cli.kafka import process as kafka_process

pytestmark = pytest.mark.kafka


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_free_ports_picked_together_differ() -> None:
    # One free_port() after another may return the same port (a broker's two listeners
    # then clashed in CI); ports picked together never do.
    for _ in range(50):
        ports = kafka_ports.free_ports(5)
        assert len(set(ports)) == 5 and all(0 < p < 65536 for p in ports)


@pytest.fixture(scope="module")
def broker_cfg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_config.BrokerConfig]:
    port, controller_port = kafka_ports.free_ports(2)
    cfg = kafka_config.BrokerConfig(
        data_dir=tmp_path_factory.mktemp("stack"), port=port, controller_port=controller_port
    )
    try:
        yield cfg
    finally:
        kafka_process.stop(cfg)  # whatever happened, leave no broker behind


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resp = await admin.create_topics(
            [NewTopic(name=topic, num_partitions=1, replication_factor=1)]
        )
        errors = [(t[0], t[1]) for t in resp.topic_errors if t[1] != 0]
        assert not errors, f"create_topics failed: {errors}"
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        md = await producer.send_and_wait(topic, value, key=key)
        offset: int = md.offset
        return offset
    finally:
        await producer.stop()


async def _consume(
    bootstrap: str, topic: str, count: int, group_id: str | None = None
) -> list[tuple[bytes | None, bytes | None, int]]:
    """Read ``count`` records (from the committed offset, else the beginning); commit if grouped."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        out: list[tuple[bytes | None, bytes | None, int]] = []
        while len(out) < count:
            msg = await asyncio.wait_for(consumer.getone(), timeout=30)
            out.append((msg.key, msg.value, msg.offset))
        if group_id is not None:
            await consumer.commit()
        return out
    finally:
        await consumer.stop()


def _check_running(cfg: kafka_config.BrokerConfig, pid: int) -> str:
    """Assert the broker runs as ``pid``; return its meta.properties (cluster id etc.)."""
    st = kafka_process.status(cfg)
    assert st.running and st.pid == pid and st.port_open
    assert st.bootstrap_servers == cfg.bootstrap_servers == f"127.0.0.1:{cfg.port}"
    assert st.data_dir == Path(cfg.data_dir).resolve()
    assert cfg.pid_file.read_text().strip() == str(pid)
    props = cfg.server_properties.read_text()
    assert f"log.dirs={cfg.log_dir}\n" in props and "auto.create.topics.enable=false\n" in props
    return (cfg.log_dir / "meta.properties").read_text()


async def test_start_produce_consume_stop_restart_keeps_data(
    broker_cfg: kafka_config.BrokerConfig,
) -> None:
    cfg = broker_cfg
    bootstrap = cfg.bootstrap_servers
    topic = f"leadflow.test.{uuid.uuid4().hex[:8]}"
    group = f"leadflow-test-{uuid.uuid4().hex[:8]}"

    # --- cold start: fetch (if needed), format, start
    pid = await asyncio.to_thread(kafka_process.start, cfg)
    meta = _check_running(cfg, pid)
    # Already running for this data dir: same pid, no second JVM.
    assert await asyncio.to_thread(kafka_process.start, cfg) == pid

    # --- produce and consume back (auto-create is off: create the topic first)
    await _create_topic(bootstrap, topic)
    assert await _produce(bootstrap, topic, b"lead-1", b"first") == 0
    assert await _consume(bootstrap, topic, 1, group_id=group) == [(b"lead-1", b"first", 0)]

    # --- stop: process gone, port closed, pid file removed
    assert await asyncio.to_thread(kafka_process.stop, cfg) is True
    st = kafka_process.status(cfg)
    assert not st.running and st.pid is None and not st.port_open
    assert not _port_open(cfg.port) and not _port_open(cfg.controller_port)
    assert not cfg.pid_file.exists()
    assert await asyncio.to_thread(kafka_process.stop, cfg) is False  # nothing left to stop

    # --- warm start on the same data dir: not re-formatted, data and committed offsets kept
    pid2 = await asyncio.to_thread(kafka_process.start, cfg)
    assert _check_running(cfg, pid2) == meta
    assert await _consume(bootstrap, topic, 1) == [(b"lead-1", b"first", 0)]
    assert await _produce(bootstrap, topic, b"lead-2", b"second") == 1
    # The group resumes after its committed offset: only the new record.
    assert await _consume(bootstrap, topic, 1, group_id=group) == [(b"lead-2", b"second", 1)]

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        assert (await consumer.end_offsets([tp]))[tp] == 2
    finally:
        await consumer.stop()

    assert await asyncio.to_thread(kafka_process.stop, cfg) is True
    assert not _port_open(cfg.port)


def test_start_refuses_a_port_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        cfg = kafka_config.BrokerConfig(
            data_dir=tmp_path, port=taken, controller_port=kafka_ports.free_port()
        )
        with pytest.raises(kafka_config.BrokerError, match="already in use"):
            kafka_process.start(cfg, timeout=10)
    assert not kafka_process.status(cfg).running
    assert kafka_process.stop(cfg) is False


def test_config_paths_and_validation(tmp_path: Path) -> None:
    cfg = kafka_config.BrokerConfig(data_dir=tmp_path, port=19092, controller_port=19093)
    assert cfg.bootstrap_servers == "127.0.0.1:19092"
    assert cfg.kafka_dir == tmp_path.resolve() / "kafka"
    assert cfg.log_dir == cfg.kafka_dir / "data"
    assert cfg.pid_file == cfg.kafka_dir / "broker.pid"
    custom = kafka_config.BrokerConfig(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert custom.libs_dir == (tmp_path / "cache" / "libs").resolve()
    with pytest.raises(ValueError):
        kafka_config.BrokerConfig(data_dir=tmp_path, port=9092, controller_port=9092)
    status = kafka_process.status(cfg)
    assert not status.running and status.pid is None
