"""The universal lead definition: the document marketing and sales agree on, and its checks.

A definition is YAML or JSON (see `default_definition.yaml`, and `docs/lead-definition.md`
for the people who write it). Conditions are mappings of predicates that must all hold;
a predicate is `<field>_<operator>`:

- operators: `in`, `not_in`, `at_least`, `at_most`, `contains`, `matches`, `present`;
- fields: any lead field (`company`, `services`, `budget`, `country`, `utm_source`...),
  `email_domain`, or a free-form answer as `fields.<name>`;
- flags: `honeypot_filled`, `email_free_provider`, `webinar_attended` (true/false);
- combinators: `all: [...]`, `any: [...]`, `not: {...}`.

`_matches` patterns run on RE2, whose time is linear in the text whatever the pattern
(Python's `re` backtracks: a nested repetition against a long message never ends). RE2 has no
backreferences or lookarounds; a definition written now (`NEW`) with a pattern RE2 cannot
compile, or too complex a one, is refused. Stored versions are read back without that
check, and a stored pattern RE2 cannot run never matches (see `evaluator`).
"""

from __future__ import annotations

import functools
from datetime import time
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import re2
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

OPERATORS = ("not_in", "in", "at_least", "at_most", "contains", "matches", "present")
FLAGS = ("honeypot_filled", "email_free_provider", "webinar_attended")
COMBINATORS = ("all", "any", "not")
LEAD_FIELDS = (
    "source", "form_id", "webinar_id", "name", "email", "phone", "company", "job_title",
    "industry", "company_size", "country", "region", "message", "services", "budget",
    "timeframe", "role_in_purchase", "page_url", "referrer", "email_domain",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
)  # fmt: skip
NUMERIC_FIELDS = ("budget",)

# Validation context for a definition being written now (an upload, the initial one):
# checks added after versions were stored apply to it, never to what is stored.
NEW: dict[str, bool] = {"new": True}

# A `_matches` pattern is tried on a field's first MATCH_TEXT_LIMIT characters: all of any
# text intake accepts (a message is at most 10,000), a bound for what else may arrive.
MATCH_TEXT_LIMIT = 10_000
MAX_PATTERN_LENGTH = 1_000
# RE2 runs in time linear in the text, times (at worst) the size of its program: with
# this many instructions one try on 10,000 characters takes about 120 ms for the worst
# contrived pattern found, under 2 ms for ordinary ones. `(head|director|chief)` is 23
# instructions, `\pL+` (any letters) 1,202.
MAX_PATTERN_PROGRAM = 2_500
MAX_PATTERNS = 100  # per definition: a lead is tried against each of them
# Memory per program, most of it the DFA's cache: with less, a large program's DFA runs
# out of room and RE2 falls back to its NFA, ten times slower.
_RE2_MAX_MEMORY = 2 << 20

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


class PatternError(ValueError):
    pass


def _too_complex(size: str) -> str:
    return (
        f"this regular expression is too complex ({size}): use smaller counted repetitions "
        "(.{n}) and classes (\\pL, any letter, is large; \\p{Cyrillic} or [a-z] are small)"
    )


