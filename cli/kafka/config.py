"""Where and how one broker runs (BrokerConfig) and the server.properties it gets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
POM_FILE = DEPLOY_DIR / "pom.xml"
BROKER_LOG4J2 = DEPLOY_DIR / "log4j2.properties"
TOOLS_LOG4J2 = DEPLOY_DIR / "tools-log4j2.properties"

HOST = "127.0.0.1"
CACHE_ENV = "LEADFLOW_KAFKA_CACHE"


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted, started or stopped."""


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how one broker runs; the broker keeps everything under ``data_dir / "kafka"``."""

    data_dir: Path
    port: int = 9092
    controller_port: int = 9093
    version: str = "4.1.2"
    heap_mb: int = 512
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        for name, value in (("port", self.port), ("controller_port", self.controller_port)):
            if not 0 < value < 65536:
                raise ValueError(f"{name} must be a TCP port (1-65535), got {value}")
        if self.port == self.controller_port:
            raise ValueError(f"port and controller_port must differ (both {self.port})")
        if self.heap_mb < 128:
            raise ValueError(f"heap_mb must be at least 128, got {self.heap_mb}")
        if not self.version or "/" in self.version:
            raise ValueError(f"bad Kafka version {self.version!r}")

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def kafka_dir(self) -> Path:
        """Absolute ``<data_dir>/kafka``: everything this broker writes."""
        return Path(self.data_dir).expanduser().resolve() / "kafka"

    @property
    def log_dir(self) -> Path:
        """The broker's ``log.dirs`` (topic data and the KRaft metadata log)."""
        return self.kafka_dir / "data"

    @property
    def logs_dir(self) -> Path:
        """Passed as ``-Dkafka.logs.dir``."""
        return self.kafka_dir / "logs"

    @property
    def server_properties(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.kafka_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.kafka_dir / "broker.log"

    @property
    def resolved_cache_dir(self) -> Path:
        """``cache_dir``, else ``$LEADFLOW_KAFKA_CACHE``, else ``~/.cache/leadflow/kafka-<v>``."""
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser().resolve()
        env = os.environ.get(CACHE_ENV)
        if env:
            return Path(env).expanduser().resolve()
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return (base / "leadflow" / f"kafka-{self.version}").expanduser().resolve()

    @property
    def libs_dir(self) -> Path:
        return self.resolved_cache_dir / "libs"


@dataclass(frozen=True)
class BrokerStatus:
    """``running``: a live JVM for this data dir; ``port_open``: the client port accepts."""

    running: bool
    pid: int | None
    port_open: bool
    bootstrap_servers: str
    data_dir: Path


def render_server_properties(cfg: BrokerConfig) -> str:
    """The broker's server.properties: one combined broker+controller node on 127.0.0.1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Dynamic quorum (KIP-853): format --standalone. Never with controller.quorum.voters.
        "controller.quorum.bootstrap.servers": f"{HOST}:{cfg.controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{cfg.port},CONTROLLER://{HOST}:{cfg.controller_port}",
        "advertised.listeners": (
            f"PLAINTEXT://{HOST}:{cfg.port},CONTROLLER://{HOST}:{cfg.controller_port}"
        ),
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(cfg.log_dir),
        "num.partitions": "6",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Internal topics default to replication 3: impossible on one broker.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Fewer internal partitions (default 50 each): faster first group / transaction use.
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.num.partitions": "6",
        "share.coordinator.state.topic.num.partitions": "6",
        "group.initial.rebalance.delay.ms": "0",
        # The cleaner's default 128 MiB dedupe buffer is on the heap: needless here.
        "log.cleaner.dedupe.buffer.size": "2097152",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        # Dev: the topics are the history; keep everything.
        "log.retention.ms": "-1",
        "log.retention.bytes": "-1",
        # Smaller segments: faster log recovery after a kill -9, less preallocated index space.
        "log.segment.bytes": str(128 * 1024 * 1024),
        "num.recovery.threads.per.data.dir": "2",
        # After a kill -9 the restarted broker's registration is refused (duplicate broker
        # registration) until the old session expires: 9 s by default, 4 s here.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
    }
    lines = [
        "# Generated by cli/kafka/config.py on every start; edits are overwritten.",
        f"# Kafka {cfg.version}, single node (KRaft combined broker+controller), dev/test only.",
    ]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"
