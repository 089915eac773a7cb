"""Where a phase's CPU goes: each process's CPU time over a window, grouped by role.

On two cores every process of the stack competes for the same CPU, so a latency that
waits for a core is told apart from one that waits for work only by what each process
spent. `snapshot()` reads /proc; `spent()` groups the difference of two snapshots:
a service by its pid, PostgreSQL's backends by the database they serve (their title is
`postgres: USER DATABASE ...`), Kafka by its JVM, anything else as `other`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Snapshot:
    # pid -> (CPU seconds, start time, command line); the machine's busy and total seconds
    # (all cores)
    processes: dict[int, tuple[float, int, str]]
    busy: float
    total: float


def _cpu_and_start(stat: str) -> tuple[float, int]:
    # Fields after the command's closing parenthesis (it may hold spaces): utime is the
    # 14th field of the line, stime the 15th, the start time the 22nd.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK, int(fields[19])


def cpu_seconds(pid: int) -> float:
    """One process's CPU time so far (user and system)."""
    return _cpu_and_start(Path(f"/proc/{pid}/stat").read_text())[0]


def snapshot(proc: Path = Path("/proc")) -> Snapshot:
    processes: dict[int, tuple[float, int, str]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            seconds, started = _cpu_and_start((entry / "stat").read_text())
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or a kernel thread's odd line
        processes[int(entry.name)] = (seconds, started, command.strip())
    cpu = (proc / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in cpu]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return Snapshot(processes, (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK)


def role(pid: int, command: str, services: Mapping[str, int], databases: Mapping[str, str]) -> str:
    """`services`: each service's pid; `databases`: each database's service."""
    for name, service_pid in services.items():
        if pid == service_pid:
            return name
    words = command.split()
    if words[:1] == ["postgres:"] and len(words) >= 3 and words[2] in databases:
        return f"postgres {databases[words[2]]}"
    if words[:1] == ["postgres:"] or (words and words[0].endswith("/postgres")):
        return "postgres (server)"
    if words and words[0].endswith("java"):
        return "kafka"
    return "other"


def spent(
    before: Snapshot,
    after: Snapshot,
    services: Mapping[str, int],
    databases: Mapping[str, str],
) -> dict[str, float]:
    """CPU seconds per role between the snapshots (a process started meanwhile counts from
    zero), and `machine_busy`: the share of all cores' time that was not idle."""
    out: dict[str, float] = {}
    for pid, (seconds, started, command) in after.processes.items():
        earlier = before.processes.get(pid)
        # A pid used again by a new process: that one counts from zero.
        used = seconds - (earlier[0] if earlier is not None and earlier[1] == started else 0.0)
        if used > 0:
            name = role(pid, command, services, databases)
            out[name] = out.get(name, 0.0) + used
    total = after.total - before.total
    out["machine_busy"] = (after.busy - before.busy) / total if total > 0 else 0.0
    return out


def per_item_ms(used: Mapping[str, float], items: int) -> dict[str, float]:
    """Each role's CPU milliseconds per item (a lead), and the machine's busy share."""
    out = {
        name: round(seconds * 1000 / items, 3)
        for name, seconds in sorted(used.items())
        if name != "machine_busy" and items
    }
    out["machine_busy"] = round(used.get("machine_busy", 0.0), 3)
    return out
