"""The whole stack started the way a user starts it: `leadflow up`, in its own data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli.kafka_broker import free_ports


@dataclass
class Stack:
    process: subprocess.Popen[str]
    data_dir: Path
    kafka: str
    kafka_port: int
    urls: dict[str, str]
    output: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 90.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.process.wait(timeout)


def _pump(stack: Stack) -> None:
    assert stack.process.stdout is not None
    for line in stack.process.stdout:
        stack.output.append(line.rstrip("\n"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("stack")
    kafka_port, controller_port, *service_ports = free_ports(5)
    ports = dict(zip(("intake", "qualifier", "kpi"), service_ports, strict=True))
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "LEADFLOW_DATA_DIR": str(data_dir),
        "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "LEADFLOW_KAFKA_CONTROLLER_PORT": str(controller_port),
        "LEADFLOW_TOPIC_PARTITIONS": "3",
        **{f"LEADFLOW_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "up"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    stack = Stack(
        process=process, data_dir=data_dir, kafka=f"127.0.0.1:{kafka_port}", kafka_port=kafka_port,
        urls={name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
    )  # fmt: skip
    threading.Thread(target=_pump, args=(stack,), daemon=True).start()
    deadline = time.monotonic() + 240
    while "Leadflow is up." not in stack.output:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("leadflow up did not come up:\n" + "\n".join(stack.output[-60:]))
        time.sleep(0.2)
    try:
        yield stack
    finally:
        if process.poll() is None:
            stack.stop()
