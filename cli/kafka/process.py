"""Start, stop and inspect the broker JVM for one data dir (pid file, /proc scan, ready wait)."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from cli.kafka.config import (
    BROKER_LOG4J2,
    HOST,
    TOOLS_LOG4J2,
    BrokerConfig,
    BrokerError,
    BrokerStatus,
    render_server_properties,
)
from cli.kafka.jars import _classpath, _java, fetch_jars
from cli.kafka.osutil import _CHILDREN, _cmdline, _locked, _pid_alive, _tail, _write_atomic
from cli.kafka.ports import _port_bindable, _port_open

TOOL_TIMEOUT_S = 120.0


def _is_our_broker(pid: int, cfg: BrokerConfig) -> bool:
    """Whether ``pid`` is a live ``kafka.Kafka`` JVM started with this data dir's config."""
    if pid in _CHILDREN and not _pid_alive(pid):  # our child exited: reap it
        return False
    args = _cmdline(pid)
    if args is None and Path("/proc").is_dir():
        return False  # gone
    if args is not None and not ("kafka.Kafka" in args and str(cfg.server_properties) in args):
        return False  # pid reused by something else (a zombie's cmdline is empty, too)
    return _pid_alive(pid)


def _read_pid(cfg: BrokerConfig) -> int | None:
    try:
        return int(cfg.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _scan_for_broker(cfg: BrokerConfig) -> int | None:
    """Find a broker for this data dir whose pid file is missing or stale (Linux /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            if pid != os.getpid() and _is_our_broker(pid, cfg):
                return pid
    return None


def _find_pid(cfg: BrokerConfig) -> int | None:
    """Pid of the live broker for this data dir (pid file first, then a /proc scan)."""
    for child in list(_CHILDREN):
        _pid_alive(child)  # reap brokers of ours that exited meanwhile
    pid = _read_pid(cfg)
    if pid is not None and _is_our_broker(pid, cfg):
        return pid
    return _scan_for_broker(cfg)


def _random_cluster_id() -> str:
    """A Kafka cluster id (base64url of 16 random bytes) without starting a JVM for it."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):  # would look like a command-line option
            return cid


def _format_storage(
    cfg: BrokerConfig, libs: Path, cluster_id: str | None = None, extra: Sequence[str] = ()
) -> None:
    """Format the log dir: one node of its own (`--standalone`) unless `extra` says how
    (a node of a cluster: its cluster id, SCRAM users)."""
    cmd = [
        _java(),
        "-Xmx256M",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={TOOLS_LOG4J2}",
        "-cp",
        _classpath(libs),
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        cluster_id or _random_cluster_id(),
        "--config",
        str(cfg.server_properties),
        *(extra or ["--standalone"]),
    ]
    try:
        proc = subprocess.run(
            cmd,
            cwd=cfg.kafka_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"formatting {cfg.log_dir} timed out") from exc
    if proc.returncode != 0:
        raise BrokerError(
            f"formatting {cfg.log_dir} failed (exit {proc.returncode}):\n{proc.stdout}"
        )


def _jvm_command(cfg: BrokerConfig, libs: Path) -> list[str]:
    return [
        _java(),
        f"-Xmx{cfg.heap_mb}M",
        f"-Xms{cfg.heap_mb}M",
        "-server",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={cfg.logs_dir}",
        f"-Dlog4j2.configurationFile={BROKER_LOG4J2}",
        "-cp",
        _classpath(libs),
        "kafka.Kafka",
        str(cfg.server_properties),
    ]


def _wait_ready(cfg: BrokerConfig, pid: int, deadline: float) -> None:
    """Wait until the client port accepts; the broker opens it only once it can serve."""
    while True:
        if not _pid_alive(pid):
            raise BrokerError(
                f"Kafka broker (pid {pid}) exited before opening {cfg.bootstrap_servers}; "
                f"last lines of {cfg.log_file}:\n{_tail(cfg.log_file)}"
            )
        if _port_open(cfg.port):
            return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"Kafka broker (pid {pid}) did not open {cfg.bootstrap_servers} in time; "
                f"last lines of {cfg.log_file}:\n{_tail(cfg.log_file)}"
            )
        time.sleep(0.2)


