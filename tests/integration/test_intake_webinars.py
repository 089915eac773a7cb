"""Webinar leads over HTTP: JSON registrants and attendees, CSV imports, Zoom webhooks.

Registration and attendance of one person are one lead; attendance is recorded on it
and published as `lead.webinar_attended`, checked on the real topic.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from services.intake.tables import leads
from shared.events import LeadReceived, LeadWebinarAttended
from tests.integration.test_intake_support import (
    ZOOM_SECRET,
    count,
    published,
    rows,
    running_intake,
    zoom_headers,
)
from tests.support import DEV_AUTH

FIXTURES = Path(__file__).parents[1] / "fixtures" / "intake"
ZOOM_ID = "81234567890"


@pytest.fixture
async def intake(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_intake(database_url, kafka_bootstrap, tmp_path) as client:
        r = await client.put(
            "/v1/webinars/seo-b2b",
            json={
                "title": "SEO for B2B",
                "zoom_webinar_id": ZOOM_ID,
                "timezone": "Europe/Moscow",
                "consent_text_version": "webinar-terms-3",
            },
            headers=DEV_AUTH,
        )
        assert r.status_code == 201, r.text
        yield client


def email() -> str:
    return f"p.{uuid.uuid4().hex[:10]}@acme.example"


async def snapshots(database_url: str) -> dict[str, dict[str, Any]]:
    found = await rows(database_url, sa.select(leads.c.lead_id, leads.c.snapshot))
    return {r.lead_id: r.snapshot for r in found}


class TestRegistrationAndAttendance:
    async def test_registration_then_attendance_is_one_lead_with_attendance_recorded(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        who = email()
        reg = await intake.post(
            "/v1/webinars/seo-b2b/registrants",
            json={
                "first_name": "Анна",
                "last_name": "Петрова",
                "email": who,
                "company_size": "101-250",
                "occurred_at": "2026-10-10T08:00:00Z",
            },
            headers=DEV_AUTH,
        )
        assert reg.status_code == 202, reg.text
        lead_id = reg.json()["lead_id"]
        assert reg.json()["status"] == "accepted"
        came = await intake.post(
            "/v1/webinars/seo-b2b/attendees",
            json={"email": who.upper(), "occurred_at": "2026-10-15T07:01:00Z"},
            headers=DEV_AUTH,
        )
        assert came.json() == {"lead_id": lead_id, "status": "updated", "duplicate_of": None}
        again = await intake.post(
            "/v1/webinars/seo-b2b/attendees", json={"email": who}, headers=DEV_AUTH
        )
        assert again.json() == {"lead_id": lead_id, "status": "duplicate", "duplicate_of": lead_id}
        assert await count(database_url) == 1
        lead = (await snapshots(database_url))[lead_id]
        assert lead["source"] == "webinar_registration" and lead["name"] == "Анна Петрова"
        assert lead["webinar_attended"] is True
        assert lead["webinar_attended_at"].startswith("2026-10-15T07:01:00")
        assert lead["consent_text_version"] == "webinar-terms-3"
        assert lead["company_size"] == "101-500"

        events = await published(database_url, kafka_bootstrap, {lead_id})
        assert [type(e) for e in events] == [LeadReceived, LeadWebinarAttended]
        attended = events[1]
        assert attended.data.webinar_attended and attended.time.isoformat().startswith(  # type: ignore[union-attr]
            "2026-10-15T07:01:00"
        )

    async def test_an_attendee_who_never_registered_is_a_new_lead(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        r = await intake.post(
            "/v1/webinars/seo-b2b/attendees",
            json={"name": "Walk In", "phone": "+7 912 000 11 22"},
            headers=DEV_AUTH,
        )
        assert r.status_code == 202 and r.json()["status"] == "accepted"
        lead = (await snapshots(database_url))[r.json()["lead_id"]]
        assert lead["source"] == "webinar_attendance" and lead["webinar_attended"] is True
        (event,) = await published(database_url, kafka_bootstrap, {r.json()["lead_id"]})
        assert isinstance(event, LeadReceived) and event.data.webinar_attended

    async def test_registering_twice_is_a_duplicate_whenever_it_happens(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        who = email()
        first = await intake.post(
            "/v1/webinars/seo-b2b/registrants",
            json={"email": who, "occurred_at": "2026-01-01T00:00:00Z"},
            headers=DEV_AUTH,
        )
        second = await intake.post(
            "/v1/webinars/seo-b2b/registrants", json={"email": who}, headers=DEV_AUTH
        )
        assert second.json()["status"] == "duplicate"
        assert second.json()["duplicate_of"] == first.json()["lead_id"]
        # Another webinar is another lead.
        other = await intake.post(
            "/v1/webinars/webinar-demo/registrants", json={"email": who}, headers=DEV_AUTH
        )
        assert other.json()["status"] == "accepted"
        assert await count(database_url) == 2

    async def test_a_list_is_answered_per_person(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        r = await intake.post(
            "/v1/webinars/seo-b2b/registrants",
            json=[{"email": email()}, {"email": "broken"}, {"email": email(), "shoe": 42}],
            headers=DEV_AUTH,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["status"] for x in body["results"]] == ["accepted", "rejected", "rejected"]
        assert body["results"][1]["errors"][0]["loc"] == ["body", 1, "email"]
        assert body["results"][2]["errors"][0]["loc"] == ["body", 2, "shoe"]
        assert await count(database_url) == 1

    async def test_an_unknown_webinar_is_404(self, intake: httpx.AsyncClient) -> None:
        r = await intake.post(
            "/v1/webinars/nope/registrants", json={"email": email()}, headers=DEV_AUTH
        )
        assert r.status_code == 404 and r.json()["detail"][0]["loc"] == ["path", "webinar_id"]


class TestCsvImport:
    async def test_zoom_s_attendee_report(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        # Grigory registered through the site before; the report says he did not attend.
        await intake.post(
            "/v1/webinars/seo-b2b/registrants",
            json={"email": "grigory@beta.example"},
            headers=DEV_AUTH,
        )
        data = (FIXTURES / "zoom_attendee_report.csv").read_bytes()
        r = await intake.post(
            "/v1/webinars/seo-b2b/attendees:import",
            files={"file": ("attendee_report.csv", data, "text/csv")},
            headers=DEV_AUTH,
        )
        assert r.status_code == 200, r.text
        assert r.json() == {
            "accepted": 2,
            "attendance_recorded": 0,
            "duplicates": 2,
            "rejected": [],
            "rejected_count": 0,
        }
        stored = await snapshots(database_url)
        by_email = {s["email"]: s for s in stored.values()}
        assert set(by_email) == {
            "grigory@beta.example",
            "anna@acme-corp.example",
            "dmitry@gamma.example",
        }
        anna = by_email["anna@acme-corp.example"]
        assert anna["source"] == "webinar_attendance" and anna["phone"] == "+79123456789"
        assert anna["webinar_attended_at"] == "2026-10-15T07:01:00Z"  # 10:01 in Moscow
        assert anna["fields"] == {"webinar_minutes": "59"}
        assert by_email["dmitry@gamma.example"]["name"] == "Dmitry 😀 \u200fדני"
        assert by_email["grigory@beta.example"]["webinar_attended"] is False
        events = await published(database_url, kafka_bootstrap, set(stored))
        assert sorted(e.type for e in events) == ["lead.received"] * 3

        # Fetched back over the API verbatim: Russian, emoji and right-to-left marks.
        got = await intake.get(
            f"/v1/leads/{by_email['dmitry@gamma.example']['lead_id']}", headers=DEV_AUTH
        )
        assert got.json()["lead"]["name"] == "Dmitry 😀 \u200fדני"

    async def test_a_registrant_in_the_report_gets_attendance_recorded(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        reg = await intake.post(
            "/v1/webinars/seo-b2b/registrants",
            json={"email": "anna@acme-corp.example", "name": "Anna"},
            headers=DEV_AUTH,
        )
        data = (FIXTURES / "zoom_attendee_report.csv").read_bytes()
        r = await intake.post(
            "/v1/webinars/seo-b2b/attendees:import",
            files={"file": ("r.csv", data)},
            headers=DEV_AUTH,
        )
        assert r.json()["attendance_recorded"] == 1
        lead_id = reg.json()["lead_id"]
        events = await published(database_url, kafka_bootstrap, {lead_id})
        assert [e.type for e in events] == ["lead.received", "lead.webinar_attended"]

    async def test_cp1251_semicolons_and_bad_rows_beside_good_ones(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        good = (FIXTURES / "generic_cp1251.csv").read_bytes()
        bad_rows = (
            "Пётр;not-an-email;;;;\r\n"
            "Short;row\r\n"
            'Ок;ok@zeta.example;;"Зета"x;15.10.2026 10:20;\r\n'
            "Последний;last@eta.example;;Эта;15.10.2026 10:30;\r\n"
        ).encode("cp1251")
        r = await intake.post(
            "/v1/webinars/seo-b2b/attendees:import",
            files={"file": ("visitors.csv", good + bad_rows, "text/csv")},
            headers=DEV_AUTH,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["accepted"] == 3 and body["rejected_count"] == 3
        assert [x["row"] for x in body["rejected"]] == [4, 5, 6]
        assert body["rejected"][0]["error"].startswith("email:")
        assert "fields" in body["rejected"][1]["error"]
        assert "quoted" in body["rejected"][2]["error"]
        stored = await snapshots(database_url)
        names = sorted(s["name"] for s in stored.values())
        assert names == ["Иван Сидоров", "Мария Кузнецова", "Последний"]
        assert len(await published(database_url, kafka_bootstrap, set(stored))) == 3

    async def test_a_generic_csv_with_a_mapping_and_a_bom(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        data = "\ufeffКонтакт,Почта ящик,Когда,Был?\nАнна,a1@x.example,2026-10-15 10:00,да\n"
        r = await intake.post(
            "/v1/webinars/seo-b2b/attendees:import",
            files={"file": ("list.csv", data.encode())},
            data={
                "mapping": json.dumps(
                    {
                        "Контакт": "name",
                        "Почта ящик": "email",
                        "Когда": "joined_at",
                        "Был?": "attended",
                    }
                )
            },
            headers=DEV_AUTH,
        )
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
        (lead,) = (await snapshots(database_url)).values()
        assert lead["name"] == "Анна" and lead["webinar_attended_at"] == "2026-10-15T07:00:00Z"

    async def test_a_file_over_a_megabyte_is_read_from_disk_row_by_row(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        # Past 1 MB Starlette spools the upload to a temporary file; the import streams it.
        header = "email,name,message\n"
        body = "".join(f"bulk{i}@many.example,Person {i},{'x' * 1200}\n" for i in range(900))
        data = (header + body).encode()
        assert len(data) > 1024 * 1024
        r = await intake.post(
            "/v1/webinars/seo-b2b/attendees:import",
            files={"file": ("big.csv", data)},
            headers=DEV_AUTH,
        )
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 900 and r.json()["rejected_count"] == 0
        assert await count(database_url) == 900

    async def test_importing_again_stores_nothing_new(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        data = (FIXTURES / "generic_cp1251.csv").read_bytes()
        for expected in ({"accepted": 2, "duplicates": 0}, {"accepted": 0, "duplicates": 2}):
            r = await intake.post(
                "/v1/webinars/seo-b2b/attendees:import",
                files={"file": ("v.csv", data)},
                headers=DEV_AUTH,
            )
            assert {k: r.json()[k] for k in expected} == expected
        assert await count(database_url) == 2


def zoom_event(event: str, obj: dict[str, Any], *, event_ts: int | None = None) -> bytes:
    body = {
        "event": event,
        "event_ts": event_ts or int(time.time() * 1000),
        "payload": {"account_id": "acc", "object": obj},
    }
    return json.dumps(body, ensure_ascii=False).encode()


class TestZoomWebhook:
    async def test_url_validation(self, intake: httpx.AsyncClient) -> None:
        body = json.dumps(
            {"event": "endpoint.url_validation", "payload": {"plainToken": "qgg8vlvZRS6UYo"}}
        ).encode()
        r = await intake.post("/v1/webhooks/zoom", content=body, headers=zoom_headers(body))
        assert r.status_code == 200
        token = hmac.new(ZOOM_SECRET.encode(), b"qgg8vlvZRS6UYo", hashlib.sha256).hexdigest()
        assert r.json() == {"plainToken": "qgg8vlvZRS6UYo", "encryptedToken": token}

    async def test_registration_then_join_make_one_attended_lead(
        self, intake: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        who = email()
        reg = zoom_event(
            "webinar.registration_created",
            {
                "id": int(ZOOM_ID),
                "host_id": "host1",
                "topic": "SEO for B2B",
                "registrant": {
                    "email": who,
                    "first_name": "Вера",
                    "last_name": "Орлова",
                    "org": "Orlova & Co",
                    "job_title": "CMO",
                    "purchasing_time_frame": "1-3 months",
                    "role_in_purchase_process": "Decision Maker",
                    "custom_questions": [{"title": "Бюджет", "value": "300 000"}],
                },
            },
        )
        r = await intake.post("/v1/webhooks/zoom", content=reg, headers=zoom_headers(reg))
        assert r.status_code == 200, r.text
        lead_id = r.json()["lead_id"]
        joined = zoom_event(
            "webinar.participant_joined",
            {
                "id": ZOOM_ID,
                "host_id": "host1",
                "participant": {
                    "id": "u9",
                    "user_name": "Vera",
                    "email": who,
                    "join_time": "2026-10-15T07:03:00Z",
                },
            },
        )
        r = await intake.post("/v1/webhooks/zoom", content=joined, headers=zoom_headers(joined))
        assert r.json()["status"] == "updated" and r.json()["lead_id"] == lead_id
        # Zoom sends an event for every (re)join, and retries: both change nothing.
        r = await intake.post("/v1/webhooks/zoom", content=joined, headers=zoom_headers(joined))
        assert r.json()["status"] == "duplicate"
        lead = (await snapshots(database_url))[lead_id]
        assert (lead["name"], lead["company"], lead["timeframe"], lead["role_in_purchase"]) == (
            "Вера Орлова",
            "Orlova & Co",
            "1-3 months",
            "decision_maker",
        )
        assert lead["fields"] == {"Бюджет": "300 000"} and lead["webinar_attended"] is True
        events = await published(database_url, kafka_bootstrap, {lead_id})
        assert [e.type for e in events] == ["lead.received", "lead.webinar_attended"]

    async def test_a_retried_registration_is_dated_when_it_happened(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        # Zoom's last retry of a failed delivery comes 5 + 20 + 60 minutes after the event;
        # the registrant object carries no time, the event's `event_ts` does.
        happened = int(time.time() * 1000) - 85 * 60 * 1000
        reg = zoom_event(
            "webinar.registration_created",
            {"id": int(ZOOM_ID), "registrant": {"email": email(), "first_name": "Вера"}},
            event_ts=happened,
        )
        r = await intake.post("/v1/webhooks/zoom", content=reg, headers=zoom_headers(reg))
        assert r.status_code == 200, r.text
        lead = (await snapshots(database_url))[r.json()["lead_id"]]
        occurred = datetime.fromisoformat(lead["occurred_at"])
        assert occurred == datetime.fromtimestamp(happened / 1000, UTC).replace(
            microsecond=happened % 1000 * 1000
        )
        assert datetime.fromisoformat(lead["received_at"]) - occurred > timedelta(minutes=84)

    async def test_the_host_and_unlinked_webinars_are_not_leads(
        self, intake: httpx.AsyncClient, database_url: str
    ) -> None:
        host = zoom_event(
            "webinar.participant_joined",
            {
                "id": ZOOM_ID,
                "host_id": "h1",
                "participant": {"id": "h1", "email": "host@us.example"},
            },
        )
        r = await intake.post("/v1/webhooks/zoom", content=host, headers=zoom_headers(host))
        assert r.json()["status"] == "skipped"
        other = zoom_event(
            "webinar.registration_created", {"id": 99999999999, "registrant": {"email": email()}}
        )
        r = await intake.post("/v1/webhooks/zoom", content=other, headers=zoom_headers(other))
        assert r.status_code == 200 and r.json()["status"] == "ignored"
        unused = zoom_event("webinar.started", {"id": ZOOM_ID})
        r = await intake.post("/v1/webhooks/zoom", content=unused, headers=zoom_headers(unused))
        assert r.json()["status"] == "ignored"
        assert await count(database_url) == 0

    @pytest.mark.parametrize(
        "tamper",
        ["bad_signature", "stale", "future", "no_signature", "no_timestamp", "other_secret"],
    )
    async def test_unsigned_or_stale_requests_are_401(
        self, intake: httpx.AsyncClient, database_url: str, tamper: str
    ) -> None:
        body = zoom_event(
            "webinar.registration_created", {"id": ZOOM_ID, "registrant": {"email": email()}}
        )
        headers = zoom_headers(body)
        if tamper == "bad_signature":
            headers["x-zm-signature"] = "v0=" + "0" * 64
        elif tamper == "stale":
            headers = zoom_headers(body, at=time.time() - 600)
        elif tamper == "future":
            headers = zoom_headers(body, at=time.time() + 600)
        elif tamper == "no_signature":
            del headers["x-zm-signature"]
        elif tamper == "no_timestamp":
            del headers["x-zm-request-timestamp"]
        else:
            headers = zoom_headers(body, secret="someone-elses-secret")
        r = await intake.post("/v1/webhooks/zoom", content=body, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["detail"][0]["loc"][0] == "header"
        assert await count(database_url) == 0
