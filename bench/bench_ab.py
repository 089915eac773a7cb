"""`make bench` before and after, alternating, in one sitting: each figure side by side.

    .venv/bin/python -m bench.bench_ab --before <rev> [--after <rev>|worktree] \
        [--paths services/kpi] [--rounds 2] [--mode quick|full|smoke]

The `after` tree and the same tree with `--paths` taken from `--before` (bench/fold_ab.py's
trees: the harness is the same in both, only those paths differ) each run `python -m bench`
from a copy of their own, `before` first in odd rounds and `after` first in even ones.
Each run's latest.json is kept (bench/results/ab/<label>-<round>.json); the table of every
figure, per run, is printed and written to bench/results/ab/summary.md (BENCH_RESULTS_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.fold_ab import RESULTS, export_tree, overlay, say
from bench.stack import MEMORY_FIGURES

FIGURES = [
    "intake.leads_per_s",
    "intake.ratio_to_trivial",
    "e2e.p50_ms",
    "e2e.p99_ms",
    "e2e.floor_p99_ms",
    "e2e.ratio_to_floor",
    "e2e.stages.qualifier.p50_ms",
    "e2e.stages.qualifier.p99_ms",
    "e2e.cpu_ms_per_lead.intake",
    "e2e.cpu_ms_per_lead.qualifier",
    "e2e.cpu_ms_per_lead.kpi",
    "e2e.cpu_ms_per_lead.kafka",
    "e2e.cpu_ms_per_lead.postgres qualifier",
    "e2e.cpu_ms_per_lead.machine_busy",
    "kpi_fold.events_per_s",
    "kpi_fold.floor_events_per_s",
    "kpi_fold.ratio_to_floor",
    "kpi_rebuild.seconds",
    "kpi_rebuild.events_per_s",
    "kpi_query.summary_p50_ms",
    "kpi_query.summary_p99_ms",
    *MEMORY_FIGURES,
]
MODES = {"quick": {"BENCH_QUICK": "1"}, "smoke": {"BENCH_SMOKE": "1"}, "full": {}}


def lookup(results: dict[str, Any], path: str) -> Any:
    value: Any = results
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default="worktree")
    parser.add_argument("--paths", nargs="+", default=["services/kpi"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    args = parser.parse_args()
    out = Path(os.environ.get("BENCH_RESULTS_DIR", RESULTS)) / "ab"
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="leadflow-bench-ab-"))
    trees = {"after": root / "after", "before": root / "before"}
    export_tree(args.after, trees["after"])
    export_tree(args.after, trees["before"])
    overlay(args.before, args.paths, trees["before"])
    runs: list[tuple[str, dict[str, Any]]] = []
    try:
        for r in range(1, args.rounds + 1):
            order = ("before", "after") if r % 2 else ("after", "before")
            for label in order:
                say(f"round {r}: {label} ({args.mode})")
                results_dir = root / f"{label}-{r}"
                env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("BENCH_")},
                    **MODES[args.mode],
                    "BENCH_RESULTS_DIR": str(results_dir),
                    "PYTHONPATH": str(trees[label]),
                }
                subprocess.run(
                    [sys.executable, "-m", "bench"], cwd=trees[label], env=env, check=True
                )
                results = json.loads((results_dir / "latest.json").read_text())
                shutil.copy(results_dir / "latest.json", out / f"{label}-{r}.json")
                runs.append((f"{label} {r}", results))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    head = "| figure | " + " | ".join(name for name, _ in runs) + " |"
    lines = [
        f"before = {args.before}:{','.join(args.paths)}, after = {args.after}, {args.mode}",
        "",
        head,
        "|---" * (len(runs) + 1) + "|",
    ]
    for figure in FIGURES:
        cells = [str(lookup(results, figure)) for _, results in runs]
        lines.append(f"| `{figure}` | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