def start(
    cfg: BrokerConfig,
    timeout: float = 120.0,
    *,
    properties: str | None = None,
    cluster_id: str | None = None,
    format_args: Sequence[str] = (),
) -> int:
    """Start the broker for ``cfg.data_dir`` in the background (or find it running); its pid.

    Fetches the jars if needed, writes server.properties, formats the storage once, starts the
    JVM in its own session (stdout/stderr to broker.log), writes broker.pid and waits until
    127.0.0.1:port accepts connections. If the JVM dies or ``timeout`` passes first, the JVM is
    stopped and BrokerError carries the tail of broker.log. `properties`, `cluster_id` and
    `format_args`: a node of a cluster (cli/kafka/cluster.py) instead of the one dev broker.
    """
    if properties is None:
        properties = render_server_properties(cfg)
    deadline = time.monotonic() + timeout
    kafka_dir = cfg.kafka_dir
    kafka_dir.mkdir(parents=True, exist_ok=True)
    with _locked(kafka_dir / ".control.lock"):
        running = _find_pid(cfg)
        if running is not None:
            # Ours already (maybe still starting, e.g. from another process): wait for it,
            # unless it runs with other settings (ports, ...) than asked for.
            try:
                current = cfg.server_properties.read_text(encoding="utf-8")
            except OSError:
                current = None
            if current is not None and current != properties:
                raise BrokerError(
                    f"a Kafka broker for {kafka_dir} is already running (pid {running}) with "
                    f"other settings than requested ({cfg.bootstrap_servers}); stop it first"
                )
            _write_atomic(cfg.pid_file, f"{running}\n")
            _wait_ready(cfg, running, deadline)
            return running
        cfg.pid_file.unlink(missing_ok=True)  # stale
        for name, port in (("client port", cfg.port), ("controller port", cfg.controller_port)):
            if _port_open(port) or not _port_bindable(port):
                raise BrokerError(
                    f"{name} {HOST}:{port} is already in use by another process "
                    f"(not the Kafka broker for {kafka_dir}); pick another port or stop it"
                )

        libs = fetch_jars(cfg)
        cfg.log_dir.mkdir(parents=True, exist_ok=True)
        cfg.logs_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(cfg.server_properties, properties)
        if not (cfg.log_dir / "meta.properties").exists():
            _format_storage(cfg, libs, cluster_id, format_args)

        if cfg.log_file.exists():
            os.replace(cfg.log_file, cfg.log_file.with_name(cfg.log_file.name + ".1"))
        with open(cfg.log_file, "ab") as log:
            proc = subprocess.Popen(
                _jvm_command(cfg, libs),
                cwd=kafka_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        _CHILDREN[proc.pid] = proc
        _write_atomic(cfg.pid_file, f"{proc.pid}\n")
        try:
            _wait_ready(cfg, proc.pid, deadline)
        except BaseException:
            _terminate(proc.pid, timeout=15.0)
            cfg.pid_file.unlink(missing_ok=True)
            raise
        return proc.pid


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM (Kafka's shutdown hook does a controlled shutdown), SIGKILL after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, 30.0):
        raise BrokerError(f"Kafka broker (pid {pid}) survived SIGKILL")


def stop(cfg: BrokerConfig, timeout: float = 60.0) -> bool:
    """Stop the broker for ``cfg.data_dir``; False if none was running.

    On return the JVM is gone, its ports are released and broker.pid is removed.
    """
    kafka_dir = cfg.kafka_dir
    if not kafka_dir.is_dir():
        return False
    with _locked(kafka_dir / ".control.lock"):
        pid = _find_pid(cfg)
        if pid is None:
            cfg.pid_file.unlink(missing_ok=True)
            return False
        _terminate(pid, timeout)
        cfg.pid_file.unlink(missing_ok=True)
        # The kernel closes the listeners with the process; allow a moment regardless.
        deadline = time.monotonic() + 5.0
        while _port_open(cfg.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        return True


def status(cfg: BrokerConfig) -> BrokerStatus:
    """Whether the broker for ``cfg.data_dir`` runs, its pid and whether its port accepts."""
    pid = _find_pid(cfg) if cfg.kafka_dir.is_dir() else None
    return BrokerStatus(
        running=pid is not None,
        pid=pid,
        port_open=_port_open(cfg.port),
        bootstrap_servers=cfg.bootstrap_servers,
        data_dir=Path(cfg.data_dir).expanduser().resolve(),
    )
