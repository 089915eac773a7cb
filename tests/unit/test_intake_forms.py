"""Form submissions as leads: mapping, Tilda, honeypot, consent, render time, origins. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.intake.admin.schemas import FormConfigIn
from services.intake.leads.schemas import LeadIn
from services.intake.normalize.fields import InvalidField
from services.intake.sources.forms import (
    FormSpec,
    check_fill_time,
    is_tilda,
    is_tilda_test,
    map_submission,
    parse_budget,
    parse_rendered_at,
    request_origin,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def spec(**overrides: object) -> FormSpec:
    values: dict[str, object] = {
        "form_id": "contact-us",
        "field_map": {},
        "honeypot_field": "website",
        "consent_field": "consent",
        "consent_text_version": "privacy-2",
    }
    values.update(overrides)
    return FormSpec(**values)  # type: ignore[arg-type]


class TestMapping:
    def test_fields_named_like_the_lead_map_themselves_and_the_rest_go_to_fields(self) -> None:
        mapped = map_submission(
            [
                ("name", " Анна "),
                ("email", "anna@acme.example"),
                ("consent", "on"),
                ("services", "seo"),
                ("services", "ppc, analytics"),
                ("how_heard", "a friend"),
                ("website", ""),
            ],
            spec(),
        )
        lead = mapped.lead
        assert lead["name"] == "Анна" and lead["email"] == "anna@acme.example"
        assert lead["services"] == ["seo", "ppc", "analytics"]
        assert lead["fields"] == {"how_heard": "a friend"}
        assert lead["consent"] is True and lead["consent_text_version"] == "privacy-2"
        assert lead["source"] == "web_form" and lead["form_id"] == "contact-us"
        assert not mapped.honeypot_filled
        LeadIn.model_validate(lead)  # what the mapping makes is a valid lead

    def test_field_map_and_first_last_names(self) -> None:
        mapped = map_submission(
            [("Имя", "Анна"), ("Фамилия", "Петрова"), ("Почта", "a@b.example")],
            spec(field_map={"Имя": "first_name", "Фамилия": "last_name", "Почта": "email"}),
        )
        assert mapped.lead["name"] == "Анна Петрова" and mapped.lead["email"] == "a@b.example"
        assert mapped.form_field("email") == "Почта" and mapped.form_field("name") == "Имя"

    def test_blank_inputs_are_not_answers(self) -> None:
        mapped = map_submission([("email", "a@b.example"), ("phone", ""), ("note", " ")], spec())
        assert "phone" not in mapped.lead and "fields" not in mapped.lead

    def test_the_first_answer_to_a_repeated_field_wins(self) -> None:
        mapped = map_submission([("email", "a@b.example"), ("email", "c@d.example")], spec())
        assert mapped.lead["email"] == "a@b.example"


class TestTilda:
    def test_the_test_ping(self) -> None:
        assert is_tilda_test([("test", "test")])
        assert not is_tilda_test([("test", "test"), ("email", "a@b.example")])

    def test_tilda_names_meta_fields_and_cookies(self) -> None:
        pairs = [
            ("Name", "Anna"),
            ("Email", "a@b.example"),
            ("Phone", "+7 912 345-67-89"),
            ("tranid", "123:456"),
            ("formid", "form789"),
            ("COOKIES", "_ym_uid=1; x=2"),
            ("utm_source", "vk"),
        ]
        assert is_tilda(pairs)
        lead = map_submission(pairs, spec(consent_field=None)).lead
        assert (lead["name"], lead["email"], lead["phone"]) == (
            "Anna",
            "a@b.example",
            "+7 912 345-67-89",
        )
        assert lead["fields"] == {"tilda_tranid": "123:456", "tilda_formid": "form789"}
        assert lead["utm"] == {"source": "vk"}
        # No consent field configured: submitting the form is the consent, with its version.
        assert lead["consent"] is True and lead["consent_text_version"] == "privacy-2"


class TestConsentAndHoneypot:
    @pytest.mark.parametrize("value", ["on", "yes", "1", "true", "да", "I agree"])
    def test_a_ticked_box_is_consent(self, value: str) -> None:
        lead = map_submission([("email", "a@b.example"), ("consent", value)], spec()).lead
        assert lead["consent"] is True

    @pytest.mark.parametrize(
        "pairs", [[], [("consent", "no")], [("consent", "")], [("consent", "нет")]]
    )
    def test_no_box_is_no_consent(self, pairs: list[tuple[str, str]]) -> None:
        lead = map_submission([("email", "a@b.example"), *pairs], spec()).lead
        assert lead["consent"] is False

    def test_a_filled_honeypot_is_flagged_and_not_kept(self) -> None:
        mapped = map_submission([("email", "a@b.example"), ("website", "http://spam")], spec())
        assert mapped.honeypot_filled and "fields" not in mapped.lead


class TestUtmAndPage:
    def test_utm_from_the_referer_when_the_page_does_not_say(self) -> None:
        lead = map_submission(
            [("email", "a@b.example"), ("utm_campaign", "spring")],
            spec(),
            referer="https://acme.example/?utm_source=google&utm_campaign=autumn",
        ).lead
        assert lead["page_url"].startswith("https://acme.example/")
        assert lead["utm"] == {"source": "google", "campaign": "spring"}


class TestBudget:
    @pytest.mark.parametrize(
        ("raw", "amount"),
        [
            ("200 000 ₽", Decimal("200000")),
            ("150000.50", Decimal("150000.50")),
            ("1,500,000", Decimal("1500000")),
            ("99,5", Decimal("99.5")),
            ("lots", None),
            ("-5", None),
            ("NaN", None),
        ],
    )
    def test_budget(self, raw: str, amount: Decimal | None) -> None:
        assert parse_budget(raw) == amount

    def test_an_unreadable_budget_is_kept_as_an_answer(self) -> None:
        lead = map_submission([("email", "a@b.example"), ("budget", "it depends")], spec()).lead
        assert "budget" not in lead and lead["fields"] == {"budget": "it depends"}


class TestFillTime:
    @pytest.mark.parametrize(
        "raw", [str(int(NOW.timestamp())), str(int(NOW.timestamp() * 1000)), NOW.isoformat()]
    )
    def test_render_time_formats(self, raw: str) -> None:
        assert parse_rendered_at(raw) == NOW

    @pytest.mark.parametrize("raw", ["soon", "-1", "nan", "1e20"])
    def test_garbage_render_times_are_refused(self, raw: str) -> None:
        with pytest.raises(InvalidField) as err:
            parse_rendered_at(raw)
        assert err.value.field == "rendered_at"

    def test_too_fast_is_refused_and_human_speed_passes(self) -> None:
        with pytest.raises(InvalidField, match="at least 3 s"):
            check_fill_time(NOW - timedelta(seconds=1), NOW, 3)
        check_fill_time(NOW - timedelta(seconds=30), NOW, 3)
        check_fill_time(None, NOW, 3)

    def test_a_render_time_in_the_future_is_refused(self) -> None:
        with pytest.raises(InvalidField, match="future"):
            check_fill_time(NOW + timedelta(hours=1), NOW, 3)


class TestOrigins:
    def test_origin_header_then_referer(self) -> None:
        assert request_origin("https://Acme.example", None) == "https://acme.example"
        assert request_origin(None, "https://acme.example:443/p?q=1") == "https://acme.example"
        assert request_origin(None, "http://localhost:8000/x") == "http://localhost:8000"
        assert request_origin("null", None) == "null"
        assert request_origin(None, None) is None

    def test_configured_origins_are_normalized_like_browsers_send_them(self) -> None:
        config = FormConfigIn(allowed_origins=["https://WWW.Acme.example:443/", "http://localhost"])
        assert config.allowed_origins == ["https://www.acme.example", "http://localhost"]

    @pytest.mark.parametrize("origin", ["acme.example", "https://acme.example/form", "ftp://x"])
    def test_an_origin_is_only_scheme_host_and_port(self, origin: str) -> None:
        with pytest.raises(ValidationError):
            FormConfigIn(allowed_origins=[origin])

    def test_a_form_without_consent_field_names_its_consent_text(self) -> None:
        with pytest.raises(ValidationError, match="consent text version"):
            FormConfigIn(consent_field=None)
        with pytest.raises(ValidationError, match="unknown lead fields"):
            FormConfigIn(field_map={"E-mail": "e_mail"})
