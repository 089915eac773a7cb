"""Load generators, each in a process of its own: wrk for throughput, asyncio for steady rates."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

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
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(WRK_SCRIPT), url, "/v1/leads"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
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
        "source": "api", "name": "Bench Lead", "email": f"e2e-{run}-{i}@bench.example",
        "company": "Bench LLC", "services": ["seo"], "budget": "200000", "timeframe": "now",
        "role_in_purchase": "decision_maker", "company_size": "101-500", "consent": True,
    }  # fmt: skip


async def steady_posts(url: str, rate: float, seconds: float, run: str) -> dict[str, float]:
    """POST `rate` leads a second for `seconds`; return lead id -> wall time its 202 arrived."""
    answered: dict[str, float] = {}
    interval = 1.0 / rate
    total = int(rate * seconds)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": "Bearer dev"}, limits=limits, timeout=30
    ) as client:

        async def one(i: int) -> None:
            r = await client.post("/v1/leads", json=lead_body(i, run))
            if r.status_code == 202:
                answered[r.json()["lead_id"]] = time.time()

        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return answered
