"""Intake normalization: e-mail, phone, vocabularies; all pure."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime, timedelta

import pytest
from email_validator import EmailNotValidError, validate_email

from services.intake.dedupe.identity import DedupeKey, KnownLead, KnownLeads, find_original
from services.intake.erasure.redact import redact
from services.intake.leads.schemas import LeadIn
from services.intake.normalize.fields import (
    InvalidField,
    normalize_company_size,
    normalize_country,
    normalize_email,
    normalize_phone,
    normalize_role,
    normalize_timeframe,
    strip_query,
    utm_from_url,
)
from services.intake.normalize.snapshot import build_snapshot

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

# Addresses email_validator treats specially: IDN (in both spellings), role mailboxes it
# lower-cases, special-use and dotless domains, lengths at and over the limits.
TRICKY_EMAILS = [
    "Anna.Petrova@ACME.Example",
    "anna@acme.example",
    "POSTMASTER@acme.example",
    "Abuse@acme.example",
    "a@xn--80ak6aa92e.com",
    "b@xn--80ak6aa92e.com",
    "c@XN--80AK6AA92E.COM",
    "a@пример.рф",
    "x@example.local",
    "y@example.local",
    "a@localhost",
    "a@test",
    "a@b",
    "a@1.2.3.4",
    "a@123.com",
    "a@-a.com",
    "a@a-.com",
    "a@a..com",
    "a@.a.com",
    "a@a.com.",
    "a.@a.com",
    ".a@a.com",
    "a..b@a.com",
    "x" * 64 + "@a.com",
    "x" * 65 + "@a.com",
    "a@" + "a" * 63 + ".com",
    "a@" + "a" * 64 + ".com",
    "y" * 70 + "@" + "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + ".com",
    "a@example.invalid",
    "a@example.onion",
    "a@xn--.com",
    "a+b@c.com",
    "{a}@c.com",
    "a@c_d.com",
    "a@a.123",
    "Test@gmail.com",
    "test@GMAIL.COM",
]


def _ours(raw: str) -> str:
    try:
        return normalize_email(raw)
    except InvalidField as exc:
        return f"refused: {exc.message}"


def _validator(raw: str) -> str:
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        return f"refused: not a valid e-mail address: {exc}"


class TestContact:
    def test_email_domain_is_lower_cased(self) -> None:
        assert normalize_email("Anna.Petrova@ACME.Example") == "Anna.Petrova@acme.example"

    def test_bad_email_names_the_field(self) -> None:
        with pytest.raises(InvalidField) as err:
            normalize_email("anna@@acme")
        assert err.value.field == "email"

    def test_addresses_at_known_domains_normalize_as_email_validator_does(self) -> None:
        # The second round takes the known-domain shortcut wherever it may.
        rng = random.Random(7)
        chars = string.ascii_letters + string.digits + ".-_+"
        corpus = [*TRICKY_EMAILS] + [
            "".join(rng.choice(chars) for _ in range(rng.randint(0, 6)))
            + "@"
            + "".join(rng.choice(string.ascii_letters + ".-") for _ in range(rng.randint(0, 8)))
            for _ in range(3000)
        ]
        for _ in range(2):
            for raw in corpus:
                assert _ours(raw) == _validator(raw), raw

    def test_addresses_at_plain_host_names_normalize_as_email_validator_does(self) -> None:
        # Domains built to sit on either side of the plain-host-name shortcut's edges:
        # label and domain lengths, hyphens and Punycode, numeric and special-use TLDs.
        rng = random.Random(11)
        tlds = [
            "com",
            "RU",
            "io",
            "c",
            "123",
            "a1",
            "local",
            "test",
            "onion",
            "invalid",
            "arpa",
            "localhost",
            "example",
        ]
        tlds += ["xn--p1ai", "рф"]

        def label() -> str:
            kind = rng.random()
            if kind < 0.05:
                return "xn--" + "".join(rng.choice("abc123") for _ in range(rng.randint(0, 6)))
            if kind < 0.1:
                return "ab--cd"
            length = rng.choice([1, 2, 5, 12, 62, 63, 64, 65])
            alphabet = string.ascii_letters + string.digits + "-" * 3
            return "".join(rng.choice(alphabet) for _ in range(length))

        corpus = []
        for _ in range(3000):
            labels = [label() for _ in range(rng.choice([1, 1, 2, 3, 4, 5]))]
            domain = ".".join([*labels, rng.choice(tlds)])
            corpus.append(f"{rng.choice(['a', 'Anna.P', 'x+y', 'Abuse'])}@{domain}")
        accepted = [raw for raw in corpus if not _ours(raw).startswith("refused")]
        assert len(accepted) > 300, "the corpus must exercise the shortcut"
        for raw in corpus:
            assert _ours(raw) == _validator(raw), raw

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
        [
            ("1", "1"),
            ("35", "21-50"),
            ("51-100", "51-100"),
            ("700", "500-1000"),
            ("5000", "1000+"),
            ("1000+", "1000+"),
        ],
    )
    def test_company_size(self, raw: str, size: str) -> None:
        assert normalize_company_size(raw) == size

    def test_timeframe_synonyms(self) -> None:
        assert normalize_timeframe("ASAP") == "now"
        assert normalize_timeframe(" 1-3 Months ") == "1-3 months"


class TestSnapshot:
    def test_consent_is_required(self) -> None:
        with pytest.raises(InvalidField) as err:
            build_snapshot(
                LeadIn(email="a@b.example", consent=False),
                lead_id="x",
                now=NOW,
                default_region="RU",
            )
        assert err.value.field == "consent"

    def test_one_of_email_or_phone_is_required(self) -> None:
        with pytest.raises(InvalidField, match="email or phone"):
            build_snapshot(
                LeadIn(name="Anna", consent=True), lead_id="x", now=NOW, default_region="RU"
            )

    def test_future_submission_times_are_refused(self) -> None:
        lead = LeadIn(email="a@b.example", consent=True, occurred_at=NOW + timedelta(hours=1))
        with pytest.raises(InvalidField) as err:
            build_snapshot(lead, lead_id="x", now=NOW, default_region="RU")
        assert err.value.field == "occurred_at"

    def test_names_are_trimmed_and_text_kept_verbatim(self) -> None:
        lead = LeadIn(
            name="  Анна   Петрова 😀 ",
            phone="8 912 345 67 89",
            consent=True,
            services=["SEO", "Web Development", "seo"],
        )
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


class TestFindOriginal:
    T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)

    def known(self, lead_id: str, minutes: int, **kw: str) -> KnownLead:
        at = self.T0 + timedelta(minutes=minutes)
        return KnownLead(
            lead_id,
            kw.get("source", "api"),
            kw.get("origin_id", ""),
            kw.get("email"),
            kw.get("phone"),
            at,
        )

    def test_the_earliest_lead_of_the_person_in_the_window_is_the_original(self) -> None:
        key = DedupeKey("api", "", "a@b.example", "+79123456789")
        known = [
            self.known("late", 30, email="a@b.example"),
            self.known("by-phone", 10, phone="+79123456789"),
            self.known("too-old", -90, email="a@b.example"),
            self.known("other-form", 0, email="a@b.example", origin_id="pricing"),
            self.known("other-source", 0, email="a@b.example", source="web_form"),
            self.known("someone-else", 0, email="c@d.example"),
        ]
        assert find_original(known, key, since=self.T0 - timedelta(minutes=60)) == "by-phone"
        assert find_original(known, key, since=self.T0 + timedelta(minutes=20)) == "late"
        assert find_original(known, key, since=self.T0 + timedelta(minutes=31)) is None

    def test_a_lead_without_contacts_duplicates_nobody(self) -> None:
        known = [self.known("x", 0)]
        assert find_original(known, DedupeKey("api", "", None, None), since=self.T0) is None
        assert KnownLeads(known).like(DedupeKey("api", "", None, None)) == []

    def test_the_identity_index_offers_every_lead_find_original_may_pick(self) -> None:
        rng = random.Random(5)

        def pick(values: list[str]) -> str | None:
            return rng.choice([*values, None])

        def contacts() -> dict[str, str]:
            picked = (("email", pick(emails)), ("phone", pick(phones)))
            return {k: v for k, v in picked if v is not None}

        sources, origins = ["api", "web_form"], ["", "pricing"]
        emails, phones = ["a@x.example", "b@x.example"], ["+79000000001", "+79000000002"]
        for _ in range(300):
            known = [
                self.known(
                    f"k{n}",
                    rng.randint(-60, 60),
                    source=rng.choice(sources),
                    origin_id=rng.choice(origins),
                    **contacts(),
                )
                for n in range(rng.randint(0, 12))
            ]
            index = KnownLeads(known[:6])
            for lead in known[6:]:
                index.add(lead)
            key = DedupeKey(rng.choice(sources), rng.choice(origins), pick(emails), pick(phones))
            since = self.T0 + timedelta(minutes=rng.randint(-70, 70))
            assert find_original(index.like(key), key, since) == find_original(known, key, since)


class TestZoomAndFormVocabulary:
    @pytest.mark.parametrize(
        ("raw", "size"),
        [
            ("1-20", "11-20"),
            ("101-250", "101-500"),
            ("501-1,000", "500-1000"),
            ("1,001-5,000", "1000+"),
            ("More than 10,000", "1000+"),
            ("больше 500", "500-1000"),
            ("35 человек", "21-50"),
            ("51 – 100", "51-100"),
        ],
    )
    def test_company_size_answers_map_to_the_vocabulary(self, raw: str, size: str) -> None:
        assert normalize_company_size(raw) == size

    @pytest.mark.parametrize("raw", ["a lot", "0", "few"])
    def test_company_size_that_says_no_size_is_none(self, raw: str) -> None:
        assert normalize_company_size(raw) is None

    @pytest.mark.parametrize(
        ("raw", "timeframe"),
        [
            ("Within a month", "now"),
            ("4-6 months", "3-6 months"),
            ("More than 6 months", "6-12 months"),
            ("No timeframe", "later"),
            ("1 – 3 месяца", "1-3 months"),
        ],
    )
    def test_timeframe_answers_map_to_the_vocabulary(self, raw: str, timeframe: str) -> None:
        assert normalize_timeframe(raw) == timeframe

    def test_unknown_timeframe_is_none(self) -> None:
        assert normalize_timeframe("whenever") is None

    @pytest.mark.parametrize(
        ("raw", "role"),
        [
            ("Decision Maker", "decision_maker"),
            ("Evaluator/Recommender", "evaluator"),
            ("ЛПР", "decision_maker"),
            ("Procurement", "procurement"),
        ],
    )
    def test_roles(self, raw: str, role: str) -> None:
        assert normalize_role(raw) == role

    @pytest.mark.parametrize(
        ("raw", "country"),
        [
            ("ru", "RU"),
            ("Россия", "RU"),
            ("Russian Federation", "RU"),
            ("Kazakhstan", "KZ"),
            ("Narnia", "Narnia"),
        ],
    )
    def test_countries_become_iso_codes_when_they_name_one(self, raw: str, country: str) -> None:
        assert normalize_country(raw) == country


class TestUrls:
    def test_utm_from_the_page_url(self) -> None:
        url = "https://acme.example/p?utm_source=yandex&utm_campaign=%D0%BE%D1%81%D0%B5%D0%BD%D1%8C&x=1"
        assert utm_from_url(url) == {"source": "yandex", "campaign": "осень"}

    def test_utm_without_nul_and_bounded(self) -> None:
        assert utm_from_url(f"https://a.example/?utm_source=a%00b&utm_term={'x' * 500}") == {
            "source": "ab",
            "term": "x" * 200,
        }

    def test_strip_query_drops_what_can_name_a_person(self) -> None:
        assert (
            strip_query("https://anna:pw@Acme.example:8443/form?email=anna%40x.example#top")
            == "https://acme.example:8443/form"
        )
        assert strip_query("not a url") is None


class TestLenientSources:
    def lead(self, **kw: object) -> LeadIn:
        return LeadIn.model_validate({"consent": True, **kw})

    def test_a_bad_phone_beside_a_good_email_is_kept_as_typed(self) -> None:
        snap = build_snapshot(
            self.lead(email="a@b.example", phone="12"),
            lead_id="x",
            now=NOW,
            default_region="RU",
            strict=False,
        )
        assert snap.phone is None and snap.fields["phone_as_given"] == "12"

    def test_strict_refuses_the_same_lead(self) -> None:
        with pytest.raises(InvalidField) as err:
            build_snapshot(
                self.lead(email="a@b.example", phone="12"),
                lead_id="x",
                now=NOW,
                default_region="RU",
            )
        assert err.value.field == "phone"

    def test_both_contacts_bad_is_refused_even_when_lenient(self) -> None:
        with pytest.raises(InvalidField):
            build_snapshot(
                self.lead(email="nope", phone="12"),
                lead_id="x",
                now=NOW,
                default_region="RU",
                strict=False,
            )

    def test_answers_outside_the_vocabulary_go_to_fields_when_lenient(self) -> None:
        lead = self.lead(email="a@b.example", company_size="a lot", timeframe="whenever")
        snap = build_snapshot(lead, lead_id="x", now=NOW, default_region="RU", strict=False)
        assert snap.company_size is None and snap.timeframe is None
        assert snap.fields == {"company_size": "a lot", "timeframe": "whenever"}
        with pytest.raises(InvalidField) as err:
            build_snapshot(lead, lead_id="x", now=NOW, default_region="RU")
        assert err.value.field == "company_size"


class TestSnapshotRecords:
    def test_consent_time_and_version_are_recorded(self) -> None:
        lead = LeadIn(email="a@b.example", consent=True)
        snap = build_snapshot(
            lead, lead_id="x", now=NOW, default_region="RU", consent_text_version="privacy-3"
        )
        assert snap.consent_at == NOW and snap.consent_text_version == "privacy-3"

    def test_phone_region_comes_from_the_country_then_the_form(self) -> None:
        kz = LeadIn(phone="8 701 123 4567", country="Казахстан", consent=True)
        assert build_snapshot(kz, lead_id="x", now=NOW, default_region="RU").phone == "+77011234567"
        by_form = LeadIn(phone="(202) 555-0143", consent=True)
        snap = build_snapshot(by_form, lead_id="x", now=NOW, default_region="RU", form_region="US")
        assert snap.phone == "+12025550143"

    def test_utm_falls_back_to_the_page_url(self) -> None:
        lead = LeadIn(
            email="a@b.example",
            consent=True,
            utm={"medium": "cpc"},
            page_url="https://a.example/?utm_source=google&utm_medium=email",
        )
        snap = build_snapshot(lead, lead_id="x", now=NOW, default_region="RU")
        assert (snap.utm.source, snap.utm.medium) == ("google", "cpc")

    def test_attendance_is_recorded_with_its_time(self) -> None:
        lead = LeadIn(
            email="a@b.example",
            consent=True,
            source="webinar_attendance",
            webinar_id="w",
            occurred_at=NOW - timedelta(hours=1),
        )
        snap = build_snapshot(lead, lead_id="x", now=NOW, default_region="RU")
        assert snap.webinar_attended and snap.webinar_attended_at == NOW - timedelta(hours=1)

    def test_webinar_sources_name_their_webinar(self) -> None:
        lead = LeadIn(email="a@b.example", consent=True, source="webinar_registration")
        with pytest.raises(InvalidField) as err:
            build_snapshot(lead, lead_id="x", now=NOW, default_region="RU")
        assert err.value.field == "webinar_id"


class TestRedaction:
    def test_the_person_goes_and_the_lead_stays(self) -> None:
        lead = LeadIn(
            name="Анна",
            email="anna@acme.example",
            phone="+79123456789",
            company="Acme",
            job_title="CEO",
            message="call me",
            consent=True,
            fields={"q": "a"},
            utm={"source": "google"},
            services=["seo"],
            budget="1000",
            page_url="https://acme.example/form?email=anna@acme.example",
        )
        snap = build_snapshot(lead, lead_id="x", now=NOW, default_region="RU")
        erased = redact(snap)
        gone = (
            erased.name,
            erased.email,
            erased.phone,
            erased.company,
            erased.job_title,
            erased.message,
        )
        assert gone == (None,) * 6 and erased.fields == {}
        assert erased.page_url == "https://acme.example/form"
        assert (erased.lead_id, erased.source, erased.utm, erased.occurred_at) == (
            snap.lead_id,
            snap.source,
            snap.utm,
            snap.occurred_at,
        )
        assert erased.services == ["seo"] and erased.budget == snap.budget


class TestWebinarLocks:
    def test_registration_and_attendance_of_one_person_share_locks(self) -> None:
        reg = DedupeKey("webinar_registration", "w", "a@b.example", None)
        att = DedupeKey("webinar_attendance", "w", "a@b.example", None)
        assert reg.lock_ids() == att.lock_ids()
        assert reg.lock_ids() != DedupeKey("web_form", "w", "a@b.example", None).lock_ids()
