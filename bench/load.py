"""Load generators, each in a process of its own: wrk for throughput, asyncio for steady rates."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

WRK_SCRIPT = Path(__file__).with_name("wrk") / "post_lead.lua"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    not_accepted: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def run_wrk(url: str, seconds: int, connections: int = 32, threads: int = 1) -> WrkResult:
    """wrk is C with one event loop per thread: it leaves the cores to the server under test."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk (Debian's package)")
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(WRK_SCRIPT),
            url,
            "/v1/leads",
            secrets.token_hex(6),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    match = re.search(
        r"RESULT requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) errors=(\d+) "
        r"not_accepted=(\d+)",
        out,
    )
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    req, dur, p50, p99, errors, bad = (int(g) for g in match.groups())
    return WrkResult(req, dur / 1e6, p50 / 1000, p99 / 1000, errors, bad)


def lead_body(i: int, run: str) -> dict[str, object]:
    return {
        "source": "api",
        "name": "Bench Lead",
        "email": f"e2e-{run}-{i}@bench.example",
        "company": "Bench LLC",
        "services": ["seo"],
        "budget": "200000",
        "timeframe": "now",
        "role_in_purchase": "decision_maker",
        "company_size": "101-500",
        "consent": True,
    }


async def steady_posts(url: str, rate: float, seconds: float, run: str) -> dict[str, float]:
    """POST `rate` leads a second for `seconds`; return lead id -> wall time its 202 arrived.

    A bare HTTP/1.1 client over kept-alive connections: the time of an answer is read as
    soon as its bytes are in, not after a full client library's work (httpx took about a
    millisecond of CPU a request, enough to delay the readings under load).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    answered: dict[str, float] = {}
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened: list[asyncio.StreamWriter] = []

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if idle.empty() and len(opened) < 64:
            reader, writer = await asyncio.open_connection(host, port)
            opened.append(writer)
            return reader, writer
        return await idle.get()

    async def one(i: int) -> None:
        body = json.dumps(lead_body(i, run)).encode()
        request = (
            f"POST /v1/leads HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Authorization: Bearer dev\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        reader, writer = await connection()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        at = time.time()
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        answer = await reader.readexactly(length)
        idle.put_nowait((reader, writer))
        if status == 202:
            answered[json.loads(answer)["lead_id"]] = at

    start = time.perf_counter()
    tasks = []
    try:
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    finally:
        for writer in opened:
            writer.close()
    return answered
