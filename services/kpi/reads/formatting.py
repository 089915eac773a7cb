"""How exact values are written in answers: rounding by unit, deltas, CSV rows. Pure.

Values are computed exactly (Decimal, Fraction) and rounded once, here, half up:
money to cents, ratios to 4 decimals (0.1235 = 12.35 %), seconds to milliseconds,
percent deltas to 2 decimals. A delta is computed from exact values, then rounded.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from services.kpi.catalogue import DurationStats, Unit, Value

_QUANTUM = {
    Unit.MONEY: Decimal("0.01"),
    Unit.RATIO: Decimal("0.0001"),
    Unit.SECONDS: Decimal("0.001"),
}
_PCT = Decimal("0.01")

Json = int | float | dict[str, Any] | None


def _round(value: Decimal, quantum: Decimal) -> float:
    return float(value.quantize(quantum, rounding=ROUND_HALF_UP))


def scalar(value: Decimal | None, unit: Unit) -> int | float | None:
    if value is None:
        return None
    if unit is Unit.COUNT:
        return int(value)
    return _round(value, _QUANTUM[unit])


def write(value: Value, unit: Unit) -> Json:
    """A metric's value as it appears in JSON."""
    if isinstance(value, DurationStats):
        return {
            "median": scalar(value.median, unit),
            "p90": scalar(value.p90, unit),
            "count": value.count,
        }
    return scalar(value, unit)


def _delta(value: Decimal | None, other: Decimal | None) -> Decimal | None:
    return None if value is None or other is None else value - other


def _pct(value: Decimal | None, other: Decimal | None) -> float | None:
    if value is None or other is None or other == 0:
        return None
    return _round((value - other) / other * 100, _PCT)


def _stats_parts(v: DurationStats) -> dict[str, Decimal | None]:
    return {"median": v.median, "p90": v.p90, "count": Decimal(v.count)}


def comparison(value: Value, other: Value, unit: Unit) -> tuple[Json, Json]:
    """(delta, delta in percent of `other`) of two values of one metric."""
    if isinstance(value, DurationStats) and isinstance(other, DurationStats):
        mine, theirs = _stats_parts(value), _stats_parts(other)
        delta: dict[str, Any] = {}
        pct: dict[str, Any] = {}
        for key in mine:
            part_unit = Unit.COUNT if key == "count" else unit
            delta[key] = scalar(_delta(mine[key], theirs[key]), part_unit)
            pct[key] = _pct(mine[key], theirs[key])
        return delta, pct
    assert not isinstance(value, DurationStats) and not isinstance(other, DurationStats)
    return scalar(_delta(value, other), unit), _pct(value, other)


def flatten(name: str, value: Json) -> list[tuple[str, int | float | None]]:
    """A value as CSV cells: a duration becomes name.median, name.p90, name.count."""
    if isinstance(value, dict):
        return [(f"{name}.{k}", v) for k, v in value.items()]
    return [(name, value)]


def csv_text(cell: object) -> str:
    """A CSV cell; text that a spreadsheet would run as a formula is quoted with '."""
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, int | float):
        return repr(cell) if isinstance(cell, float) else str(cell)
    text = str(cell)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
