"""`_matches` patterns: RE2 programs, their limits, and matching a text.

`_matches` patterns run on RE2, whose time is linear in the text whatever the pattern
(Python's `re` backtracks: a nested repetition against a long message never ends). RE2 has
no backreferences or lookarounds; a definition written now with a pattern RE2 cannot
compile, or too complex a one, is refused. Stored versions are read back without that
check, and a stored pattern RE2 cannot run never matches.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import re2

log = logging.getLogger(__name__)

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


@functools.lru_cache(maxsize=256)
def _program(pattern: str) -> Any:
    """The RE2 program of a pattern, None (said once) for one RE2 cannot run.

    Only a version stored before patterns ran on RE2 can hold such a pattern: its rule
    stops matching rather than the lead failing, until a fixed version is published.
    """
    program = compiled_pattern(pattern)
    if isinstance(program, str):
        log.warning("a _matches pattern of a stored definition never matches: %s", program)
        return None
    return program


def pattern_matches(pattern: str, text: str) -> bool:
    """RE2, ignoring case, on the text's first MATCH_TEXT_LIMIT characters: linear time."""
    program = _program(pattern)
    return program is not None and program.search(text[:MATCH_TEXT_LIMIT]) is not None
