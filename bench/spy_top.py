"""Where a py-spy speedscope profile spends its time: inclusive share per function.

.venv/bin/python -m bench.spy_top PROFILE.speedscope.json [--top 40] [--match TEXT] [--within TEXT]

`--within`: only the samples with a frame whose name holds TEXT (one job of the process).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="")
    parser.add_argument("--within", default="")
    args = parser.parse_args()
    doc = json.loads(args.profile.read_text())
    frames = doc["shared"]["frames"]
    inclusive: Counter[str] = Counter()
    total = 0
    for profile in doc["profiles"]:
        for sample, weight in zip(profile["samples"], profile["weights"], strict=True):
            if args.within and not any(args.within in frames[i]["name"] for i in sample):
                continue
            total += weight
            seen = set()
            for index in sample:
                f = frames[index]
                name = f"{f['name']} ({Path(f.get('file', '')).name}:{f.get('line', '')})"
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += weight
    for name, weight in inclusive.most_common():
        if args.match in name:
            print(f"{100 * weight / total:5.1f}%  {name}")
            args.top -= 1
            if args.top <= 0:
                break


if __name__ == "__main__":
    main()
