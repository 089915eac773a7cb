"""The end-to-end floor (issue 21): two hops through the same broker with the same client
settings and no work, measured like the pipeline in the same run.

A POST to the floor app is answered 202 with a new id and the body is sent to
`bench.floor.in` by the services' producer (shared.kafka.make_producer: idempotent,
acks=all, the same linger and batch size), as intake answers and its relay then publishes;
a forwarder (the services' consumer, shared.kafka.make_consumer with the qualifier's fetch
policy and batch size, offsets committed after each batch is sent) sends each record on to
`bench.floor.out`, where bench.e2e_probe's subscriber records its arrival. Everything the
pipeline does beyond that (validation, the databases, the outbox, the decision) is what
`e2e.ratio_to_floor` is the price of.

    python -m bench.e2e_floor forward BOOTSTRAP    (the forwarder process)
    uvicorn --factory bench.e2e_floor:create_app   (the app; LEADFLOW_KAFKA_BOOTSTRAP_SERVERS)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import TopicPartition
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench import e2e_probe
from bench.stack import Stack, wait_ready
from cli.kafka.ports import free_port
from services.qualifier.config import QualifierSettings
from shared.kafka import FetchPolicy, ensure_topics, make_consumer, make_producer

TOPIC_IN, TOPIC_OUT = "bench.floor.in", "bench.floor.out"
# The qualifier's consumer batch and fetch (its settings' defaults; bench_ab may run this
# against an older tree, whose qualifier took shared.runtime's 500 and aiokafka's 1 MB).
_QUALIFIER = QualifierSettings.model_fields
MAX_RECORDS: int = getattr(_QUALIFIER.get("consumer_max_records"), "default", 500)
FETCH = FetchPolicy(
    max_partition_bytes=getattr(
        _QUALIFIER.get("consumer_fetch_max_partition_bytes"), "default", 1024 * 1024
    )
)


def create_app() -> FastAPI:
    bootstrap = os.environ["LEADFLOW_KAFKA_BOOTSTRAP_SERVERS"]
    producer = make_producer(bootstrap, "bench-floor-app")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await producer.start()
        try:
            yield
        finally:
            await producer.stop()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/leads")
    async def accept(request: Request) -> JSONResponse:
        body = await request.body()
        lead_id = str(uuid.uuid4())
        # Sent after the answer is on its way, as intake's relay publishes after the commit.
        await producer.send(TOPIC_IN, body, key=lead_id.encode())
        return JSONResponse({"lead_id": lead_id, "status": "accepted"}, status_code=202)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


async def forward(bootstrap: str) -> None:
    """Consume `TOPIC_IN`, send each record to `TOPIC_OUT`, commit; until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = make_consumer(
        bootstrap, "bench-floor", (TOPIC_IN,), "bench-floor-forwarder", fetch=FETCH
    )
    producer = make_producer(bootstrap, "bench-floor-forwarder")
    await producer.start()
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
            if not batches:
                continue
            sent = [
                await producer.send(TOPIC_OUT, record.value, key=record.key)
                for records in batches.values()
                for record in records
            ]
            await asyncio.gather(*sent)
            offsets: dict[TopicPartition, int] = {
                tp: records[-1].offset + 1 for tp, records in batches.items()
            }
            await consumer.commit(offsets)
    finally:
        await consumer.stop()
        await producer.stop()


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], env=env)


async def measure(stack: Stack, rate: float, seconds: float) -> dict[str, Any]:
    """p50 and p99 of POST answered -> arrival on `TOPIC_OUT`, at `rate` for `seconds`."""
    await ensure_topics(stack.bootstrap, 6, topics=(TOPIC_IN, TOPIC_OUT))
    probe = stack.data_dir / "e2e_floor"
    probe.mkdir(exist_ok=True)
    arrivals, ready, answers = probe / "arrived.txt", probe / "ready", probe / "answered.json"
    port = free_port()
    uvicorn = ["-m", "uvicorn", "--factory", "bench.e2e_floor:create_app", "--port", str(port)]
    app = start([*uvicorn, "--no-access-log", "--log-level", "warning"], stack.env())
    forwarder = start(["-m", "bench.e2e_floor", "forward", stack.bootstrap], stack.env())
    subscriber = e2e_probe.start_subscriber(stack.bootstrap, arrivals, ready, TOPIC_OUT)
    try:
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_ready, url, app)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if subscriber.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the floor's subscriber did not start")
            await asyncio.sleep(0.1)
        # The forwarder's group has its partitions once a first record went through.
        await asyncio.to_thread(e2e_probe.post, url, 5, 2, answers)
        await asyncio.sleep(3)
        answered = await asyncio.to_thread(e2e_probe.post, url, rate, seconds, answers)
        deadline = time.monotonic() + 60
        routed = e2e_probe.read_arrivals(arrivals)
        while not answered.keys() <= routed.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            routed = e2e_probe.read_arrivals(arrivals)
    finally:
        for proc in (subscriber, forwarder, app):
            proc.terminate()
        for proc in (subscriber, forwarder, app):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    from bench.__main__ import percentile

    latencies = [(routed[k] - t) * 1000 for k, t in answered.items() if k in routed]
    return {
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "leads": len(answered),
        "arrived": len(latencies),
    }


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode != "forward":
        raise SystemExit(f"unknown mode {mode!r}: forward")
    asyncio.run(forward(args[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
