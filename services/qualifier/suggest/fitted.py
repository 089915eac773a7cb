"""What a fit found, as plain data that crosses the process boundary as JSON. Pure.

A column is a readable criterion: one of the definition's score rules (`rule`), a field
having a value (`value`), a flag being true (`flag`), a budget of at least an amount
(`budget`). Its evidence is how many training leads matched it and how many of those
sales accepted, against the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# Points are log-odds scaled so that 10 points double the odds of sales accepting a lead,
# and rounded to 5: a marketer reads +15 and +25, not +17.3.
POINTS_PER_DOUBLING = 10
POINTS_STEP = 5
SCALE = POINTS_PER_DOUBLING / math.log(2)


def to_points(log_odds: float) -> int:
    return int(POINTS_STEP * round(SCALE * log_odds / POINTS_STEP))


@dataclass(frozen=True)
class Params:
    min_outcomes: int  # fewer training outcomes than this: no suggestion
    min_support: int  # a criterion needs this many training leads on each side
    sales_min_acceptance: float  # the threshold sends leads at least this likely accepted


@dataclass
class Column:
    kind: Literal["rule", "value", "flag", "budget"]
    rule: int | None = None
    field: str | None = None
    value: str | None = None
    at_least: float | None = None
    weight: float = 0.0  # log-odds, 0 when the fit dropped it
    points: int = 0
    n_with: int = 0
    accepted_with: int = 0
    n_without: int = 0
    accepted_without: int = 0

    @property
    def rate_with(self) -> float:
        return self.accepted_with / self.n_with if self.n_with else 0.0

    @property
    def rate_without(self) -> float:
        return self.accepted_without / self.n_without if self.n_without else 0.0


@dataclass
class Fit:
    outcomes: int
    accepted: int
    enough: bool
    why_not: str | None = None
    intercept: float = 0.0
    columns: list[Column] = field(default_factory=list)
    sales_min_score: int | None = None
    above: tuple[int, int] = (0, 0)  # training leads at or above the threshold, accepted
    below: tuple[int, int] = (0, 0)
    seconds: float = 0.0  # the fit's own time
    peak_rss_mb: float = 0.0  # the fitting process's peak memory

    def wire(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_wire(data: dict[str, Any]) -> Fit:
        columns = [Column(**c) for c in data.pop("columns")]
        above, below = tuple(data.pop("above")), tuple(data.pop("below"))
        return Fit(columns=columns, above=above, below=below, **data)
