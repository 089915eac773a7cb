"""The configurations docs/crm.md shows are ones the qualifier accepts, with no warning
about the stage new records start in."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.qualifier.crm import connectors as configs

GUIDE = Path(__file__).resolve().parents[2] / "docs/crm.md"
EXAMPLES = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)


def test_the_guide_has_an_example_per_crm() -> None:
    kinds = sorted(configs.parse(text, "example").kind for text in EXAMPLES)
    assert kinds == ["bitrix24", "hubspot", "kommo"]


@pytest.mark.parametrize("text", EXAMPLES)
def test_each_example_maps_the_stage_new_records_start_in(text: str) -> None:
    connector = configs.parse(text, "example")
    assert any(rule.to.value == "routed" for rule in connector.stages)
