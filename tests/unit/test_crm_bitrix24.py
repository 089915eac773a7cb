"""The Bitrix24 connector's pure parts: the fields it writes, the records it reads, the
errors it maps and the notifications it accepts. No I/O."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from services.qualifier.crm.adapter import (
    CrmRefused,
    CrmUnavailable,
    IncomingRequest,
    Notice,
    NotificationRefused,
    PushLead,
)
from services.qualifier.crm.bitrix24 import VENDOR, records, wire
from services.qualifier.crm.bitrix24.notifications import parse_notification
from services.qualifier.crm.config import Bitrix24Connector

TOKEN = "app-token-0123456789"
SECRETS = {"webhook_code": "hook-code", "application_token": TOKEN}


def connector(**overrides: Any) -> Bitrix24Connector:
    raw: dict[str, Any] = {
        "id": "bitrix-main",
        "kind": "bitrix24",
        "base_url": "https://example.bitrix24.ru",
        "credentials": {
            "user_id": 1,
            "webhook_code_env": "LEADFLOW_CRM_BITRIX_CODE",
            "application_token_env": "LEADFLOW_CRM_BITRIX_TOKEN",
        },
    }
    return Bitrix24Connector.model_validate(raw | overrides)


def lead(**overrides: Any) -> PushLead:
    values: dict[str, Any] = {
        "lead_id": "L-1",
        "title": "Anna Petrova, Acme",
        "name": "Anna Petrova",
        "email": "anna@example.ru",
        "phone": "+79990001122",
        "company": "Acme",
        "source": "web_form",
        "channel": "tilda",
        "utm": {"utm_source": "yandex", "utm_campaign": "spring"},
        "owner": "12",
        "note": "budget fits\nindustry: saas",
        "route": "sales",
        "team": "smb",
        "received_at": datetime(2026, 12, 1, tzinfo=UTC),
        "extra": {"budget": "100000"},
    }
    return PushLead(**(values | overrides))


def deal(**overrides: Any) -> dict[str, Any]:
    values = {
        "ID": "42",
        "STAGE_ID": "C3:EXECUTING",
        "STAGE_SEMANTIC_ID": "P",
        "CATEGORY_ID": "3",
        "OPPORTUNITY": "0.00",
        "CURRENCY_ID": "RUB",
        "ASSIGNED_BY_ID": "12",
        "DATE_MODIFY": "2026-12-07T15:00:05+03:00",
        "ORIGINATOR_ID": "leadflow",
        "ORIGIN_ID": "L-1",
    }
    return values | overrides


class TestWritten:
    def test_a_new_deal_carries_source_utm_owner_and_its_origin(self) -> None:
        fields = records.deal_fields(lead(), category_id=3, new=True)
        assert fields["CATEGORY_ID"] == 3 and fields["ASSIGNED_BY_ID"] == "12"
        assert fields["SOURCE_ID"] == "WEBFORM"
        assert (fields["ORIGINATOR_ID"], fields["ORIGIN_ID"]) == ("leadflow", "L-1")
        assert fields["UTM_SOURCE"] == "yandex" and fields["UTM_CAMPAIGN"] == "spring"
        assert "UTM_MEDIUM" not in fields
        assert "budget: 100000" in fields["COMMENTS"]

    def test_an_update_never_moves_the_funnel(self) -> None:
        assert "CATEGORY_ID" not in records.deal_fields(lead(), category_id=3, new=False)

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("web_form", "WEBFORM"),
            ("api", "WEB"),
            ("import", "OTHER"),
            ("webinar_attendance", "TRADE_SHOW"),
        ],
    )
    def test_sources(self, source: str, expected: str) -> None:
        assert (
            records.deal_fields(lead(source=source), category_id=0, new=True)["SOURCE_ID"]
            == expected
        )

    def test_contact_multi_fields_and_an_erased_lead(self) -> None:
        fields = records.contact_fields(lead())
        assert fields["PHONE"] == [{"VALUE": "+79990001122", "VALUE_TYPE": "WORK"}]
        assert fields["EMAIL"] == [{"VALUE": "anna@example.ru", "VALUE_TYPE": "WORK"}]
        assert fields["NAME"] == "Anna Petrova"
        gone = lead(name=None, email=None, phone=None, title="")
        assert not records.has_person(gone)
        assert records.deal_fields(gone, category_id=0, new=True)["TITLE"] == "Leadflow lead L-1"

    def test_erasure_deletes_each_multi_field_item_by_id(self) -> None:
        contact = {"PHONE": [{"ID": "5", "VALUE": "+7"}], "EMAIL": [{"ID": "6", "VALUE": "a@b"}]}
        fields = records.erase_contact_fields(contact)
        assert fields["PHONE"] == [{"ID": "5", "VALUE": ""}]
        assert fields["EMAIL"] == [{"ID": "6", "VALUE": ""}]
        assert fields["NAME"] == fields["LAST_NAME"] == ""
        assert records.erase_deal_fields("L-1", "42") == {
            "TITLE": "Leadflow lead L-1",
            "COMMENTS": "",
        }

    def test_batch_commands_are_php_queries(self) -> None:
        query = wire.php_query({"fields": {"NAME": "A&B", "PHONE": [{"VALUE": "+7"}], "X": None}})
        assert dict(parse_qsl(query)) == {"fields[NAME]": "A&B", "fields[PHONE][0][VALUE]": "+7"}


class TestRead:
    def test_an_open_deal(self) -> None:
        record = records.read_deal(deal(), stage_names={}, lost_reason_field=None)
        assert (record.crm_id, record.stage, record.semantic) == ("42", "C3:EXECUTING", "open")
        assert record.pipeline == "3" and record.owner == "12" and record.lead_id == "L-1"
        assert record.modified_at == datetime(2026, 12, 7, 12, 0, 5, tzinfo=UTC)
        assert record.amount is None and record.loss_reason is None

    def test_won_with_amount(self) -> None:
        won = deal(STAGE_ID="WON", STAGE_SEMANTIC_ID="S", OPPORTUNITY="150000.00")
        record = records.read_deal(won, stage_names={}, lost_reason_field=None)
        assert record.semantic == "won" and record.amount == Decimal("150000.00")

    def test_loss_reason_from_the_field_else_the_stage_name(self) -> None:
        lost = deal(STAGE_ID="APOLOGY", STAGE_SEMANTIC_ID="F", UF_CRM_LOSS="too expensive")
        names = {"APOLOGY": "Failure reason analysis"}
        with_field = records.read_deal(lost, stage_names=names, lost_reason_field="UF_CRM_LOSS")
        assert with_field.semantic == "lost" and with_field.loss_reason == "too expensive"
        without = records.read_deal(lost, stage_names=names, lost_reason_field=None)
        assert without.loss_reason == "Failure reason analysis"

    def test_a_deal_of_another_source_has_no_lead_id(self) -> None:
        other = deal(ORIGINATOR_ID="1c", ORIGIN_ID="77")
        assert records.read_deal(other, stage_names={}, lost_reason_field=None).lead_id is None

    def test_unreadable_deals_name_the_field(self) -> None:
        with pytest.raises(ValueError, match="STAGE_SEMANTIC_ID"):
            records.read_deal(deal(STAGE_SEMANTIC_ID="X"), stage_names={}, lost_reason_field=None)
        with pytest.raises(ValueError, match="DATE_MODIFY"):
            records.read_deal(
                deal(DATE_MODIFY="2026-12-07 15:00"), stage_names={}, lost_reason_field=None
            )

    def test_filter_time_keeps_the_whole_second(self) -> None:
        moment = datetime(2026, 12, 7, 12, 0, 5, 900_000, tzinfo=UTC)
        assert records.format_time(moment) == "2026-12-07T12:00:05+00:00"


class TestErrors:
    def test_the_bucket_is_retried_after_a_drain_tick(self) -> None:
        body = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        error = wire.failure(503, {}, body, "crm.deal.add")
        assert isinstance(error, CrmUnavailable) and error.retry_after == 1.0
        told = wire.failure(503, {"retry-after": "7"}, body, "crm.deal.add")
        assert isinstance(told, CrmUnavailable) and told.retry_after == 7.0

    @pytest.mark.parametrize(
        ("status", "code"),
        [
            (503, "OVERLOAD_LIMIT"),
            (500, "INTERNAL_SERVER_ERROR"),
            (429, "OPERATION_TIME_LIMIT"),
            (502, ""),
        ],
    )
    def test_unavailable(self, status: int, code: str) -> None:
        error = wire.failure(status, {}, {"error": code, "error_description": "x"}, "batch")
        assert isinstance(error, CrmUnavailable)

    def test_refusals_keep_the_code_never_the_text(self) -> None:
        auth = wire.failure(
            401, {}, {"error": "NO_AUTH_FOUND", "error_description": "Wrong"}, "batch"
        )
        assert isinstance(auth, CrmRefused) and "NO_AUTH_FOUND" in str(auth)
        body = {"error": "", "error_description": "Invalid value anna@example.ru for field"}
        bad = wire.failure(400, {}, body, "crm.deal.add")
        assert isinstance(bad, CrmRefused) and "anna" not in str(bad) and "crm.deal.add" in str(bad)
        assert wire.is_not_found(400, {"error": "", "error_description": "Not found"})

    def test_the_vendor_budget_is_the_documented_bucket(self) -> None:
        requests, per = VENDOR.default_rate_limit
        assert (requests, requests / per) == (50, 2.0)


def notification(form: list[tuple[str, str]] | str, **headers: str) -> IncomingRequest:
    body = form if isinstance(form, str) else urlencode(form)
    return IncomingRequest(
        method="POST",
        url="https://leadflow.example/crm/bitrix-main/notifications",
        headers={"Content-Type": "application/x-www-form-urlencoded"} | headers,
        body=body.encode(),
        path_secret=None,
        received_at=datetime(2026, 12, 7, 12, 0, tzinfo=UTC),
    )


def form(event: str = "ONCRMDEALUPDATE", token: str = TOKEN, **extra: str) -> list[tuple[str, str]]:
    pairs = [
        ("event", event),
        ("data[FIELDS][ID]", "662"),
        ("ts", str(int(datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()) - 5)),
        ("auth[domain]", "example.bitrix24.ru"),
        ("auth[member_id]", "abc123"),
        ("auth[application_token]", token),
    ]
    return [(k, extra.get(k, v)) for k, v in pairs]


class TestNotifications:
    def test_an_authentic_update_names_the_deal(self) -> None:
        assert parse_notification(connector(), SECRETS, notification(form())) == [Notice("662")]
        added = parse_notification(connector(), SECRETS, notification(form("ONCRMDEALADD")))
        assert added == [Notice("662")]

    def test_other_events_are_accepted_and_ignored(self) -> None:
        assert parse_notification(connector(), SECRETS, notification(form("ONCRMLEADUPDATE"))) == []

    def refused(self, request: IncomingRequest, **overrides: Any) -> NotificationRefused:
        with pytest.raises(NotificationRefused) as caught:
            parse_notification(connector(**overrides), SECRETS, request)
        assert TOKEN not in str(caught.value) and "662" not in str(caught.value)
        return caught.value

    def test_a_forged_token_is_403(self) -> None:
        assert self.refused(notification(form(token="guess"))).status_code == 403
        assert self.refused(notification([("event", "ONCRMDEALUPDATE")])).status_code == 403

    def test_another_account_is_403(self) -> None:
        request = notification(form())
        assert self.refused(request, member_id="zzz999").status_code == 403
        assert parse_notification(connector(member_id="abc123"), SECRETS, request)

    def test_a_stale_one_is_401_when_an_age_is_set(self) -> None:
        old = notification(form(ts="1700000000"))
        assert parse_notification(connector(), SECRETS, old) == [Notice("662")]
        assert self.refused(old, max_event_age_seconds=300).status_code == 401

    def test_malformed_bodies_are_400(self) -> None:
        assert self.refused(notification(form(**{"data[FIELDS][ID]": "abc"}))).status_code == 400
        assert self.refused(notification(form(event=""))).status_code == 400
        as_json = notification(json.dumps({"event": "x"}), **{"Content-Type": "application/json"})
        assert self.refused(as_json).status_code == 400
        not_utf8 = dataclasses.replace(notification("x"), body=b"\xff\xfe=1")
        assert self.refused(not_utf8).status_code == 400

    def test_bounded_work(self) -> None:
        big = notification("a=" + "x" * (1024 * 1024))
        assert self.refused(big).status_code == 413
        many = notification("&".join(f"k{i}=v" for i in range(1001)))
        assert self.refused(many).status_code == 400
