"""Diffs between definition versions."""

from __future__ import annotations

from pathlib import Path

from services.qualifier.definitions.diff import Change, diff_documents, diff_text
from services.qualifier.definitions.source import load_definition

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "services/qualifier/default_definition.yaml"
).read_text()


def doc(text: str) -> dict[str, object]:
    return load_definition(text).document


def test_the_same_document_has_no_changes() -> None:
    assert diff_documents(doc(EXAMPLE), doc(EXAMPLE + "\n# a comment\n")) == []


def test_teams_and_partners_are_matched_by_name() -> None:
    text = EXAMPLE.replace(
        "  - id: webstudio",
        "  - id: seo-friends\n    name: SEO Friends\n    services: [smm]\n  - id: webstudio",
    ).replace("members: [vera, grigory, dmitry]", "members: [vera, dmitry]")
    changes = diff_documents(doc(EXAMPLE), doc(text))
    assert (
        Change(
            "sales_teams[smb].members", "changed", ["vera", "grigory", "dmitry"], ["vera", "dmitry"]
        )
        in changes
    )
    added = [c for c in changes if c.kind == "added"]
    assert [c.path for c in added] == ["partners[seo-friends]"]
    assert added[0].new["services"] == ["smm"]
    assert not any(c.path.startswith("partners[webstudio]") for c in changes)


def test_reordering_teams_is_a_change_because_the_first_match_wins() -> None:
    enterprise = EXAMPLE[EXAMPLE.index("  - team: enterprise") : EXAMPLE.index("  - team: smb")]
    text = EXAMPLE.replace(enterprise, "") + enterprise.replace("    when:", "    when:", 1)
    assert diff_documents(doc(EXAMPLE), doc(text)) == [
        Change("sales_teams", "changed", ["enterprise", "smb"], ["smb", "enterprise"])
    ]


def test_rules_without_names_are_compared_by_position() -> None:
    text = EXAMPLE.replace("  - points: 30\n", "  - points: 35\n", 1)
    assert diff_documents(doc(EXAMPLE), doc(text)) == [Change("score[0].points", "changed", 30, 35)]


def test_a_removed_rule_and_an_added_key() -> None:
    text = EXAMPLE.replace(
        "  - reason: competitor\n    when: {email_domain_in: "
        "[competitor-one.example, competitor-two.example]}\n",
        "",
    )
    text = text.replace("    sla_hours: 8", "    sla_hours: 8\n    working_hours: {}")
    changes = diff_documents(doc(EXAMPLE), doc(text))
    paths = {(c.path, c.kind) for c in changes}
    assert ("reject[2]", "removed") in paths
    assert ("reject[1].reason", "changed") in paths
    assert ("sales_teams[smb].working_hours", "added") in paths


def test_the_text_diff_is_unified() -> None:
    text = diff_text("a\nb\n", "a\nc\n", "version 1", "version 2")
    assert text.splitlines() == [
        "--- version 1",
        "+++ version 2",
        "@@ -1,2 +1,2 @@",
        " a",
        "-b",
        "+c",
    ]
