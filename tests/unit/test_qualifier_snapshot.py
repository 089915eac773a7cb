"""Brief answers merged into a lead, and a person erased from one."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.qualifier.leads.snapshot import (
    InvalidAnswer,
    erase_person,
    merge_answers,
    normalize_answers,
    summarize_answers,
)
from tests.support import snapshot


class TestAnswers:
    def test_answers_are_normalized_like_a_form(self) -> None:
        answers = normalize_answers(
            {
                "services": ["SEO", "Web Development", "seo"],
                "budget": "150 000,50",
                "company_size": "120",
                "country": "kz",
                "role_in_purchase": "Decision Maker",
                "industry": "E-Commerce",
                "timeframe": " 1-3 Months ",
            }
        )
        assert answers == {
            "services": ["seo", "web_development"],
            "budget": "150000.50",
            "company_size": "101-500",
            "country": "KZ",
            "role_in_purchase": "decision_maker",
            "industry": "e_commerce",
            "timeframe": "1-3 months",
        }

    def test_other_answers_go_to_fields(self) -> None:
        answers = normalize_answers(
            {"website": "acme.example", "fields": {"crm": "amoCRM"}, "employees_in_marketing": 4}
        )
        assert answers == {
            "fields": {"website": "acme.example", "crm": "amoCRM", "employees_in_marketing": "4"}
        }

    @pytest.mark.parametrize(
        ("answers", "field"),
        [
            ({"budget": "a lot"}, "budget"),
            ({"budget": "-1"}, "budget"),
            ({"company": ""}, "company"),
            ({"email": "a@b.example"}, "email"),
            ({"name": "Anna"}, "name"),
            ({"notes": {"nested": True}}, "notes"),
            ({"fields": ["x"]}, "fields"),
            ({"services": []}, "services"),
        ],
    )
    def test_a_bad_answer_is_named(self, answers: dict[str, object], field: str) -> None:
        with pytest.raises(InvalidAnswer) as bad:
            normalize_answers(answers)
        assert bad.value.field == field

    def test_merging_keeps_what_the_brief_does_not_answer(self) -> None:
        lead = snapshot(budget=None, fields={"source_form": "short"})
        merged = merge_answers(lead, normalize_answers({"budget": "300000", "x": "y"}))
        assert merged.budget == Decimal("300000") and merged.company == lead.company
        assert merged.fields == {"source_form": "short", "x": "y"}
        assert merged.lead_id == lead.lead_id

    def test_the_history_names_the_questions_not_the_answers(self) -> None:
        text = summarize_answers({"budget": "1", "fields": {"crm": "x"}})
        assert text == "brief answered: budget, fields.crm"


class TestErasure:
    def test_the_person_goes_and_the_need_and_channel_stay(self) -> None:
        lead = snapshot(
            name="Anna",
            phone="+79123456789",
            job_title="CEO",
            message="hi",
            page_url="https://x.example/?e=a",
            referrer="https://r.example",
            fields={"linkedin": "anna"},
            utm={"source": "google"},
        )
        erased = erase_person(lead.model_dump(mode="json"))
        for field in ("name", "email", "phone", "company", "job_title", "message"):
            assert erased[field] is None
        assert erased["fields"] == {}
        assert (erased["page_url"], erased["referrer"]) == (
            "https://x.example/",
            "https://r.example",
        )
        kept = ("lead_id", "company_size", "industry", "services", "budget", "utm", "source")
        assert {k: erased[k] for k in kept} == {k: lead.model_dump(mode="json")[k] for k in kept}
