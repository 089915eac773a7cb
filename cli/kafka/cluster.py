"""A secured multi-node KRaft cluster for dev and tests, from the dev broker's jars.

Each node is a combined broker + controller (static quorum: a majority of the nodes keeps
the cluster up) on 127.0.0.1 with three listeners::

    CLIENT      SASL_SSL, SCRAM-SHA-512 (and -256): the services, one principal each
    INTERNAL    SSL with client certificates: replication between the nodes (CN=broker)
    CONTROLLER  SSL with client certificates: the KRaft quorum

The standard authorizer denies what no ACL allows; super users are `admin` and the nodes.
The SCRAM users (admin and one per service, random passwords) are written into each node's
metadata when it is formatted (`--add-scram`); `configure` then applies the services' ACLs
(cli/kafka/acls.py) and creates the topics with replication 3 and min.insync.replicas 2.
Everything lives under ``<data_dir>/kafka-cluster``: cluster.json (ports), credentials.json
(0600), tls/ (cli/kafka/tls.py), node-<n>/kafka/ (as the dev broker's kafka dir).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from cli.kafka import acls, process
from cli.kafka.config import HOST, BrokerConfig, BrokerError
from cli.kafka.osutil import _write_atomic
from cli.kafka.ports import free_ports
from cli.kafka.tls import BROKER_PRINCIPAL, TlsFiles, make_tls
from shared.kafka_security import Durability, KafkaConnection, SaslMechanism, SecurityProtocol

ADMIN = "admin"
USERS = (ADMIN, "intake", "qualifier", "kpi")
MECHANISM = SaslMechanism.SCRAM_SHA_512
SCRAM_SERVER = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
# What `configure` gives the topics: a lost node loses no acknowledged event.
DURABILITY = Durability(replication_factor=3, min_insync_replicas=2, strict=True)


@dataclass(frozen=True)
class ClusterConfig:
    data_dir: Path
    client_ports: tuple[int, ...]
    internal_ports: tuple[int, ...]
    controller_ports: tuple[int, ...]
    version: str = "4.1.2"
    heap_mb: int = 384
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        n = len(self.client_ports)
        if n < 1 or len(self.internal_ports) != n or len(self.controller_ports) != n:
            raise ValueError("one client, internal and controller port per node")
        ports = (*self.client_ports, *self.internal_ports, *self.controller_ports)
        if len(set(ports)) != len(ports):
            raise ValueError(f"the cluster's ports must all differ: {ports}")

    @classmethod
    def at(cls, data_dir: Path, base_port: int, brokers: int = 3) -> ClusterConfig:
        """Node n (1-based) on base + 3(n-1): client, then internal, then controller."""
        bases = [base_port + 3 * i for i in range(brokers)]
        return cls(
            data_dir,
            tuple(bases),
            tuple(b + 1 for b in bases),
            tuple(b + 2 for b in bases),
        )

    @classmethod
    def on_free_ports(cls, data_dir: Path, brokers: int = 3) -> ClusterConfig:
        ports = free_ports(3 * brokers)
        return cls(
            data_dir,
            tuple(ports[:brokers]),
            tuple(ports[brokers : 2 * brokers]),
            tuple(ports[2 * brokers :]),
        )

    @classmethod
    def load(cls, data_dir: Path) -> ClusterConfig | None:
        """The cluster started before in `data_dir`, if any (its cluster.json)."""
        path = cls.root_of(data_dir) / "cluster.json"
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        return cls(
            data_dir,
            tuple(saved["client_ports"]),
            tuple(saved["internal_ports"]),
            tuple(saved["controller_ports"]),
        )

    @staticmethod
    def root_of(data_dir: Path) -> Path:
        return Path(data_dir).expanduser().resolve() / "kafka-cluster"

    @property
    def root(self) -> Path:
        return self.root_of(self.data_dir)

    @property
    def nodes(self) -> range:
        return range(1, len(self.client_ports) + 1)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{HOST}:{port}" for port in self.client_ports)

    def node(self, n: int) -> BrokerConfig:
        """Node `n` (1-based) as the process module knows a broker."""
        return BrokerConfig(
            data_dir=self.root / f"node-{n}",
            port=self.client_ports[n - 1],
            controller_port=self.controller_ports[n - 1],
            version=self.version,
            heap_mb=self.heap_mb,
            cache_dir=self.cache_dir,
        )


def credentials(cfg: ClusterConfig) -> dict[str, SecretStr]:
    """Each user's password: made at the first start, then read from credentials.json."""
    path = cfg.root / "credentials.json"
    if not path.exists():
        cfg.root.mkdir(parents=True, exist_ok=True)
        made = {user: secrets.token_hex(16) for user in USERS}
        _write_atomic(path, json.dumps(made))
        path.chmod(0o600)
    return {user: SecretStr(pw) for user, pw in json.loads(path.read_text()).items()}


