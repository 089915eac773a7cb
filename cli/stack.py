"""`leadflow up`: Kafka, PostgreSQL, migrations and the three services, stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from cli import postgres_server
from cli.kafka import config as kafka_config
from cli.kafka import process as kafka_process
from shared.kafka import ensure_topics
from shared.migrations import SERVICES, migrate
from shared.settings import CommonSettings, ServiceSettings


@dataclass
class Child:
    name: str
    url: str
    process: subprocess.Popen[bytes]


def service_settings(name: str) -> ServiceSettings:
    """The settings class of a service, read from the environment."""
    if name == "intake":
        from services.intake.config import IntakeSettings

        return IntakeSettings()
    if name == "qualifier":
        from services.qualifier.config import QualifierSettings

        return QualifierSettings()
    if name == "kpi":
        from services.kpi.config import KpiSettings

        return KpiSettings()
    raise ValueError(f"unknown service {name!r}; expected one of {SERVICES}")


def broker_config(common: CommonSettings) -> kafka_config.BrokerConfig:
    """The dev broker listens where the services are told Kafka is."""
    host_port = common.kafka_bootstrap_servers.split(",")[0]
    port = int(host_port.rsplit(":", 1)[1])
    controller = int(os.environ.get("LEADFLOW_KAFKA_CONTROLLER_PORT", port + 1))
    return kafka_config.BrokerConfig(
        data_dir=common.data_dir, port=port, controller_port=controller
    )


def postgres_config(common: CommonSettings) -> postgres_server.ServerConfig | None:
    """The embedded server of the data dir, or None when every service is given a
    database of its own (LEADFLOW_<SVC>_DATABASE_URL)."""
    if all(service_settings(name).database_url for name in SERVICES):
        return None
    return postgres_server.ServerConfig(data_dir=common.data_dir)


def start_service(name: str) -> Child:
    settings = service_settings(name)
    process = subprocess.Popen([sys.executable, "-m", "cli", "serve", name])
    return Child(name, f"http://{settings.host}:{settings.port}", process)


def wait_ready(children: list[Child], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    pending = {c.name: c for c in children}
    while pending:
        for name, child in list(pending.items()):
            if child.process.poll() is not None:
                raise RuntimeError(f"{name} exited with {child.process.returncode} during start-up")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{child.url}/readyz", timeout=2).status_code == 200:
                    del pending[name]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout:.0f}s: {', '.join(pending)}")
        time.sleep(0.3)


def stop_children(children: list[Child], timeout: float = 15.0) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.process.wait(remaining)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def up(print_fn: Callable[[str], None] = print) -> int:
    """Run the whole stack in the foreground until Ctrl-C or SIGTERM."""
    common = CommonSettings()
    common.check_secure()
    cfg = broker_config(common)
    print_fn(f"data dir: {common.data_dir}")
    pg = postgres_config(common)
    # What was running before is left running, as it was found.
    pg_was_running = pg is not None and postgres_server.status(pg).running
    was_running = kafka_process.status(cfg).running
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    children: list[Child] = []
    try:
        # Side by side: PostgreSQL is ready in a few seconds, within Kafka's start.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pg_started = None
            if pg is not None:
                if pg_was_running:
                    print_fn(f"PostgreSQL in {pg.pg_dir} is running: used and left running")
                else:
                    print_fn(f"starting PostgreSQL in {pg.pg_dir}...")
                pg_started = pool.submit(postgres_server.start, pg)
            print_fn(f"starting Kafka on {cfg.bootstrap_servers} (first run fetches the jars)...")
            kafka_process.start(cfg)
            if pg_started is not None:
                pg_started.result()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        asyncio.run(
            ensure_topics(common.kafka(), common.topic_partitions, durability=common.durability())
        )
        for name in SERVICES:
            migrate(name, service_settings(name).db_url)
        children = [start_service(name) for name in SERVICES]
        wait_ready(children)
        _print_banner(children, common, pg, print_fn)
        while not stopping:
            for child in children:
                if child.process.poll() is not None:
                    print_fn(f"{child.name} exited with {child.process.returncode}; stopping")
                    stopping = True
            time.sleep(0.5)
        return 0
    finally:
        print_fn("stopping services...")
        stop_children(children)
        if not was_running:
            print_fn("stopping Kafka...")
            kafka_process.stop(cfg)
        if pg is not None and not pg_was_running:
            print_fn("stopping PostgreSQL...")
            postgres_server.stop(pg)
        print_fn("stopped")


def _print_banner(
    children: list[Child],
    common: CommonSettings,
    pg: postgres_server.ServerConfig | None,
    print_fn: Callable[[str], None],
) -> None:
    urls = {c.name: c.url for c in children}
    today = datetime.date.today()
    month = today.replace(day=1)
    next_month = (month + datetime.timedelta(days=32)).replace(day=1)
    lines = ["", "Leadflow is up."]
    lines += [f"  {c.name:<10} {c.url}   (docs: {c.url}/docs)" for c in children]
    lines.append(f"  {'dashboard':<10} {urls['kpi']}/dashboard")
    lines.append(f"  {'kafka':<10} {common.kafka_bootstrap_servers}")
    if pg is not None:
        lines.append(f"  {'postgres':<10} {pg.dsn('<service>')}")
    if common.dev:
        lines.append("  mode       dev: the bearer token `dev` holds every scope")
    lines += [
        "",
        "Post a lead:",
        f"  curl -s -X POST {urls['intake']}/v1/leads -H 'Authorization: Bearer dev' \\",
        "    -H 'Content-Type: application/json' \\",
        '    -d \'{"source":"web_form","form_id":"contact-us","name":"Anna Petrova",'
        '"email":"anna@acme.example","company":"Acme","services":["seo"],'
        '"budget":"200000","timeframe":"now","role_in_purchase":"decision_maker",'
        '"company_size":"101-500","consent":true}\'',
        "Then:",
        f"  curl -s {urls['qualifier']}/v1/leads/<lead_id> -H 'Authorization: Bearer dev'",
        f"  curl -s '{urls['kpi']}/v1/kpi/summary?from={month}&to={next_month}' "
        "-H 'Authorization: Bearer dev'",
        "",
        "Ctrl-C stops everything this command started.",
    ]
    for line in lines:
        print_fn(line)
    sys.stdout.flush()
