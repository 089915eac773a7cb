"""Website forms over HTTP: plain HTML posts, Tilda, honeypot, origins, limits, configuration."""

from __future__ import annotations

import html.parser
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from services.intake.tables import leads
from shared.events import LeadReceived
from tests.integration.test_intake_support import (
    LOCALHOST,
    count,
    published,
    rows,
    running_intake,
)
from tests.support import DEV_AUTH

DOC = Path(__file__).parents[2] / "docs" / "intake.md"


def person(**overrides: str) -> dict[str, str]:
    unique = uuid.uuid4()
    values = {
        "name": "Анна Петрова",
        "email": f"anna.{unique.hex[:10]}@acme-corp.example",
        "phone": f"8 912 {unique.int % 10_000_000:07d}",
        "company": "Acme Corp",
        "consent": "on",
        "website": "",
    }
    values.update(overrides)
    return values


async def stored(database_url: str, email: str) -> list[dict[str, object]]:
    found = await rows(database_url, sa.select(leads.c.snapshot))
    return [r.snapshot for r in found if r.snapshot["email"] and r.snapshot["email"] == email]


class TestPlainHtmlForm:
    async def test_a_urlencoded_post_from_the_allowed_origin_is_a_lead(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        data = person(message="Нужен аудит 😀", how_heard="Хабр")
        r = await intake.post(
            "/v1/forms/contact-us/submissions",
            data=data,
            headers={
                **LOCALHOST,
                "Referer": "http://localhost/contact?utm_source=habr&utm_medium=article",
            },
        )
        assert r.status_code == 202, r.text
        assert r.json() == {"status": "accepted"}
        assert r.headers["access-control-allow-origin"] == "http://localhost"
        (lead,) = await stored(database_url, data["email"])
        assert lead["source"] == "web_form" and lead["form_id"] == "contact-us"
        assert lead["name"] == "Анна Петрова" and lead["phone"] == "+7912" + data["phone"][6:]
        assert lead["message"] == "Нужен аудит 😀" and lead["fields"] == {"how_heard": "Хабр"}
        assert lead["utm"]["source"] == "habr" and lead["utm"]["medium"] == "article"
        assert lead["page_url"] == "http://localhost/contact?utm_source=habr&utm_medium=article"
        assert lead["consent_text_version"] == "privacy-dev-1" and lead["consent_at"]
        events = await published(database_url, kafka_bootstrap, {str(lead["lead_id"])})
        assert [type(e) for e in events] == [LeadReceived]

    async def test_multipart_posts_work_the_same(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        data = person()
        r = await intake.post(
            "/v1/forms/contact-us/submissions", data=data, files={}, headers=LOCALHOST
        )
        assert r.status_code == 202
        r = await intake.post(
            "/v1/forms/contact-us/submissions",
            files={k: (None, v) for k, v in person().items()},
            headers=LOCALHOST,
        )
        assert r.status_code == 202, r.text
        assert await count(database_url) == 2

    async def test_the_same_person_again_gets_the_same_answer_and_no_new_lead(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        data = person()
        first = await intake.post("/v1/forms/contact-us/submissions", data=data, headers=LOCALHOST)
        again = await intake.post("/v1/forms/contact-us/submissions", data=data, headers=LOCALHOST)
        # The public answer never says "duplicate": it would tell anyone who we know.
        assert first.json() == again.json() == {"status": "accepted"}
        assert await count(database_url) == 1

    async def test_a_thank_you_page_gets_a_303(self, intake: httpx.AsyncClient) -> None:
        r = await intake.put(
            "/v1/forms/pricing",
            json={
                "allowed_origins": ["https://www.acme.example"],
                "thank_you_url": "https://www.acme.example/thanks",
                "consent_text_version": "v2",
            },
            headers=DEV_AUTH,
        )
        assert r.status_code == 201, r.text
        r = await intake.post(
            "/v1/forms/pricing/submissions",
            data=person(),
            headers={"Origin": "https://www.acme.example"},
        )
        assert r.status_code == 303 and r.headers["location"] == "https://www.acme.example/thanks"

    async def test_the_html_example_in_the_docs_works(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        form = _doc_form()
        assert form.action.endswith("/v1/forms/contact-us/submissions") and form.method == "post"
        fields = dict(form.inputs)
        fields.update(
            name="Анна Петрова",
            email=f"docs.{uuid.uuid4().hex[:8]}@acme.example",
            phone="+7 912 345 67 89",
            company="Acme",
            consent=form.checkbox_value,
            services="seo",
            message="Hello from the docs",
            page_url="http://localhost/contact?utm_source=docs",
            rendered_at=str(int((time.time() - 20) * 1000)),
        )
        r = await intake.post("/v1/forms/contact-us/submissions", data=fields, headers=LOCALHOST)
        assert r.status_code == 202, r.text
        (lead,) = await stored(database_url, fields["email"])
        assert lead["company"] == "Acme" and lead["services"] == ["seo"]
        assert lead["utm"]["source"] == "docs" and lead["honeypot_filled"] is False


class _FormParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = self.method = self.checkbox_value = ""
        self.inputs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action, self.method = a.get("action", ""), a.get("method", "").lower()
        elif tag in ("input", "textarea", "select") and a.get("name"):
            if a.get("type") == "checkbox":
                if a["name"] == "consent":
                    self.checkbox_value = a.get("value", "on")
            else:
                self.inputs.append((a["name"], a.get("value", "")))


def _doc_form() -> _FormParser:
    match = re.search(r"```html\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert match, "docs/intake.md has an ```html example"
    parser = _FormParser()
    parser.feed(match.group(1))
    return parser


async def _metric(intake: httpx.AsyncClient, series: str) -> float:
    text = (await intake.get("/metrics")).text
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


class TestBots:
    async def test_a_filled_honeypot_answers_like_a_person_and_is_flagged(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        trapped = await _metric(intake, 'leadflow_intake_refused_total{reason="honeypot"}')
        data = person(website="http://cheap-pills.example")
        r = await intake.post("/v1/forms/contact-us/submissions", data=data, headers=LOCALHOST)
        assert r.status_code == 202 and r.json() == {"status": "accepted"}
        assert (
            await _metric(intake, 'leadflow_intake_refused_total{reason="honeypot"}') == trapped + 1
        )
        (lead,) = await stored(database_url, data["email"])
        assert lead["honeypot_filled"] is True
        (event,) = await published(database_url, kafka_bootstrap, {str(lead["lead_id"])})
        assert isinstance(event, LeadReceived) and event.data.honeypot_filled

    async def test_a_bot_s_post_never_swallows_the_real_person(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        data = person()
        await intake.post(
            "/v1/forms/contact-us/submissions", data={**data, "website": "x"}, headers=LOCALHOST
        )
        await intake.post("/v1/forms/contact-us/submissions", data=data, headers=LOCALHOST)
        found = await stored(database_url, data["email"])
        assert sorted(bool(lead["honeypot_filled"]) for lead in found) == [False, True]

    async def test_a_honeypot_with_garbage_answers_success_and_stores_nothing(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        r = await intake.post(
            "/v1/forms/contact-us/submissions",
            data={"email": "not-an-email", "website": "x", "consent": "on"},
            headers=LOCALHOST,
        )
        assert r.status_code == 202 and await count(database_url) == 0

    async def test_a_form_sent_faster_than_a_person_types_is_refused(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        r = await intake.post(
            "/v1/forms/contact-us/submissions",
            data=person(rendered_at=str(int(time.time() * 1000))),
            headers=LOCALHOST,
        )
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "rendered_at"]
        assert await count(database_url) == 0


class TestAccess:
    @pytest.mark.parametrize(
        "headers",
        [
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Referer": "https://evil.example/page"},
            {},
        ],
    )
    async def test_other_origins_and_anonymous_servers_are_refused(
        self, intake: httpx.AsyncClient, database_url: str, headers: dict[str, str]
    ) -> None:
        r = await intake.post("/v1/forms/contact-us/submissions", data=person(), headers=headers)
        assert r.status_code == 403
        assert r.json()["detail"][0]["loc"] == ["header", "Origin"]
        assert "access-control-allow-origin" not in r.headers
        assert await count(database_url) == 0

    async def test_a_referer_on_the_allowed_origin_is_enough(
        self, intake: httpx.AsyncClient
    ) -> None:
        r = await intake.post(
            "/v1/forms/contact-us/submissions",
            data=person(),
            headers={"Referer": "http://localhost/contact"},
        )
        assert r.status_code == 202

    async def test_unknown_forms_are_404(self, intake: httpx.AsyncClient) -> None:
        r = await intake.post("/v1/forms/nope/submissions", data=person(), headers=LOCALHOST)
        assert r.status_code == 404 and r.json()["detail"][0]["loc"] == ["path", "form_id"]


class TestTilda:
    @pytest.fixture
    async def tilda_form(self, intake: httpx.AsyncClient) -> str:
        key = "tilda-key-" + uuid.uuid4().hex
        r = await intake.put(
            "/v1/forms/tilda-main",
            json={
                "server_key": key,
                "consent_field": None,
                "consent_text_version": "tilda-v1",
                "field_map": {"Checkbox": "consent"},
            },
            headers=DEV_AUTH,
        )
        assert r.status_code == 201 and r.json()["server_key_set"] is True
        assert "server_key" not in r.json()
        return key

    async def test_the_ping_answers_ok_and_creates_nothing(
        self, intake: httpx.AsyncClient, tilda_form: str, database_url: str
    ) -> None:
        r = await intake.post(
            f"/v1/forms/tilda-main/submissions?key={tilda_form}", data={"test": "test"}
        )
        assert r.status_code == 200 and r.text == "ok"
        assert await count(database_url) == 0

    async def test_a_tilda_submission_is_a_lead(
        self,
        intake: httpx.AsyncClient,
        tilda_form: str,
        database_url: str,
        kafka_bootstrap: str,
    ) -> None:
        email = f"tilda.{uuid.uuid4().hex[:8]}@acme.example"
        data = {
            "Name": "Борис",
            "Email": email,
            "Phone": "+7 (912) 111-22-33",
            "tranid": "7654321:1234567",
            "formid": "form123456",
            "COOKIES": "_ga=GA1.2.3",
            "utm_source": "yandex",
            "utm_campaign": "brand",
        }
        r = await intake.post(
            "/v1/forms/tilda-main/submissions",
            data=data,
            headers={"X-Leadflow-Form-Key": tilda_form},
        )
        assert r.status_code == 200 and r.text == "ok"
        (lead,) = await stored(database_url, email)
        assert lead["name"] == "Борис" and lead["phone"] == "+79121112233"
        assert lead["fields"] == {"tilda_tranid": "7654321:1234567", "tilda_formid": "form123456"}
        assert lead["utm"]["source"] == "yandex" and lead["consent_text_version"] == "tilda-v1"
        events = await published(database_url, kafka_bootstrap, {str(lead["lead_id"])})
        assert len(events) == 1

    async def test_a_wrong_key_is_403(self, intake: httpx.AsyncClient, tilda_form: str) -> None:
        r = await intake.post("/v1/forms/tilda-main/submissions?key=guess", data={"test": "test"})
        assert r.status_code == 403 and r.json()["detail"][0]["loc"] == ["query", "key"]

    async def test_the_key_survives_a_put_without_it(
        self, intake: httpx.AsyncClient, tilda_form: str
    ) -> None:
        r = await intake.put(
            "/v1/forms/tilda-main",
            json={"consent_field": None, "consent_text_version": "tilda-v2"},
            headers=DEV_AUTH,
        )
        assert r.status_code == 200 and r.json()["server_key_set"] is True
        r = await intake.post(
            f"/v1/forms/tilda-main/submissions?key={tilda_form}", data={"test": "test"}
        )
        assert r.status_code == 200


class TestRateLimits:
    async def test_per_ip_with_retry_after(
        self, database_url: str, kafka_bootstrap: str, tmp_path: Path
    ) -> None:
        async with running_intake(
            database_url,
            kafka_bootstrap,
            tmp_path,
            form_ip_burst=2,
            form_burst=3,
            form_ip_rate_per_minute=1,
            form_rate_per_minute=1,
        ) as intake:
            answers = [
                await intake.post(
                    "/v1/forms/contact-us/submissions", data=person(), headers=LOCALHOST
                )
                for _ in range(3)
            ]
            assert [a.status_code for a in answers] == [202, 202, 429]
            assert int(answers[2].headers["retry-after"]) >= 1
            assert answers[2].json()["detail"][0]["type"] == "rate_limited"
            # The per-form limit, IPv6 /64s and servers' posts: test_intake_form_limits.py.
        assert await count(database_url) == 2


class TestConfiguration:
    async def test_dev_mode_seeds_the_demo_form_and_webinar(
        self, intake: httpx.AsyncClient
    ) -> None:
        form = (await intake.get("/v1/forms/contact-us", headers=DEV_AUTH)).json()
        assert form["allowed_origins"] == ["http://localhost"]
        assert form["honeypot_field"] == "website"
        webinars = (await intake.get("/v1/webinars", headers=DEV_AUTH)).json()
        assert [w["webinar_id"] for w in webinars] == ["webinar-demo"]

    async def test_forms_are_created_replaced_listed_and_deleted(
        self, intake: httpx.AsyncClient
    ) -> None:
        body = {"allowed_origins": ["https://acme.example"], "consent_text_version": "v1"}
        assert (await intake.put("/v1/forms/f1", json=body, headers=DEV_AUTH)).status_code == 201
        body["name"] = "Footer form"
        r = await intake.put("/v1/forms/f1", json=body, headers=DEV_AUTH)
        assert r.status_code == 200 and r.json()["name"] == "Footer form"
        listed = (await intake.get("/v1/forms", headers=DEV_AUTH)).json()
        assert {f["form_id"] for f in listed} == {"contact-us", "f1"}
        assert (await intake.delete("/v1/forms/f1", headers=DEV_AUTH)).status_code == 204
        assert (await intake.get("/v1/forms/f1", headers=DEV_AUTH)).status_code == 404
        assert (await intake.delete("/v1/forms/f1", headers=DEV_AUTH)).status_code == 404

    async def test_configuration_needs_the_admin_scope(self, intake: httpx.AsyncClient) -> None:
        writer = {"Authorization": "Bearer writer-token"}
        assert (await intake.get("/v1/forms", headers=writer)).status_code == 403
        assert (await intake.put("/v1/forms/x", json={}, headers=writer)).status_code == 403
        assert (await intake.get("/v1/forms")).status_code == 401

    async def test_a_zoom_webinar_links_to_one_webinar_only(
        self, intake: httpx.AsyncClient
    ) -> None:
        body = {"consent_text_version": "v1", "zoom_webinar_id": "812 3456 7890"}
        assert (await intake.put("/v1/webinars/a", json=body, headers=DEV_AUTH)).status_code == 201
        r = await intake.put("/v1/webinars/b", json=body, headers=DEV_AUTH)
        assert r.status_code == 409 and r.json()["detail"][0]["loc"] == ["body", "zoom_webinar_id"]
