"""Reading a definition costs time in proportion to its text; a back-test stays in its bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from services.qualifier.definitions.backtest import BacktestRefused, Bounds
from services.qualifier.definitions.source import (
    MAX_NESTING,
    DefinitionInvalid,
    Problem,
    load_definition,
)

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "services/qualifier/default_definition.yaml"
).read_text()


def alias_bomb(levels: int) -> str:
    """A few hundred bytes that YAML expands to 10**(levels + 1) items."""
    lines = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def problem(text: str) -> Problem:
    with pytest.raises(DefinitionInvalid) as invalid:
        load_definition(text)
    (first, *_) = invalid.value.problems
    return first


class TestAnchorsAndAliases:
    @pytest.mark.parametrize(
        ("text", "line"),
        [
            (alias_bomb(8), 1),  # 10**9 items if it were expanded
            ("a: &a [*a]\n", 1),  # a list that contains itself
            ("name: x\nbase: &base {sla_hours: 2}\nteam:\n  <<: *base\n", 2),  # a merge key
            (EXAMPLE.replace("members: [anna, boris]", "members: &seniors [anna, boris]"), None),
        ],
    )
    def test_are_refused_before_anything_is_built(self, text: str, line: int | None) -> None:
        found = problem(text)
        assert found.type == "yaml_alias"
        assert "anchors and aliases" in found.msg
        assert found.line is not None
        if line is not None:
            assert found.line == line
        else:
            assert "&seniors" in text.splitlines()[found.line - 1]


class TestNesting:
    def test_deep_yaml_is_refused_at_the_line_past_the_limit(self) -> None:
        text = "".join("  " * i + "- \n" for i in range(MAX_NESTING + 5))
        found = problem(text)
        assert found.type == "too_deep" and found.line == MAX_NESTING + 1

    def test_deep_flow_yaml_is_refused(self) -> None:
        assert problem("[" * 100_000 + "]" * 100_000).loc == ()

    def test_deep_json_that_yaml_refuses_is_refused_too(self) -> None:
        # Tabs for indentation: YAML refuses the text, JSON reads it.
        text = json.dumps(yaml.safe_load(EXAMPLE), indent="\t")
        assert load_definition(text).definition.name
        deep = text.replace('"name":', '"description": ' + "[" * 40 + "]" * 40 + ',\n\t"name":', 1)
        assert problem(deep).type == "too_deep"

    def test_the_example_nests_well_within_the_limit(self) -> None:
        assert load_definition(EXAMPLE).definition.name


class TestValuesTheirTagsCannotBe:
    @pytest.mark.parametrize(
        "text", ["name: 2026-13-01\n", "name: x\nbudget: " + "9" * 5000 + "\n", "x: !!float abc\n"]
    )
    def test_are_a_syntax_problem_not_a_crash(self, text: str) -> None:
        assert problem(text).type == "syntax_error"


class TestBacktestBounds:
    def test_within_the_bounds_nothing_happens(self) -> None:
        Bounds(max_leads=10, budget_seconds=1).check(leads=10, elapsed=1)
        Bounds().check(leads=10**9, elapsed=10**9)

    def test_more_leads_than_allowed_are_refused(self) -> None:
        with pytest.raises(BacktestRefused) as refused:
            Bounds(max_leads=10).check(leads=11, elapsed=0)
        assert refused.value.kind == "too_many_leads"
        assert "more than 10 leads" in str(refused.value)

    def test_a_run_past_its_budget_is_refused(self) -> None:
        with pytest.raises(BacktestRefused) as refused:
            Bounds(budget_seconds=2.5).check(leads=1, elapsed=2.6)
        assert refused.value.kind == "over_budget"
        assert "2.5 s" in str(refused.value)