def tls_files(cfg: ClusterConfig) -> TlsFiles:
    return make_tls(cfg.root / "tls")


def connection(cfg: ClusterConfig, user: str, password: SecretStr | None = None) -> KafkaConnection:
    """How `user` connects (its own password unless `password` is given)."""
    return KafkaConnection(
        bootstrap_servers=cfg.bootstrap_servers,
        security_protocol=SecurityProtocol.SASL_SSL,
        sasl_mechanism=MECHANISM,
        sasl_username=user,
        sasl_password=password or credentials(cfg)[user],
        ssl_cafile=tls_files(cfg).ca_cert,
    )


def service_env(cfg: ClusterConfig, user: str) -> dict[str, str]:
    """The LEADFLOW_ variables that make a service connect as `user`."""
    return {
        "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": cfg.bootstrap_servers,
        "LEADFLOW_KAFKA_SECURITY_PROTOCOL": SecurityProtocol.SASL_SSL.value,
        "LEADFLOW_KAFKA_SASL_MECHANISM": MECHANISM.value,
        "LEADFLOW_KAFKA_SASL_USERNAME": user,
        "LEADFLOW_KAFKA_SASL_PASSWORD": credentials(cfg)[user].get_secret_value(),
        "LEADFLOW_KAFKA_SSL_CAFILE": str(tls_files(cfg).ca_cert),
        "LEADFLOW_KAFKA_REPLICATION_FACTOR": str(DURABILITY.replication_factor),
        "LEADFLOW_KAFKA_MIN_INSYNC_REPLICAS": str(DURABILITY.min_insync_replicas),
    }


def write_env_files(cfg: ClusterConfig) -> dict[str, Path]:
    """`<user>.env` (0600) for each service: the variables that connect it."""
    written = {}
    for user in USERS[1:]:
        path = cfg.root / f"{user}.env"
        lines = [f"{k}={v}" for k, v in service_env(cfg, user).items()]
        _write_atomic(path, "\n".join(lines) + "\n")
        path.chmod(0o600)
        written[user] = path
    return written


def render_node_properties(cfg: ClusterConfig, n: int, tls: TlsFiles) -> str:
    node = cfg.node(n)
    client, internal = cfg.client_ports[n - 1], cfg.internal_ports[n - 1]
    voters = ",".join(f"{i}@{HOST}:{cfg.controller_ports[i - 1]}" for i in cfg.nodes)
    replicas = str(min(3, len(cfg.client_ports)))
    min_isr = str(min(DURABILITY.min_insync_replicas, len(cfg.client_ports)))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(n),
        "controller.quorum.voters": voters,
        "listeners": (
            f"CLIENT://{HOST}:{client},INTERNAL://{HOST}:{internal},"
            f"CONTROLLER://{HOST}:{node.controller_port}"
        ),
        "advertised.listeners": f"CLIENT://{HOST}:{client},INTERNAL://{HOST}:{internal}",
        "listener.security.protocol.map": "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "INTERNAL",
        "controller.listener.names": "CONTROLLER",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(tls.keystore),
        "ssl.keystore.password": tls.store_password,
        "ssl.key.password": tls.store_password,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(tls.truststore),
        "ssl.truststore.password": tls.store_password,
        "ssl.endpoint.identification.algorithm": "https",
        # The nodes prove who they are with their certificate; clients with SCRAM.
        "ssl.client.auth": "required",
        "listener.name.client.ssl.client.auth": "none",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
        "listener.name.client.scram-sha-512.sasl.jaas.config": SCRAM_SERVER,
        "listener.name.client.scram-sha-256.sasl.jaas.config": SCRAM_SERVER,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN};{BROKER_PRINCIPAL}",
        "log.dirs": str(node.log_dir),
        "num.partitions": "6",
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.num.partitions": "6",
        "share.coordinator.state.topic.num.partitions": "6",
        "group.initial.rebalance.delay.ms": "0",
        "log.cleaner.dedupe.buffer.size": "2097152",
        "auto.create.topics.enable": "false",
        "unclean.leader.election.enable": "false",
        "log.retention.ms": "-1",
        "log.retention.bytes": "-1",
        "log.segment.bytes": str(128 * 1024 * 1024),
        "num.recovery.threads.per.data.dir": "2",
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
    }
    lines = [
        "# Generated by cli/kafka/cluster.py on every start; edits are overwritten.",
        f"# Kafka {cfg.version}, node {n} of {len(cfg.client_ports)}, dev/test only.",
    ]
    return "\n".join([*lines, *(f"{k}={v}" for k, v in props.items())]) + "\n"


