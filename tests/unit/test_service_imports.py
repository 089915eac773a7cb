"""What a service process loads: `leadflow serve` imports the command line and one service,
and the tools only the command line's other commands or httpx's own command line need
(Alembic, Mako, Rich, Pygments) would stay in its memory for good (issue 21: about 13 MB of
each service's 150)."""

from __future__ import annotations

import subprocess
import sys

import pytest

NOT_IN_A_SERVICE = ("alembic", "mako", "rich", "pygments")


@pytest.mark.parametrize("service", ["intake", "qualifier", "kpi"])
def test_a_served_service_loads_neither_migrations_nor_httpx_command_line(service: str) -> None:
    probe = (
        f"import sys, cli.main, services.{service}.main\n"
        f"print(' '.join(m for m in {NOT_IN_A_SERVICE!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_migrations_still_load_alembic_when_they_run() -> None:
    probe = (
        "import sys, cli.main\n"
        "from shared.migrations import alembic_config\n"
        "alembic_config('kpi', 'postgresql+asyncpg://u@h/db')\n"
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "True"
