"""How the summary's cost grows with the store (issue 21): `kpi_query.summary_p99_ms` at
100,000, 1,000,000 and 10,000,000 leads, on stores built by a bulk loader of their own.

    .venv/bin/python -m bench.scale [--leads 100000 1000000 10000000] [--sample 20000]
        [--keep DIR] [--explain MS]

Folding ten million leads would take hours, so each store is built in bulk, not folded:

1. the history of `--sample` leads (bench/events.py) is folded by the real fold
   (services.kpi.fold.apply.fold_into) into a fresh KPI database, without Kafka;
2. its facts are copied in SQL until the store holds `leads` leads: copy k of a lead gets
   the id `<lead>:<k>` and all its facts moved by the same whole number of days (0 to 59
   back), so durations, routes and dimensions keep the sample's distribution;
3. the aggregates are computed from the facts by one statement, the expansion the fold
   itself sends to the database (services.kpi.store.writes), and so are the counts of
   each duration bin's parts; at the sample's size both equal what the fold wrote
   (checked on every run: `loader_check`);
4. VACUUM (ANALYZE), then `cli serve kpi` on the store answers the bench's summary mix
   (bench.__main__.summary_timings: the same requests, warm-up and percentile).

Each store is on an embedded PostgreSQL server of its own (the bench's settings), deleted
afterwards. Results: bench/results/scale.json (BENCH_RESULTS_DIR), and printed.

`--keep DIR` builds the stores under DIR and keeps them; a later run with the same DIR
reads a store already built there instead of building it again (to measure a read's
change on a ten-million-lead store without 20 minutes of loading each time), after
running the KPI's migrations on it.

`--explain MS` has the server log the plan (EXPLAIN ANALYZE, BUFFERS: auto_explain) of
every statement of the reads slower than MS milliseconds, copied to
`scale-explain-<leads>.txt` beside the results. Measuring each plan slows every
statement, so that run's timings are not the curve's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.stack import rss_mb, wait_ready
from cli import postgres_server
from cli.kafka.ports import free_port
from shared.migrations import migrate

RESULTS = Path(__file__).with_name("results")


def say(text: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {text}", flush=True)


async def fold_sample(url: str, leads: int) -> int:
    """The sample folded by the real fold into the active generation; its number."""
    from bench import events as synthetic
    from services.kpi.fold import apply
    from services.kpi.store import generations
    from shared.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            [(generation, fold_version)] = await generations.lock_generations_to_fold(conn)
        batch: list[Any] = []
        for event in synthetic.histories(leads, seed=7):
            batch.append(event)
            if len(batch) >= 5000:
                async with engine.begin() as conn:
                    await apply.fold_into(conn, generation, fold_version, batch)
                batch = []
        if batch:
            async with engine.begin() as conn:
                await apply.fold_into(conn, generation, fold_version, batch)
    finally:
        await engine.dispose()
    return generation


def aggregates_from_facts_sql(target: str) -> str:
    """INSERT into `target` the aggregate rows of every fact of generation $1: the same
    expansion and amounts as services.kpi.store.writes._ADD_FACT_DELTAS."""
    from services.kpi.catalogue import DURATION_METRICS
    from services.kpi.fold.facts import DIMENSIONS
    from services.kpi.store import writes

    durations = ", ".join(f"'{m}'" for m in DURATION_METRICS)
    dims = ", ".join(DIMENSIONS)
    keys = writes._AGG_KEY_POSITIONS
    return (
        f"INSERT INTO {target} (generation, rollup, grain, bucket_start, metric, bin, {dims}, "
        "value) "
        f"SELECT $1, k.rollup, k.grain, k.bucket_start, u.metric, u.bin, "
        f"{', '.join(f'k.{d}' for d in DIMENSIONS)}, sum(u.amount) FROM ("
        f"SELECT metric, at, bin, CASE WHEN metric IN ({durations}) THEN 1 ELSE value END "
        f"AS amount, {dims} FROM kpi_facts WHERE generation = $1) AS u "
        f"CROSS JOIN LATERAL (VALUES {writes._aggregate_rows_sql()}) "
        f"AS k(rollup, grain, bucket_start, {dims}) "
        f"GROUP BY {keys} HAVING sum(u.amount) <> 0"
    )


def fine_counts_from_facts_sql(target: str) -> str:
    """INSERT into `target` the counts of each duration bin's part per day and month of
    generation $1's facts: what the fold adds up in kpi_fine_counts (services.kpi.store.writes)."""
    return (
        f"INSERT INTO {target} (generation, metric, bin, grain, bucket_start, sub, count, "
        "total, squares) SELECT f.generation, f.metric, f.bin, g.grain, "
        "date_trunc(g.unit, f.at, 'UTC'), f.sub, count(*), sum(f.value), "
        "sum(f.value * f.value) FROM kpi_facts AS f "
        "CROSS JOIN (VALUES ('d', 'day'), ('m', 'month')) AS g(grain, unit) "
        "WHERE f.generation = $1 AND f.bin > 0 GROUP BY 1, 2, 3, 4, 5, 6"
    )


