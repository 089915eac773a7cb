"""What a service holds at its memory peak during `make bench` (issue 21's memory goal).

    .venv/bin/python -m bench.mem_peak SERVICE [--mode quick|smoke|full] [--top 25]

Runs the bench (BENCH_QUICK by default) with memray (dev extras) tracking the one service's
process from its start: a `sitecustomize` on PYTHONPATH starts a `memray.Tracker` in the
process that `leadflow serve SERVICE` runs and closes it at exit. Then prints where the
memory held at the process's peak (memray's high-water mark: every allocation live at
that moment) was allocated: per first frame in this repository (imports apart), and per
stack. The bench's own figures from such a run are slowed by the tracking and do not count.
A service run twice (the KPI: in the pipeline's phase and its own) is reported for the
run with the higher peak. Results: bench/results/mem-<service>.txt (BENCH_RESULTS_DIR).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).with_name("results")
REPO = str(Path(__file__).resolve().parents[1]) + "/"

SITECUSTOMIZE = """\
import atexit, os, sys
if {service!r} in sys.argv and "serve" in sys.argv:
    import memray
    _tracker = memray.Tracker({out!r} + f"/mem-{{os.getpid()}}.bin", follow_fork=False)
    _tracker.__enter__()
    atexit.register(lambda: _tracker.__exit__(None, None, None))
"""


def _where(frame: tuple[str, str, int]) -> str:
    function, file, line = frame
    return f"{file.split('site-packages/')[-1].replace(REPO, '')}:{line} {function}"


def _peak(capture: Path) -> int:
    import memray

    return int(memray.FileReader(capture).metadata.peak_memory)


def report(capture: Path, top: int) -> str:
    import memray

    reader = memray.FileReader(capture)
    by_site: collections.Counter[str] = collections.Counter()
    by_stack: collections.Counter[str] = collections.Counter()
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        stack = record.stack_trace(max_stacks=40)
        if not stack:
            site = "(no Python stack: the interpreter's own)"
        elif any("importlib" in file for _, file, _ in stack):
            site = "(imports)"
        else:
            ours = [f for f in stack if f[1].startswith(REPO) and "/.venv/" not in f[1]]
            site = _where(ours[0]) if ours else f"(outside the repository) {_where(stack[0])}"
        by_site[site] += record.size
        by_stack[" <- ".join(_where(f) for f in stack[:6])] += record.size
    peak = reader.metadata.peak_memory / 2**20
    lines = [f"{capture.name}: peak of the tracked heap {peak:.1f} MB", "", "by first frame here:"]
    lines += [f"{size / 2**20:8.2f} MB  {site}" for site, size in by_site.most_common(top)]
    lines += ["", "by stack:"]
    lines += [f"{size / 2**20:8.2f} MB  {stack}" for stack, size in by_stack.most_common(top)]
    lines += ["", *timeline(reader)]
    return "\n".join(lines) + "\n"


def timeline(reader: object, step_s: float = 10.0) -> list[str]:
    """The process's RSS and tracked heap at their highest in each `step_s` of its life:
    RSS well above the heap is memory the allocators hold but Python does not use."""
    snapshots = list(reader.get_memory_snapshots())  # type: ignore[attr-defined]
    if not snapshots:
        return []
    start = snapshots[0].time
    spans: dict[int, tuple[int, int]] = {}
    for snap in snapshots:
        span = int((snap.time - start) / 1000 / step_s)
        rss, heap = spans.get(span, (0, 0))
        spans[span] = (max(rss, snap.rss), max(heap, snap.heap))
    lines = [f"every {step_s:.0f} s: highest RSS / tracked heap (MB; memray's own memory in RSS)"]
    lines += [
        f"{span * step_s:6.0f} s  {rss / 2**20:7.1f}  {heap / 2**20:7.1f}"
        for span, (rss, heap) in sorted(spans.items())
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("service", choices=["intake", "qualifier", "kpi"])
    parser.add_argument("--mode", choices=["quick", "smoke", "full"], default="quick")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leadflow-mem-") as work:
        site = Path(work) / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(service=args.service, out=work))
        env = {k: v for k, v in os.environ.items() if k not in ("BENCH_QUICK", "BENCH_SMOKE")}
        if args.mode != "full":
            env[f"BENCH_{args.mode.upper()}"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        env["BENCH_RESULTS_DIR"] = str(Path(work) / "bench")
        subprocess.run([sys.executable, "-m", "bench"], env=env, check=True)
        captures = list(Path(work).glob("mem-*.bin"))
        if not captures:
            raise SystemExit(f"no capture of {args.service}: did the bench start it?")
        # The KPI runs twice (the pipeline's phase, its own): the higher peak.
        text = report(max(captures, key=_peak), args.top)
    out = Path(os.environ.get("BENCH_RESULTS_DIR", RESULTS))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"mem-{args.service}.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