@functools.lru_cache(maxsize=256)
def compiled_pattern(pattern: str) -> Any:
    """A `_matches` value as a case-insensitive RE2 program, or a str saying why it cannot be."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"a regular expression is at most {MAX_PATTERN_LENGTH} characters"
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = _RE2_MAX_MEMORY
    options.log_errors = False  # RE2 would print the pattern to stderr
    try:
        program = re2.compile(pattern, options)
    except re2.error as exc:
        why = exc.args[0] if exc.args else ""
        why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
        if why.startswith("pattern too large"):
            return _too_complex(f"over {_RE2_MAX_MEMORY >> 20} MiB compiled")
        return (
            f"not a regular expression RE2 accepts ({why}); backreferences and lookarounds "
            "are not supported"
        )
    if program.programsize > MAX_PATTERN_PROGRAM:
        return _too_complex(
            f"{program.programsize} RE2 instructions, at most {MAX_PATTERN_PROGRAM}"
        )
    return program


def compile_pattern(pattern: str) -> Any:
    """The RE2 program of a `_matches` value; PatternError says why there is none."""
    program = compiled_pattern(pattern)
    if isinstance(program, str):
        raise PatternError(program)
    return program


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


def _is_new(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("new"))


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RejectRule(_Doc):
    reason: str = Field(min_length=1)
    when: dict[str, Any]

    @field_validator("when")
    @classmethod
    def _valid(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        check_condition(v, new=_is_new(info))
        return v


class ScoreRule(_Doc):
    points: int
    when: dict[str, Any]
    # How the criterion reads in a decision's reasons; generated from `when` if absent.
    label: str | None = None

    @field_validator("when")
    @classmethod
    def _valid(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        check_condition(v, new=_is_new(info))
        return v


class Partner(_Doc):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    name: str
    services: list[str] = Field(min_length=1)
    regions: list[str] = Field(default_factory=lambda: ["*"])
    # Where the partner gets its leads (signed POST); without it, the partner reads
    # `leads.routed` itself or is sent leads by hand.
    webhook_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        return v


class Routes(_Doc):
    sales_min_score: int
    nurture_below_score: int

    @model_validator(mode="after")
    def _ordered(self) -> Routes:
        if self.nurture_below_score > self.sales_min_score:
            raise ValueError("nurture_below_score must not be above sales_min_score")
        return self


class Assignment(StrEnum):
    round_robin = "round_robin"
    least_loaded = "least_loaded"


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"


WEEKDAYS = tuple(Weekday)
_CLOCK = r"^([01]\d|2[0-3]):[0-5]\d$"


class WorkingHours(_Doc):
    """When a team works: the SLA clock runs only inside these hours."""

    timezone: str = "UTC"
    days: list[Weekday] = Field(
        default_factory=lambda: [Weekday.mon, Weekday.tue, Weekday.wed, Weekday.thu, Weekday.fri],
        min_length=1,
    )
    # Quoted "HH:MM": YAML 1.1 reads an unquoted 9:30 as the number 570.
    start: str = Field(default="09:00", pattern=_CLOCK)
    end: str = Field(default="18:00", pattern=_CLOCK)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name such as Europe/Moscow)"
            ) from None
        return v

    @model_validator(mode="after")
    def _start_before_end(self) -> WorkingHours:
        if self.opens >= self.closes:
            raise ValueError("start must be before end (shifts past midnight are not supported)")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def opens(self) -> time:
        return time.fromisoformat(self.start)

    @property
    def closes(self) -> time:
        return time.fromisoformat(self.end)

    @property
    def weekdays(self) -> frozenset[int]:
        """Python weekday numbers (Monday 0) of the working days."""
        return frozenset(WEEKDAYS.index(d) for d in self.days)


class SalesTeam(_Doc):
    team: str = Field(min_length=1)
    when: dict[str, Any] | None = None
    assign: Assignment = Assignment.round_robin
    members: list[str] = Field(min_length=1)
    sla_hours: float = Field(gt=0, le=24 * 30)
    # Without working hours the SLA clock runs around the clock.
    working_hours: WorkingHours | None = None

    @field_validator("when")
    @classmethod
    def _valid(cls, v: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if v is not None:
            check_condition(v, new=_is_new(info))
        return v

    @field_validator("members")
    @classmethod
    def _unique_members(cls, v: list[str]) -> list[str]:
        if len(v) != len(set(v)):
            raise ValueError("a member is listed twice")
        if any(not m.strip() for m in v):
            raise ValueError("a member name is empty")
        return v


class LeadDefinition(_Doc):
    """What a lead is, as marketing and sales agreed: parsed and checked before it is stored."""

    name: str = Field(min_length=1)
    description: str | None = None
    required: list[str] = Field(default_factory=list)
    reject: list[RejectRule] = Field(default_factory=list)
    our_services: list[str] = Field(default_factory=list)
    partners: list[Partner] = Field(default_factory=list)
    score: list[ScoreRule] = Field(default_factory=list)
    routes: Routes
    sales_teams: list[SalesTeam] = Field(min_length=1)

    @field_validator("required")
    @classmethod
    def _known_fields(cls, v: list[str]) -> list[str]:
        for field in v:
            if field not in LEAD_FIELDS and not field.startswith("fields."):
                raise ValueError(
                    f"unknown required field {field!r}: use one of {', '.join(LEAD_FIELDS)} "
                    "or fields.<name>"
                )
        return v

    @field_validator("partners")
    @classmethod
    def _unique_partners(cls, v: list[Partner]) -> list[Partner]:
        ids = [p.id for p in v]
        if len(ids) != len(set(ids)):
            raise ValueError("partner ids must be unique")
        return v

    @field_validator("sales_teams")
    @classmethod
    def _unique_teams(cls, v: list[SalesTeam]) -> list[SalesTeam]:
        teams = [t.team for t in v]
        if len(teams) != len(set(teams)):
            raise ValueError("sales team names must be unique")
        return v

    @model_validator(mode="after")
    def _few_patterns(self, info: ValidationInfo) -> LeadDefinition:
        if _is_new(info):
            count = len(self.patterns())
            if count > MAX_PATTERNS:
                raise ValueError(
                    f"{count} regular expressions (_matches); a definition has at most "
                    f"{MAX_PATTERNS}, each tried on every lead"
                )
        return self

    def patterns(self) -> list[str]:
        """Every `_matches` value of the definition's conditions."""
        conditions = [r.when for r in self.reject] + [r.when for r in self.score]
        conditions += [t.when for t in self.sales_teams if t.when is not None]
        return [p for cond in conditions for p in patterns_in(cond)]

    def partner(self, partner_id: str) -> Partner | None:
        return next((p for p in self.partners if p.id == partner_id), None)

    def team(self, name: str) -> SalesTeam | None:
        return next((t for t in self.sales_teams if t.team == name), None)
