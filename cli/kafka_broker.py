"""Control of a real single-node Apache Kafka (KRaft) broker for dev and tests: fetch, start, stop.

No Docker and no Kafka package are needed: the broker's jars are fetched once from Maven Central
with ``mvn dependency:copy-dependencies`` (``deploy/kafka/pom.xml``) into a cache outside the
repository, and ``java -cp '<libs>/*' kafka.Kafka server.properties`` runs a combined
broker + controller node listening on 127.0.0.1 only.

Everything a broker writes lives under ``<data_dir>/kafka``::

    data/               log.dirs (topic partitions, __cluster_metadata, meta.properties)
    logs/               -Dkafka.logs.dir (unused by the console-only log4j2 config)
    server.properties   rewritten on every start from BrokerConfig
    broker.pid          pid of the running JVM
    broker.log          stdout + stderr of the JVM (the previous run's in broker.log.1)

Stdlib only, so it can be used from tests, the CLI and scripts alike. Linux/POSIX only.
Manual use: ``python -m cli.kafka_broker {fetch,start,stop,status} --data-dir var``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEPLOY_DIR",
    "BrokerConfig",
    "BrokerError",
    "BrokerStatus",
    "fetch_jars",
    "free_port",
    "start",
    "status",
    "stop",
]

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "kafka"
POM_FILE = DEPLOY_DIR / "pom.xml"
BROKER_LOG4J2 = DEPLOY_DIR / "log4j2.properties"
TOOLS_LOG4J2 = DEPLOY_DIR / "tools-log4j2.properties"

HOST = "127.0.0.1"
CACHE_ENV = "LEADFLOW_KAFKA_CACHE"
# Written into the libs dir (inside the temp dir, before the atomic rename) only after a
# complete and checked mvn run; its content is the Kafka version the jars belong to.
FETCH_MARKER = ".leadflow-fetch-complete"
MVN_TIMEOUT_S = 900.0
TOOL_TIMEOUT_S = 120.0
LOG_TAIL_LINES = 40
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # mvn -q still emits colour resets

# Brokers started by this process, kept so that they are polled (and reaped) through their Popen
# rather than garbage-collected while running (ResourceWarning) or left as zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


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


# ---------------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (may be taken by someone else before you bind it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different unused TCP ports on 127.0.0.1. Held open together while they are
    picked: one `free_port()` after another may return the same port twice."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _port_open(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_bindable(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:port now (SO_REUSEADDR, as the JVM does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    child = _CHILDREN.get(pid)
    if child is not None:  # started by this process: poll() also reaps it
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not Path("/proc").is_dir()  # no /proc: trust kill(0); else it just vanished
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state != ["Z"]


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


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


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) held for the duration of the block."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a (possibly large) log file."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            data = fh.read()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError("java not found (install OpenJDK 17+ or set JAVA_HOME)")
    return found


def _classpath(libs: Path) -> str:
    # One argument, expanded by the JVM (no shell involved).
    return str(libs / "*")


# ---------------------------------------------------------------------------------------------
# fetch


def _cache_complete(libs: Path, version: str) -> bool:
    try:
        return (libs / FETCH_MARKER).read_text().strip() == version
    except OSError:
        return False


def _check_libs(libs: Path, version: str) -> None:
    """Every Kafka jar is present and on ``version`` (one version for all org.apache.kafka)."""
    jars = sorted(p.name for p in libs.glob("*.jar"))
    for required in (f"kafka_2.13-{version}.jar", f"kafka-clients-{version}.jar"):
        if required not in jars:
            raise BrokerError(f"mvn finished but {required} is missing from {libs}: {jars}")
    stray = [
        j
        for j in jars
        if (j.startswith("kafka-") or j.startswith("kafka_")) and not j.endswith(f"-{version}.jar")
    ]
    if stray:
        raise BrokerError(f"Kafka jars on another version than {version}: {stray}")
    bindings = [j for j in jars if j.startswith(("log4j-slf4j-impl-", "log4j-slf4j2-impl-"))]
    if len(bindings) != 1:
        raise BrokerError(f"expected exactly one SLF4J binding in {libs}, found {bindings}")


def fetch_jars(cfg: BrokerConfig) -> Path:
    """Fetch the broker's jars into ``<cache_dir>/libs`` once; return that dir.

    No network when the cache is complete (marker file). Otherwise mvn copies the runtime
    dependencies of ``deploy/kafka/pom.xml`` into a temp dir next to ``libs``, which is checked,
    marked and renamed into place, so a killed fetch never leaves a half-filled cache.
    """
    cache, libs = cfg.resolved_cache_dir, cfg.libs_dir
    if _cache_complete(libs, cfg.version):
        return libs
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".fetch.lock"):
        if _cache_complete(libs, cfg.version):  # another process fetched meanwhile
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("mvn not found: Maven is needed once to fetch the Kafka jars")
        if not POM_FILE.is_file():
            raise BrokerError(f"missing {POM_FILE}")
        for leftover in cache.glob(".libs-*"):  # from a killed fetch
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".libs-"))
        try:
            cmd = [
                mvn,
                "-B",
                "-q",
                "-Dstyle.color=never",
                "-f",
                str(POM_FILE),
                "dependency:copy-dependencies",
                f"-Dkafka.version={cfg.version}",
                f"-DoutputDirectory={tmp}",
            ]
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=cache,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=MVN_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                out = _ANSI.sub("", exc.output) if isinstance(exc.output, str) else ""
                raise BrokerError(
                    f"mvn timed out after {MVN_TIMEOUT_S:.0f}s fetching Kafka {cfg.version}:\n{out}"
                ) from exc
            if proc.returncode != 0:
                raise BrokerError(
                    f"mvn failed (exit {proc.returncode}) fetching Kafka {cfg.version}: "
                    f"{' '.join(cmd)}\n{_ANSI.sub('', proc.stdout)}"
                )
            _check_libs(tmp, cfg.version)
            _write_atomic(tmp / FETCH_MARKER, cfg.version + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700
            if libs.exists():  # incomplete or another version: move aside, then drop
                old = Path(tempfile.mkdtemp(dir=cache, prefix=".libs-old-"))
                os.replace(libs, old / "libs")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, libs)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return libs


# ---------------------------------------------------------------------------------------------
# configure and format


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
        "# Generated by cli/kafka_broker.py on every start; edits are overwritten.",
        f"# Kafka {cfg.version}, single node (KRaft combined broker+controller), dev/test only.",
    ]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _random_cluster_id() -> str:
    """A Kafka cluster id (base64url of 16 random bytes) without starting a JVM for it."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):  # would look like a command-line option
            return cid


