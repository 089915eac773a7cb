"""Where the embedded PostgreSQL server keeps its socket, and the settings it runs with."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.postgres_server import MAX_SOCKET_PATH, ServerConfig, render_conf
from cli.stack import postgres_config
from shared.settings import CommonSettings

EXTERNAL = "postgresql+asyncpg://crm:pw@db.internal:5432/leads"


class TestSocketDir:
    def test_inside_the_data_dir_when_the_path_fits(self, tmp_path: Path) -> None:
        cfg = ServerConfig(data_dir=tmp_path)
        assert cfg.socket_dir == tmp_path / "postgres"
        assert cfg.url("kpi") == f"postgresql+asyncpg://leadflow@/kpi?host={tmp_path}/postgres"

    def test_a_short_dir_of_its_own_when_the_socket_path_would_be_too_long(self) -> None:
        deep = Path("/srv") / ("d" * 60) / ("e" * 60)
        cfg = ServerConfig(data_dir=deep)
        assert len(str(cfg.pg_dir / ".s.PGSQL.5432")) > MAX_SOCKET_PATH
        assert cfg.socket_dir.name.startswith("leadflow-pg-")
        assert len(str(cfg.socket_dir / ".s.PGSQL.5432")) <= MAX_SOCKET_PATH
        # The same data dir always finds the same socket; another data dir another one.
        assert ServerConfig(data_dir=deep).socket_dir == cfg.socket_dir
        assert ServerConfig(data_dir=deep / "other").socket_dir != cfg.socket_dir

    def test_a_path_of_exactly_the_limit_stays_in_the_data_dir(self) -> None:
        name = "/.s.PGSQL.5432"
        data_dir = Path("/" + "x" * (MAX_SOCKET_PATH - len(name) - len("/postgres") - 1))
        assert len(str(data_dir / "postgres" / ".s.PGSQL.5432")) == MAX_SOCKET_PATH
        assert ServerConfig(data_dir=data_dir).socket_dir == data_dir / "postgres"


def test_listens_on_its_socket_only_and_stays_durable(tmp_path: Path) -> None:
    conf = dict(
        line.split(" = ", 1) for line in render_conf(ServerConfig(data_dir=tmp_path)).splitlines()
    )
    assert conf["listen_addresses"] == "''"
    assert conf["unix_socket_directories"] == f"'{tmp_path}/postgres'"
    assert conf["unix_socket_permissions"] == "0700"
    assert conf["fsync"] == "on"


class TestLeadflowUp:
    def test_starts_the_embedded_server_while_a_service_uses_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("intake", "qualifier"):
            monkeypatch.setenv(f"LEADFLOW_{name.upper()}_DATABASE_URL", EXTERNAL)
        cfg = postgres_config(CommonSettings(data_dir=tmp_path))
        assert cfg is not None and cfg.pg_dir == tmp_path / "postgres"

    def test_not_when_every_service_has_a_database_of_its_own(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("intake", "qualifier", "kpi"):
            monkeypatch.setenv(f"LEADFLOW_{name.upper()}_DATABASE_URL", EXTERNAL)
        assert postgres_config(CommonSettings(data_dir=tmp_path)) is None
