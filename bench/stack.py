"""A benchmark stack of its own: Kafka, PostgreSQL and the services as processes on a fresh
data dir. PostgreSQL is the embedded server `leadflow up` runs (same binaries, same settings),
or LEADFLOW_BENCH_POSTGRES_URL's server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from cli import postgres_server
from cli.kafka import config as kafka_config
from cli.kafka import ports as kafka_ports
from cli.kafka import process as kafka_process
from shared.migrations import SERVICES, migrate

# A server of your own instead of the embedded one (each run creates and drops its databases).
EXTERNAL_POSTGRES_ENV = "LEADFLOW_BENCH_POSTGRES_URL"


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def create_databases(admin_url: str, names: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
    try:
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return {
        n: make_url(admin_url).set(database=n).render_as_string(hide_password=False) for n in names
    }


async def drop_databases(admin_url: str, names: list[str]) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class Stack:
    """Everything one benchmark phase runs against; `env` is what each service process gets."""

    data_dir: Path
    broker: kafka_config.BrokerConfig
    database: str  # "postgresql (embedded)" or "postgresql (external)"
    db_urls: dict[str, str]
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    embedded: postgres_server.ServerConfig | None = None
    postgres_admin: str | None = None
    pg_names: list[str] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "LEADFLOW_DATA_DIR": str(self.data_dir),
            "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "LEADFLOW_LOG_LEVEL": "WARNING",
        }
        for name in SERVICES:
            env[f"LEADFLOW_{name.upper()}_PORT"] = str(self.ports[name])
            env[f"LEADFLOW_{name.upper()}_DATABASE_URL"] = self.db_urls[name]
        # The qualifier opens sealed personal fields with keys it asks intake for.
        env["LEADFLOW_QUALIFIER_KEYS_URL"] = self.url("intake")
        env.update(extra)
        return env

    def start_service(self, name: str, **extra_env: str) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", name],
            env=self.env(**extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = proc
        wait_ready(self.url(name), proc)
        return proc

    def stop_service(self, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def rss_mb(self, name: str) -> float:
        return rss_mb(self.processes[name].pid)

    def peak_rss_mb(self, name: str) -> float:
        return peak_rss_mb(self.processes[name].pid)

    def reset_peak(self, name: str) -> None:
        reset_peak(self.processes[name].pid)

    def pids(self) -> dict[str, int]:
        """Each running service's process id."""
        return {name: proc.pid for name, proc in self.processes.items()}

    def databases(self) -> dict[str, str]:
        """Each database's name (as PostgreSQL's backends show it) -> its service."""
        return {make_url(url).database or "": name for name, url in self.db_urls.items()}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


# The phases each service's memory is read in (`make bench`): `rss_mb.<phase>` at its end,
# `peak_rss_mb.<phase>` its peak.
MEMORY_PHASES = ("intake", "qualifier", "kpi", "kpi_fold", "kpi_query", "kpi_rebuild")
MEMORY_FIGURES = tuple(
    f"{kind}.{phase}" for kind in ("rss_mb", "peak_rss_mb") for phase in MEMORY_PHASES
)


def peak_rss_mb(pid: int) -> float:
    """The most the process has held since it started, or since `reset_peak` (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def reset_peak(pid: int) -> None:
    """Start the process's peak (VmHWM) over from what it holds now, so that a phase's peak
    is its own (`/proc/PID/clear_refs`, Linux 4.0 on; the process's owner or root)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


async def new_stack(root: Path, label: str) -> Stack:
    """Kafka and three fresh databases: on a new embedded server in the data dir, or on
    LEADFLOW_BENCH_POSTGRES_URL's server when set."""
    data_dir = root / label
    data_dir.mkdir(parents=True)
    kafka_port, controller_port, *service_ports = kafka_ports.free_ports(2 + len(SERVICES))
    broker = kafka_config.BrokerConfig(
        data_dir=data_dir, port=kafka_port, controller_port=controller_port, heap_mb=512
    )
    await asyncio.to_thread(kafka_process.start, broker)
    ports = dict(zip(SERVICES, service_ports, strict=True))
    admin = os.environ.get(EXTERNAL_POSTGRES_ENV)
    if admin:
        suffix = uuid.uuid4().hex[:8]
        names = [f"bench_{s}_{suffix}" for s in SERVICES]
        urls = await create_databases(admin, names)
        db_urls = dict(zip(SERVICES, urls.values(), strict=True))
        stack = Stack(
            data_dir,
            broker,
            "postgresql (external)",
            db_urls,
            ports,
            postgres_admin=admin,
            pg_names=names,
        )
    else:
        embedded = postgres_server.ServerConfig(data_dir=data_dir)
        await asyncio.to_thread(postgres_server.start, embedded)
        db_urls = {s: embedded.url(s) for s in SERVICES}
        stack = Stack(data_dir, broker, "postgresql (embedded)", db_urls, ports, embedded=embedded)
    for name in SERVICES:
        await asyncio.to_thread(migrate, name, stack.db_urls[name])
    return stack


async def close_stack(stack: Stack) -> None:
    for name in list(stack.processes):
        stack.stop_service(name)
    await asyncio.to_thread(kafka_process.stop, stack.broker)
    if stack.embedded:
        await asyncio.to_thread(postgres_server.stop, stack.embedded)
        # As an external server's databases are dropped: a full run's KPI store is gigabytes.
        await asyncio.to_thread(shutil.rmtree, stack.embedded.pgdata, ignore_errors=True)
    if stack.postgres_admin:
        await drop_databases(stack.postgres_admin, stack.pg_names)
