"""The bench's CPU accounting: what each process spent between two /proc snapshots."""

from __future__ import annotations

import os
from pathlib import Path

from bench import cpu

TICK = os.sysconf("SC_CLK_TCK")


def _process(proc: Path, pid: int, command: str, ticks: int, started: int) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    # A name with a space and a parenthesis, as /proc allows; utime = stime = ticks / 2.
    fields = ["S", *["0"] * 10, str(ticks // 2), str(ticks - ticks // 2), *["0"] * 6, str(started)]
    (d / "stat").write_text(f"{pid} (odd (name)) {' '.join(fields)} 0 0\n")
    (d / "cmdline").write_bytes(command.replace(" ", "\0").encode() + b"\0")


def _machine(proc: Path, busy: int, idle: int) -> None:
    (proc / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0 0 0 0\n")


SERVICES = {"intake": 10, "qualifier": 11}
DATABASES = {"intake": "intake", "bench_qualifier_ab12": "qualifier"}


def test_each_role_gets_what_its_processes_spent(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _process(proc, 10, "python -m cli serve intake", 100, 5)
    _process(proc, 11, "python -m cli serve qualifier", 50, 5)
    _process(proc, 20, "postgres: leadflow intake [local] idle", 10, 6)
    _process(proc, 21, "postgres: leadflow bench_qualifier_ab12 [local] COMMIT", 10, 6)
    _process(proc, 22, "postgres: walwriter", 10, 6)
    _process(proc, 30, "/usr/bin/java -Xmx512M kafka.Kafka", 300, 4)
    _process(proc, 40, "python -m bench.e2e_probe post", 4, 7)
    _machine(proc, busy=1000, idle=1000)
    before = cpu.snapshot(proc)

    _process(proc, 10, "python -m cli serve intake", 100 + 2 * TICK, 5)
    _process(proc, 11, "python -m cli serve qualifier", 50 + TICK, 5)
    # Its title changed with its state: the same backend still.
    _process(proc, 20, "postgres: leadflow intake [local] COMMIT", 10 + TICK, 6)
    _process(proc, 21, "postgres: leadflow bench_qualifier_ab12 [local] idle", 10 + TICK, 6)
    _process(proc, 30, "/usr/bin/java -Xmx512M kafka.Kafka", 300 + 3 * TICK, 4)
    # Pid 40 is a new process now: it counts from zero.
    _process(proc, 40, "python -m bench.e2e_probe subscribe", TICK, 9)
    # Started meanwhile.
    _process(proc, 41, "python -m bench.e2e_probe post", TICK, 9)
    _machine(proc, busy=1000 + 300, idle=1000 + 100)
    used = cpu.spent(before, cpu.snapshot(proc), SERVICES, DATABASES)

    assert used == {
        "intake": 2.0,
        "qualifier": 1.0,
        "postgres intake": 1.0,
        "postgres qualifier": 1.0,
        "kafka": 3.0,
        "other": 2.0,
        "machine_busy": 0.75,
    }
    per_lead = cpu.per_item_ms(used, 100)
    assert per_lead["intake"] == 20.0 and per_lead["kafka"] == 30.0
    assert per_lead["machine_busy"] == 0.75


def test_a_server_process_is_postgres_not_other() -> None:
    assert cpu.role(5, "/opt/pg/bin/postgres -D /data", {}, {}) == "postgres (server)"
    assert cpu.role(6, "postgres: checkpointer", {}, {}) == "postgres (server)"
    assert cpu.role(7, "postgres: leadflow other_db [local] idle", {}, {}) == "postgres (server)"
    assert cpu.role(8, "", {}, {}) == "other"
