"""The Kommo connector's pure parts: bodies, reading answers, errors, webhook checks."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest

from services.qualifier.crm.adapter import (
    CrmRefused,
    CrmUnavailable,
    IncomingRequest,
    NotificationRefused,
    PushLead,
)
from services.qualifier.crm.config import KommoConnector
from services.qualifier.crm.kommo import VENDOR, records
from services.qualifier.crm.kommo.errors import failure, retry_after
from services.qualifier.crm.kommo.notifications import parse_notification

SECRETS = {"token": "t", "webhook_secret": "s3cret-path"}


def connector(**over: Any) -> KommoConnector:
    base: dict[str, Any] = {
        "id": "kommo-main",
        "kind": "kommo",
        "base_url": "https://leadflow.kommo.com",
        "credentials": {"token_env": "KOMMO_TOKEN", "webhook_secret_env": "KOMMO_HOOK"},
        "account_id": 555,
        "pipeline_id": 7000,
        "default_owner": "1",
    }
    return KommoConnector.model_validate(base | over)


def push(**over: Any) -> PushLead:
    base: dict[str, Any] = {
        "lead_id": "lf-123",
        "title": "Website: CRM rollout",
        "name": "Anna Petrova",
        "email": "anna@example.com",
        "phone": "+79990001122",
        "company": "Acme",
        "source": "web_form",
        "channel": "cpc",
        # Keyed as push_lead builds it from the lead's snapshot.
        "utm": {"source": "google", "campaign": "winter"},
        "owner": "12",
        "note": "score 80 >= 60",
        "route": "sales",
        "team": "smb",
        "received_at": datetime(2026, 12, 7, tzinfo=UTC),
    }
    return PushLead(**(base | over))


class TestBodies:
    def test_complex_item_carries_owner_pipeline_lead_id_utm_contact_company(self) -> None:
        item = records.complex_item(push(), connector(status_id=70002))
        assert item["name"] == "Website: CRM rollout" and item["responsible_user_id"] == 12
        assert (item["pipeline_id"], item["status_id"]) == (7000, 70002)
        fields = {
            f.get("field_code"): f["values"][0]["value"] for f in item["custom_fields_values"]
        }
        assert fields == {"LEADFLOW_ID": "lf-123", "UTM_SOURCE": "google", "UTM_CAMPAIGN": "winter"}
        [contact] = item["_embedded"]["contacts"]
        phones = {f["field_code"]: f["values"][0] for f in contact["custom_fields_values"]}
        assert phones["PHONE"] == {"value": "+79990001122", "enum_code": "WORK"}
        assert phones["EMAIL"]["value"] == "anna@example.com"
        assert item["_embedded"]["companies"] == [{"name": "Acme"}]
        assert {"name": "web_form"} in item["_embedded"]["tags"]

    def test_the_lead_id_field_by_id_wins_over_the_code(self) -> None:
        item = records.complex_item(push(), connector(lead_id_field_id=900001))
        assert item["custom_fields_values"][0] == {
            "field_id": 900001,
            "values": [{"value": "lf-123"}],
        }

    def test_no_owner_falls_back_to_default_and_a_non_numeric_owner_is_refused(self) -> None:
        assert records.complex_item(push(owner=None), connector())["responsible_user_id"] == 1
        with pytest.raises(CrmRefused, match="not a Kommo user id"):
            records.complex_item(push(owner="anna"), connector())

    def test_an_erased_lead_sends_no_contact(self) -> None:
        item = records.complex_item(push(name=None, email=None, phone=None), connector())
        assert "contacts" not in item["_embedded"]

    def test_erasure_clears_name_phone_and_email(self) -> None:
        body = records.erased_contact()
        assert body["name"] == ""
        assert {f["field_code"]: f["values"] for f in body["custom_fields_values"]} == {
            "PHONE": None,
            "EMAIL": None,
        }


def kommo_lead(**over: Any) -> dict[str, Any]:
    lead: dict[str, Any] = {
        "id": 31,
        "status_id": 143,
        "pipeline_id": 7000,
        "price": 5000,
        "responsible_user_id": 12,
        "updated_at": 1796601600,
        "loss_reason_id": 11,
        "custom_fields_values": [
            {"field_id": 900001, "field_code": "LEADFLOW_ID", "values": [{"value": "lf-123"}]}
        ],
        "_embedded": {"loss_reason": [{"id": 11, "name": "Too expensive"}]},
    }
    return lead | over


class TestRecords:
    def test_a_lost_lead_reads_as_lost_with_reason_amount_and_lead_id(self) -> None:
        r = records.record(kommo_lead(), connector())
        assert (r.crm_id, r.stage, r.pipeline, r.semantic) == ("31", "143", "7000", "lost")
        assert (r.loss_reason, r.amount, r.owner, r.lead_id) == (
            "Too expensive",
            Decimal(5000),
            "12",
            "lf-123",
        )
        assert r.modified_at == datetime.fromtimestamp(1796601600, UTC)

    def test_won_open_and_a_loss_reason_object(self) -> None:
        assert records.record(kommo_lead(status_id=142), connector()).semantic == "won"
        assert records.record(kommo_lead(status_id=70002), connector()).semantic == "open"
        obj = kommo_lead(_embedded={"loss_reason": {"id": 1, "name": "No budget"}})
        assert records.record(obj, connector()).loss_reason == "No budget"

    def test_a_search_hit_must_carry_exactly_the_lead_id(self) -> None:
        assert records.carries(kommo_lead(), connector(), "lf-123")
        assert not records.carries(kommo_lead(), connector(), "lf-12")

    def test_a_lead_without_status_is_refused(self) -> None:
        with pytest.raises(CrmRefused):
            records.record({"id": 1}, connector())


class TestErrors:
    def test_429_waits_for_retry_after_or_the_one_second_window(self) -> None:
        exc = failure(429, {}, b"", "leads/complex")
        assert isinstance(exc, CrmUnavailable) and exc.retry_after == 1.0
        exc = failure(429, {"retry-after": "3"}, b"", "x")
        assert isinstance(exc, CrmUnavailable) and exc.retry_after == 3.0

    def test_5xx_is_unavailable_auth_is_refused(self) -> None:
        assert isinstance(failure(502, {}, b"", "x"), CrmUnavailable)
        assert isinstance(failure(401, {}, b"", "x"), CrmRefused)
        assert isinstance(failure(403, {}, b"", "x"), CrmRefused)

    def test_validation_keeps_code_and_path_never_the_detail(self) -> None:
        error = {
            "code": "NotSupportedChoice",
            "path": "custom_fields_values.0.field_id",
            "detail": "anna@example.com is bad",
        }
        body = json.dumps({"validation-errors": [{"request_id": "0", "errors": [error]}]}).encode()
        message = str(failure(400, {}, body, "leads/complex"))
        assert "NotSupportedChoice at custom_fields_values.0.field_id" in message
        assert "anna" not in message

    def test_retry_after_as_an_http_date(self) -> None:
        now = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
        assert retry_after("Mon, 07 Dec 2026 12:00:05 GMT", now=now) == 5.0
        assert retry_after("soon") is None


def hook(
    form: list[tuple[str, Any]], *, secret: str | None = "s3cret-path", **headers: str
) -> IncomingRequest:
    return IncomingRequest(
        method="POST",
        url="https://leadflow.example/crm/kommo-main/hook",
        headers={"content-type": "application/x-www-form-urlencoded", **headers},
        body=urlencode(form).encode(),
        path_secret=secret,
        received_at=datetime.now(UTC),
    )


def status_form(*entries: tuple[int, int], account: int = 555) -> list[tuple[str, Any]]:
    form: list[tuple[str, Any]] = []
    for i, (lead_id, pipeline) in enumerate(entries):
        p = f"leads[status][{i}]"
        form += [(f"{p}[id]", lead_id), (f"{p}[status_id]", 142), (f"{p}[old_status_id]", 70001)]
        form += [(f"{p}[pipeline_id]", pipeline), (f"{p}[responsible_user_id]", 12)]
    return [*form, ("account[subdomain]", "leadflow"), ("account[id]", account)]


class TestNotifications:
    def test_an_authentic_webhook_names_each_lead_of_the_pipeline_once(self) -> None:
        form = status_form((31, 7000), (32, 8000), (33, 7000))
        form += [("leads[update][0][id]", 31), ("leads[update][0][pipeline_id]", 7000)]
        notices = VENDOR.parse_notification(connector(), SECRETS, hook(form))
        assert [n.crm_id for n in notices] == ["31", "33"]
        assert all(n.key is None for n in notices)

    def test_a_wrong_or_missing_secret_is_403(self) -> None:
        for secret in ("forged", None, ""):
            with pytest.raises(NotificationRefused) as refused:
                parse_notification(
                    connector(), SECRETS, hook(status_form((31, 7000)), secret=secret)
                )
            assert refused.value.status_code == 403

    def test_another_account_is_403(self) -> None:
        with pytest.raises(NotificationRefused) as refused:
            parse_notification(connector(), SECRETS, hook(status_form((31, 7000), account=999)))
        assert refused.value.status_code == 403

    @pytest.mark.parametrize(
        ("form", "problem"),
        [
            ([("leads[status][0][id]", "x1"), ("account[id]", 555)], "is not a lead id"),
            ([("leads[status][0][id]", 31)], "account[id] is missing"),
            ([("leads[status][0][id]", 31), ("account[id]", "abc")], "not one account id"),
        ],
    )
    def test_malformed_is_400_naming_the_problem(
        self, form: list[tuple[str, Any]], problem: str
    ) -> None:
        with pytest.raises(NotificationRefused, match=re.escape(problem)) as refused:
            parse_notification(connector(), SECRETS, hook(form))
        assert refused.value.status_code == 400

    def test_json_is_400_and_too_big_is_413_and_too_many_entries_400(self) -> None:
        with pytest.raises(NotificationRefused) as refused:
            parse_notification(
                connector(),
                SECRETS,
                hook(status_form((31, 7000)), **{"content-type": "application/json"}),
            )
        assert refused.value.status_code == 400
        big = hook([("pad", "x" * 1_000_001)])
        with pytest.raises(NotificationRefused) as refused:
            parse_notification(connector(), SECRETS, big)
        assert refused.value.status_code == 413
        many = [(f"leads[update][{i}][id]", i + 1) for i in range(1001)] + [("account[id]", 555)]
        with pytest.raises(NotificationRefused, match="more than 1000") as refused:
            parse_notification(connector(), SECRETS, hook(many))
        assert refused.value.status_code == 400
