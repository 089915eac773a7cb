"""Leadflow runs on PostgreSQL only: an engine for any other database is refused up front."""

from __future__ import annotations

import pytest

from shared.db import create_engine


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///var/intake.db", "mysql+aiomysql://u:secret@db/leads"]
)
def test_an_engine_for_another_database_is_refused_without_quoting_its_url(url: str) -> None:
    with pytest.raises(ValueError, match="PostgreSQL") as refused:
        create_engine(url)
    assert "secret" not in str(refused.value)


def test_a_postgresql_url_gets_an_engine() -> None:
    engine = create_engine("postgresql+asyncpg://leadflow@127.0.0.1:1/none")
    assert engine.dialect.name == "postgresql"