def _format_storage(cfg: BrokerConfig, libs: Path) -> None:
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
        _random_cluster_id(),
        "--config",
        str(cfg.server_properties),
        "--standalone",
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


# ---------------------------------------------------------------------------------------------
# start / stop / status


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


def start(cfg: BrokerConfig, timeout: float = 120.0) -> int:
    """Start the broker for ``cfg.data_dir`` in the background (or find it running); its pid.

    Fetches the jars if needed, writes server.properties, formats the storage once, starts the
    JVM in its own session (stdout/stderr to broker.log), writes broker.pid and waits until
    127.0.0.1:port accepts connections. If the JVM dies or ``timeout`` passes first, the JVM is
    stopped and BrokerError carries the tail of broker.log.
    """
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
            if current is not None and current != render_server_properties(cfg):
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
        _write_atomic(cfg.server_properties, render_server_properties(cfg))
        if not (cfg.log_dir / "meta.properties").exists():
            _format_storage(cfg, libs)

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


# ---------------------------------------------------------------------------------------------
# manual use: python -m cli.kafka_broker {fetch,start,stop,status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cli.kafka_broker", description="Single-node Kafka broker for dev/tests"
    )
    parser.add_argument("command", choices=["fetch", "start", "stop", "status"])
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=9093)
    parser.add_argument("--version", default="4.1.2")
    parser.add_argument("--heap-mb", type=int, default=512)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=None)
    args = parser.parse_args(argv)
    cfg = BrokerConfig(
        data_dir=args.data_dir,
        port=args.port,
        controller_port=args.controller_port,
        version=args.version,
        heap_mb=args.heap_mb,
        cache_dir=args.cache_dir,
    )
    try:
        if args.command == "fetch":
            print(fetch_jars(cfg))
        elif args.command == "start":
            pid = start(cfg, timeout=args.timeout or 120.0)
            print(f"Kafka {cfg.version} running: pid {pid}, bootstrap {cfg.bootstrap_servers}")
        elif args.command == "stop":
            stopped = stop(cfg, timeout=args.timeout or 60.0)
            print("stopped" if stopped else "not running")
        else:
            st = status(cfg)
            state = "running" if st.running else "not running"
            print(f"{state} pid={st.pid} port_open={st.port_open} bootstrap={st.bootstrap_servers}")
            return 0 if st.running else 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
