"""What a steady lead rate costs each part of the stack in CPU, with only the services asked
for running (a quiet machine otherwise), so a per-lead cost is told apart from the
contention of the full pipeline (`make bench`'s e2e phase runs everything at once).

    .venv/bin/python -m bench.steady_cpu [--services intake] [--rate 200] [--seconds 10]
        [--rounds 2]

Each round posts `rate` leads a second for `seconds` (bench/e2e_probe's poster, a process
of its own) and prints CPU milliseconds a lead per role (bench/cpu.py). The first round
after the stack starts warms it; every round is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from bench import cpu, e2e_probe
from bench.stack import close_stack, new_stack


async def measure(services: list[str], rate: float, seconds: float, rounds: int) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="leadflow-steady-"))
    stack = await new_stack(root, "steady")
    results: list[dict[str, float]] = []
    try:
        for name in services:
            stack.start_service(name)
        for n in range(rounds):
            before = cpu.snapshot()
            answered = await asyncio.to_thread(
                e2e_probe.post, stack.url("intake"), rate, seconds, root / f"answered-{n}.json"
            )
            used = cpu.spent(before, cpu.snapshot(), stack.pids(), stack.databases())
            results.append(cpu.per_item_ms(used, len(answered)))
            print(json.dumps({"round": n + 1, "leads": len(answered), **results[-1]}), flush=True)
            await asyncio.sleep(2)  # what the round left (relays, consumers) settles
    finally:
        await close_stack(stack)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", nargs="+", default=["intake"])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if "intake" not in args.services:
        parser.error("the leads are posted to intake: --services must include it")
    asyncio.run(measure(args.services, args.rate, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