async def check_loader(dsn: str, generation: int) -> bool:
    """At the sample's size, the aggregates and the counts per part computed from facts
    equal the folded ones."""
    conn = await asyncpg.connect(dsn)
    differing = 0
    try:
        for table, sql, nonzero in (
            ("kpi_aggregates", aggregates_from_facts_sql, "value <> 0"),
            ("kpi_fine_counts", fine_counts_from_facts_sql, "(count <> 0 OR total <> 0)"),
        ):
            await conn.execute(f"CREATE TEMP TABLE recomputed (LIKE {table} INCLUDING DEFAULTS)")
            await conn.execute(sql("recomputed"), generation)
            differing += await conn.fetchval(
                f"SELECT count(*) FROM ((SELECT * FROM recomputed EXCEPT SELECT * FROM "
                f"{table} WHERE {nonzero}) UNION ALL (SELECT * FROM {table} "
                f"WHERE {nonzero} EXCEPT SELECT * FROM recomputed)) AS d"
            )
            await conn.execute("DROP TABLE recomputed")
    finally:
        await conn.close()
    return differing == 0


async def replicate(dsn: str, generation: int, sample: int, leads: int) -> dict[str, float]:
    """Copies of the sample's facts up to `leads` leads, then the aggregates from the facts;
    the indexes of both tables are dropped for the load and built again after it."""
    copies = max(1, round(leads / sample))
    conn = await asyncpg.connect(dsn)
    timings: dict[str, float] = {}
    try:
        indexes = await conn.fetch(
            "SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS ddl, "
            "con.conname AS constraint_name, pg_get_constraintdef(con.oid) AS condef, "
            "t.relname AS tbl FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_class t ON t.oid = i.indrelid "
            "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype = 'p' "
            "WHERE t.relname IN ('kpi_facts', 'kpi_aggregates')"
        )
        for ix in indexes:
            if ix["constraint_name"]:
                await conn.execute(
                    f"ALTER TABLE {ix['tbl']} DROP CONSTRAINT {ix['constraint_name']}"
                )
            else:
                await conn.execute(f"DROP INDEX {ix['name']}")
        started = time.monotonic()
        # The sample apart: each copy reads it, not the growing table.
        await conn.execute(
            "CREATE TEMP TABLE sample AS SELECT * FROM kpi_facts WHERE generation = $1",
            generation,
        )
        step = 10
        for first in range(1, copies, step):
            last = min(copies - 1, first + step - 1)
            await conn.execute(
                "INSERT INTO kpi_facts (generation, lead_id, metric, item, at, value, bin, sub, "
                "source, channel, campaign, route, definition_version) "
                "SELECT f.generation, f.lead_id || ':' || k, f.metric, "
                "f.item, f.at - make_interval(days => (hashtext(f.lead_id || k) & 1023) % 60), "
                "f.value, f.bin, f.sub, f.source, f.channel, f.campaign, f.route, "
                "f.definition_version "
                "FROM sample AS f CROSS JOIN generate_series($1::int, $2::int) AS k",
                first,
                last,
            )
            say(f"  facts: copies {first}..{last} of {copies - 1}")
        timings["facts_seconds"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        await conn.execute("DELETE FROM kpi_aggregates WHERE generation = $1", generation)
        await conn.execute(aggregates_from_facts_sql("kpi_aggregates"), generation)
        timings["aggregates_seconds"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        await conn.execute("DELETE FROM kpi_fine_counts WHERE generation = $1", generation)
        await conn.execute(fine_counts_from_facts_sql("kpi_fine_counts"), generation)
        timings["fine_counts_seconds"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        for ix in indexes:
            if ix["constraint_name"]:
                await conn.execute(
                    f"ALTER TABLE {ix['tbl']} ADD CONSTRAINT {ix['constraint_name']} {ix['condef']}"
                )
            else:
                await conn.execute(ix["ddl"])
        timings["indexes_seconds"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        await conn.execute("VACUUM (ANALYZE)")
        timings["vacuum_seconds"] = round(time.monotonic() - started, 1)
        timings["fact_rows"] = int(await conn.fetchval("SELECT count(*) FROM kpi_facts"))
        timings["aggregate_rows"] = int(await conn.fetchval("SELECT count(*) FROM kpi_aggregates"))
        timings["store_mb"] = round(
            int(await conn.fetchval("SELECT pg_database_size(current_database())")) / 2**20
        )
    finally:
        await conn.close()
    return timings


async def build_store(url: str, dsn: str, leads: int, sample: int) -> dict[str, Any]:
    await asyncio.to_thread(migrate, "kpi", url)
    say(f"{leads} leads: folding a sample of {sample} leads")
    started = time.monotonic()
    generation = await fold_sample(url, sample)
    fold_seconds = time.monotonic() - started
    checked = await check_loader(dsn, generation)
    say(f"{leads} leads: the loader's aggregates equal the fold's: {checked}")
    load = await replicate(dsn, generation, sample, leads)
    say(f"{leads} leads: store built {load}")
    return {
        "sample_leads": sample,
        "sample_fold_seconds": round(fold_seconds, 1),
        "loader_check": checked,
        **load,
    }


EXPLAIN_SETTINGS = {
    "session_preload_libraries": "auto_explain",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_nested_statements": "on",
}


async def set_explain(dsn: str, min_ms: int | None) -> None:
    """Plans of statements slower than `min_ms` to the server's log (None: back to none)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ALTER DATABASE kpi RESET ALL")
        if min_ms is not None:
            for name, value in {
                **EXPLAIN_SETTINGS,
                "auto_explain.log_min_duration": f"{min_ms}ms",
            }.items():
                await conn.execute(f"ALTER DATABASE kpi SET {name} = '{value}'")
    finally:
        await conn.close()


def plans_logged(log_file: Path) -> str:
    """The plans auto_explain wrote to the server's log (its entries start with a time)."""
    text = log_file.read_text(encoding="utf-8", errors="replace")
    entries = re.split(r"\n(?=\d{4}-\d{2}-\d{2} )", text)
    return "\n".join(e for e in entries if "duration:" in e and "plan:" in e) + "\n"


def save_plans(leads: int, log_file: Path) -> None:
    out = Path(os.environ.get("BENCH_RESULTS_DIR", RESULTS))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scale-explain-{leads}.txt").write_text(plans_logged(log_file))


async def one_scale(
    root: Path,
    leads: int,
    sample: int,
    requests: int,
    keep: bool = False,
    explain_ms: int | None = None,
) -> dict[str, Any]:
    from bench.__main__ import percentile, summary_timings

    server = postgres_server.ServerConfig(data_dir=root / f"scale-{leads}")
    built = root / f"scale-{leads}.json"
    await asyncio.to_thread(postgres_server.start, server)
    try:
        url, dsn = server.url("kpi"), server.dsn("kpi")
        if keep and built.exists():
            load = json.loads(built.read_text())
            say(f"{leads} leads: the store kept in {root}: {load}")
            # Built by an older schema: brought to this one as any installation's would be.
            started = time.monotonic()
            await asyncio.to_thread(migrate, "kpi", url)
            say(f"{leads} leads: migrated in {time.monotonic() - started:.1f} s")
            # What autovacuum would do in time, now: the statistics of new tables and
            # indexes, and the visibility map that index-only scans need after updates.
            started = time.monotonic()
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("VACUUM (ANALYZE)")
            finally:
                await conn.close()
            say(f"{leads} leads: vacuumed in {time.monotonic() - started:.1f} s")
        else:
            load = await build_store(url, dsn, leads, sample)
            if keep:
                built.write_text(json.dumps(load) + "\n")
        await set_explain(dsn, explain_ms)
        port = free_port()
        env = {
            **os.environ,
            "LEADFLOW_DATA_DIR": str(root / f"scale-{leads}"),
            "LEADFLOW_KPI_DATABASE_URL": url,
            "LEADFLOW_KPI_PORT": str(port),
            "LEADFLOW_LOG_LEVEL": "WARNING",
            # No Kafka: the reads need none; the consumer only retries in the background.
            "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        }
        log = open(root / f"kpi-{leads}.log", "ab")  # noqa: SIM115,ASYNC230 - closed below
        proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [sys.executable, "-m", "cli", "serve", "kpi"], env=env, stdout=log, stderr=log
        )
        try:
            await asyncio.to_thread(wait_ready_or_alive, f"http://127.0.0.1:{port}", proc)
            timings = await summary_timings(f"http://127.0.0.1:{port}", requests)
            memory = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
        if explain_ms is not None:
            await set_explain(dsn, None)
            await asyncio.to_thread(save_plans, leads, server.log_file)
    finally:
        await asyncio.to_thread(postgres_server.stop, server)
        if not keep:
            shutil.rmtree(root / f"scale-{leads}", ignore_errors=True)
    return {
        "leads": leads,
        "summary_p50_ms": round(percentile(timings, 0.5), 2),
        "summary_p99_ms": round(percentile(timings, 0.99), 2),
        "requests": requests,
        "rss_mb": memory,
        **load,
    }


def wait_ready_or_alive(url: str, proc: subprocess.Popen[bytes]) -> None:
    """/readyz answers 503 without Kafka; the reads are served once /healthz answers."""
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the KPI service exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    wait_ready(url, proc, timeout=1)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    keep = args.keep is not None
    root = args.keep.resolve() if keep else Path(tempfile.mkdtemp(prefix="leadflow-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        out = []
        for leads in args.leads:
            out.append(await one_scale(root, leads, args.sample, args.requests, keep, args.explain))
            say(f"{leads} leads: summary p99 {out[-1]['summary_p99_ms']} ms")
        return out
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="build the stores here, keep them, reuse them")
    parser.add_argument("--explain", type=int, metavar="MS", help="log plans slower than MS")
    args = parser.parse_args()
    # SIGTERM as Ctrl-C: the store's server is stopped and its files deleted on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    curve = asyncio.run(main_async(args))
    out = Path(os.environ.get("BENCH_RESULTS_DIR", RESULTS))
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(curve, indent=2) + "\n")
    print(json.dumps(curve, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
