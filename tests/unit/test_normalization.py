"""Intake normalization: e-mail, phone, vocabularies; all pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.intake.domain import (
    DedupeKey,
    InvalidField,
    normalize_company_size,
    normalize_email,
    normalize_phone,
    normalize_timeframe,
)
from services.intake.schemas import LeadIn
from services.intake.service import build_snapshot

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class TestContact:
    def test_email_domain_is_lower_cased(self) -> None:
        assert normalize_email("Anna.Petrova@ACME.Example") == "Anna.Petrova@acme.example"

    def test_bad_email_names_the_field(self) -> None:
        with pytest.raises(InvalidField) as err:
            normalize_email("anna@@acme")
        assert err.value.field == "email"

    @pytest.mark.parametrize(
        ("raw", "region", "e164"),
        [
            ("8 (912) 345-67-89", "RU", "+79123456789"),
            ("+7 912 345 67 89", "US", "+79123456789"),
            ("(202) 555-0143", "US", "+12025550143"),
        ],
    )
    def test_phone_to_e164(self, raw: str, region: str, e164: str) -> None:
        assert normalize_phone(raw, region) == e164

    @pytest.mark.parametrize("raw", ["12", "not a phone", "+7 000"])
    def test_bad_phone_names_the_field(self, raw: str) -> None:
        with pytest.raises(InvalidField) as err:
            normalize_phone(raw, "RU")
        assert err.value.field == "phone"


class TestVocabulary:
    @pytest.mark.parametrize(
        ("raw", "size"),
        [("1", "1"), ("35", "21-50"), ("51-100", "51-100"), ("700", "500-1000"),
         ("5000", "1000+"), ("1000+", "1000+")],
    )  # fmt: skip
    def test_company_size(self, raw: str, size: str) -> None:
        assert normalize_company_size(raw) == size

    def test_timeframe_synonyms(self) -> None:
        assert normalize_timeframe("ASAP") == "now"
        assert normalize_timeframe(" 1-3 Months ") == "1-3 months"


class TestSnapshot:
    def test_consent_is_required(self) -> None:
        with pytest.raises(InvalidField) as err:
            build_snapshot(LeadIn(email="a@b.example", consent=False), lead_id="x", now=NOW,
                           default_region="RU")  # fmt: skip
        assert err.value.field == "consent"

    def test_one_of_email_or_phone_is_required(self) -> None:
        with pytest.raises(InvalidField, match="email or phone"):
            build_snapshot(LeadIn(name="Anna", consent=True), lead_id="x", now=NOW,
                           default_region="RU")  # fmt: skip

    def test_future_submission_times_are_refused(self) -> None:
        lead = LeadIn(email="a@b.example", consent=True, occurred_at=NOW + timedelta(hours=1))
        with pytest.raises(InvalidField) as err:
            build_snapshot(lead, lead_id="x", now=NOW, default_region="RU")
        assert err.value.field == "occurred_at"

    def test_names_are_trimmed_and_text_kept_verbatim(self) -> None:
        lead = LeadIn(name="  Анна   Петрова 😀 ", phone="8 912 345 67 89", consent=True,
                      services=["SEO", "Web Development", "seo"])  # fmt: skip
        snap = build_snapshot(lead, lead_id="x", now=NOW, default_region="RU")
        assert snap.name == "Анна Петрова 😀"
        assert snap.phone == "+79123456789"
        assert snap.services == ["seo", "web_development"]
        assert snap.occurred_at == NOW


class TestDedupeKey:
    def test_lock_ids_are_stable_and_sorted(self) -> None:
        key = DedupeKey(source="web_form", origin_id="f", email="a@b.example", phone="+79123456789")
        assert key.lock_ids() == sorted(key.lock_ids())
        assert (
            key.lock_ids() == DedupeKey("web_form", "f", "a@b.example", "+79123456789").lock_ids()
        )
        assert len(key.lock_ids()) == 2
