"""The Bitrix24 simulator against the vendor's documented facts (tests/crm_sim/bitrix24.py
cites each page): URL and auth, answers and errors, stages, paging, the leaky bucket,
batch, multi-fields, and the outbound webhook's form-encoded, id-only notifications."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.crm_sim.bitrix24 import make_app, php_query
from tests.crm_sim.bitrix24_portal import Portal
from tests.crm_sim.server import serving

CODE = "simcode123"


class Receiver:
    """A notification endpoint that records what arrives and answers `status`."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.status = 200

        async def hook(request: Request) -> PlainTextResponse:
            self.received.append((request.headers["content-type"], await request.body()))
            return PlainTextResponse("", status_code=self.status)

        self.app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def forms(self) -> list[dict[str, str]]:
        return [dict(parse_qsl(body.decode())) for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    with serving(r.app) as url:
        yield r, f"{url}/hook"


@pytest.fixture
def sim() -> Iterator[tuple[httpx.Client, str]]:
    with serving(make_app(Portal(user_id=7, code=CODE))) as url, httpx.Client(base_url=url) as c:
        yield c, f"/rest/7/{CODE}"


def call(client: httpx.Client, base: str, method: str, body: Any = None) -> httpx.Response:
    return client.post(f"{base}/{method}.json", json=body or {})


def wait_for(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class TestCalling:
    def test_success_envelope_with_and_without_json_suffix(self, sim: Any) -> None:
        client, base = sim
        answer = call(client, base, "crm.deal.add", {"FIELDS": {"TITLE": "x"}})
        assert answer.status_code == 200
        body = answer.json()
        assert isinstance(body["result"], int) and {"start", "finish"} <= set(body["time"])
        plain = client.post(f"{base}/crm.deal.get", json={"id": body["result"]})
        assert plain.json()["result"]["TITLE"] == "x"

    def test_a_wrong_code_is_401_no_auth_found(self, sim: Any) -> None:
        client, _ = sim
        answer = client.post("/rest/7/wrong/crm.deal.list.json", json={})
        assert answer.status_code == 401
        assert answer.json() == {
            "error": "NO_AUTH_FOUND",
            "error_description": "Wrong authorization data",
        }
        assert client.post(f"/rest/8/{CODE}/crm.deal.list.json", json={}).status_code == 401

    def test_unknown_method_and_missing_deal(self, sim: Any) -> None:
        client, base = sim
        unknown = call(client, base, "crm.nothing.here")
        assert (unknown.status_code, unknown.json()["error"]) == (404, "ERROR_METHOD_NOT_FOUND")
        missing = call(client, base, "crm.deal.get", {"id": 999})
        assert missing.status_code == 400
        assert missing.json() == {"error": "", "error_description": "Not found"}

    def test_deal_values_are_strings_and_read_only_fields_ignored(self, sim: Any) -> None:
        client, base = sim
        fields = {"TITLE": "t", "OPPORTUNITY": 10, "ASSIGNED_BY_ID": 12}
        fields |= {"STAGE_SEMANTIC_ID": "S", "ORIGINATOR_ID": "leadflow", "ORIGIN_ID": "L1"}
        deal_id = call(client, base, "crm.deal.add", {"fields": fields}).json()["result"]
        deal = call(client, base, "crm.deal.get", {"id": deal_id}).json()["result"]
        assert deal["ID"] == str(deal_id) and deal["ASSIGNED_BY_ID"] == "12"
        assert deal["OPPORTUNITY"] == "10.00" and deal["STAGE_ID"] == "NEW"
        assert deal["STAGE_SEMANTIC_ID"] == "P" and deal["ORIGIN_ID"] == "L1"
        assert deal["DATE_MODIFY"].endswith("+03:00")


class TestStages:
    def test_status_list_default_and_other_funnels(self, sim: Any) -> None:
        client, base = sim
        client.post("/_sim/config", json={"categories": {"10": "Partners"}})
        default = call(client, base, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"}})
        stages = {s["STATUS_ID"]: s["SEMANTICS"] for s in default.json()["result"]}
        assert stages == {
            "NEW": None,
            "PREPARATION": None,
            "PREPAYMENT_INVOICE": None,
            "EXECUTING": None,
            "FINAL_INVOICE": None,
            "WON": "S",
            "LOSE": "F",
            "APOLOGY": "F",
        }
        other = call(client, base, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE_10"}})
        ids = [s["STATUS_ID"] for s in other.json()["result"]]
        assert ids[0] == "C10:NEW" and "C10:WON" in ids and all(len(i) <= 21 for i in ids)

    def test_a_salesperson_move_updates_stage_semantic_and_modified(self, sim: Any) -> None:
        client, base = sim
        deal_id = call(client, base, "crm.deal.add", {"fields": {"TITLE": "t"}}).json()["result"]
        before = call(client, base, "crm.deal.get", {"id": deal_id}).json()["result"]
        time.sleep(1.1)  # DATE_MODIFY has whole seconds
        moved = client.post(f"/_sim/deals/{deal_id}/move", json={"stage": "WON", "amount": "5"})
        assert moved.status_code == 202
        after = call(client, base, "crm.deal.get", {"id": deal_id}).json()["result"]
        assert (after["STAGE_ID"], after["STAGE_SEMANTIC_ID"]) == ("WON", "S")
        assert after["OPPORTUNITY"] == "5.00" and after["DATE_MODIFY"] > before["DATE_MODIFY"]
        bad = client.post(f"/_sim/deals/{deal_id}/move", json={"stage": "NOPE"})
        assert bad.status_code == 400


class TestList:
    def test_pages_of_fifty_with_next_and_total(self, sim: Any) -> None:
        client, base = sim
        client.post("/_sim/config", json={"rate_limit": {"limit": 500, "drain_per_second": 50}})
        for i in range(120):
            fields = {"ORIGINATOR_ID": "leadflow" if i % 2 else "other", "ORIGIN_ID": f"L{i}"}
            call(client, base, "crm.deal.add", {"fields": fields})
        pages, start = [], 0
        while start is not None:
            body = call(client, base, "crm.deal.list", {"start": start}).json()
            assert body["total"] == 120
            pages.append(len(body["result"]))
            start = body.get("next")
        assert pages == [50, 50, 20]
        flt = {"ORIGINATOR_ID": "leadflow", "ORIGIN_ID": "L7"}
        one = call(client, base, "crm.deal.list", {"filter": flt, "select": ["ID", "ORIGIN_ID"]})
        assert [set(d) for d in one.json()["result"]] == [{"ID", "ORIGIN_ID"}]

    def test_date_modify_filter(self, sim: Any) -> None:
        client, base = sim
        old = call(client, base, "crm.deal.add", {"fields": {}}).json()["result"]
        stamp = call(client, base, "crm.deal.get", {"id": old}).json()["result"]["DATE_MODIFY"]
        time.sleep(1.1)
        new = call(client, base, "crm.deal.add", {"fields": {}}).json()["result"]
        later = call(client, base, "crm.deal.list", {"filter": {">DATE_MODIFY": stamp}}).json()
        assert [d["ID"] for d in later["result"]] == [str(new)]
        since = call(client, base, "crm.deal.list", {"filter": {">=DATE_MODIFY": stamp}}).json()
        assert [d["ID"] for d in since["result"]] == [str(old), str(new)]


class TestLimits:
    def test_documented_bucket_then_query_limit_exceeded(self, sim: Any) -> None:
        client, base = sim
        codes = [call(client, base, "crm.status.list").status_code for _ in range(50)]
        assert codes == [200] * 50  # the documented burst of 50 passes
        over = [call(client, base, "crm.status.list") for _ in range(60)]
        refused = [a for a in over if a.status_code == 503]
        assert refused and refused[0].json()["error"] == "QUERY_LIMIT_EXCEEDED"

    def test_tightened_bucket_drains(self, sim: Any) -> None:
        client, base = sim
        client.post("/_sim/config", json={"rate_limit": {"limit": 2, "drain_per_second": 0}})
        codes = [call(client, base, "crm.status.list").status_code for _ in range(3)]
        assert codes == [200, 200, 503]
        client.post("/_sim/config", json={"rate_limit": {"limit": 2, "drain_per_second": 2}})
        time.sleep(1.2)
        assert call(client, base, "crm.status.list").status_code == 200

    def test_a_fault_after_commit_loses_the_answer_not_the_deal(self, sim: Any) -> None:
        client, base = sim
        client.post("/_sim/faults", json={"count": 1, "after_commit": True})
        fields = {"ORIGINATOR_ID": "leadflow", "ORIGIN_ID": "L1"}
        lost = call(client, base, "crm.deal.add", {"fields": fields})
        assert lost.status_code == 500 and lost.json()["error"] == "INTERNAL_SERVER_ERROR"
        assert client.get("/_sim/origins").json()["counts"] == {"L1": 1}


class TestRecords:
    def test_multi_fields_add_and_remove_by_id(self, sim: Any) -> None:
        client, base = sim
        fields = {"NAME": "Anna", "PHONE": [{"VALUE": "+7999", "VALUE_TYPE": "WORK"}]}
        fields["EMAIL"] = [{"VALUE": "a@b.ru", "VALUE_TYPE": "WORK"}]
        contact_id = call(client, base, "crm.contact.add", {"fields": fields}).json()["result"]
        got = call(client, base, "crm.contact.get", {"id": contact_id}).json()["result"]
        phone, email = got["PHONE"][0], got["EMAIL"][0]
        assert phone["TYPE_ID"] == "PHONE" and phone["VALUE"] == "+7999" and got["HAS_PHONE"] == "Y"
        erase = {"NAME": "", "PHONE": [{"ID": phone["ID"], "VALUE": ""}]}
        erase["EMAIL"] = [{"ID": email["ID"], "DELETE": "Y"}]
        assert call(client, base, "crm.contact.update", {"id": contact_id, "fields": erase}).json()[
            "result"
        ]
        got = call(client, base, "crm.contact.get", {"id": contact_id}).json()["result"]
        assert "PHONE" not in got and "EMAIL" not in got and got["HAS_EMAIL"] == "N"
        assert got["NAME"] == ""

    def test_timeline_comment_takes_lowercase_fields_only(self, sim: Any) -> None:
        client, base = sim
        deal_id = call(client, base, "crm.deal.add", {"fields": {}}).json()["result"]
        note = {"ENTITY_ID": deal_id, "ENTITY_TYPE": "deal", "COMMENT": "why"}
        assert call(client, base, "crm.timeline.comment.add", {"FIELDS": note}).status_code == 400
        assert call(client, base, "crm.timeline.comment.add", {"fields": note}).status_code == 200
        missing = call(
            client, base, "crm.timeline.comment.add", {"fields": note | {"ENTITY_ID": 9}}
        )
        assert missing.json()["error"] == "NOT_FOUND"

    def test_batch_links_results_and_counts_once(self, sim: Any) -> None:
        client, base = sim
        client.post("/_sim/config", json={"rate_limit": {"limit": 1, "drain_per_second": 0}})
        cmd = {
            "c": "crm.contact.add?fields[NAME]=A%26B&fields[PHONE][0][VALUE]=%2B7",
            "d": "crm.deal.add?fields[TITLE]=t&fields[CONTACT_ID]=$result[c]",
            "x": "crm.deal.get?id=9999",
        }
        body = call(client, base, "batch", {"halt": 0, "cmd": cmd}).json()["result"]
        contact, deal_id = body["result"]["c"], body["result"]["d"]
        assert body["result_error"]["x"]["error_description"] == "Not found"
        assert call(client, base, "crm.deal.get", {"id": deal_id}).status_code == 503
        sim_deal = client.get(f"/_sim/deals/{deal_id}").json()
        assert sim_deal["deal"]["CONTACT_ID"] == str(contact)
        assert sim_deal["contact"]["NAME"] == "A&B"

    def test_php_query_nesting(self) -> None:
        parsed = php_query("a[b][0][c]=1&a[b][1][c]=2&d=x&e[]=1&e[]=2")
        assert parsed == {"a": {"b": [{"c": "1"}, {"c": "2"}]}, "d": "x", "e": ["1", "2"]}


class TestNotifications:
    def test_form_encoded_id_only_with_the_configured_token(self, sim: Any, receiver: Any) -> None:
        client, base = sim
        rec, url = receiver
        client.post("/_sim/config", json={"receiver_url": url})
        fields = {"TITLE": "Anna Petrova", "COMMENTS": "secret"}
        deal_id = call(client, base, "crm.deal.add", {"fields": fields}).json()["result"]
        client.post(f"/_sim/deals/{deal_id}/move", json={"stage": "EXECUTING"})
        wait_for(lambda: len(rec.received) == 2)
        assert {kind for kind, _ in rec.received} == {"application/x-www-form-urlencoded"}
        forms = rec.forms()
        assert sorted(f["event"] for f in forms) == ["ONCRMDEALADD", "ONCRMDEALUPDATE"]
        for form in forms:
            assert form["data[FIELDS][ID]"] == str(deal_id)
            assert form["auth[application_token]"] == Portal().application_token
            assert form["auth[domain]"] == Portal().domain and form["ts"].isdigit()
            assert not any(k.startswith("data[") and k != "data[FIELDS][ID]" for k in form)
            assert b"Anna" not in rec.received[0][1] + rec.received[1][1]

    def test_dropped_and_failed_deliveries_are_never_resent(self, sim: Any, receiver: Any) -> None:
        client, base = sim
        rec, url = receiver
        client.post("/_sim/config", json={"receiver_url": url, "drop_fraction": 1.0})
        call(client, base, "crm.deal.add", {"fields": {}})
        assert client.get("/_sim/stats").json()["dropped"] == 1
        client.post("/_sim/config", json={"drop_fraction": 0.0})
        rec.status = 500
        call(client, base, "crm.deal.add", {"fields": {}})
        wait_for(lambda: client.get("/_sim/stats").json()["undelivered"] == 1)
        time.sleep(1.0)
        assert len(rec.received) == 1

    def test_an_early_notification_precedes_the_change(self, sim: Any, receiver: Any) -> None:
        client, base = sim
        rec, url = receiver
        deal_id = call(client, base, "crm.deal.add", {"fields": {}}).json()["result"]
        client.post("/_sim/config", json={"receiver_url": url, "early_seconds": 2.0})
        client.post(f"/_sim/deals/{deal_id}/move", json={"stage": "WON"})
        wait_for(lambda: len(rec.received) == 1)
        now = call(client, base, "crm.deal.get", {"id": deal_id}).json()["result"]
        assert now["STAGE_ID"] == "NEW"
        wait_for(
            lambda: (
                call(client, base, "crm.deal.get", {"id": deal_id}).json()["result"]["STAGE_ID"]
                == "WON"
            )
        )
