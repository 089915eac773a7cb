"""The HubSpot connector's pure parts: bodies, answers, errors, signatures (no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import httpx
import pytest

from services.qualifier.crm.adapter import (
    CrmRefused,
    CrmUnavailable,
    IncomingRequest,
    Notice,
    NotificationRefused,
    PushLead,
)
from services.qualifier.crm.config import HubSpotConnector
from services.qualifier.crm.hubspot import VENDOR, records
from services.qualifier.crm.hubspot.errors import check
from services.qualifier.crm.hubspot.notifications import parse_notification, signature_v3

SECRET = "client-secret-1"
URL = "https://leadflow.example.com/crm/hubspot-main/notifications"
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def connector(**extra: Any) -> HubSpotConnector:
    return HubSpotConnector.model_validate(
        {
            "id": "hubspot-main",
            "kind": "hubspot",
            "base_url": "https://api.hubapi.com",
            "portal_id": 62515,
            "credentials": {"token_env": "HS_TOKEN", "client_secret_env": "HS_SECRET"},
            **extra,
        }
    )


def lead(**extra: Any) -> PushLead:
    values: dict[str, Any] = {
        "lead_id": "lead-1",
        "title": "Acme: CRM rollout",
        "name": "Anna Maria Petrova",
        "email": "anna@example.com",
        "phone": "+79990001122",
        "company": "Acme",
        "source": "web_form",
        "channel": "ads",
        "utm": {"source": "google", "campaign": "winter", "other": "x"},
        "owner": "7001",
        "note": "budget fits\n<b>team</b> matches",
        "route": "sales",
        "team": "smb",
        "received_at": NOW,
    }
    values.update(extra)
    return PushLead(**values)


def signed(
    body: bytes, *, at: datetime = NOW, secret: str = SECRET, url: str = URL
) -> IncomingRequest:
    stamp = str(int(at.timestamp() * 1000))
    headers = {
        "X-HubSpot-Signature-v3": signature_v3(secret, "POST", url, body, stamp),
        "X-HubSpot-Request-Timestamp": stamp,
    }
    return IncomingRequest("POST", URL, headers, body, None, NOW)


def event(**extra: Any) -> dict[str, Any]:
    return {
        "eventId": 100,
        "subscriptionId": 1002,
        "portalId": 62515,
        "appId": 987654,
        "occurredAt": 1_796_000_000_000,
        "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0,
        "objectId": 10_000_000_001,
        "propertyName": "dealstage",
        "propertyValue": "closedwon",
        "changeSource": "CRM_UI",
        **extra,
    }


def parse(events: Any, **kw: Any) -> list[Notice]:
    body = json.dumps(events).encode()
    return parse_notification(connector(), {"client_secret": SECRET}, signed(body, **kw))


class TestSignature:
    def test_hubspots_reference_test_vector(self) -> None:
        # HubSpot/hubspot-api-python tests/spec/utils/test_signature.py (v3).
        got = signature_v3(
            "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
            "POST",
            "https://www.example.com/webhook_uri",
            b"{'example_field':'example_value'}",
            "15000000",
        )
        assert got == "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="

    def test_a_signed_recent_notification_names_the_deal_and_event(self) -> None:
        assert parse([event()]) == [Notice(crm_id="10000000001", key="100")]

    @pytest.mark.parametrize(
        "request_",
        [
            signed(b"[]", secret="forged"),
            signed(b"[]", at=NOW - timedelta(minutes=5, seconds=1)),
            signed(b"[]", at=NOW + timedelta(minutes=6)),
            signed(b"[]", url=URL + "?x=1"),
            IncomingRequest("POST", URL, {}, b"[]", None, NOW),
        ],
        ids=["forged", "stale", "future", "other-url", "unsigned"],
    )
    def test_forged_stale_or_unsigned_is_401(self, request_: IncomingRequest) -> None:
        with pytest.raises(NotificationRefused) as refused:
            parse_notification(connector(), {"client_secret": SECRET}, request_)
        assert refused.value.status_code == 401

    def test_a_tampered_body_is_401(self) -> None:
        original = signed(json.dumps([event()]).encode())
        tampered = IncomingRequest(
            "POST", URL, original.headers, json.dumps([event(objectId=1)]).encode(), None, NOW
        )
        with pytest.raises(NotificationRefused) as refused:
            parse_notification(connector(), {"client_secret": SECRET}, tampered)
        assert refused.value.status_code == 401


class TestEvents:
    def test_another_portal_is_403(self) -> None:
        with pytest.raises(NotificationRefused) as refused:
            parse([event(), event(portalId=1)])
        assert refused.value.status_code == 403

    def test_watched_changes_and_creation_count_others_are_ignored(self) -> None:
        got = parse(
            [
                event(eventId=1, propertyName="amount"),
                event(eventId=2, propertyName="closed_lost_reason"),
                event(eventId=3, subscriptionType="deal.creation", propertyName=None),
                event(eventId=4, propertyName="dealname"),
                event(eventId=5, subscriptionType="contact.propertyChange"),
                event(eventId=6, subscriptionType="object.propertyChange", objectTypeId="0-3"),
            ]
        )
        assert [n.key for n in got] == ["1", "2", "3", "6"]

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            (b"not json", 400),
            (b'{"eventId": 1}', 400),
            (b"[1]", 400),
            (json.dumps([event(objectId="x")]).encode(), 400),
            (json.dumps([event(eventId=None)]).encode(), 400),
            (json.dumps([event()] * 1001).encode(), 413),
        ],
    )
    def test_malformed_or_too_many_is_refused(self, body: bytes, status: int) -> None:
        with pytest.raises(NotificationRefused) as refused:
            parse_notification(connector(), {"client_secret": SECRET}, signed(body))
        assert refused.value.status_code == status
        assert "anna" not in str(refused.value)

    def test_a_body_over_1_mb_is_413_before_any_work(self) -> None:
        request = IncomingRequest("POST", URL, {}, b" " * 1_000_001, None, NOW)
        with pytest.raises(NotificationRefused) as refused:
            parse_notification(connector(), {"client_secret": SECRET}, request)
        assert refused.value.status_code == 413


class TestBodies:
    def test_the_deal_is_upserted_by_the_id_property_with_source_and_utm(self) -> None:
        body = records.deal_upsert(lead(), connector(), "appointmentscheduled")
        (item,) = body["inputs"]
        assert item["idProperty"] == "leadflow_id" and item["id"] == "lead-1"
        assert item["properties"] == {
            "dealname": "Acme: CRM rollout",
            "hubspot_owner_id": "7001",
            "pipeline": "default",
            "dealstage": "appointmentscheduled",
            "leadflow_source": "web_form",
            "leadflow_channel": "ads",
            "leadflow_route": "sales",
            "leadflow_team": "smb",
            "leadflow_utm_source": "google",
            "leadflow_utm_campaign": "winter",
        }

    def test_the_contact_is_keyed_by_email_else_by_lead_else_none(self) -> None:
        by_email = records.contact_upsert(lead(), connector())
        assert by_email is not None
        (item,) = by_email["inputs"]
        assert (item["idProperty"], item["id"]) == ("email", "anna@example.com")
        assert item["properties"]["firstname"] == "Anna"
        assert item["properties"]["lastname"] == "Maria Petrova"
        by_lead = records.contact_upsert(lead(email=None), connector())
        assert by_lead is not None and by_lead["inputs"][0]["idProperty"] == "leadflow_id"
        erased = lead(email=None, name=None, phone=None, company=None)
        assert records.contact_upsert(erased, connector()) is None

    def test_the_note_is_escaped_and_associated_to_the_deal(self) -> None:
        note = records.note_body(lead(), "42", NOW)
        assert (
            note["properties"]["hs_note_body"] == "budget fits<br>&lt;b&gt;team&lt;/b&gt; matches"
        )
        assert note["properties"]["hs_timestamp"] == "2026-12-07T10:00:00.000Z"
        assert note["associations"][0]["to"] == {"id": "42"}
        assert note["associations"][0]["types"][0]["associationTypeId"] == 214

    def test_search_filters_on_last_modified_in_ms_200_a_page(self) -> None:
        body = records.search_body(connector(), NOW, "400")
        (flt,) = body["filterGroups"][0]["filters"]
        assert flt == {
            "propertyName": "hs_lastmodifieddate",
            "operator": "GTE",
            "value": str(int(NOW.timestamp() * 1000)),
        }
        assert body["limit"] == 200 and body["after"] == "400"


class TestAnswers:
    PIPELINES: ClassVar[dict[str, Any]] = {
        "results": [
            {
                "id": "default",
                "stages": [
                    {
                        "id": "closedwon",
                        "displayOrder": 5,
                        "metadata": {"isClosed": "true", "probability": "1.0"},
                    },
                    {
                        "id": "appointmentscheduled",
                        "displayOrder": 0,
                        "metadata": {"isClosed": "false", "probability": "0.2"},
                    },
                    {
                        "id": "closedlost",
                        "displayOrder": 6,
                        "metadata": {"isClosed": "true", "probability": "0.0"},
                    },
                ],
            }
        ]
    }

    def test_stage_semantics_come_from_the_pipeline_metadata(self) -> None:
        stages = records.read_pipelines(self.PIPELINES)
        assert stages.first == {"default": "appointmentscheduled"}
        assert stages.semantic[("default", "closedwon")] == "won"
        assert stages.semantic[("default", "closedlost")] == "lost"
        assert stages.semantic[("default", "appointmentscheduled")] == "open"

    def test_a_deal_reads_as_a_record(self) -> None:
        deal = {
            "id": "10000000001",
            "properties": {
                "dealstage": "closedlost",
                "pipeline": "default",
                "amount": "1500.50",
                "deal_currency_code": "EUR",
                "hubspot_owner_id": "7001",
                "closed_lost_reason": "budget",
                "hs_lastmodifieddate": "2026-12-07T10:00:00.123Z",
                "leadflow_id": "lead-1",
            },
        }
        record = records.read_deal(deal, connector(), records.read_pipelines(self.PIPELINES))
        assert record.semantic == "lost" and record.stage == "closedlost"
        assert record.amount == Decimal("1500.50") and record.currency == "EUR"
        assert record.loss_reason == "budget" and record.owner == "7001"
        assert record.lead_id == "lead-1"
        assert record.modified_at == datetime(2026, 12, 7, 10, 0, 0, 123000, tzinfo=UTC)


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


class TestErrors:
    def test_rolling_window_429_waits_one_window(self) -> None:
        limited = answer(
            429,
            {"status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"},
            {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"},
        )
        with pytest.raises(CrmUnavailable) as unavailable:
            check(limited)
        assert unavailable.value.retry_after == 10.0
        assert "TEN_SECONDLY_ROLLING" in str(unavailable.value)

    def test_retry_after_wins_and_5xx_is_unavailable(self) -> None:
        with pytest.raises(CrmUnavailable) as unavailable:
            check(answer(503, {}, {"Retry-After": "7"}))
        assert unavailable.value.retry_after == 7.0
        with pytest.raises(CrmUnavailable):
            check(httpx.Response(504))

    def test_a_refusal_keeps_codes_and_property_names_never_the_message(self) -> None:
        body = {
            "status": "error",
            "message": "Property values were not valid: Email address anna@example is invalid",
            "category": "VALIDATION_ERROR",
            "errors": [
                {
                    "message": "anna@example",
                    "code": "INVALID_EMAIL",
                    "context": {"propertyName": ["email"]},
                }
            ],
        }
        with pytest.raises(CrmRefused) as refused:
            check(answer(400, body))
        text = str(refused.value)
        assert text == "HubSpot 400 VALIDATION_ERROR INVALID_EMAIL property email"
        assert "anna" not in text

    def test_bad_credentials_are_refused(self) -> None:
        with pytest.raises(CrmRefused, match="HubSpot 401 INVALID_AUTHENTICATION"):
            check(
                answer(
                    401, {"status": "error", "message": "x", "category": "INVALID_AUTHENTICATION"}
                )
            )


def test_the_vendor_entry_points() -> None:
    assert VENDOR.kind == "hubspot"
    # The leaky bucket's most in any 10 s stays within HubSpot's 100 per 10 s.
    burst, per = VENDOR.default_rate_limit
    assert burst + 10 * burst / per <= 100
