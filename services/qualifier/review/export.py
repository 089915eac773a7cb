"""The review as CSV: one row per criterion × outcome measure, for a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from services.qualifier.review.schemas import OutcomesView, RateView, ReviewView

COLUMNS = (
    "version",
    "from",
    "to",
    "kind",
    "key",
    "criterion",
    "points",
    "measure",
    "value",
    "numerator",
    "denominator",
    "low_95",
    "high_95",
    "lift",
)
COUNTS = (
    "touched",
    "sent_to_sales",
    "contacted",
    "briefed",
    "sal",
    "rejected_by_sales",
    "sql",
    "won",
    "lost",
    "revenue",
)
RATES = ("lead_quality_rate", "conversion_rate", "win_rate")


def _cell(value: Any) -> Any:
    # A text cell that a spreadsheet would read as a formula is quoted as text
    # (OWASP's CSV injection advice): reasons are typed by people.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _measures(o: OutcomesView) -> Iterator[tuple[str, Any, RateView | None]]:
    for name in COUNTS:
        yield name, getattr(o, name), None
    for name in RATES:
        rate: RateView = getattr(o, name)
        yield name, rate.value, rate
    for reason, count in o.rejection_reasons.items():
        yield f"rejected_for: {reason}", count, None


def review_csv(view: ReviewView) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    head = (view.version, view.from_.isoformat(), view.to.isoformat())
    rows: list[tuple[str, str, str, int | None, OutcomesView]] = [
        ("all", "all", "every lead of the version", None, view.all)
    ]
    rows += [(c.kind, c.key, c.label, c.points, c.outcomes) for c in view.criteria]
    for kind, key, label, points, outcomes in rows:
        for measure, value, rate in _measures(outcomes):
            ratio = (
                (rate.numerator, rate.denominator, rate.low, rate.high, rate.lift)
                if rate
                else (None,) * 5
            )
            writer.writerow(
                [_cell(v) for v in (*head, kind, key, label, points, measure, value, *ratio)]
            )
    return out.getvalue()
