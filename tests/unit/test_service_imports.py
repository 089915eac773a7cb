"""What a service process loads: `leadflow serve` imports the command line and one service,
and the tools only the command line's other commands or httpx's own command line need
(Alembic, Mako, Rich, Pygments) would stay in its memory for good (issue 21: about 13 MB of
each service's 150)."""

from __future__ import annotations

import subprocess
import sys

import pytest

NOT_IN_A_SERVICE = ("alembic", "mako", "rich", "pygments")


def _printed(probe: str) -> str:
    """What `probe` prints, run in a fresh interpreter (nothing imported yet)."""
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize("service", ["intake", "qualifier", "kpi"])
def test_a_served_service_loads_neither_migrations_nor_httpx_command_line(service: str) -> None:
    probe = (
        f"import sys, cli.main, services.{service}.main\n"
        f"print(' '.join(m for m in {NOT_IN_A_SERVICE!r} if m in sys.modules))"
    )
    out = _printed(probe)
    assert out == ""


def test_migrations_still_load_alembic_when_they_run() -> None:
    probe = (
        "import sys, cli.main\n"
        "from shared.migrations import alembic_config\n"
        "alembic_config('kpi', 'postgresql+asyncpg://u@h/db')\n"
        "print('alembic' in sys.modules)"
    )
    out = _printed(probe)
    assert out == "True"


@pytest.mark.parametrize("service", ["intake", "qualifier", "kpi"])
def test_importing_a_service_takes_no_more_memory_than_it_keeps(service: str) -> None:
    # A moment's peak counts against the memory goal as much as what stays: intake once
    # compiled phonenumbers' country names from source, 85 MB for a moment (165 MB at its
    # peak against 97 kept).
    probe = (
        f"import sys, cli.main, services.{service}.main\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "print(int(status['VmHWM'].split()[0]) // 1024, int(status['VmRSS'].split()[0]) // 1024,"
        " 'phonenumbers.geodata' in sys.modules)"
    )
    out = _printed(probe).split()
    peak_mb, kept_mb, geodata = int(out[0]), int(out[1]), out[2]
    assert peak_mb - kept_mb <= 10, (peak_mb, kept_mb)
    assert geodata == "False"  # every number prefix's place names: 85 MB for good
