"""`_matches` patterns run on RE2, in time linear in the text; what RE2 cannot run is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.qualifier.definitions.model import LeadDefinition
from services.qualifier.definitions.patterns import (
    MATCH_TEXT_LIMIT,
    MAX_PATTERN_LENGTH,
    MAX_PATTERN_PROGRAM,
    MAX_PATTERNS,
    PatternError,
    compile_pattern,
    pattern_matches,
)
from services.qualifier.definitions.source import (
    DefinitionInvalid,
    Problem,
    check_stored,
    load_definition,
)
from services.qualifier.routing.evaluator import evaluate, matches
from tests.support import snapshot

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "services/qualifier/default_definition.yaml"
).read_text()
# The fourth score rule of the example; a test puts a pattern in its place.
RULE = "{industry_in: [ecommerce, saas, manufacturing, finance]}"
# Nested repetition: Python's `re` tries every way to split a long run of words.
BACKTRACKING = r"(\w+\s?)+$"
LONG_MESSAGE = "ab " * 3333 + "!"  # 10,000 characters
NOW = snapshot().received_at


def with_pattern(pattern: str, field: str = "message") -> str:
    assert RULE in EXAMPLE
    quoted = pattern.replace("\\", "\\\\").replace('"', '\\"')
    return EXAMPLE.replace(RULE, f'{{{field}_matches: "{quoted}"}}')


def problems(text: str) -> list[Problem]:
    with pytest.raises(DefinitionInvalid) as invalid:
        load_definition(text)
    return invalid.value.problems


class TestTheEngine:
    def test_patterns_compile_to_re2_programs(self) -> None:
        program = compile_pattern(BACKTRACKING)
        assert type(program).__module__.split(".")[0] == "re2"

    def test_a_backtracking_pattern_on_a_long_message_gives_an_answer(self) -> None:
        # Python's `re` would not come back from this one.
        assert len(LONG_MESSAGE) == 10_000
        assert pattern_matches(BACKTRACKING, LONG_MESSAGE) is False
        assert pattern_matches(BACKTRACKING, "ab " * 10 + "ab") is True

    def test_the_definition_with_that_pattern_decides_the_lead(self) -> None:
        definition = load_definition(with_pattern(BACKTRACKING)).definition
        decision = evaluate(snapshot(message=LONG_MESSAGE), definition, 1, now=NOW).decision
        assert decision.route.value == "sales"

    def test_case_is_ignored_in_any_alphabet(self) -> None:
        assert pattern_matches("директор", "Генеральный ДИРЕКТОР")
        assert pattern_matches("^acme", "ACME Corp")
        assert matches(snapshot(company="Acme Corp"), {"company_matches": "^acme"})

    def test_only_the_first_characters_of_a_field_are_matched(self) -> None:
        assert pattern_matches("tender", "x" * (MATCH_TEXT_LIMIT - 6) + "tender")
        assert not pattern_matches("tender", "x" * MATCH_TEXT_LIMIT + "tender")


class TestRefusedPatterns:
    @pytest.mark.parametrize(
        ("pattern", "words"),
        [
            (r"(a)\1", "backreferences"),
            (r"acme(?=\s)", "lookarounds"),
            (r"(?<!not )interested", "lookarounds"),
            ("[unclosed", "missing ]"),
            (".{900}x", f"at most {MAX_PATTERN_PROGRAM}"),
            (r"\pL{1000}", "too complex"),
            ("a" * (MAX_PATTERN_LENGTH + 1), f"at most {MAX_PATTERN_LENGTH} characters"),
        ],
    )
    def test_an_upload_names_the_rule_and_the_problem(self, pattern: str, words: str) -> None:
        (problem,) = problems(with_pattern(pattern))
        assert problem.loc == ("score", 6, "when", "message_matches")
        assert words in problem.msg
        with pytest.raises(PatternError):
            compile_pattern(pattern)

    def test_the_problem_points_at_the_line_of_the_rule(self) -> None:
        text = with_pattern(r"(a)\1")
        (problem,) = problems(text)
        assert problem.line is not None
        assert "message_matches" in text.splitlines()[problem.line - 1]

    def test_a_definition_has_a_bounded_number_of_patterns(self) -> None:
        many = "[" + ", ".join(f'{{company_matches: "^c{i}"}}' for i in range(MAX_PATTERNS)) + "]"
        text = EXAMPLE.replace(RULE, f"{{any: {many}, message_matches: x}}")
        (problem,) = problems(text)
        assert f"at most {MAX_PATTERNS}" in problem.msg
        load_definition(EXAMPLE.replace(RULE, f"{{any: {many}}}"))  # the limit itself is fine


class TestVersionsStoredBeforeRe2:
    """A version stored while patterns ran on Python's `re` may hold one RE2 refuses."""

    def stored(self) -> dict[str, object]:
        document = load_definition(with_pattern("x")).document
        document["score"][6]["when"] = {"company_matches": "acme(?= corp)"}
        return document

    def test_it_still_loads_and_its_rule_never_matches(self) -> None:
        definition = LeadDefinition.model_validate(self.stored())
        rule = definition.score[6]
        assert not matches(snapshot(company="Acme Corp"), rule.when)
        assert evaluate(snapshot(), definition, 1, now=NOW).decision.route.value == "sales"

    def test_its_publication_is_refused_naming_the_rule(self) -> None:
        (problem,) = check_stored(self.stored())
        assert problem.loc == ("score", 6, "when", "company_matches")
        assert "lookarounds" in problem.msg
        assert check_stored(load_definition(EXAMPLE).document) == []
