"""The end-to-end probe's two sides, each run as a process of its own.

`post` sends leads at a steady rate and records when each 202 arrived; `subscribe` reads
`leads.routed` and records when each lead's routing arrived. Apart, neither one's work
delays the other's clock readings: in one event loop, parsing Kafka batches held back
the reading of HTTP answers (and the reverse), adding a few hundred milliseconds of the
probe's own making to the measured latency.

    python -m bench.e2e_probe post URL RATE SECONDS OUT
    python -m bench.e2e_probe subscribe BOOTSTRAP OUT READY [TOPIC]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from bench.load import steady_posts
from shared.events import TOPIC_ROUTED


async def subscribe(bootstrap: str, out: Path, ready: Path, topic: str = TOPIC_ROUTED) -> None:
    """Append `lead_id arrival_time sent_time` lines to `out` until SIGTERM (sent: the
    record's timestamp, when the producer appended it); touch `ready` once the consumer
    reads from the end of the topic."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
    )
    await consumer.start()
    try:
        await consumer.seek_to_end()
        await asyncio.to_thread(ready.touch)
        with out.open("a", encoding="utf-8") as sink:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=50)
                now = time.time()
                lines = [
                    f"{record.key.decode()} {now:.6f} {record.timestamp / 1000:.3f}\n"
                    for records in batches.values()
                    for record in records
                    if record.key
                ]
                if lines:
                    sink.writelines(lines)
                    sink.flush()
    finally:
        await consumer.stop()


def start_subscriber(
    bootstrap: str, out: Path, ready: Path, topic: str = TOPIC_ROUTED
) -> subprocess.Popen[bytes]:
    args = ["subscribe", bootstrap, str(out), str(ready), topic]
    return subprocess.Popen([sys.executable, "-m", "bench.e2e_probe", *args])


def post(url: str, rate: float, seconds: float, out: Path) -> dict[str, float]:
    """Run the poster process; lead id -> when its 202 arrived."""
    subprocess.run(
        [sys.executable, "-m", "bench.e2e_probe", "post", url, str(rate), str(seconds), str(out)],
        check=True,
    )
    answered: dict[str, float] = json.loads(out.read_text(encoding="utf-8"))
    return answered


def read_arrivals(path: Path) -> dict[str, float]:
    """What `subscribe` wrote so far: the first arrival of each lead."""
    return {key: arrived for key, (arrived, _) in read_records(path).items()}


def read_records(path: Path) -> dict[str, tuple[float, float]]:
    """What `subscribe` wrote so far: each lead's first record, (arrived, sent)."""
    records: dict[str, tuple[float, float]] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split(" ")
            if len(parts) == 3:
                records.setdefault(parts[0], (float(parts[1]), float(parts[2])))
    return records


async def sent_times(
    bootstrap: str, topic: str, since_ms: int, keys: Collection[str]
) -> dict[str, float]:
    """Each of these keys' first record on `topic` from `since_ms` (a wall-clock time in
    ms) on: when it was appended (the record's timestamp, in seconds). Read after a run,
    so that no reader adds to what the run measured."""
    wanted = set(keys)
    found: dict[str, float] = {}
    # Without a group, a consumer of the topic is given all its partitions on start.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.assignment())
        starts = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            start = starts.get(tp)
            consumer.seek(tp, start.offset if start is not None else ends[tp])
        left = {tp for tp in partitions if (await consumer.position(tp)) < ends[tp]}
        deadline = time.monotonic() + 120
        while left and not wanted <= found.keys() and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(*left, timeout_ms=1000)).items():
                for record in records:
                    key = record.key.decode() if record.key else None
                    if key in wanted:
                        found.setdefault(key, record.timestamp / 1000)
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return found


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "post":
        url, rate, seconds, out = args
        answered = asyncio.run(steady_posts(url, float(rate), float(seconds), str(time.time_ns())))
        Path(out).write_text(json.dumps(answered), encoding="utf-8")
    elif mode == "subscribe":
        bootstrap, out, ready, *topic = args
        asyncio.run(subscribe(bootstrap, Path(out), Path(ready), *topic))
    else:
        raise SystemExit(f"unknown mode {mode!r}: post or subscribe")


if __name__ == "__main__":
    main(sys.argv[1:])
