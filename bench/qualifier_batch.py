"""What one consumer batch costs the qualifier's process, by batch size: its Kafka handler
(`services.qualifier.consumer.make_handler`) on the real app and a real database, without
Kafka, the relay or the key fetch, so the fixed cost of a batch (its statements) is told
apart from the cost of each lead in it.

    .venv/bin/python -m bench.qualifier_batch [--sizes 1 16 100] [--batches 60] [--statements]

On an embedded PostgreSQL server of its own, over its Unix socket, as `make bench` runs the
services (or a scratch database on LEADFLOW_BENCH_POSTGRES_URL's server when that is set).
Prints CPU and wall ms a batch and CPU ms a lead; `--statements`: the statements one
batch sends, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import event

from bench.stack import EXTERNAL_POSTGRES_ENV
from cli import postgres_server
from services.qualifier.consumer import make_handler
from shared.delivery import Delivered
from shared.events import TOPIC_RECEIVED
from tests.conftest import fresh_database
from tests.fixtures.qualifier.harness import Harness, qualifier_app
from tests.support import received


@contextlib.asynccontextmanager
async def _database(root: Path) -> AsyncIterator[str]:
    external = os.environ.get(EXTERNAL_POSTGRES_ENV)
    if external:
        async with fresh_database(external) as url:
            yield url
        return
    server = postgres_server.ServerConfig(data_dir=root)
    await asyncio.to_thread(postgres_server.start, server)
    try:
        yield server.url("qualifier")
    finally:
        await asyncio.to_thread(postgres_server.stop, server)


def _batch(size: int) -> list[Delivered]:
    return [Delivered(received(), TOPIC_RECEIVED, 0, i) for i in range(size)]


async def measure(sizes: list[int], batches: int, statements: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="leadflow-qbatch-"))
    try:
        async with _database(root) as url, qualifier_app(url, root) as q:
            await _measure(q, sizes, batches, statements)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _measure(q: Harness, sizes: list[int], batches: int, statements: bool) -> None:
    handle = make_handler(q.runtime)
    for _ in range(5):  # statements prepared, caches warm
        await handle(_batch(16))
    if statements:
        sent: list[str] = []
        engine = q.runtime.engine.sync_engine
        event.listen(engine, "begin", lambda _conn: sent.append("BEGIN"))
        event.listen(
            engine,
            "before_cursor_execute",
            lambda _c, _cur, text, _p, _ctx, _many: sent.append(" ".join(text.split())[:100]),
        )
        event.listen(engine, "commit", lambda _conn: sent.append("COMMIT"))
        await handle(_batch(3))
        print(f"one batch of 3 leads: {len(sent)} round trips")
        for line in sent:
            print(f"  {line}")
    for size in sizes:
        work = [_batch(size) for _ in range(batches)]
        cpu, wall = time.process_time(), time.perf_counter()
        for batch in work:
            await handle(batch)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(
            f"batch of {size}: CPU {1000 * cpu / batches:.2f} ms, wall "
            f"{1000 * wall / batches:.2f} ms a batch; CPU {1000 * cpu / batches / size:.3f} "
            "ms a lead",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 100])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--statements", action="store_true")
    args = parser.parse_args()
    asyncio.run(measure(args.sizes, args.batches, args.statements))


if __name__ == "__main__":
    main()
