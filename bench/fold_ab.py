"""A/B of the KPI fold: two source trees fold the same topics, alternating, in one sitting.

    .venv/bin/python -m bench.fold_ab --before <rev> [--after <rev>|worktree] \
        [--paths services/kpi] [--leads 20000] [--rounds 3] [--py-spy DIR] [--pgss]

One Kafka broker and one embedded PostgreSQL server (the bench stack's) for the whole run;
the synthetic history of `--leads` leads (bench/events.py, about 5.6 events a lead) is
written to the topics once. Then, round after round, each tree (`before` first in odd
rounds, `after` first in even ones) starts `cli serve kpi` from its own copy of the source,
with a KPI database of its own migrated by that tree and a consumer group of its own, and
folds the topics from the start; the time runs from the service answering /readyz to every
event being in the inbox. Each run also records the KPI process's CPU seconds and peak RSS
(VmHWM), and the machine's load average.

The `before` tree is the `after` tree with `--paths` taken from `--before` (so only those
change between the two: other engineers' commits in between do not count). After the runs,
each database's aggregates are reduced to one digest: both trees must fold the same numbers.

`--before-env` / `--after-env NAME=VALUE ...` give one tree's service settings of its own
(the same tree twice with two settings: `--before HEAD --after HEAD --after-env ...`).
`--py-spy DIR` records a flame graph of each tree's first run (py-spy, dev extras);
`--rebuild` then also times `POST /v1/admin/rebuild` (the digest is then the rebuilt
generation's); `--pgss` loads pg_stat_statements and prints each run's top statements by time.
Results: printed, and written to bench/results/fold_ab.json (BENCH_RESULTS_DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.cpu import cpu_seconds
from bench.stack import Stack, close_stack, new_stack, peak_rss_mb, rss_mb, wait_ready
from cli.kafka.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("results")


def say(text: str) -> None:
    print(f"[fold_ab {time.strftime('%H:%M:%S')}] {text}", flush=True)


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout


def export_tree(rev: str, dest: Path) -> None:
    """The tracked files of `rev`, or of the work tree as it is (`worktree`), into `dest`."""
    dest.mkdir(parents=True)
    if rev == "worktree":
        files = _git("ls-files", "-co", "--exclude-standard", "-z").decode().split("\0")
        for name in filter(None, files):
            src = ROOT / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
        return
    with tarfile.open(fileobj=io.BytesIO(_git("archive", rev)), mode="r:") as tar:
        tar.extractall(dest, filter="data")


def overlay(rev: str, paths: list[str], dest: Path) -> None:
    """`paths` in `dest` replaced by what they are at `rev`."""
    for path in paths:
        target = dest / path
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    data = _git("archive", rev, *paths)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        tar.extractall(dest, filter="data")


def server_cpu_seconds(stack: Stack) -> float:
    """CPU of the whole PostgreSQL server: the postmaster, its live children, and (in the
    postmaster's cutime/cstime) every child it has reaped."""
    assert stack.embedded is not None
    postmaster = int((stack.embedded.pgdata / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / tick
    for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):  # gone meanwhile: counted once reaped
            total += cpu_seconds(int(child))
    return total


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


async def admin(stack: Stack) -> asyncpg.Connection:
    assert stack.embedded is not None
    return await asyncpg.connect(stack.embedded.dsn("postgres"))


async def enable_pgss(stack: Stack) -> None:
    """pg_stat_statements needs a restart with the library preloaded."""
    from cli import postgres_server

    assert stack.embedded is not None
    conn = await admin(stack)
    try:
        await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    finally:
        await conn.close()
    await asyncio.to_thread(postgres_server.stop, stack.embedded)
    await asyncio.to_thread(postgres_server.start, stack.embedded)


async def digest(dsn: str) -> str:
    """The folded numbers of the active generation, reduced to one hash."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT a.rollup, a.grain, a.metric, a.bin, count(*), sum(a.value)::text "
            "FROM kpi_aggregates a JOIN kpi_generations g USING (generation) "
            "WHERE g.status = 'active' AND a.value <> 0 "
            "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        )
        facts = await conn.fetchrow(
            "SELECT count(*), sum(value)::text, count(DISTINCT lead_id) FROM kpi_facts f "
            "JOIN kpi_generations g USING (generation) WHERE g.status = 'active'"
        )
    finally:
        await conn.close()
    text = json.dumps([list(r) for r in rows] + [list(facts or [])], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def top_statements(dsn: str, limit: int = 8) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT calls, round(total_exec_time)::bigint AS ms, rows, "
            "left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS query "
            "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT $1",
            limit,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def inbox_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM inbox"))
    finally:
        await conn.close()


async def consumed(url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("leadflow_events_consumed_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def serve(tree: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`cli serve kpi` from the tree's own copy of the source."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "kpi"],
            cwd=tree,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def record(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the process until SIGINT, then writing a speedscope profile."""
    output.parent.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).with_name("py-spy"))
    args = ["record", "--pid", str(pid), "--rate", "50", "--format", "speedscope"]
    return subprocess.Popen(
        [spy, *args, "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def fold_once(
    stack: Stack,
    tree: Path,
    label: str,
    events: int,
    spy: Path | None,
    pgss: bool,
    extra_env: dict[str, str],
    rebuild: bool,
) -> dict[str, Any]:
    """One cold fold of the topics by the tree's KPI service into a database of its own."""
    assert stack.embedded is not None
    name = f"kpi_{label}_{uuid.uuid4().hex[:6]}"
    conn = await admin(stack)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url, dsn = stack.embedded.url(name), stack.embedded.dsn(name)
    env = stack.env(
        LEADFLOW_KPI_DATABASE_URL=url,
        LEADFLOW_KPI_CONSUMER_GROUP=f"fold-ab-{name}",
        PYTHONPATH=str(tree),
        **extra_env,
    )
    port = free_port()
    env["LEADFLOW_KPI_PORT"] = str(port)
    migrate = [sys.executable, "-m", "cli", "migrate", "kpi"]
    await asyncio.to_thread(subprocess.run, migrate, cwd=tree, env=env, check=True)
    if pgss:
        c = await asyncpg.connect(dsn)
        try:
            await c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await c.execute("SELECT pg_stat_statements_reset()")
        finally:
            await c.close()
    load_before = load_average()
    proc = await asyncio.to_thread(serve, tree, env, stack.data_dir / f"{name}.log")
    spy_proc = None
    svc = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_ready, svc, proc)
        started, cpu0, pg0 = time.monotonic(), cpu_seconds(proc.pid), server_cpu_seconds(stack)
        if spy is not None:
            spy_proc = await asyncio.to_thread(record, proc.pid, spy / f"{label}.speedscope.json")
        # Handed to the handler, then committed (the last batches may still be in flight).
        while True:
            if await consumed(svc) >= events and await inbox_count(dsn) >= events:
                break
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(proc.pid) - cpu0
        pg = server_cpu_seconds(stack) - pg0
        run: dict[str, Any] = {
            "tree": label,
            "seconds": round(seconds, 2),
            "events_per_s": round(events / seconds, 1),
            "kpi_cpu_s": round(cpu, 2),
            "kpi_cpu_us_per_event": round(cpu / events * 1e6, 1),
            "pg_cpu_s": round(pg, 2),
            "pg_cpu_us_per_event": round(pg / events * 1e6, 1),
            "peak_rss_mb": peak_rss_mb(proc.pid),
            "rss_mb": rss_mb(proc.pid),
            "load_before": load_before,
            "load_after": load_average(),
        }
        if rebuild:
            from bench.__main__ import timed_rebuild

            cpu0, pg0 = cpu_seconds(proc.pid), server_cpu_seconds(stack)
            run["rebuild"] = await timed_rebuild(svc, events)
            run["rebuild"]["kpi_cpu_us_per_event"] = round(
                (cpu_seconds(proc.pid) - cpu0) / events * 1e6, 1
            )
            run["rebuild"]["pg_cpu_us_per_event"] = round(
                (server_cpu_seconds(stack) - pg0) / events * 1e6, 1
            )
            run["rebuild"]["peak_rss_mb"] = peak_rss_mb(proc.pid)
    finally:
        if spy_proc is not None:
            spy_proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
            try:
                spy_proc.wait(60)
            except subprocess.TimeoutExpired:
                spy_proc.kill()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    run["digest"] = await digest(dsn)
    if pgss:
        run["statements"] = await top_statements(dsn)
    conn = await admin(stack)
    try:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    return run


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from bench.__main__ import produce_history

    root = Path(tempfile.mkdtemp(prefix="leadflow-fold-ab-"))
    trees = {"after": root / "after", "before": root / "before"}
    export_tree(args.after, trees["after"])
    export_tree(args.after, trees["before"])
    overlay(args.before, args.paths, trees["before"])
    stack = await new_stack(root, "stack")
    runs: list[dict[str, Any]] = []
    try:
        if args.pgss:
            await enable_pgss(stack)
        say(f"writing the history of {args.leads} leads to the topics")
        events = await produce_history(stack, args.leads)
        say(f"{events} events; {args.rounds} rounds, before = {args.before}:{args.paths}")
        spied: set[str] = set()
        for r in range(args.rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for label in order:
                spy = args.py_spy if args.py_spy and label not in spied else None
                spied.add(label)
                extra = dict(kv.split("=", 1) for kv in getattr(args, f"{label}_env"))
                run = await fold_once(
                    stack, trees[label], label, events, spy, args.pgss, extra, args.rebuild
                )
                run["round"] = r + 1
                runs.append(run)
                say(
                    f"round {r + 1} {label}: {run['events_per_s']:.0f} events/s, "
                    f"CPU us/event: kpi {run['kpi_cpu_us_per_event']}, "
                    f"pg {run['pg_cpu_us_per_event']}; "
                    f"peak {run['peak_rss_mb']} MB, "
                    f"load {run['load_before']}->{run['load_after']}, digest {run['digest']}"
                )
                if "rebuild" in run:
                    rb = run["rebuild"]
                    say(
                        f"    rebuild: {rb['events_per_s']} events/s, CPU us/event: kpi "
                        f"{rb['kpi_cpu_us_per_event']}, pg {rb['pg_cpu_us_per_event']}; "
                        f"peak {rb['peak_rss_mb']} MB"
                    )
                for s in run.get("statements", []):
                    say(f"    {s['ms']:>8} ms {s['calls']:>6} calls  {s['query']}")
    finally:
        await close_stack(stack)
        shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {"events": events, "leads": args.leads}
    for label in ("before", "after"):
        mine = [r for r in runs if r["tree"] == label]
        summary[label] = {
            "events_per_s_median": statistics.median(r["events_per_s"] for r in mine),
            "kpi_cpu_us_per_event_median": statistics.median(
                r["kpi_cpu_us_per_event"] for r in mine
            ),
            "pg_cpu_us_per_event_median": statistics.median(r["pg_cpu_us_per_event"] for r in mine),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in mine),
        }
        if args.rebuild:
            summary[label]["rebuild_events_per_s_median"] = statistics.median(
                r["rebuild"]["events_per_s"] for r in mine
            )
            summary[label]["rebuild_pg_cpu_us_per_event_median"] = statistics.median(
                r["rebuild"]["pg_cpu_us_per_event"] for r in mine
            )
    ratios = [
        a["events_per_s"] / b["events_per_s"]
        for b, a in zip(
            (r for r in runs if r["tree"] == "before"),
            (r for r in runs if r["tree"] == "after"),
            strict=True,
        )
    ]
    summary["ratio_per_round"] = [round(x, 2) for x in ratios]
    summary["ratio_median"] = round(statistics.median(ratios), 2)
    summary["same_numbers"] = len({r["digest"] for r in runs}) == 1
    return {
        "before": f"{args.before}:{','.join(args.paths)} {' '.join(args.before_env)}".strip(),
        "after": f"{args.after} {' '.join(args.after_env)}".strip(),
        "summary": summary,
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="git revision of the paths before")
    parser.add_argument("--after", default="worktree", help="git revision, or 'worktree'")
    parser.add_argument("--paths", nargs="+", default=["services/kpi"])
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-env", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--after-env", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--py-spy", type=Path, default=None)
    parser.add_argument("--pgss", action="store_true")
    parser.add_argument("--rebuild", action="store_true", help="also time a rebuild after it")
    args = parser.parse_args()
    # SIGTERM as Ctrl-C: the stack (broker, server) is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = asyncio.run(main_async(args))
    out = Path(os.environ.get("BENCH_RESULTS_DIR", RESULTS))
    out.mkdir(parents=True, exist_ok=True)
    (out / "fold_ab.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["summary"], indent=2))
    return 0 if result["summary"]["same_numbers"] else 1


if __name__ == "__main__":
    sys.exit(main())
