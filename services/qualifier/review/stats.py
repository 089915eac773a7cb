"""Rates with their 95% intervals, and lift against a baseline. Pure.

Wilson's score interval rather than the normal approximation: a criterion that touched
a handful of leads, or whose rate is 0% or 100%, still gets an interval inside [0, 1]
that says how little those leads prove.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The two-sided 95% quantile of the standard normal distribution.
Z95 = 1.959963984540054


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of `successes` out of `trials`; None without trials."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    # Rounding error must not put the bounds past the proportion they surround.
    return max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))


@dataclass(frozen=True)
class Rate:
    """`numerator / denominator` with its Wilson 95% interval; value None without data."""

    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson(self.numerator, self.denominator)

    def lift(self, baseline: Rate) -> float | None:
        """This rate over the baseline's (1.0: no better, no worse); None when either has
        no value or the baseline is 0."""
        mine, base = self.value, baseline.value
        if mine is None or not base:
            return None
        return mine / base
