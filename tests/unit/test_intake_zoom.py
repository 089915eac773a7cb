"""Zoom webhooks: signatures, the URL-validation answer, events as people. Pure."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from services.intake.sources.zoom import (
    Skipped,
    ZoomAuthError,
    ZoomWebhook,
    attendance_lead,
    event_time,
    registration_lead,
    signature,
    url_validation_answer,
    verify,
)

SECRET = "s3cr3t-token-from-zoom"
NOW = 1_790_000_000


def check(body: bytes, timestamp: str | None, signed: str | None, now: float = NOW) -> None:
    verify(
        secret=SECRET, timestamp=timestamp, signed=signed, body=body, now=now, max_age_seconds=300
    )


class TestSignature:
    def test_zoom_s_scheme(self) -> None:
        body = b'{"event":"x"}'
        expected = hmac.new(SECRET.encode(), b"v0:123:" + body, hashlib.sha256).hexdigest()
        assert signature(SECRET, "123", body) == f"v0={expected}"

    def test_a_signed_fresh_request_passes(self) -> None:
        body = b'{"event":"x"}'
        check(body, str(NOW - 10), signature(SECRET, str(NOW - 10), body))

    @pytest.mark.parametrize(
        ("timestamp", "signed", "header"),
        [
            (None, "v0=abc", "x-zm-request-timestamp"),
            (str(NOW), None, "x-zm-signature"),
            ("yesterday", "v0=abc", "x-zm-request-timestamp"),
            (str(NOW), "v0=" + "0" * 64, "x-zm-signature"),
        ],
    )
    def test_missing_or_wrong_headers_are_refused(
        self, timestamp: str | None, signed: str | None, header: str
    ) -> None:
        with pytest.raises(ZoomAuthError) as err:
            check(b"{}", timestamp, signed)
        assert err.value.header == header

    @pytest.mark.parametrize("skew", [301, -301, 86_400])
    def test_stale_or_future_timestamps_are_refused_even_when_signed(self, skew: int) -> None:
        ts = str(NOW - skew)
        with pytest.raises(ZoomAuthError, match="replay"):
            check(b"{}", ts, signature(SECRET, ts, b"{}"))

    def test_a_signature_over_another_body_is_refused(self) -> None:
        ts = str(NOW)
        with pytest.raises(ZoomAuthError):
            check(b'{"event":"b"}', ts, signature(SECRET, ts, b'{"event":"a"}'))

    def test_url_validation_answer(self) -> None:
        answer = url_validation_answer(SECRET, "qgg8vlvZRS6UYooatFL8Aw")
        expected = hmac.new(SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256)
        assert answer == {
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": expected.hexdigest(),
        }


def hook(event: str, obj: dict[str, object], *, event_ts: int = NOW * 1000) -> ZoomWebhook:
    return ZoomWebhook.model_validate_json(
        json.dumps({"event": event, "event_ts": event_ts, "payload": {"object": obj}})
    )


class TestEvents:
    def test_a_registration_as_a_person(self) -> None:
        event = hook(
            "webinar.registration_created",
            {
                "id": 81234567890,
                "host_id": "h",
                "registrant": {
                    "email": "anna@acme.example",
                    "first_name": "Анна",
                    "last_name": "Петрова",
                    "org": "Acme",
                    "no_of_employees": "501-1,000",
                    "purchasing_time_frame": "Within a month",
                    "comments": "hi",
                    "custom_questions": [{"title": "Budget?", "value": "200k"}],
                    "city": "Kazan",
                },
            },
        )
        assert event.payload.object is not None and event.payload.object.id == "81234567890"
        person = registration_lead(event.payload.object, event_ts=event.event_ts)
        assert person == {
            "name": "Анна Петрова",
            "email": "anna@acme.example",
            "company": "Acme",
            "company_size": "501-1,000",
            "timeframe": "Within a month",
            "message": "hi",
            "fields": {"Budget?": "200k", "city": "Kazan"},
            "occurred_at": "2026-09-21T14:13:20+00:00",  # event_ts, NOW in milliseconds
        }

    def test_a_registration_is_dated_when_it_happened_not_when_it_arrived(self) -> None:
        # Zoom's registrant object has no time of its own; `event_ts` is when the person
        # registered, however late a retried delivery arrives.
        event = hook(
            "webinar.registration_created",
            {"id": 1, "registrant": {"email": "anna@acme.example"}},
            event_ts=1_760_000_000_123,
        )
        assert event.payload.object is not None
        person = registration_lead(event.payload.object, event_ts=event.event_ts)
        assert not isinstance(person, Skipped)
        assert person["occurred_at"] == "2025-10-09T08:53:20.123000+00:00"
        undated = registration_lead(event.payload.object, event_ts=None)
        assert not isinstance(undated, Skipped) and "occurred_at" not in undated

    @pytest.mark.parametrize("event_ts", [None, 0, -5, 10**20])
    def test_an_event_ts_that_is_no_time_is_left_out(self, event_ts: int | None) -> None:
        assert event_time(event_ts) is None

    def test_a_participant_as_an_attendee(self) -> None:
        event = hook(
            "webinar.participant_joined",
            {
                "id": "81234567890",
                "host_id": "h",
                "participant": {
                    "id": "u1",
                    "user_name": "Anna",
                    "email": "anna@acme.example",
                    "join_time": "2026-10-15T10:01:00Z",
                },
            },
        )
        assert event.payload.object is not None
        assert attendance_lead(event.payload.object, host_id="h", event_ts=event.event_ts) == {
            "name": "Anna",
            "email": "anna@acme.example",
            "occurred_at": "2026-10-15T10:01:00Z",
        }

    def test_a_participant_without_join_time_is_dated_by_the_event(self) -> None:
        event = hook(
            "webinar.participant_joined",
            {"id": "81234567890", "participant": {"id": "u1", "email": "anna@acme.example"}},
        )
        assert event.payload.object is not None
        person = attendance_lead(event.payload.object, host_id="h", event_ts=event.event_ts)
        assert not isinstance(person, Skipped)
        assert person["occurred_at"] == "2026-09-21T14:13:20+00:00"

    def test_the_host_and_anonymous_guests_are_not_leads(self) -> None:
        host = hook(
            "webinar.participant_joined",
            {"id": 1, "host_id": "h", "participant": {"id": "h", "email": "host@us.example"}},
        ).payload.object
        guest = hook(
            "webinar.participant_joined", {"id": 1, "participant": {"user_name": "Guest"}}
        ).payload.object
        assert host is not None and guest is not None
        assert isinstance(attendance_lead(host, host_id="h", event_ts=None), Skipped)
        assert isinstance(attendance_lead(guest, host_id="h", event_ts=None), Skipped)