def _cluster_id(cfg: ClusterConfig) -> str:
    path = cfg.root / "cluster-id"
    if not path.exists():
        _write_atomic(path, process._random_cluster_id() + "\n")
    return path.read_text().strip()


def start_node(cfg: ClusterConfig, n: int, timeout: float = 180.0) -> int:
    """Start node `n` (formatted with the SCRAM users on first use); returns once its
    client port accepts, which needs a quorum: start the others alongside."""
    tls = tls_files(cfg)
    scram = [
        arg
        for user, password in credentials(cfg).items()
        for arg in (
            "--add-scram",
            f"{MECHANISM}=[name={user},password={password.get_secret_value()}]",
        )
    ]
    return process.start(
        cfg.node(n),
        timeout,
        properties=render_node_properties(cfg, n, tls),
        cluster_id=_cluster_id(cfg),
        format_args=scram,
    )


def start(cfg: ClusterConfig, timeout: float = 240.0) -> list[int]:
    """Start every node (side by side: each waits for a quorum); their pids."""
    cfg.root.mkdir(parents=True, exist_ok=True)
    saved = {
        "client_ports": cfg.client_ports,
        "internal_ports": cfg.internal_ports,
        "controller_ports": cfg.controller_ports,
    }
    _write_atomic(cfg.root / "cluster.json", json.dumps(saved))
    # Made once, before the nodes race to make them.
    tls_files(cfg)
    credentials(cfg)
    _cluster_id(cfg)
    with ThreadPoolExecutor(max_workers=len(cfg.client_ports)) as pool:
        started = [pool.submit(start_node, cfg, n, timeout) for n in cfg.nodes]
        try:
            return [f.result() for f in started]
        except BaseException:
            stop(cfg)
            raise


async def configure(cfg: ClusterConfig, partitions: int = 6) -> None:
    """As the admin: the services' ACLs, then the topics with replication 3."""
    from shared.topics import ensure_topics, start_admin

    admin = await start_admin(connection(cfg, ADMIN), wait_seconds=60)
    try:
        await acls.apply(admin, acls.service_grants())
    finally:
        await admin.close()
    await ensure_topics(connection(cfg, ADMIN), partitions, durability=DURABILITY)


def kill_node(cfg: ClusterConfig, n: int) -> None:
    """SIGKILL node `n`: no controlled shutdown, nothing flushed."""
    node = cfg.node(n)
    pid = process._find_pid(node)
    if pid is None:
        raise BrokerError(f"node {n} is not running")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not process._wait_gone(pid, 30.0):
        raise BrokerError(f"node {n} (pid {pid}) survived SIGKILL")
    node.pid_file.unlink(missing_ok=True)


def stop(cfg: ClusterConfig) -> bool:
    """Stop every node; False if none was running."""
    with ThreadPoolExecutor(max_workers=len(cfg.client_ports)) as pool:
        return any(list(pool.map(lambda n: process.stop(cfg.node(n), timeout=20.0), cfg.nodes)))


def running(cfg: ClusterConfig) -> list[int | None]:
    """Each node's pid, None where it does not run."""
    return [process.status(cfg.node(n)).pid for n in cfg.nodes]
