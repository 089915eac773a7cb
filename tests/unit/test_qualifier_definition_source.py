"""Reading definitions people write: every problem named by its line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from services.qualifier.definitions.model import LeadDefinition
from services.qualifier.definitions.source import DefinitionInvalid, Problem, load_definition

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "services/qualifier/default_definition.yaml").read_text()


def problems(text: str) -> list[Problem]:
    with pytest.raises(DefinitionInvalid) as invalid:
        load_definition(text)
    return invalid.value.problems


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


class TestTheExample:
    def test_the_shared_example_is_valid_and_the_bundled_copy_is_identical(self) -> None:
        shared = ROOT.parent / "shared/examples/lead-definition.yaml"
        if shared.exists():
            assert shared.read_text() == EXAMPLE
        loaded = load_definition(EXAMPLE)
        assert loaded.definition.name == "agency-default"

    def test_the_stored_document_reads_back_the_same(self) -> None:
        loaded = load_definition(EXAMPLE)
        assert LeadDefinition.model_validate(loaded.document) == loaded.definition
        assert json.loads(json.dumps(loaded.document)) == loaded.document
        assert loaded.document["partners"][1]["regions"] == ["*"]

    def test_json_with_tabs_is_a_definition_too(self) -> None:
        text = json.dumps(yaml.safe_load(EXAMPLE), indent="\t")
        assert load_definition(text).definition == load_definition(EXAMPLE).definition


class TestProblemsByLine:
    def test_an_unknown_condition_deep_in_a_rule(self) -> None:
        text = EXAMPLE.replace(
            'when: {timeframe_in: [now, "1-3 months"]}',
            "when:\n      all:\n        - {timeframe_in: [now]}\n"
            "        - {not: {shoe_size_in: [42]}}",
        )
        (problem,) = problems(text)
        assert problem.loc == ("score", 5, "when", "all", 1, "not", "shoe_size_in")
        assert problem.line == line_of(text, "shoe_size_in")
        detail = problem.detail()
        assert detail["loc"][0] == "body" and detail["line"] == problem.line
        assert detail["msg"].startswith(f"line {problem.line}: score[5].when.all[1].not.shoe")

    def test_several_problems_are_all_reported(self) -> None:
        text = EXAMPLE.replace("sla_hours: 2", "sla_hours: -2").replace(
            "assign: round_robin\n    members: [vera", "assign: random\n    members: [vera"
        )
        found = {p.loc: p for p in problems(text)}
        assert found[("sales_teams", 0, "sla_hours")].line == line_of(text, "sla_hours: -2")
        assert found[("sales_teams", 1, "assign")].line == line_of(text, "assign: random")

    def test_a_missing_field_points_at_its_parent(self) -> None:
        text = EXAMPLE.replace(
            "  nurture_below_score: 60    # below: nurture (marketing keeps warming it up)\n", ""
        )
        (problem,) = problems(text)
        assert problem.loc == ("routes", "nurture_below_score") and problem.type == "missing"
        assert problem.line == line_of(text, "sales_min_score")

    def test_an_unknown_key_is_named(self) -> None:
        text = EXAMPLE + "colour: blue\n"
        (problem,) = problems(text)
        assert problem.loc == ("colour",) and "unknown key" in problem.msg
        assert problem.line == line_of(text, "colour: blue")

    def test_a_duplicate_key_is_named(self) -> None:
        text = EXAMPLE.replace(
            "  sales_min_score: 60", "  sales_min_score: 70\n  sales_min_score: 60"
        )
        (problem,) = problems(text)
        assert problem.type == "duplicate_key" and problem.loc == ("routes", "sales_min_score")
        assert problem.line == line_of(text, "sales_min_score: 60")

    def test_a_yaml_syntax_error_has_its_line(self) -> None:
        text = EXAMPLE.replace("our_services: [seo, ppc, analytics]", "our_services: [seo, ppc")
        (problem,) = problems(text)
        assert problem.type == "syntax_error" and problem.line is not None
        assert problem.line >= line_of(text, "our_services")

    @pytest.mark.parametrize(
        ("old", "new", "words"),
        [
            ("regions: [RU, KZ, BY]", "regions: [RU]\n    webhook_url: ftp://x.example", "http"),
            ("required: [company,", "required: [shoe_size,", "unknown required field"),
            ("members: [anna, boris]", "members: [anna, anna]", "listed twice"),
            ("{budget_at_least: 150000}", "{budget_at_least: lots}", "expected a number"),
            ('{company_size_in: ["1"]}', "{company_size_in: []}", "non-empty list"),
            ("{honeypot_filled: true}", "{honeypot_filled: yes please}", "true or false"),
            (
                "{industry_in: [ecommerce, saas, manufacturing, finance]}",
                '{company_matches: "[unclosed"}',
                "regular expression",
            ),
            ("- id: smm-partner", "- id: webstudio", "partner ids must be unique"),
        ],
    )
    def test_checks_name_what_is_wrong(self, old: str, new: str, words: str) -> None:
        assert old in EXAMPLE
        (problem, *_) = problems(EXAMPLE.replace(old, new))
        assert words in problem.msg
        assert problem.line is not None

    @pytest.mark.parametrize("text", ["", "   \n", "[1, 2]", "just words"])
    def test_not_a_mapping(self, text: str) -> None:
        assert problems(text)


class TestWorkingHoursInADefinition:
    def test_a_team_may_have_working_hours(self) -> None:
        text = EXAMPLE.replace(
            "    sla_hours: 8",
            '    sla_hours: 8\n    working_hours: {timezone: Europe/Moscow, start: "09:00", '
            'end: "18:00", days: [mon, tue, wed, thu, fri]}',
        )
        team = load_definition(text).definition.team("smb")
        assert team is not None and team.working_hours is not None
        assert team.working_hours.timezone == "Europe/Moscow"

    def test_unquoted_times_are_caught_with_their_line(self) -> None:
        # YAML 1.1 reads an unquoted 9:30 as the number 570 (sexagesimal minutes).
        text = EXAMPLE.replace(
            "    sla_hours: 8", "    sla_hours: 8\n    working_hours:\n      start: 9:30"
        )
        (problem,) = problems(text)
        assert problem.loc == ("sales_teams", 1, "working_hours", "start")
        assert problem.line == line_of(text, "start: 9:30")
