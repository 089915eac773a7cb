"""The fold's pure steps alone, per event: decoding, merging into lead states, diffing.

    .venv/bin/python -m bench.fold_micro [--leads 20000] [--repeat 3]

No Kafka, no database: the bench's synthetic histories (bench/events.py) encoded as on the
topics, then decoded (`shared.events.decode_event`, and `open_event` as the rebuild does),
merged into empty states (`facts.merge_events`) and diffed against none
(`facts.changes_between`). Prints microseconds an event for each step, each repeat.
"""

from __future__ import annotations

import argparse
import time

from bench import events as synthetic
from services.kpi.fold.facts import changes_between, merge_events
from services.kpi.fold.lead_state import LeadState
from shared.crypto import open_event
from shared.events import Event, decode_event, encode_event


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    raws = [encode_event(e) for e in synthetic.histories(args.leads)]
    n = len(raws)
    print(f"{n} events of {args.leads} leads")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        events: list[Event] = [decode_event(r) for r in raws]
        t1 = time.perf_counter()
        for r in raws:
            open_event(r, {})
        t2 = time.perf_counter()
        states: dict[str, LeadState] = {}
        merge_events({}, events, states)
        t3 = time.perf_counter()
        changes_between({}, states.items())
        t4 = time.perf_counter()
        print(
            f"decode {1e6 * (t1 - t0) / n:.2f}  open_event {1e6 * (t2 - t1) / n:.2f}  "
            f"merge {1e6 * (t3 - t2) / n:.2f}  diff {1e6 * (t4 - t3) / n:.2f}  µs an event"
        )


if __name__ == "__main__":
    main()
