"""The whole stack started the way a user starts it: `leadflow up`, in its own data dir
(Kafka and the embedded PostgreSQL server included)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli import postgres_server
from cli.kafka import config as kafka_config
from cli.kafka import process as kafka_process
from cli.kafka.ports import free_ports
from cli.postgres_server import ServerConfig


@dataclass
class Stack:
    process: subprocess.Popen[str]
    data_dir: Path
    kafka: str
    kafka_port: int
    urls: dict[str, str]
    output: list[str] = field(default_factory=list)

    @property
    def postgres(self) -> ServerConfig:
        """The embedded server `leadflow up` runs for this data dir."""
        return ServerConfig(data_dir=self.data_dir)

    def stop(self, timeout: float = 90.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.process.wait(timeout)


def _pump(stack: Stack) -> None:
    assert stack.process.stdout is not None
    for line in stack.process.stdout:
        stack.output.append(line.rstrip("\n"))


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Under /tmp itself: run as root, PostgreSQL runs as another OS user, and every new
    # pytest session makes /tmp/pytest-of-<user> 0700 again, out of that user's reach.
    data_dir = Path(tempfile.mkdtemp(prefix="leadflow-e2e-"))
    kafka_port, controller_port, *service_ports = free_ports(5)
    ports = dict(zip(("intake", "qualifier", "kpi"), service_ports, strict=True))
    inherited = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")}
    env = {
        **inherited,
        "PYTHONUNBUFFERED": "1",
        "LEADFLOW_DATA_DIR": str(data_dir),
        "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "LEADFLOW_KAFKA_CONTROLLER_PORT": str(controller_port),
        "LEADFLOW_TOPIC_PARTITIONS": "3",
        **{f"LEADFLOW_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        # The qualifier fetches leads' keys from this stack's intake (crypto-shredding).
        "LEADFLOW_QUALIFIER_KEYS_URL": f"http://127.0.0.1:{ports['intake']}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    stack = Stack(
        process=process,
        data_dir=data_dir,
        kafka=f"127.0.0.1:{kafka_port}",
        kafka_port=kafka_port,
        urls={name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
    )
    threading.Thread(target=_pump, args=(stack,), daemon=True).start()
    try:
        deadline = time.monotonic() + 240
        while "Leadflow is up." not in stack.output:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("leadflow up did not come up:\n" + "\n".join(stack.output[-60:]))
            time.sleep(0.2)
        yield stack
    finally:
        if process.poll() is None:
            try:
                stack.stop()
            except subprocess.TimeoutExpired:
                process.kill()
        # Whatever happened (a test checks that Ctrl-C stopped them), leave none running.
        kafka_process.stop(kafka_config.BrokerConfig(data_dir, kafka_port, controller_port))
        postgres_server.stop(stack.postgres)
        shutil.rmtree(data_dir, ignore_errors=True)
