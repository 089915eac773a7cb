"""Conditions of a definition: predicates `<field>_<operator>`, flags and combinators,
and their checks.

A condition is a mapping of predicates that must all hold:

- operators: `in`, `not_in`, `at_least`, `at_most`, `contains`, `matches`, `present`;
- fields: any lead field (`company`, `services`, `budget`, `country`, `utm_source`...),
  `email_domain`, or a free-form answer as `fields.<name>`;
- flags: `honeypot_filled`, `email_free_provider`, `webinar_attended` (true/false);
- combinators: `all: [...]`, `any: [...]`, `not: {...}`.
"""

from __future__ import annotations

import functools
from decimal import Decimal, InvalidOperation
from typing import Any

from services.qualifier.definitions.patterns import PatternError, compile_pattern

OPERATORS = ("not_in", "in", "at_least", "at_most", "contains", "matches", "present")
FLAGS = ("honeypot_filled", "email_free_provider", "webinar_attended")
COMBINATORS = ("all", "any", "not")
LEAD_FIELDS = (
    "source", "form_id", "webinar_id", "name", "email", "phone", "company", "job_title",
    "industry", "company_size", "country", "region", "message", "services", "budget",
    "timeframe", "role_in_purchase", "page_url", "referrer", "email_domain",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
)  # fmt: skip

Path = tuple[str | int, ...]


class ConditionError(ValueError):
    """A bad condition, with where it sits inside the `when` mapping (for the line number)."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{dotted(('when', *path))}: {message}")


def dotted(path: Path) -> str:
    """`('when', 'all', 0, 'budget_at_least')` as `when.all[0].budget_at_least`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@functools.cache  # evaluating a lead looks its definition's keys up again and again
def parse_predicate_key(key: str) -> tuple[str, str]:
    """Split `role_in_purchase_in` into (`role_in_purchase`, `in`); raise ValueError if unknown."""
    for op in OPERATORS:
        suffix = f"_{op}"
        if key.endswith(suffix) and len(key) > len(suffix):
            field = key[: -len(suffix)]
            if field in LEAD_FIELDS or (field.startswith("fields.") and len(field) > 7):
                return field, op
    raise ValueError(
        f"unknown condition {key!r}: expected <field>_<operator> with an operator of "
        f"{', '.join(OPERATORS)}, one of {', '.join(FLAGS + COMBINATORS)}, and a field of "
        f"{', '.join(LEAD_FIELDS)} or fields.<name>"
    )


def patterns_in(cond: Any) -> list[str]:
    """The `_matches` values of a (checked) condition, nested ones included."""
    found: list[str] = []
    for key, value in cond.items():
        if key in ("all", "any"):
            for sub in value:
                found += patterns_in(sub)
        elif key == "not":
            found += patterns_in(value)
        elif key not in FLAGS and parse_predicate_key(key)[1] == "matches":
            found.append(value)
    return found


def check_condition(cond: Any, path: Path = (), *, new: bool = False) -> None:
    """Validate a condition mapping; raise ConditionError naming the first bad key and its place.

    `new`: a definition written now, whose patterns must be ones RE2 runs.
    """
    if not isinstance(cond, dict) or not cond:
        raise ConditionError(path, "a condition is a non-empty mapping of predicates")
    for key, value in cond.items():
        where = (*path, key)
        if key in FLAGS:
            if not isinstance(value, bool):
                raise ConditionError(where, "expected true or false")
        elif key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise ConditionError(where, "expected a non-empty list of conditions")
            for i, sub in enumerate(value):
                check_condition(sub, (*where, i), new=new)
        elif key == "not":
            check_condition(value, where, new=new)
        else:
            try:
                _, op = parse_predicate_key(str(key))
            except ValueError as exc:
                raise ConditionError(where, str(exc)) from None
            _check_operand(op, value, where, new=new)


def _check_operand(op: str, value: Any, where: Path, *, new: bool) -> None:
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise ConditionError(where, "expected a non-empty list of values")
        if any(isinstance(v, (list, dict)) or v is None for v in value):
            raise ConditionError(where, "expected a list of plain values")
    elif op in ("at_least", "at_most"):
        if isinstance(value, bool):
            raise ConditionError(where, f"expected a number, got {value!r}")
        try:
            Decimal(str(value))
        except (InvalidOperation, ValueError):
            raise ConditionError(where, f"expected a number, got {value!r}") from None
    elif op == "matches":
        if not isinstance(value, str):
            raise ConditionError(where, "expected a regular expression (a string)")
        if new:
            try:
                compile_pattern(value)
            except PatternError as exc:
                raise ConditionError(where, str(exc)) from None
    elif op == "present":
        if not isinstance(value, bool):
            raise ConditionError(where, "expected true or false")
    elif op == "contains" and (isinstance(value, (list, dict)) or value is None):
        raise ConditionError(where, "expected one value")
