"""Suggested edits on synthetic leads whose truth is known, over seeds and sizes.

`.venv/bin/python -m bench.suggest_figures [--sizes 2000,10000,100000] [--seeds 1,2,3]`

For each run: the older 70% of sales' answers fit the suggestion in the fitting process
(as the qualifier runs it), the newer leads judge it beside the example definition and
beside the true model (leads it gives at least even odds). Prints a Markdown table: the
criteria that matter it recovered, the noise it kept, the acceptance rate among leads sent
to sales on the held-out leads, the fit's own time in the fitting process, the wall time
(process start to answer: the rows read and streamed in included) and the fitting
process's peak memory. The machine's load average is printed too: on a shared machine the
times move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time

from services.qualifier.config import DEFAULT_DEFINITION
from services.qualifier.definitions.backtest import Judged
from services.qualifier.definitions.source import load_definition
from services.qualifier.suggest.features import row_of
from services.qualifier.suggest.fit_process import FitProcess
from services.qualifier.suggest.fitted import Params
from services.qualifier.suggest.holdout import SideBySide
from services.qualifier.suggest.translate import draft_text, suggest
from tests.synthetic.leads import NOISE_FIELDS, generate

PARAMS = Params(min_outcomes=300, min_support=30, sales_min_acceptance=0.5)
# What the truth says matters, as it shows in a suggested rule's condition.
MATTERS = ("decision_maker", "1000+", "300000", "'now'", "saas", "finance", "webinar", "crm_in_use")


async def run(n: int, seed: int) -> dict[str, object]:
    active = load_definition(DEFAULT_DEFINITION.read_text(encoding="utf-8"))
    leads = list(generate(n, seed=seed))
    answered = [x for x in leads if x.feedback is not None]
    cut = answered[int(len(answered) * 0.7)].snapshot.received_at
    older = [x for x in answered if x.snapshot.received_at < cut]
    newer = [x for x in leads if x.snapshot.received_at >= cut]
    started = time.perf_counter()
    async with FitProcess([r.points for r in active.definition.score], PARAMS) as process:
        for i in range(0, len(older), 1000):
            rows = (
                row_of(x.snapshot, active.definition, accepted=x.feedback == "accepted")
                for x in older[i : i + 1000]
            )
            await process.send(r for r in rows if r is not None)
        fit = await process.result()
    wall = time.perf_counter() - started
    suggestion = suggest(active.document, fit)
    draft = load_definition(draft_text(suggestion, version=1, outcomes=fit.outcomes))
    side = SideBySide(Judged(draft.definition, 2), Judged(active.definition, 1))
    for x in newer:
        side.add(x.snapshot, x.feedback, x.won, x.revenue)
    true_sales = [x for x in newer if x.feedback is not None and x.p_accept >= 0.5]
    conditions = " ".join(str(r["when"]) for r in draft.document["score"])
    return {
        "leads": n,
        "seed": seed,
        "training": fit.outcomes,
        "changes": len(suggestion.changes),
        "recovered": f"{sum(m in conditions for m in MATTERS)}/{len(MATTERS)}",
        "noise kept": sum(f in conditions for f in [*NOISE_FIELDS, "email_free_provider"]),
        "suggested": side.suggested_tally.acceptance_rate,
        "active": side.active_tally.acceptance_rate,
        "true model": round(sum(x.feedback == "accepted" for x in true_sales) / len(true_sales), 4),
        "to sales": f"{side.suggested_tally.to_sales}/{side.active_tally.to_sales}",
        "fit s": fit.seconds,
        "wall s": round(wall, 2),
        "fit process peak MB": fit.peak_rss_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000,100000")
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    results = [
        asyncio.run(run(int(n), int(seed)))
        for n in args.sizes.split(",")
        for seed in args.seeds.split(",")
    ]
    keys = list(results[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in results:
        print(
            "| "
            + " | ".join(f"{r[k]:,}" if isinstance(r[k], int) else str(r[k]) for k in keys)
            + " |"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(f"\nthis process (generator and judging, not the qualifier) peaked at {peak:.0f} MB")


if __name__ == "__main__":
    main()
